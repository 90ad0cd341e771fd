/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The billogram background worker: the only process that talks to the
 *	  Billogram API.
 *
 * Registered by the postmaster when the library is preloaded, it takes the
 * requests that backends submit through the channel, runs up to
 * billogram.max_connections of them at once on the HTTP engine, and posts
 * each outcome back.  It does not run during recovery, so a hot standby
 * sends nothing.
 *
 * On SIGTERM it stops taking requests, lets the ones in flight finish (each
 * is bounded by its timeout) so their callers get a real answer, and exits;
 * whatever is still submitted is answered "not sent".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "credentials.h"
#include "guc.h"
#include "http.h"
#include "queue.h"
#include "report.h"
#include "stats.h"
#include "worker.h"

/* Seconds before the postmaster restarts a worker that exited with error. */
#define BG_WORKER_RESTART_SECS	5

/*
 * Free heap glibc may keep rather than give back to the kernel.  Each
 * request allocates and frees a few hundred kB (curl's and jansson's
 * buffers, the executor's); with glibc's default of 128 kB the worker
 * shrank its heap after every request and page-faulted it back in on the
 * next, which perf showed as several percent of its CPU.
 */
#define BG_MALLOC_TRIM_THRESHOLD	(8 * 1024 * 1024)

void
bg_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BG_WORKER_RESTART_SECS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "billogram");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "billogram_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "billogram worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "billogram worker");
	RegisterBackgroundWorker(&worker);
}

/* What a transfer is for; handed to the HTTP engine and back. */
typedef enum BgJobKind
{
	JOB_SYNC,					/* a backend waits in channel slot slotno */
	JOB_QUEUED,					/* a queued journal row */
	JOB_SNAPSHOT				/* GET of an in_doubt row's invoice */
} BgJobKind;

typedef struct BgJob
{
	BgJobKind	kind;
	int			slotno;
	int			timeout_ms;
	int64		request_id;		/* journal row, 0 if none */
	BgCreditPayment payment;
	/* filled in when the transfer is over */
	BgReply		reply;
	char	   *body;
	size_t		body_len;
} BgJob;

static MemoryContext jobs_cxt = NULL;
static List *finished_jobs = NIL;
static bool queue_woken = true;

/*
 * Whether rows a previous worker left in 'sending' have been made in_doubt:
 * done when the journal first becomes usable, at start or once CREATE or
 * ALTER EXTENSION ... UPDATE has made it so.  Nothing can have been sent
 * through a journal this worker could not use, so every 'sending' row then
 * is a previous worker's.
 */
static bool journal_recovered = false;

/* Next look for rows that came from elsewhere (bg_queue_hold_foreign). */
static TimestampTz hold_check_due = 0;
static TimestampTz queue_next_due = 0;

static BgJob *
new_job(BgJobKind kind, const BgCreditPayment *payment, int64 request_id)
{
	BgJob	   *job = MemoryContextAllocZero(jobs_cxt, sizeof(BgJob));

	job->kind = kind;
	job->payment = *payment;
	job->request_id = request_id;
	job->timeout_ms = bg_timeout_ms;
	return job;
}

static void
free_job(BgJob *job)
{
	if (job->body)
		pfree(job->body);
	pfree(job);
}

/* The HTTP engine's callback: keep the outcome until the next batch. */
static void
transfer_finished(void *arg, const BgReply *reply, const char *body, size_t body_len)
{
	BgJob	   *job = (BgJob *) arg;
	MemoryContext old = MemoryContextSwitchTo(jobs_cxt);

	job->reply = *reply;
	if (body_len > 0 && (reply->outcome == BG_OUTCOME_OK ||
						 job->kind == JOB_SNAPSHOT))
	{
		job->body = palloc(body_len + 1);
		memcpy(job->body, body, body_len);
		job->body[body_len] = '\0';
		job->body_len = body_len;
	}
	finished_jobs = lappend(finished_jobs, job);
	MemoryContextSwitchTo(old);
}

/*
 * Append to a list that outlives the batch's transaction: SPI's memory,
 * current during the batch, is gone after SPI_finish().
 */
static List *
keep(List *list, BgJob *job)
{
	MemoryContext old = MemoryContextSwitchTo(jobs_cxt);

	list = lappend(list, job);
	MemoryContextSwitchTo(old);
	return list;
}

static void
start_job(BgJob *job)
{
	if (job->kind == JOB_SNAPSHOT)
		bg_http_start_get_invoice(job, job->payment.billogram_id, job->timeout_ms);
	else
		bg_http_start_credit_payment(job, &job->payment, job->timeout_ms);
}

/* Answer a synchronous caller whose request was never sent. */
static void
refuse_not_installed(int slotno)
{
	BgReply		reply;

	memset(&reply, 0, sizeof(reply));
	reply.outcome = BG_OUTCOME_NOT_INSTALLED;
	strlcpy(reply.message, bg_database, sizeof(reply.message));
	bg_channel_post_reply(slotno, &reply, NULL, 0);
}

/*
 * One batch of database work in one transaction: record the outcome of
 * every finished transfer, journal the synchronous requests just taken and
 * claim due queued rows.  Returns the jobs to start, appends the finished
 * jobs to *done and the snapshots to take to *snapshots.
 *
 * The commit is durable when the batch is about to send anything: 'sending'
 * must be on disk before a request leaves.  A batch that only records
 * outcomes commits asynchronously: if it were lost in a crash, its rows
 * would be found in 'sending' and become in_doubt, never re-sent.
 */
static List *
journal_batch(List *taken, List **done, List **snapshots)
{
	List	   *to_start = NIL;
	ListCell   *lc;
	bool		installed;
	int			capacity;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "billogram: journal batch");

	installed = bg_queue_installed();
	if (installed && !journal_recovered)
	{
		foreach(lc, bg_queue_recover())
		{
			BgQueuedRequest *q = (BgQueuedRequest *) lfirst(lc);

			*snapshots = keep(*snapshots, new_job(JOB_SNAPSHOT, &q->payment, q->id));
		}
		journal_recovered = true;
		hold_check_due = 0;
	}
	if (installed && GetCurrentTimestamp() >= hold_check_due)
	{
		bg_queue_hold_foreign();
		hold_check_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BG_SWEEP_MS);
	}
	if (!installed)
	{
		journal_recovered = false;
		/* nothing to claim until CREATE EXTENSION: just sweep now and then */
		queue_woken = false;
		queue_next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BG_SWEEP_MS);
	}

	foreach(lc, finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SNAPSHOT)
		{
			if (installed)
				bg_queue_save_snapshot(job->request_id, &job->reply,
									   job->body, job->body_len);
			*done = keep(*done, job);
			continue;
		}
		if (installed && job->request_id != 0)
		{
			const char *state = bg_queue_finish(job->request_id,
												job->kind == JOB_SYNC,
												&job->reply, job->body,
												job->body_len);

			bg_stats_outcome_of(state);
			if (job->reply.outcome != BG_OUTCOME_OK)
				bg_stats_error(psprintf("credit payment on %s: %s",
										job->payment.billogram_id,
										job->reply.message));

			if (strcmp(state, "in_doubt") == 0)
				*snapshots = keep(*snapshots,
								  new_job(JOB_SNAPSHOT, &job->payment,
										  job->request_id));
			if (strcmp(state, "pending") == 0)
				queue_woken = true;
		}
		*done = keep(*done, job);
	}
	list_free(finished_jobs);
	finished_jobs = NIL;

	foreach(lc, taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (!installed)
		{
			refuse_not_installed(job->slotno);
			*done = keep(*done, job);
			continue;
		}
		job->request_id = bg_queue_record_sync(&job->payment);
		if (job->timeout_ms <= 0)
		{
			/* its caller's time ran out waiting for a free connection */
			bg_transport_failure(&job->reply,
								 "no connection to the API became free within billogram.timeout",
								 false);
			(void) bg_queue_finish(job->request_id, true, &job->reply, NULL, 0);
			bg_channel_post_reply(job->slotno, &job->reply, NULL, 0);
			*done = keep(*done, job);
			continue;
		}
		to_start = keep(to_start, job);
	}

	capacity = bg_max_connections - bg_http_in_flight() - list_length(to_start);
	if (installed && capacity > 0 &&
		(queue_woken || GetCurrentTimestamp() >= queue_next_due))
	{
		List	   *claimed = bg_queue_claim(capacity);

		foreach(lc, claimed)
		{
			BgQueuedRequest *q = (BgQueuedRequest *) lfirst(lc);

			to_start = keep(to_start, new_job(JOB_QUEUED, &q->payment, q->id));
		}
		/* a full batch means more may be waiting: look again next time */
		queue_woken = (list_length(claimed) == capacity);
		if (!queue_woken)
			queue_next_due = bg_queue_next_due();
	}

	if (to_start == NIL)
		(void) set_config_option("synchronous_commit", "off",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return to_start;
}

/* Synchronous requests waiting in the channel, as many as may start now. */
static List *
take_submitted_requests(void)
{
	List	   *taken = NIL;
	BgTakenRequest req;
	MemoryContext old = MemoryContextSwitchTo(jobs_cxt);
	int			room = bg_max_connections - bg_http_in_flight();

	while (room-- > 0 && bg_http_can_start() && bg_channel_take(&req))
	{
		BgJob	   *job = new_job(JOB_SYNC, &req.payment, 0);

		job->slotno = req.slotno;
		job->timeout_ms = req.timeout_ms;
		taken = lappend(taken, job);
	}
	MemoryContextSwitchTo(old);
	return taken;
}

/*
 * Answer the synchronous callers whose transfers finished.  This comes
 * before the outcome is journaled: the caller should not wait for a commit
 * that changes nothing for it (should the worker die before that commit,
 * the row is found in 'sending' and becomes in_doubt, never re-sent).
 */
static void
answer_sync_callers(void)
{
	ListCell   *lc;

	foreach(lc, finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SYNC)
			bg_channel_post_reply(job->slotno, &job->reply, job->body, job->body_len);
	}
}

static void
free_jobs(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
		free_job((BgJob *) lfirst(lc));
	list_free(jobs);
}

static void
run_batch(void)
{
	List	   *taken = take_submitted_requests();
	List	   *done = NIL;
	List	   *snapshots = NIL;
	List	   *to_start;
	ListCell   *lc;

	if (taken == NIL && finished_jobs == NIL &&
		!(bg_http_can_start() &&
		  (queue_woken || GetCurrentTimestamp() >= queue_next_due)))
		return;

	answer_sync_callers();
	to_start = journal_batch(taken, &done, &snapshots);
	free_jobs(done);
	foreach(lc, to_start)
		start_job((BgJob *) lfirst(lc));
	foreach(lc, snapshots)
		start_job((BgJob *) lfirst(lc));
	list_free(taken);
	list_free(to_start);
	list_free(snapshots);
}

/*
 * How long the event loop may sleep before the queue needs a look: not at
 * all when woken with room to send, never while every connection is busy
 * (a finished transfer wakes the loop anyway).
 */
static long
ms_until_queue_due(void)
{
	if (ShutdownRequestPending || !bg_http_can_start())
		return -1;
	if (queue_woken || finished_jobs != NIL)
		return 0;
	return Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
												  queue_next_due));
}

void
billogram_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bg_database, NULL, 0);
	pgstat_report_appname("billogram worker");

	/*
	 * The worker runs as the bootstrap superuser: no object a database user
	 * created may be picked up by name in its statements.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	bg_load_password_file();

#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
	mallopt(M_TRIM_THRESHOLD, BG_MALLOC_TRIM_THRESHOLD);
#endif

	jobs_cxt = AllocSetContextCreate(TopMemoryContext, "billogram jobs",
									 ALLOCSET_DEFAULT_SIZES);
	bg_channel_attach_worker();
	bg_stats_worker_started();
	bg_http_init(transfer_finished);
	ereport(LOG,
			(errmsg("billogram worker started, API at %s", bg_api_url)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bg_load_password_file();
			bg_http_settings_changed();
		}

		if (ShutdownRequestPending)
		{
			/* record what finished; take nothing new */
			if (finished_jobs != NIL)
			{
				List	   *done = NIL;
				List	   *snapshots = NIL;

				answer_sync_callers();
				(void) journal_batch(NIL, &done, &snapshots);
				free_jobs(done);
			}
			if (bg_http_in_flight() == 0)
				break;
		}
		else
			run_batch();

		(void) bg_http_wait(ms_until_queue_due());
		if (bg_channel_queue_woken())
			queue_woken = true;
	}

	ereport(LOG, (errmsg("billogram worker shutting down")));
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
