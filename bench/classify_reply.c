/*
 * classify_reply.c: step 7 of the benchmark, the worker's CPU cost of
 * reading one reply.
 *
 * Times bg_classify_reply() (src/reply.c: json_span.c's validating scan and
 * the envelope checks) on the body the stand-in API serves, then
 * bg_invoice_summary() (src/invoice.c) on that body's "data", as the journal
 * keeps it, to show how much of the worker's time per payment goes to them.
 * Prints two lines on stdout: the mean microseconds per classification, then
 * per summary, each over argv[2] calls (default 20000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "invoice.h"
#include "reply.h"

static double
mean_us(const struct timespec *t0, const struct timespec *t1, int calls)
{
	return ((t1->tv_sec - t0->tv_sec) * 1e9 + (t1->tv_nsec - t0->tv_nsec)) / calls / 1000.0;
}

int
main(int argc, char **argv)
{
	static char body[1 << 20];
	FILE	   *f;
	size_t		len;
	int			calls = argc > 2 ? atoi(argv[2]) : 20000;
	struct timespec t0,
				t1,
				t2;
	BgReply		reply;
	char	   *summary = NULL;

	if (argc < 2 || calls <= 0 || (f = fopen(argv[1], "rb")) == NULL)
	{
		fprintf(stderr, "usage: %s body.json [calls]\n", argv[0]);
		return 2;
	}
	len = fread(body, 1, sizeof(body), f);
	fclose(f);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < calls; i++)
		bg_classify_reply(&reply, 200, body, len);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	if (reply.outcome != BG_OUTCOME_OK)
	{
		fprintf(stderr, "the body is not classified as a success: %s\n", reply.message);
		return 1;
	}
	for (int i = 0; i < calls; i++)
	{
		free(summary);
		summary = bg_invoice_summary(body + reply.data_offset, reply.data_len);
	}
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (summary == NULL)
	{
		fprintf(stderr, "the body's data has no summary\n");
		return 1;
	}
	free(summary);

	printf("%.2f\n", mean_us(&t0, &t1, calls));
	printf("%.2f\n", mean_us(&t1, &t2, calls));
	return 0;
}
