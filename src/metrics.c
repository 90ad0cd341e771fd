/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  Counters that only grow, in shared memory, and billogram_metric_values(),
 *	  the function behind the billogram_metrics view.
 *
 * billogram_health (stats.c) answers "is it healthy now?" for a person;
 * these answer "how much, how often" for a dashboard, which rates and sums
 * them: requests by kind and outcome, HTTP exchanges by status class and
 * their times as a histogram with cumulative buckets, retries, pauses, and
 * in_doubt rows made and settled.  Each is a pg_atomic_uint64, as
 * pgstat's shared counters are, added to without a lock by the worker and
 * read by anyone granted the view.  They live as long as the server's
 * shared memory, across restarts of the worker; a server restart starts
 * them at zero, which Prometheus' rate() takes as a counter reset.
 *
 * A fact is counted once, where it is decided.  Those the journal records
 * (a retry, a row made in_doubt, a settlement's verdict) are counted when
 * the transaction that wrote them commits: the worker's batch can fail and
 * write the same outcome again, and a subtransaction rolled back wrote
 * nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "metrics.h"

PG_FUNCTION_INFO_V1(billogram_metric_values);

#define BG_NUM_OUTCOMES		(BG_OUTCOME_UNTRUSTED + 1)

/* billogram_requests_total's kind label, by BgMetricKind */
static const char *const kind_names[BG_METRIC_NUM_KINDS] = {
	[BG_METRIC_CREDIT_PAYMENT] = "credit_payment",
	[BG_METRIC_GET_INVOICE] = "get_invoice",
	[BG_METRIC_QUEUED] = "queued",
	[BG_METRIC_READ] = "read",
	[BG_METRIC_SNAPSHOT] = "snapshot",
};

/* HTTP status classes; "none": no answer at all (a network error, a timeout) */
static const char *const class_names[] = {"none", "2xx", "3xx", "4xx", "5xx", "other"};
#define BG_NUM_CLASSES		((int) lengthof(class_names))

/* The histogram's upper bounds, in µs (le="0.005" ... le="60"), then +Inf */
static const uint64 bucket_us[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000
};
#define BG_NUM_BOUNDS		((int) lengthof(bucket_us))
#define BG_NUM_BUCKETS		(BG_NUM_BOUNDS + 1)

/* billogram_weigh()'s final verdicts (sql/billogram--0.3.sql) */
static const char *const verdict_names[] = {"applied", "not_applied", "ambiguous", "unchecked"};
#define BG_NUM_VERDICTS		((int) lengthof(verdict_names))

/* One flat array of counters; these say where each metric's are. */
#define M_REQUESTS			0
#define M_CLASSES			(M_REQUESTS + BG_METRIC_NUM_KINDS * BG_NUM_OUTCOMES)
#define M_BUCKETS			(M_CLASSES + BG_NUM_CLASSES)	/* not cumulative */
#define M_DURATION_US		(M_BUCKETS + BG_NUM_BUCKETS)
#define M_RETRIES			(M_DURATION_US + 1)
#define M_PAUSES			(M_RETRIES + 1)
#define M_IN_DOUBT			(M_PAUSES + 1)
#define M_SETTLED			(M_IN_DOUBT + 1)
#define M_COUNT				((int) (M_SETTLED + BG_NUM_VERDICTS))

typedef struct BgMetrics
{
	pg_atomic_uint64 counter[M_COUNT];
} BgMetrics;

static BgMetrics *metrics = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
metrics_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(BgMetrics)));
}

static void
metrics_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	metrics = ShmemInitStruct("billogram metrics", sizeof(BgMetrics), &found);
	if (!found)
	{
		for (int i = 0; i < M_COUNT; i++)
			pg_atomic_init_u64(&metrics->counter[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
bg_metrics_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = metrics_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = metrics_shmem_startup;
}

static void
add(int counter, uint64 n)
{
	if (metrics != NULL)
		pg_atomic_fetch_add_u64(&metrics->counter[counter], n);
}

/* ---------------------------------------------------------------------
 * Facts counted at once
 * ---------------------------------------------------------------------
 */

void
bg_metrics_request(BgMetricKind kind, BgOutcome outcome)
{
	Assert(kind < BG_METRIC_NUM_KINDS && outcome < BG_NUM_OUTCOMES);
	add(M_REQUESTS + kind * BG_NUM_OUTCOMES + outcome, 1);
}

void
bg_metrics_exchange(long http_status, long total_us)
{
	int			class;
	uint64		us = (uint64) Max(total_us, 0);
	int			bucket = 0;

	if (http_status == 0)
		class = 0;
	else if (http_status >= 200 && http_status < 600)
		class = http_status / 100 - 1;
	else
		class = BG_NUM_CLASSES - 1;
	while (bucket < BG_NUM_BOUNDS && us > bucket_us[bucket])
		bucket++;
	add(M_CLASSES + class, 1);
	add(M_BUCKETS + bucket, 1);
	add(M_DURATION_US, us);
}

void
bg_metrics_pause(void)
{
	add(M_PAUSES, 1);
}

/* ---------------------------------------------------------------------
 * Facts counted when their transaction commits
 * ---------------------------------------------------------------------
 */

/* A fact written at a (sub)transaction nesting level, not committed yet */
typedef struct PendingFact
{
	int			counter;
	int			level;
	uint64		n;
} PendingFact;

static PendingFact *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

static void
metrics_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
	{
		for (int i = 0; i < npending; i++)
			add(pending[i].counter, pending[i].n);
		npending = 0;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE)
		npending = 0;
}

/*
 * A subtransaction's facts are its parent's when it commits, and nobody's
 * when it is rolled back.
 */
static void
metrics_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (int i = 0; i < npending; i++)
	{
		if (pending[i].level < level)
			pending[kept++] = pending[i];
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			pending[kept] = pending[i];
			pending[kept++].level = level - 1;
		}
	}
	npending = kept;
}

static void
count_at_commit(int counter, uint64 n)
{
	if (!IsTransactionState())
	{
		add(counter, n);
		return;
	}
	if (pending == NULL)
	{
		maxpending = 64;
		pending = MemoryContextAlloc(TopMemoryContext,
									 maxpending * sizeof(PendingFact));
		RegisterXactCallback(metrics_xact_callback, NULL);
		RegisterSubXactCallback(metrics_subxact_callback, NULL);
	}
	else if (npending == maxpending)
	{
		maxpending *= 2;
		pending = repalloc(pending, maxpending * sizeof(PendingFact));
	}
	pending[npending].counter = counter;
	pending[npending].level = GetCurrentTransactionNestLevel();
	pending[npending].n = n;
	npending++;
}

void
bg_metrics_retry(void)
{
	count_at_commit(M_RETRIES, 1);
}

void
bg_metrics_in_doubt(int64 rows)
{
	if (rows > 0)
		count_at_commit(M_IN_DOUBT, (uint64) rows);
}

void
bg_metrics_settled(const char *verdict)
{
	for (int i = 0; i < BG_NUM_VERDICTS; i++)
	{
		if (strcmp(verdict, verdict_names[i]) == 0)
			count_at_commit(M_SETTLED + i, 1);
	}
}

/* ---------------------------------------------------------------------
 * SQL
 * ---------------------------------------------------------------------
 */

#define NCOLS 7

/*
 * A row of the view: metric, its labels (kind, outcome, class, verdict,
 * le; NULL where the metric has no such label) and value.
 */
static void
put_row(Tuplestorestate *store, TupleDesc tupdesc, const char *metric,
		const char *labels[5], double value)
{
	Datum		values[NCOLS];
	bool		nulls[NCOLS];

	values[0] = CStringGetTextDatum(metric);
	nulls[0] = false;
	for (int i = 0; i < 5; i++)
	{
		nulls[1 + i] = (labels[i] == NULL);
		values[1 + i] = labels[i] ? CStringGetTextDatum(labels[i]) : (Datum) 0;
	}
	values[6] = Float8GetDatum(value);
	nulls[6] = false;
	tuplestore_putvalues(store, tupdesc, values, nulls);
}

static double
read_counter(int counter)
{
	return (double) pg_atomic_read_u64(&metrics->counter[counter]);
}

static void
put_histogram(Tuplestorestate *store, TupleDesc tupdesc)
{
	uint64		cumulative = 0;

	for (int b = 0; b < BG_NUM_BUCKETS; b++)
	{
		const char *labels[5] = {NULL, NULL, NULL, NULL, NULL};

		cumulative += pg_atomic_read_u64(&metrics->counter[M_BUCKETS + b]);
		labels[4] = (b < BG_NUM_BOUNDS) ?
			psprintf("%g", bucket_us[b] / 1e6) : "+Inf";
		put_row(store, tupdesc, "billogram_http_duration_seconds_bucket",
				labels, (double) cumulative);
	}
	{
		const char *none[5] = {NULL, NULL, NULL, NULL, NULL};

		/* the count is the +Inf bucket's, read once: they always agree */
		put_row(store, tupdesc, "billogram_http_duration_seconds_count",
				none, (double) cumulative);
		put_row(store, tupdesc, "billogram_http_duration_seconds_sum",
				none, read_counter(M_DURATION_US) / 1e6);
	}
}

Datum
billogram_metric_values(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	Tuplestorestate *store;
	MemoryContext old;
	const char *none[5] = {NULL, NULL, NULL, NULL, NULL};

	if (metrics == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram is not loaded through shared_preload_libraries"),
				 errhint("Add billogram to shared_preload_libraries in postgresql.conf and restart the server.")));
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTupleDescCopy(tupdesc);
	store = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);

	for (int k = 0; k < BG_METRIC_NUM_KINDS; k++)
		for (int o = 0; o < BG_NUM_OUTCOMES; o++)
		{
			const char *labels[5] = {kind_names[k], bg_outcome_kind(o), NULL, NULL, NULL};

			put_row(store, tupdesc, "billogram_requests_total", labels,
					read_counter(M_REQUESTS + k * BG_NUM_OUTCOMES + o));
		}
	for (int c = 0; c < BG_NUM_CLASSES; c++)
	{
		const char *labels[5] = {NULL, NULL, class_names[c], NULL, NULL};

		put_row(store, tupdesc, "billogram_http_responses_total", labels,
				read_counter(M_CLASSES + c));
	}
	put_histogram(store, tupdesc);
	put_row(store, tupdesc, "billogram_retries_total", none,
			read_counter(M_RETRIES));
	put_row(store, tupdesc, "billogram_pauses_total", none,
			read_counter(M_PAUSES));
	put_row(store, tupdesc, "billogram_in_doubt_created_total", none,
			read_counter(M_IN_DOUBT));
	for (int v = 0; v < BG_NUM_VERDICTS; v++)
	{
		const char *labels[5] = {NULL, NULL, NULL, verdict_names[v], NULL};

		put_row(store, tupdesc, "billogram_in_doubt_settled_total", labels,
				read_counter(M_SETTLED + v));
	}

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}
