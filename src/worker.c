/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The billogram background worker: the only process that talks to the
 *	  Billogram API.  This file is its loop: start, signals, the recovery
 *	  from an ERROR, the wait, reload, statistics, and when the next thing
 *	  is due.
 *
 * Registered by the postmaster when the library is preloaded, it takes the
 * requests that backends submit through the channel, runs up to
 * billogram.max_connections of them at once on the HTTP engine, and posts
 * each outcome back.  A credit payment is journaled as 'sending', and that
 * committed durably whatever synchronous_commit says, before it leaves; a
 * GET of an invoice changes nothing at Billogram, so it is started at once
 * and touches no journal.  It does not run during recovery, so a hot
 * standby sends nothing.
 *
 * On SIGTERM it stops taking requests, lets the ones in flight finish (each
 * is bounded by its timeout) so their callers get a real answer, and exits;
 * whatever is still submitted is answered "not sent".
 *
 * An ERROR does not end it: like the bgwriter it recovers in a sigsetjmp
 * block (aborts the transaction, resets the batch's memory) and goes on,
 * with its transfers in flight and its connections.  What the failed batch
 * was doing decides what happens next: outcomes that could not be journaled
 * are kept and written again with backoff; synchronous requests whose
 * 'sending' row was not committed are not sent and their callers are told.
 * Every statement waits for a lock at most BG_LOCK_TIMEOUT, so a lock on the
 * journal turns into such an error, not into a stall of every payment.  It
 * exits only on FATAL, SIGTERM or postmaster death.
 *
 * The worker's files, as core splits a process into its loop, its work and
 * what others call: worker.c the loop; jobs.c the transfers in flight;
 * intake.c the synchronous callers, their requests taken from the channel
 * and answered; batch.c the batch transaction (claims,
 * settling, readings, recovery of the journal); outcomes.c journaling what
 * finished; worker_memory.c the C heap.  They share worker_int.h and one
 * state, BgWorker; worker.h is what the rest of the extension calls.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "credentials.h"
#include "guc.h"
#include "http.h"
#include "inflight.h"
#include "other_databases.h"
#include "pause.h"
#include "stats.h"
#include "worker.h"
#include "worker_int.h"

/* Seconds before the postmaster restarts a worker that exited with error. */
#define BG_WORKER_RESTART_SECS	5

/*
 * The longest any statement of the worker waits for a lock.  While it waits
 * nothing else moves, not even the transfers in flight, so it is short; a
 * lock held longer fails the batch, which is then retried with backoff.
 */
#define BG_LOCK_TIMEOUT			"1s"

/*
 * How long a finished transfer's outcome may wait to be journaled with the
 * next batch's claims or synchronous requests, rather than in a transaction
 * of its own.  Under load it always shares one; with one synchronous caller
 * at a time this halves the worker's transactions.  It changes nothing for
 * a crash: an outcome committed a moment later, or an asynchronous commit
 * lost, leaves the row in 'sending' either way, and it becomes in_doubt.
 * Callers are answered at once regardless.
 */
#define BG_OUTCOME_DELAY_MS		5

/* Backoff of journal writes that failed: doubling from min to max. */
#define BG_RETRY_MIN_MS			100
#define BG_RETRY_MAX_MS			30000

/*
 * A commit that queued payments wakes the worker, but the claim waits this
 * long, so that the payments of the commits that follow closely share its
 * durable commit: with one claim per committed row, the worker's WAL
 * flushes and those of the sessions inserting the payments queued up
 * behind each other, and a trigger made each INSERT three times slower.
 * Only a claim woken from idle waits; a drain goes on at once.
 */
#define BG_CLAIM_GATHER_MS		2

/* The worker's state (worker_int.h): the one instance, reached as BgWorker */
static BgWorkerState worker_state = {
	.queue_woken = true,
	.unsettled_stale = true,
	.held_call_deadline = DT_NOEND,
};

BgWorkerState *BgWorker = &worker_state;

/*
 * Describe a process of this library that connects to a database once
 * recovery has finished, named name and entered at function.
 */
void
bg_describe_worker(BackgroundWorker *worker, const char *function,
				   const char *name)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "billogram");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", name);
}

void
bg_register_worker(void)
{
	BackgroundWorker worker;

	bg_describe_worker(&worker, "billogram_worker_main", "billogram worker");
	worker.bgw_restart_time = BG_WORKER_RESTART_SECS;
	RegisterBackgroundWorker(&worker);
}

/* The HTTP engine's settings: the billogram.* settings in force now. */
static const BgHttpSettings *
http_settings(void)
{
	static BgHttpSettings settings;

	settings.api_url = bg_api_url;
	settings.api_user = bg_api_user;
	settings.api_password = bg_api_password_in_use();
	settings.ca_file = bg_ca_file;
	settings.allow_insecure_http = bg_allow_insecure_http;
	settings.max_connections = bg_max_connections;
	settings.max_response_kb = bg_max_response_kb;
	return &settings;
}

/*
 * Whether a claim of queued rows is worth a batch now: when at least half
 * the connections are free, or none is busy.  Every claim costs a durable
 * commit before its requests may leave; claiming for each connection as it
 * frees up made that one commit per payment or two.  A queued payment
 * waits a fraction of a round trip more; synchronous calls are taken at
 * once regardless.
 */
static bool
claim_worthwhile(void)
{
	int			room = bgw_room_now();

	if (room <= 0)
		return false;
	/* the probe after a pause goes alone, whatever is still under way */
	return bg_http_in_flight() == 0 || bg_pause_probing() ||
		room >= (bg_max_connections + 1) / 2;
}

/*
 * When the queue is next due a look (in_doubt rows to settle, invoices to
 * read before sending, queued rows to claim).  This is the one rule that
 * the wait (ms_until_due), the decision to run a batch (run_batch) and the
 * batch's claim and readings (bgw_journal_batch, reads_due) all follow.
 *
 * Woken, once done gathering (claim_not_before); else at the journal's
 * next due row or the sweep (queue_next_due), which leaves out the rows
 * that cannot be claimed yet, so that such a row never wakes the worker
 * before it could be claimed; and never before the journal's backoff is
 * over.  DT_NOEND (never) before the journal is recovered, when shutting
 * down, and when a claim is not worth a batch of its own
 * (claim_worthwhile()), unless requests leave with it anyway (riding).
 */
TimestampTz
bgw_queue_due_at(bool riding)
{
	TimestampTz at = BgWorker->queue_next_due;

	if (!BgWorker->journal_recovered || ShutdownRequestPending ||
		(!riding && !claim_worthwhile()))
		return DT_NOEND;
	if (BgWorker->queue_woken)
		at = Min(at, BgWorker->claim_not_before);
	return Max(at, BgWorker->journal_retry_at);
}

/*
 * When a job's outcome must be written even if no other work comes along:
 * after its backoff when a write failed, else BG_OUTCOME_DELAY_MS after it
 * finished (at once when shutting down).
 */
static TimestampTz
outcome_write_by(BgJob *job)
{
	/*
	 * A call held back may be waiting for this job's invoice, which stays
	 * busy until the outcome is written: no waiting to share a batch then.
	 */
	TimestampTz by = (ShutdownRequestPending ||
					  BgWorker->held_call_deadline != DT_NOEND) ?
		job->finished_at :
		TimestampTzPlusMilliseconds(job->finished_at, BG_OUTCOME_DELAY_MS);

	return Max(Max(by, job->retry_at), BgWorker->journal_retry_at);
}

/* When the first outcome must be written, for want of other work */
static TimestampTz
outcomes_due_at(void)
{
	TimestampTz at = DT_NOEND;
	ListCell   *lc;

	foreach(lc, BgWorker->finished_jobs)
		at = Min(at, outcome_write_by((BgJob *) lfirst(lc)));
	return at;
}

/*
 * When the next batch is due for the journal's sake: the recovery of the
 * journal (nothing is in flight before it), an outcome to write, a look at
 * the queue (bgw_queue_due_at()).  A synchronous call taken, or an invoice to
 * look up for one, makes a batch due at once besides (run_batch).
 */
static TimestampTz
batch_due_at(void)
{
	if (!BgWorker->journal_recovered)
		return BgWorker->journal_retry_at;
	return Min(outcomes_due_at(), bgw_queue_due_at(false));
}

TimestampTz
bgw_backoff(int *delay_ms)
{
	*delay_ms = (*delay_ms == 0) ? BG_RETRY_MIN_MS :
		Min(*delay_ms * 2, BG_RETRY_MAX_MS);
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), *delay_ms);
}

/*
 * Flush the statistics the batches gathered (the journal's updates and dead
 * rows, for autovacuum), as PostgreSQL's own workers do after each unit of
 * work.  force: the second of pgstat's rate limit has passed.
 */
static void
report_stats(bool force)
{
	long		next_ms = pgstat_report_stat(force);

	/*
	 * What could not be flushed yet (pgstat flushes at most once a second)
	 * is forced out a second later, not in the 10 s pgstat suggests for an
	 * idle backend: the journal's churn should reach autovacuum while the
	 * worker keeps busy.  Forced, because outside a transaction pgstat
	 * measures the second from the last commit, and an idle worker makes
	 * none.
	 */
	BgWorker->stats_flush_at = (next_ms > 0) ?
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Min(next_ms, 1000)) : 0;
}

/* Returns whether a batch ran (it allocates: see worker_memory.c). */
static bool
run_batch(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *recorded = NIL;
	List	   *to_start;
	ListCell   *lc;

	if (!BgWorker->journal_recovered)
	{
		if (now < batch_due_at())
			return false;
		bgw_recover_journal();
		return true;
	}

	/* callers first: nothing they wait for depends on the journal */
	bgw_answer_sync_callers();
	BgWorker->batch_taken = bgw_take_submitted_requests();
	bgw_start_sync_reads();
	if (BgWorker->batch_taken == NIL && !bg_inflight_any_wanted() &&
		now < batch_due_at())
		return false;

	to_start = bgw_journal_batch(&recorded);

	/* the outcomes written and the refused callers are done with */
	bgw_free_jobs(recorded);
	foreach(lc, BgWorker->batch_taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->answered)
			bgw_free_job(job);
	}
	BgWorker->batch_taken = NIL;

	bgw_start_committed(to_start);
	MemoryContextReset(BgWorker->batch_cxt);
	report_stats(false);
	return true;
}

/*
 * After an ERROR, with the transaction aborted: finish or undo what the
 * batch in progress was doing, so the loop can go on.  why and sqlerrcode
 * are the error's.
 */
static void
recover_from_error(const char *why, int sqlerrcode)
{
	char		reason[BG_REPLY_TEXT_LEN];
	BgReply		reply;
	ListCell   *lc;

	bg_stats_error(psprintf("worker error, SQLSTATE %s (the server log has its message)",
							unpack_sql_state(sqlerrcode)));
	if (BgWorker->batch_answering)
	{
		/* the reply did not get through (no DSM segment?): the bare outcome */
		BgJob	   *job = BgWorker->batch_answering;

		BgWorker->batch_answering = NULL;
		job->answered = true;
		memset(&reply, 0, sizeof(reply));
		reply.outcome = BG_OUTCOME_WORKER;
		reply.may_have_reached = job->reply.may_have_reached;
		snprintf(reply.message, sizeof(reply.message),
				 "its reply could not be handed over: %s", why);
		bgw_post_reply(job, &reply, NULL, 0);
	}

	/*
	 * The outcomes written together failed: each is written alone from now
	 * on (write_alone()), so that the one whose row cannot be written backs
	 * off by itself; anything else, and a lock that fails every write
	 * alike, backs off the whole journal.
	 */
	if (BgWorker->batch_writing_together == NIL ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
		BgWorker->journal_retry_at = bgw_backoff(&BgWorker->journal_retry_ms);
	foreach(lc, BgWorker->batch_writing_together)
	{
		/* kept in finished_jobs, written alone next to find the culprit */
		((BgJob *) lfirst(lc))->write_alone = true;
	}
	BgWorker->batch_writing_together = NIL;
	if (!BgWorker->journal_recovered)
		ereport(LOG,
				(errmsg("billogram: recovery of the journal failed; next try in %d ms",
						BgWorker->journal_retry_ms)));

	/* no 'sending' row was committed for these: they are not sent */
	snprintf(reason, sizeof(reason), "%s.", why);
	foreach(lc, BgWorker->batch_taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (!job->answered)
			bgw_refuse(job, BG_OUTCOME_NOT_RECORDED, reason);
		bgw_free_job(job);
	}
	bgw_free_jobs(BgWorker->batch_created);

	/* committed as 'sending' but never handed to curl: certainly not sent */
	snprintf(reason, sizeof(reason), "the worker could not start the request: %s", why);
	foreach(lc, BgWorker->batch_starting)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->started)
			continue;
		bg_transport_failure(&reply, reason, false);
		bgw_transfer_finished(job, &reply, NULL, 0);
	}

	BgWorker->batch_taken = NIL;
	BgWorker->batch_created = NIL;
	BgWorker->batch_starting = NIL;
	MemoryContextReset(BgWorker->batch_cxt);
}

/*
 * How long the event loop may sleep before something is due: the next
 * batch (batch_due_at(): never for the queue while every connection is
 * busy), statistics to flush, a call held back, the end of a pause.  A
 * finished transfer or a new request wakes the loop anyway.
 */
static long
ms_until_due(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz wake = batch_due_at();

	if (BgWorker->stats_flush_at != 0)
		wake = Min(wake, BgWorker->stats_flush_at);
	/*
	 * a call held back on a busy invoice goes as soon as the invoice is
	 * free, or is answered when its time is up
	 */
	if (BgWorker->held_call_deadline != DT_NOEND && BgWorker->invoice_freed)
		wake = now;
	/* a call waits for its invoice to be looked up or read */
	if (bg_inflight_any_wanted() && bgw_room_now() > 0)
		wake = now;
	wake = Min(wake, BgWorker->held_call_deadline);
	/* the end of a pause is when sending may start again */
	wake = Min(wake, bg_pause_ends());
	/* an idle worker gives its free heap back */
	if (bg_http_in_flight() == 0)
		wake = Min(wake, bgw_memory_due_at());
	if (wake == DT_NOEND)
		return -1;
	return Max(0, TimestampDifferenceMilliseconds(now, wake));
}

void
billogram_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bg_database, NULL, 0);
	pgstat_report_appname("billogram worker");
	/* overrides any ALTER ROLE or ALTER DATABASE setting: see its comment */
	SetConfigOption("lock_timeout", BG_LOCK_TIMEOUT, PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker runs as the bootstrap superuser: no object a database user
	 * created may be picked up by name in its statements.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Every statement of the worker finds its rows through an index, in
	 * the index's order (by id, or the pending and state indexes), and
	 * their plans are made once and kept (journal.c).  A plan made while
	 * the journal is empty, just after CREATE EXTENSION or a TRUNCATE, would
	 * otherwise scan or sort all of it (a hash join over a sequential scan;
	 * a claim that sorts every pending row to take the first eight), and
	 * be kept until autovacuum happens to invalidate it: that made a first
	 * drain of 20,000 payments seven times slower.
	 */
	SetConfigOption("enable_seqscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_bitmapscan", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_sort", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_hashjoin", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_mergejoin", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * What a disabled plan node is charged makes any plan that still needs
	 * one (the evidence query of billogram_settle sorts a handful of rows)
	 * look expensive enough to be JIT-compiled: 200 to 300 ms of
	 * compilation for a statement that runs in a fraction of a
	 * millisecond, during which no call is taken.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	bg_load_password_file();

	bgw_memory_init();

	BgWorker->jobs_cxt = AllocSetContextCreate(TopMemoryContext,
											   "billogram jobs",
											   ALLOCSET_DEFAULT_SIZES);
	BgWorker->batch_cxt = AllocSetContextCreate(TopMemoryContext,
												"billogram batch",
												ALLOCSET_DEFAULT_SIZES);
	bg_channel_attach_worker(bgw_call_lost);
	bg_inflight_init();
	bg_stats_worker_started();
	bg_http_init(http_settings(), bgw_transfer_answered);
	ereport(LOG,
			(errmsg("billogram: worker started, API at %s", bg_api_url)));

	/*
	 * An ERROR anywhere in the loop lands here, as in the bgwriter: report
	 * it, clean up, and go on.  The transfers in flight are curl's, outside
	 * any transaction, and go on too.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		ErrorData  *edata;

		/* since not using PG_TRY, must reset error stack by hand */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		disable_all_timeouts(false);
		QueryCancelPending = false;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		EmitErrorReport();
		AbortCurrentTransaction();
		LWLockReleaseAll();
		pgstat_report_wait_end();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();

		recover_from_error(edata->message, edata->sqlerrcode);
		FreeErrorData(edata);
		RESUME_INTERRUPTS();
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		bool		worked;

		CHECK_FOR_INTERRUPTS();

		/* once, and not again if it failed */
		if (!BgWorker->other_databases_checked)
		{
			BgWorker->other_databases_checked = true;
			bg_check_other_databases();
		}

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bg_load_password_file();
			bg_http_settings_changed(http_settings());
			/* new credentials may let queued payments go */
			BgWorker->warned_no_credentials = false;
			BgWorker->queue_woken = true;
		}

		/* on shutdown: record what finished, take and claim nothing new */
		worked = run_batch();
		if (ShutdownRequestPending && bg_http_in_flight() == 0)
			break;
		bgw_memory_after_turn(worked);

		if (BgWorker->stats_flush_at != 0 &&
			GetCurrentTimestamp() >= BgWorker->stats_flush_at)
			report_stats(true);

		(void) bg_http_wait(ms_until_due());
		if (bg_channel_queue_woken())
		{
			/* an operator's resolution or a callback may free an invoice */
			BgWorker->unsettled_stale = true;
			if (!BgWorker->queue_woken)
			{
				BgWorker->queue_woken = true;
				BgWorker->claim_not_before =
					TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												BG_CLAIM_GATHER_MS);
			}
		}
	}

	ereport(LOG, (errmsg("billogram: worker shutting down")));
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
