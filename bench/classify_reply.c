/*
 * classify_reply.c: step 7 of the benchmark, the worker's CPU cost of
 * classifying one reply.
 *
 * Times bg_classify_reply() (src/reply.c: jansson's parse and the envelope
 * checks) on the body the stand-in API serves, to show how much of the
 * worker's time per payment goes to it.  Prints the mean microseconds per
 * call over argv[2] calls (default 20000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "reply.h"

int
main(int argc, char **argv)
{
	static char body[1 << 20];
	FILE	   *f;
	size_t		len;
	int			calls = argc > 2 ? atoi(argv[2]) : 20000;
	struct timespec t0,
				t1;
	BgReply		reply;

	if (argc < 2 || (f = fopen(argv[1], "rb")) == NULL)
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
	printf("%.2f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / calls / 1000.0);
	return 0;
}
