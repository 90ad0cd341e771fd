/*-------------------------------------------------------------------------
 *
 * worker_memory.c
 *	  The worker's C heap: kept while the worker is busy, given back to the
 *	  kernel once it has been idle for a while.
 *
 * Each request allocates and frees a few hundred kB outside any memory
 * context (curl's, OpenSSL's and jansson's buffers) besides the executor's
 * large blocks.  With glibc's default trim threshold of 128 kB the worker
 * shrank its heap after every request and page-faulted it back in on the
 * next, which perf showed as several percent of its CPU; so, while busy,
 * up to BG_MALLOC_TRIM_THRESHOLD of freed heap is kept.  Kept for good,
 * that reserve and the holes that churn leaves in the middle of the heap
 * (which no threshold returns) make a worker that has served many
 * thousand payments look several MB bigger than it is: 10 MB after a
 * 10,000-payment chaos run whose memory contexts had grown by 0.33 MB.
 * So once the worker has been idle for BG_IDLE_RETURN_MS (no transfer
 * in flight and no batch: an operator's resolutions need a batch each,
 * with nothing sent), malloc_trim gives every free page back, and pg_stat_activity shows the worker as
 * BG_IDLE_ACTIVITY until its next batch.  What is left then is what the
 * worker really holds, which is what tests/t/030_chaos.pl measures.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "pgstat.h"
#include "utils/timestamp.h"

#include "http.h"
#include "worker_int.h"

/* Free heap glibc may keep while the worker is busy. */
#define BG_MALLOC_TRIM_THRESHOLD	(8 * 1024 * 1024)

/*
 * How long the worker must have been idle before the free heap is given
 * back: long enough that calls a session makes one after another never
 * see it (each would page-fault the heap back in), short enough that a
 * worker between bursts is back to its size within a second.
 */
#define BG_IDLE_RETURN_MS			1000

void
bgw_memory_init(void)
{
#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
	mallopt(M_TRIM_THRESHOLD, BG_MALLOC_TRIM_THRESHOLD);
#endif
	BgWorker->busy_at = GetCurrentTimestamp();
	BgWorker->heap_returned = false;
}

/*
 * Called once per turn of the loop, after the batch (worked: one ran):
 * remembers when the worker last worked, a batch or a transfer in flight,
 * and gives the free heap back once it has been idle for
 * BG_IDLE_RETURN_MS.  A batch counts though it sends nothing (an
 * operator's resolution, a sweep): its executor's blocks are freed heap
 * too, and it replaces what pg_stat_activity shows.
 */
void
bgw_memory_after_turn(bool worked)
{
	TimestampTz now = GetCurrentTimestamp();

	if (worked || bg_http_in_flight() > 0)
	{
		BgWorker->busy_at = now;
		BgWorker->heap_returned = false;
		return;
	}
	if (BgWorker->heap_returned || now < bgw_memory_due_at())
		return;
#ifdef __GLIBC__
	malloc_trim(0);
#endif
	BgWorker->heap_returned = true;
	pgstat_report_activity(STATE_IDLE, BG_IDLE_ACTIVITY);
}

/* When the free heap is due to be given back; DT_NOEND if it has been. */
TimestampTz
bgw_memory_due_at(void)
{
	if (BgWorker->heap_returned)
		return DT_NOEND;
	return TimestampTzPlusMilliseconds(BgWorker->busy_at, BG_IDLE_RETURN_MS);
}
