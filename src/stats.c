/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The worker's health in shared memory, and billogram_worker_status(),
 *	  the function behind the billogram_health view.
 *
 * One answer to "is it healthy?": whether the worker runs and since when,
 * what it has in flight and how many connections it holds, what became of
 * the requests since it started, how long the recent ones took, the last
 * error, and until when sending is paused because Billogram asked to wait.  The worker writes, anyone granted the view reads; a spinlock
 * guards the few words each side touches, and latencies are a ring of the
 * last BG_LATENCY_SAMPLES transfers, sorted only when someone asks.
 *
 * The counters start again with each worker: they describe this worker's
 * life (billogram_health.started_at), not the journal's, which has its own
 * view, billogram_queue_status.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "metrics.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(billogram_worker_status);

/* Recent transfers whose time the percentiles are computed over. */
#define BG_LATENCY_SAMPLES	1024
#define BG_LAST_ERROR_LEN	256
#define BG_REFUSAL_LEN		512

typedef struct BgStats
{
	slock_t		mutex;
	pid_t		worker_pid;		/* 0 while no worker runs */
	TimestampTz started_at;
	int			in_flight;
	int			connections;
	TimestampTz paused_until;	/* 0 unless Billogram asked to wait */
	int64		outcomes[BG_STAT_NUM_OUTCOMES];
	int64		transfers;		/* finished, all kinds */
	int32		latency_us[BG_LATENCY_SAMPLES];
	TimestampTz last_error_at;
	char		last_error[BG_LAST_ERROR_LEN];
	char		refusal[BG_REFUSAL_LEN];	/* "" while the journal is served */
} BgStats;

static BgStats *stats = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(BgStats)));
}

static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("billogram stats", sizeof(BgStats), &found);
	if (!found)
	{
		memset(stats, 0, sizeof(BgStats));
		SpinLockInit(&stats->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
bg_stats_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* ---------------------------------------------------------------------
 * Worker side
 * ---------------------------------------------------------------------
 */

static void
worker_gone(int code, Datum arg)
{
	SpinLockAcquire(&stats->mutex);
	stats->worker_pid = 0;
	stats->in_flight = 0;
	stats->connections = 0;
	stats->paused_until = 0;
	stats->refusal[0] = '\0';
	SpinLockRelease(&stats->mutex);
}

void
bg_stats_worker_started(void)
{
	SpinLockAcquire(&stats->mutex);
	memset(stats->outcomes, 0, sizeof(stats->outcomes));
	memset(stats->latency_us, 0, sizeof(stats->latency_us));
	stats->transfers = 0;
	stats->in_flight = 0;
	stats->connections = 0;
	stats->worker_pid = MyProcPid;
	stats->started_at = GetCurrentTimestamp();
	SpinLockRelease(&stats->mutex);
	on_shmem_exit(worker_gone, (Datum) 0);
}

void
bg_stats_transfer_finished(long total_us)
{
	int32		us = (int32) Min(Max(total_us, 0), PG_INT32_MAX);

	SpinLockAcquire(&stats->mutex);
	stats->latency_us[stats->transfers % BG_LATENCY_SAMPLES] = us;
	stats->transfers++;
	SpinLockRelease(&stats->mutex);
}

void
bg_stats_set_load(int in_flight, int connections)
{
	SpinLockAcquire(&stats->mutex);
	stats->in_flight = in_flight;
	stats->connections = connections;
	SpinLockRelease(&stats->mutex);
}

void
bg_stats_set_pause(TimestampTz until)
{
	SpinLockAcquire(&stats->mutex);
	stats->paused_until = until;
	SpinLockRelease(&stats->mutex);
}

void
bg_stats_count(BgStatOutcome outcome)
{
	SpinLockAcquire(&stats->mutex);
	stats->outcomes[outcome]++;
	SpinLockRelease(&stats->mutex);
}

/*
 * Count a journal row by the state its outcome put it in: for
 * billogram_health at once, for billogram_metrics when the outcome commits.
 */
void
bg_stats_outcome_of(BgJournalState state)
{
	switch (state)
	{
		case BG_STATE_DONE:
			bg_stats_count(BG_STAT_DONE);
			break;
		case BG_STATE_FAILED:
			bg_stats_count(BG_STAT_FAILED);
			break;
		case BG_STATE_IN_DOUBT:
			bg_stats_count(BG_STAT_IN_DOUBT);
			bg_metrics_in_doubt(1);
			break;
		case BG_STATE_PENDING:
			bg_stats_count(BG_STAT_RETRIED);
			bg_metrics_retry();
			break;
		default:
			break;
	}
}

/* Why the worker refuses to serve the journal (trust.c); NULL: it serves it. */
void
bg_stats_set_refusal(const char *why)
{
	SpinLockAcquire(&stats->mutex);
	strlcpy(stats->refusal, why ? why : "", sizeof(stats->refusal));
	SpinLockRelease(&stats->mutex);
}

void
bg_stats_error(const char *message)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&stats->mutex);
	strlcpy(stats->last_error, message ? message : "", sizeof(stats->last_error));
	stats->last_error_at = now;
	SpinLockRelease(&stats->mutex);
}

/* ---------------------------------------------------------------------
 * SQL
 * ---------------------------------------------------------------------
 */

static int
compare_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return (x > y) - (x < y);
}

/* The p-th percentile, nearest rank, of n sorted samples, in ms. */
static double
percentile_ms(const int32 *sorted, int n, double p)
{
	int			rank = (int) ceil(p * n);

	return sorted[Max(rank, 1) - 1] / 1000.0;
}

Datum
billogram_worker_status(PG_FUNCTION_ARGS)
{
	BgStats		copy;
	TupleDesc	tupdesc;
	Datum		values[15];
	bool		nulls[15];
	int			n;
	int			i;

	if (stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram is not loaded through shared_preload_libraries"),
				 errhint("Add billogram to shared_preload_libraries in postgresql.conf and restart the server.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SpinLockAcquire(&stats->mutex);
	memcpy(&copy, stats, sizeof(BgStats));
	SpinLockRelease(&stats->mutex);

	memset(nulls, 0, sizeof(nulls));
	nulls[0] = nulls[1] = (copy.worker_pid == 0);
	values[0] = Int32GetDatum(copy.worker_pid);
	values[1] = TimestampTzGetDatum(copy.started_at);
	values[2] = Int32GetDatum(copy.in_flight);
	values[3] = Int32GetDatum(copy.connections);
	for (i = 0; i < BG_STAT_NUM_OUTCOMES; i++)
		values[4 + i] = Int64GetDatum(copy.outcomes[i]);
	values[8] = Int64GetDatum(copy.transfers);

	n = (int) Min(copy.transfers, BG_LATENCY_SAMPLES);
	if (n > 0)
	{
		qsort(copy.latency_us, n, sizeof(int32), compare_int32);
		values[9] = Float8GetDatum(percentile_ms(copy.latency_us, n, 0.50));
		values[10] = Float8GetDatum(percentile_ms(copy.latency_us, n, 0.99));
	}
	else
		nulls[9] = nulls[10] = true;

	nulls[11] = nulls[12] = (copy.last_error_at == 0);
	values[11] = CStringGetTextDatum(copy.last_error);
	values[12] = TimestampTzGetDatum(copy.last_error_at);
	nulls[13] = (copy.paused_until == 0);
	values[13] = TimestampTzGetDatum(copy.paused_until);
	/* absent from the view of 0.2, which this library serves nothing for */
	nulls[14] = (copy.refusal[0] == '\0');
	values[14] = CStringGetTextDatum(copy.refusal);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
