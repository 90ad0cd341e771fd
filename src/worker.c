/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The billogram background worker: the only process that talks to the
 *	  Billogram API.
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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "storage/lwlock.h"
#include "utils/timeout.h"
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
#include "inflight.h"
#include "journal.h"
#include "other_databases.h"
#include "pause.h"
#include "report.h"
#include "stats.h"
#include "worker.h"

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
	JOB_SYNC,					/* a backend waits in channel slot slotno;
								 * its request says what it is */
	JOB_QUEUED,					/* a queued journal row */
	JOB_SNAPSHOT,				/* GET of an in_doubt row's invoice, to settle it */
	JOB_READ					/* GET of an invoice before its next payment
								 * goes, for the ledger (verify_reason) */
} BgJobKind;

typedef struct BgJob
{
	BgJobKind	kind;
	int			slotno;
	int			timeout_ms;
	int64		request_id;		/* journal row, 0 if none */
	BgCreditPayment payment;
	BgRequest	request;		/* what is sent */
	bool		started;		/* handed to the HTTP engine */
	bool		counted;		/* counted in flight on its invoice (inflight.c) */
	/* filled in when the transfer is over */
	BgReply		reply;
	char	   *body;
	size_t		body_len;
	TimestampTz finished_at;
	bool		answered;		/* its synchronous caller has been answered */
	/*
	 * When journaling its outcome failed: written alone from then on (so
	 * that a row that cannot be written holds up no other), not again
	 * before retry_at.
	 */
	bool		write_alone;
	TimestampTz retry_at;
	int			retry_ms;
} BgJob;

/*
 * A commit that queued payments wakes the worker, but the claim waits this
 * long, so that the payments of the commits that follow closely share its
 * durable commit: with one claim per committed row, the worker's WAL
 * flushes and those of the sessions inserting the payments queued up
 * behind each other, and a trigger made each INSERT three times slower.
 * Only a claim woken from idle waits; a drain goes on at once.
 */
#define BG_CLAIM_GATHER_MS		2

/*
 * Everything the worker keeps between one turn of its loop and the next.
 * There is one, BgWorker; every file of the worker reaches it the same way.
 */
typedef struct BgWorkerState
{
	/*
	 * Jobs live in jobs_cxt until freed one by one; the lists of a batch in
	 * batch_cxt, reset when the batch ends or fails.
	 */
	MemoryContext jobs_cxt;
	MemoryContext batch_cxt;

	/* finished transfers whose outcome is not journaled yet (in jobs_cxt) */
	List	   *finished_jobs;

	/*
	 * The queue.  queue_woken: something may be claimable now (a commit
	 * that queued payments, an outcome, a reload); a claim woken from idle
	 * waits until claim_not_before (BG_CLAIM_GATHER_MS).  queue_next_due:
	 * when, not woken, the queue is next looked at (the journal's next due
	 * row, or the sweep).
	 */
	bool		queue_woken;
	TimestampTz claim_not_before;
	TimestampTz queue_next_due;

	/*
	 * Whether the journal was usable at the last batch.  Rows a previous
	 * worker left in 'sending' are made in_doubt when it becomes usable: at
	 * start (recover_journal) or once CREATE or ALTER EXTENSION ... UPDATE
	 * has made it so (journal_batch).  Nothing can have been sent through a
	 * journal this worker could not use, so every 'sending' row then is a
	 * previous worker's.
	 */
	bool		journal_was_ready;

	/* next look for rows that came from elsewhere (bg_journal_hold_foreign) */
	TimestampTz hold_check_due;

	/*
	 * What the batch in progress has done that an ERROR must undo or
	 * finish: the synchronous requests it took from the channel
	 * (batch_taken), the jobs it created (batch_created), the jobs
	 * committed as 'sending' but not yet started (batch_starting), the
	 * finished jobs whose outcomes it was writing together
	 * (batch_writing_together) and the job whose caller it was answering
	 * (batch_answering).
	 */
	List	   *batch_taken;
	List	   *batch_created;
	List	   *batch_starting;
	List	   *batch_writing_together;
	BgJob	   *batch_answering;

	/*
	 * Backoff of the journal as a whole (claims, recovery), after a failed
	 * batch nobody in particular could be blamed for, such as a lock
	 * timeout: nothing is written before journal_retry_at, and the next
	 * failure doubles journal_retry_ms.  journal_recovered: the rows a
	 * previous worker left in 'sending' have been dealt with
	 * (recover_journal); no call is taken before.
	 */
	TimestampTz journal_retry_at;
	int			journal_retry_ms;
	bool		journal_recovered;

	/* when pending statistics are next due to be flushed; 0 if none pending */
	TimestampTz stats_flush_at;

	/* whether other databases were looked at for payments nobody sends */
	bool		other_databases_checked;

	/* logged once per configuration: queued payments wait for credentials */
	bool		warned_no_credentials;

	/*
	 * The invoices being settled may have changed other than by the
	 * worker's own doing (an operator's resolution, a callback, a new
	 * worker): read them from the journal at the next batch.
	 */
	bool		unsettled_stale;

	/*
	 * When the earliest synchronous call held back on a busy invoice is up
	 * (DT_NOEND: none is), and whether an invoice became free since calls
	 * were last taken, so that one held back may go now.
	 */
	TimestampTz held_call_deadline;
	bool		invoice_freed;
} BgWorkerState;

static BgWorkerState worker_state = {
	.queue_woken = true,
	.unsettled_stale = true,
	.held_call_deadline = DT_NOEND,
};

/* The worker's state: the one instance */
BgWorkerState *BgWorker = &worker_state;

static BgJob *
new_job(BgJobKind kind, const BgCreditPayment *payment, int64 request_id)
{
	BgJob	   *job = MemoryContextAllocZero(BgWorker->jobs_cxt, sizeof(BgJob));

	job->kind = kind;
	job->payment = *payment;
	job->request_id = request_id;
	job->timeout_ms = bg_timeout_ms;
	/* a synchronous job gets the request its caller built: new_sync_job() */
	if (kind == JOB_SNAPSHOT || kind == JOB_READ)
		bg_request_get_invoice(&job->request, payment->billogram_id);
	else
		bg_request_credit_payment(&job->request, payment);
	return job;
}

/* A payment leaves on its invoice: no other may until it is over. */
static void
count_in_flight(BgJob *job)
{
	bg_inflight_add(job->payment.billogram_id);
	job->counted = true;
}

/* A request taken from the channel: it runs what its caller built. */
static BgJob *
new_sync_job(const BgTakenRequest *taken)
{
	BgJob	   *job = MemoryContextAllocZero(BgWorker->jobs_cxt, sizeof(BgJob));

	job->kind = JOB_SYNC;
	job->slotno = taken->slotno;
	job->timeout_ms = taken->timeout_ms;
	job->request = taken->request;
	job->payment = taken->payment;
	return job;
}

/* A synchronous GET: not journaled, done with once its caller has the reply */
static bool
is_sync_read(const BgJob *job)
{
	return job->kind == JOB_SYNC &&
		job->request.kind != BG_REQUEST_CREDIT_PAYMENT;
}

static void
free_job(BgJob *job)
{
	if (job->counted)
	{
		bg_inflight_remove(job->payment.billogram_id);
		BgWorker->invoice_freed = true;
	}
	if (job->body)
		pfree(job->body);
	pfree(job);
}

/* The HTTP engine's callback: keep the outcome until the next batch. */
static void
transfer_finished(void *arg, const BgReply *reply, const char *body, size_t body_len)
{
	BgJob	   *job = (BgJob *) arg;
	MemoryContext old = MemoryContextSwitchTo(BgWorker->jobs_cxt);

	job->reply = *reply;
	job->finished_at = GetCurrentTimestamp();
	if (body_len > 0 && (reply->outcome == BG_OUTCOME_OK ||
						 job->kind == JOB_SNAPSHOT || job->kind == JOB_READ))
	{
		job->body = palloc(body_len + 1);
		memcpy(job->body, body, body_len);
		job->body[body_len] = '\0';
		job->body_len = body_len;
	}
	BgWorker->finished_jobs = lappend(BgWorker->finished_jobs, job);
	MemoryContextSwitchTo(old);
}

/*
 * The HTTP engine's report of a finished transfer: the pause (pause.c)
 * hears of the answer, then the job is finished.
 */
static void
transfer_answered(void *job, const BgReply *reply, const BgTransferFacts *facts,
				  const char *body, size_t body_len)
{
	bg_pause_answered(reply, facts->started_at, facts->probe);
	transfer_finished(job, reply, body, body_len);
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

/* How many transfers may start now: free connections, as the pause allows. */
static int
room_now(void)
{
	return bg_pause_room(bg_http_room());
}

/*
 * Append to a list of the batch: it outlives the batch's transaction (SPI's
 * memory, current during the batch, is gone after SPI_finish()) and is
 * freed with batch_cxt when the batch ends or fails.
 */
static List *
keep(List *list, BgJob *job)
{
	MemoryContext old = MemoryContextSwitchTo(BgWorker->batch_cxt);

	list = lappend(list, job);
	MemoryContextSwitchTo(old);
	return list;
}

/*
 * Append the jobs of more to list, in batch_cxt: list_concat() copies into
 * the current context when list is empty, and during a batch that is SPI's,
 * gone at SPI_finish() (which once lost the jobs of a claim after its rows
 * were committed as 'sending').
 */
static List *
keep_all(List *list, List *more)
{
	MemoryContext old = MemoryContextSwitchTo(BgWorker->batch_cxt);

	list = list_concat(list, more);
	MemoryContextSwitchTo(old);
	return list;
}

/* A job the batch made: freed by the error recovery if the batch fails. */
static BgJob *
new_batch_job(BgJobKind kind, const BgCreditPayment *payment, int64 request_id)
{
	BgJob	   *job = new_job(kind, payment, request_id);

	BgWorker->batch_created = keep(BgWorker->batch_created, job);
	return job;
}

/*
 * Hand a job to libcurl.  A synchronous caller who stopped waiting before
 * this moment was told that nothing was sent, and nothing is: the job
 * finishes unsent, and a payment's row, if it has one, says failed.
 */
static void
start_job(BgJob *job)
{
	bool		probe;

	if (job->kind == JOB_SYNC && !bg_channel_hand_over(job->slotno))
	{
		BgReply		reply;

		bg_transport_failure(&reply, "its caller stopped waiting before it was sent",
							 false);
		job->started = true;	/* dealt with: it is finished, unsent */
		transfer_finished(job, &reply, NULL, 0);
		return;
	}
	probe = bg_pause_probing();
	bg_http_start(job, &job->request, job->timeout_ms, probe);
	if (probe)
		bg_pause_probe_started();
	job->started = true;
}

static void
answer(BgJob *job, const BgReply *reply, const char *body, size_t body_len)
{
	BgWorker->batch_answering = job;
	bg_channel_post_reply(job->slotno, reply, body, body_len);
	job->answered = true;
	BgWorker->batch_answering = NULL;
}

/* Answer a synchronous caller whose request is not sent, with outcome. */
static void
refuse(BgJob *job, BgOutcome outcome, const char *why)
{
	BgReply		reply;

	memset(&reply, 0, sizeof(reply));
	reply.outcome = outcome;
	strlcpy(reply.message, why, sizeof(reply.message));
	answer(job, &reply, NULL, 0);
}

/* Why no credentials can be sent, naming the setting; NULL if they can. */
static const char *
missing_credentials(void)
{
	if (bg_api_user == NULL || bg_api_user[0] == '\0')
		return "billogram.api_user is empty";
	if (bg_api_password_in_use()[0] != '\0')
		return NULL;
	if (bg_api_password_file && bg_api_password_file[0] != '\0')
		return "the file named by billogram.api_password_file could not be used (the server log says why)";
	return "billogram.api_password is empty";
}

static TimestampTz
backoff(int *delay_ms)
{
	*delay_ms = (*delay_ms == 0) ? BG_RETRY_MIN_MS :
		Min(*delay_ms * 2, BG_RETRY_MAX_MS);
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), *delay_ms);
}

/*
 * What became of a job whose outcome is now journaled.  An in_doubt row is
 * to be settled: its invoice stays busy, and the next claim takes it to
 * read the invoice (bg_journal_settle_due).
 */
static void
outcome_recorded(BgJob *job, BgJournalState state)
{
	bg_stats_outcome_of(state);
	if (job->reply.outcome != BG_OUTCOME_OK)
		bg_stats_error(psprintf("credit payment on %s: %s",
								job->payment.billogram_id,
								job->reply.message));
	if (state == BG_STATE_IN_DOUBT)
		bg_inflight_mark_unsettled(job->payment.billogram_id);
	/*
	 * a retry or an in_doubt row to read is due, or the invoice is free for
	 * the payment queued behind this one: the queue's next due time leaves
	 * such rows out (bg_journal_next_due)
	 */
	BgWorker->queue_woken = true;
}

/* Journal the outcomes of jobs (credit payments) in one statement. */
static void
write_outcomes(List *jobs)
{
	int			n = list_length(jobs);
	BgFinished *finished = palloc0(n * sizeof(BgFinished));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		finished[i].id = job->request_id;
		finished[i].is_sync = (job->kind == JOB_SYNC);
		finished[i].reply = &job->reply;
		finished[i].invoice = bg_journal_invoice_text(&job->reply, job->body);
		finished[i].summary = bg_journal_summary_text(&job->reply, job->body);
		i++;
	}
	bg_journal_record_outcomes(finished, n);
	i = 0;
	foreach(lc, jobs)
	{
		BgFinished *f = &finished[i++];

		/* a row purged meanwhile is counted but has no snapshot to take */
		if (f->recorded)
			outcome_recorded((BgJob *) lfirst(lc), f->state);
		else
			bg_stats_outcome_of(f->state);
	}
}

/*
 * Readings of invoices, in one statement: each invoice joins the ledger and
 * its payments may go, queued (the claim) or synchronous (the calls waiting
 * on it); a failed one is what those calls are told.
 */
static void
write_readings(List *jobs)
{
	int			n = list_length(jobs);
	BgRead	   *reads = palloc0(n * sizeof(BgRead));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		reads[i].billogram_id = job->payment.billogram_id;
		reads[i].reply = &job->reply;
		reads[i].body = job->body;
		i++;
	}
	bg_journal_reads_recorded(reads, n);
	for (i = 0; i < n; i++)
	{
		if (reads[i].known)
			bg_inflight_note_known(reads[i].billogram_id);
		else
			bg_inflight_read_failed(reads[i].billogram_id, reads[i].reply);
	}
	BgWorker->queue_woken = true;
}

/*
 * What write_alone() writes: a snapshot and its settlement, a reading
 * before sending, or an outcome.
 */
static void
write_one(BgJob *job)
{
	if (job->kind == JOB_READ)
		write_readings(list_make1(job));
	else if (job->kind == JOB_SNAPSHOT)
	{
		bg_journal_save_snapshot(job->request_id, &job->reply,
								 bg_journal_invoice_text(&job->reply, job->body));
		if (bg_journal_settle(job->request_id, &job->reply, job->body))
		{
			/* a final verdict frees the invoice for what is queued on it */
			BgWorker->unsettled_stale = true;
			BgWorker->queue_woken = true;
		}
	}
	else
		write_outcomes(list_make1(job));
}

/*
 * Write one job's row in a subtransaction of its own, so that a row that
 * cannot be written (a constraint, a trigger, a lock) fails nothing else of
 * the batch: not the other outcomes, nor the synchronous calls journaled
 * with them.  On an error the job backs off alone; returns whether it was
 * written.
 */
static bool
write_alone(BgJob *job)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool written = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		write_one(job);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		bg_stats_error(edata->message);
		job->write_alone = true;
		job->retry_at = backoff(&job->retry_ms);
		ereport(LOG,
				(errmsg("billogram worker: the %s of request %lld is not recorded yet; next try in %d ms",
						job->kind == JOB_SNAPSHOT ? "invoice read" : "outcome",
						(long long) job->request_id, job->retry_ms),
				 errdetail("%s", edata->message)));
		FreeErrorData(edata);
		written = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return written;
}

/*
 * Journal what finished and is due: the outcomes of credit payments
 * together, in one statement; snapshots, and outcomes that failed to be
 * written before, one by one (write_alone()).  Returns the jobs written;
 * the ones not due yet, or not written, are appended to *waiting.
 */
static List *
record_finished(bool installed, bool journal_due, TimestampTz now,
				List **waiting)
{
	List	   *recorded = NIL;
	List	   *together = NIL;
	List	   *readings = NIL;
	ListCell   *lc;

	foreach(lc, BgWorker->finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (!journal_due || job->retry_at > now)
		{
			*waiting = keep(*waiting, job);
			continue;
		}
		recorded = keep(recorded, job);
		if (!installed ||
			(job->kind != JOB_SNAPSHOT && job->kind != JOB_READ &&
			 job->request_id == 0))
			continue;
		if (job->kind == JOB_READ && !job->write_alone)
			readings = keep(readings, job);
		else if (job->kind == JOB_SNAPSHOT || job->write_alone)
		{
			if (!write_alone(job))
			{
				/* kept, and written later than the others */
				recorded = list_delete_last(recorded);
				*waiting = keep(*waiting, job);
			}
		}
		else
			together = keep(together, job);
	}
	if (together != NIL)
	{
		BgWorker->batch_writing_together = together;
		write_outcomes(together);
		BgWorker->batch_writing_together = NIL;
	}
	if (readings != NIL)
	{
		/* on an error, each is written alone from then on, as outcomes are */
		BgWorker->batch_writing_together = readings;
		write_readings(readings);
		BgWorker->batch_writing_together = NIL;
	}
	return recorded;
}

/*
 * Answer a call whose idempotency key was used before, from what the
 * journal says of the request that used it: that request's invoice when it
 * was the same payment and is done with one kept, else a refusal that
 * bg_report_key_used() words from the record.  Nothing is sent.
 */
static void
answer_key_used(BgJob *job, const BgKeyUse *use)
{
	BgReply		reply;
	BgCallRecord record;
	char	   *body = NULL;
	size_t		body_len = 0;

	memset(&reply, 0, sizeof(reply));
	memset(&record, 0, sizeof(record));
	record.request_id = use->request_id;
	record.repeated = true;
	record.same_payment = use->same_payment;
	strlcpy(record.state, use->state, sizeof(record.state));
	strlcpy(record.sqlstate, use->sqlstate, sizeof(record.sqlstate));
	if (use->same_payment && use->response != NULL &&
		strcmp(use->state, bg_journal_state_name(BG_STATE_DONE)) == 0)
	{
		/* the caller reads a body as UTF-8, as Billogram sends it */
		body = pg_server_to_any(use->response, (int) strlen(use->response),
								PG_UTF8);
		body_len = strlen(body);
		reply.outcome = BG_OUTCOME_OK;
		reply.data_offset = 0;
		reply.data_len = body_len;
	}
	else
	{
		reply.outcome = BG_OUTCOME_KEY_USED;
		strlcpy(reply.message, use->message ? use->message : "", sizeof(reply.message));
		strlcpy(reply.status, use->status ? use->status : "", sizeof(reply.status));
		strlcpy(reply.field, use->field ? use->field : "", sizeof(reply.field));
	}
	bg_channel_set_record(job->slotno, &record);
	answer(job, &reply, body, body_len);
}

/*
 * Record the idempotency key of a synchronous call in the batch's
 * transaction, before anything is sent, in a subtransaction of its own:
 * a key taken already, or one whose first use is still being committed by
 * another transaction (a lock wait), must not fail the other calls of the
 * batch.  Returns whether the call may go on; if not, it is answered.
 */
static bool
claim_key_alone(BgJob *job)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	BgKeyUse	use;
	volatile bool claimed = false;
	volatile bool failed = false;
	char		why[BG_REPLY_TEXT_LEN];

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		claimed = bg_journal_claim_key(bg_journal_opened(), &job->payment, 0,
									   &use);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		snprintf(why, sizeof(why), "%s.", edata->message);
		FreeErrorData(edata);
		failed = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;

	if (failed)
		refuse(job, BG_OUTCOME_NOT_RECORDED, why);
	else if (!claimed)
		answer_key_used(job, &use);
	return claimed && !failed;
}

/*
 * Journal the synchronous requests taken, in one statement; returns those
 * to start.
 */
static List *
record_sync_requests(bool installed, const char *no_credentials)
{
	List	   *to_record = NIL;
	List	   *to_start = NIL;
	const BgCreditPayment **payments;
	int64	   *ids;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, BgWorker->batch_taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		/* start_sync_reads() has taken the GETs out */
		Assert(job->request.kind == BG_REQUEST_CREDIT_PAYMENT);
		if (!installed)
			refuse(job, BG_OUTCOME_NOT_INSTALLED, bg_database);
		else if (no_credentials)
		{
			/* Billogram would answer 401: say why without asking it */
			refuse(job, BG_OUTCOME_NO_CREDENTIALS, no_credentials);
		}
		else if (job->payment.idempotency_key[0] == '\0' ||
				 claim_key_alone(job))
			to_record = keep(to_record, job);
	}
	if (to_record == NIL)
		return NIL;

	payments = palloc(list_length(to_record) * sizeof(BgCreditPayment *));
	ids = palloc(list_length(to_record) * sizeof(int64));
	foreach(lc, to_record)
		payments[i++] = &((BgJob *) lfirst(lc))->payment;
	bg_journal_insert_sync(payments, list_length(to_record), ids);
	bg_journal_bind_keys(payments, ids, list_length(to_record));

	i = 0;
	foreach(lc, to_record)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		job->request_id = ids[i++];
		if (job->timeout_ms <= 0)
		{
			/* its caller's time ran out waiting for a free connection */
			bg_transport_failure(&job->reply,
								 "no connection to the API became free within billogram.timeout",
								 false);
			write_outcomes(list_make1(job));
			answer(job, &job->reply, NULL, 0);
			continue;
		}
		to_start = keep(to_start, job);
	}
	return to_start;
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
	int			room = room_now();

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
 * batch's claim and readings (journal_batch, reads_due) all follow.
 *
 * Woken, once done gathering (claim_not_before); else at the journal's
 * next due row or the sweep (queue_next_due), which leaves out the rows
 * that cannot be claimed yet, so that such a row never wakes the worker
 * before it could be claimed; and never before the journal's backoff is
 * over.  DT_NOEND (never) before the journal is recovered, when shutting
 * down, and when a claim is not worth a batch of its own
 * (claim_worthwhile()), unless requests leave with it anyway (riding).
 */
static TimestampTz
queue_due_at(bool riding)
{
	TimestampTz at = BgWorker->queue_next_due;

	if (!BgWorker->journal_recovered || ShutdownRequestPending ||
		(!riding && !claim_worthwhile()))
		return DT_NOEND;
	if (BgWorker->queue_woken)
		at = Min(at, BgWorker->claim_not_before);
	return Max(at, BgWorker->journal_retry_at);
}

/* Claim due queued rows for up to capacity free connections. */
static List *
claim_queued(int capacity, const char *no_credentials, TimestampTz now)
{
	List	   *to_start = NIL;
	List	   *claimed;
	ListCell   *lc;

	if (no_credentials)
	{
		/* they stay pending; a reload with credentials wakes us */
		if (!BgWorker->warned_no_credentials)
			ereport(WARNING,
					(errmsg("billogram worker: queued payments are not sent: %s",
							no_credentials),
					 errhint(BG_CREDENTIALS_HINT)));
		BgWorker->warned_no_credentials = true;
		BgWorker->queue_woken = false;
		BgWorker->queue_next_due = TimestampTzPlusMilliseconds(now, BG_SWEEP_MS);
		return NIL;
	}
	claimed = bg_journal_claim(capacity);
	foreach(lc, claimed)
	{
		BgQueuedRequest *q = (BgQueuedRequest *) lfirst(lc);

		BgJob	   *job = new_batch_job(JOB_QUEUED, &q->payment, q->id);

		count_in_flight(job);
		to_start = keep(to_start, job);
	}
	/* a full batch means more may be waiting: look again next time */
	BgWorker->queue_woken = (list_length(claimed) == capacity);
	BgWorker->claim_not_before = 0;
	if (!BgWorker->queue_woken)
		BgWorker->queue_next_due = bg_journal_next_due();
	return to_start;
}

/*
 * The in_doubt rows whose invoice is due to be read again, as GETs for up
 * to capacity free connections.  A GET is safe to repeat, so the reading
 * is only put off meanwhile, by the GET's timeout and a margin: a worker
 * that stops before the verdict reads the invoice again then.
 */
static List *
settle_due(int capacity)
{
	List	   *checks = NIL;
	ListCell   *lc;

	foreach(lc, bg_journal_settle_due(capacity, bg_timeout_ms / 1000 + 10))
	{
		BgQueuedRequest *q = (BgQueuedRequest *) lfirst(lc);

		checks = keep(checks, new_batch_job(JOB_SNAPSHOT, &q->payment, q->id));
	}
	return checks;
}

/* A reading of an invoice before its next payment goes (JOB_READ). */
static BgJob *
read_job(const char *billogram_id)
{
	BgCreditPayment payment;
	BgJob	   *job;

	memset(&payment, 0, sizeof(payment));
	strlcpy(payment.billogram_id, billogram_id, sizeof(payment.billogram_id));
	job = new_batch_job(JOB_READ, &payment, 0);
	count_in_flight(job);
	return job;
}

/*
 * The invoices to read before their next payment goes, as GETs for up to
 * capacity free connections: queued rows with a verify_reason (their
 * payment is put off meanwhile, as an in_doubt row's reading is), and the
 * invoices synchronous calls wait on that the ledger does not know.  A
 * reading counts as a payment in flight on its invoice, so that nothing
 * else leaves on it before the reading is recorded.
 */
static List *
reads_due(int capacity)
{
	List	   *reads = NIL;
	List	   *wanted = bg_inflight_take_wanted();
	ListCell   *lc;

	foreach(lc, bg_journal_ledger_known(wanted))
	{
		bg_inflight_note_known((const char *) lfirst(lc));
		BgWorker->invoice_freed = true;
	}
	foreach(lc, wanted)
	{
		const char *id = (const char *) lfirst(lc);

		if (capacity - list_length(reads) <= 0)
		{
			bg_inflight_want(id);
			continue;
		}
		if (!bg_inflight_known(id) && !bg_inflight_busy(id))
			reads = keep(reads, read_job(id));
	}
	if (capacity - list_length(reads) > 0 &&
		GetCurrentTimestamp() >= queue_due_at(true))
	{
		foreach(lc, bg_journal_reads_due(capacity - list_length(reads),
										 bg_timeout_ms / 1000 + 10))
			reads = keep(reads, read_job((const char *) lfirst(lc)));
	}
	return reads;
}

/*
 * How durable the commit of a batch must be, set for that transaction only.
 *
 * A batch after which requests leave commits durably whatever
 * synchronous_commit the worker's session was given (postgresql.conf,
 * ALTER SYSTEM, ALTER DATABASE, ALTER ROLE): its commit of 'sending' is
 * what keeps a crash after the POST from sending the payment again, and a
 * synchronous call's row from being lost with it.  'off' becomes 'on';
 * 'local', 'remote_write', 'remote_apply' and 'on' are kept as configured,
 * as they all wait for the local WAL flush (what waiting for a standby
 * buys is the README's).  A batch that sends nothing only records
 * outcomes, and commits asynchronously on purpose: lost in a crash, its
 * rows are found in 'sending' and become in_doubt, never re-sent.
 */
static void
choose_commit_durability(bool will_send)
{
	const char *value = NULL;

	if (!will_send)
		value = "off";
	else if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		value = "on";
	if (value != NULL)
		(void) set_config_option("synchronous_commit", value,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * One batch of database work in one transaction: record the outcome of
 * every finished transfer that is due, journal the synchronous requests in
 * batch_taken, take the in_doubt rows whose invoice is due to be read
 * (settle_due) and claim due queued rows.  Returns the jobs to start and
 * sets *recorded to the finished jobs whose outcome it wrote.
 *
 * The commit is durable when the batch is about to send anything, whatever
 * the configuration says: 'sending' must be on disk before a request
 * leaves.  A batch that only records outcomes commits asynchronously (see
 * choose_commit_durability()).
 */
static List *
journal_batch(List **recorded)
{
	List	   *to_start;
	List	   *waiting = NIL;
	bool		installed;
	int			capacity;
	TimestampTz now = GetCurrentTimestamp();
	bool		journal_due = (now >= BgWorker->journal_retry_at);
	const char *no_credentials = missing_credentials();
	MemoryContext old;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "billogram: journal batch");

	installed = bg_journal_open();
	if (installed && !BgWorker->journal_was_ready)
	{
		bg_journal_recover();
		BgWorker->unsettled_stale = true;
		BgWorker->queue_woken = true;
		BgWorker->hold_check_due = 0;
	}
	if (installed && GetCurrentTimestamp() >= BgWorker->hold_check_due)
	{
		bg_journal_hold_foreign();
		BgWorker->hold_check_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BG_SWEEP_MS);
	}
	if (installed && !BgWorker->journal_was_ready)
		bg_inflight_journal_ready();
	else if (!installed)
		bg_inflight_journal_missing();
	if (!installed)
	{
		/* nothing to claim until CREATE EXTENSION: just sweep now and then */
		BgWorker->queue_woken = false;
		BgWorker->queue_next_due = TimestampTzPlusMilliseconds(now, BG_SWEEP_MS);
	}

	*recorded = record_finished(installed, journal_due, now, &waiting);
	to_start = record_sync_requests(installed, no_credentials);

	capacity = room_now() - list_length(to_start);
	if (installed && journal_due && !ShutdownRequestPending && capacity > 0 &&
		no_credentials == NULL)
	{
		List	   *reads = reads_due(capacity);

		capacity -= list_length(reads);
		to_start = keep_all(to_start, reads);
	}
	/* a claim rides along with requests that leave anyway */
	if (installed && capacity > 0 && now >= queue_due_at(to_start != NIL))
	{
		List	   *checks = settle_due(capacity);

		capacity -= list_length(checks);
		to_start = keep_all(to_start, checks);
		to_start = keep_all(to_start,
							claim_queued(capacity, no_credentials, now));
	}
	if (installed && BgWorker->unsettled_stale)
	{
		bg_inflight_set_unsettled(bg_journal_unsettled());
		BgWorker->unsettled_stale = false;
		BgWorker->invoice_freed = true;
	}

	choose_commit_durability(to_start != NIL);

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	BgWorker->journal_was_ready = installed;

	/* committed: what waits for its backoff is all that is left to write */
	old = MemoryContextSwitchTo(BgWorker->jobs_cxt);
	list_free(BgWorker->finished_jobs);
	BgWorker->finished_jobs = list_copy(waiting);
	MemoryContextSwitchTo(old);
	if (journal_due)
		BgWorker->journal_retry_ms = 0;
	return to_start;
}

/*
 * While Billogram has asked to wait, synchronous callers are answered at
 * once that their request was not sent, rather than left to wait out their
 * timeout; nothing of theirs is journaled.  GETs too: the pause is asked of
 * every request.
 */
static void
refuse_while_paused(void)
{
	BgReply		refusal;
	BgTakenRequest req;

	while (bg_pause_refusal(&refusal) && bg_channel_take(&req, NULL, NULL))
	{
		BgJob	   *job = new_sync_job(&req);

		answer(job, &refusal, NULL, 0);
		free_job(job);
	}
}

/*
 * Must the invoice of a synchronous payment be read (or looked up in the
 * ledger) before the payment may go?  Not when the call will be refused
 * anyway, for want of credentials or of a journal (the last batch found
 * none: bg_inflight_journal_missing(); record_sync_requests() says why at
 * once), nor when the last reading failed just now (the call is answered
 * with that failure).
 */
static bool
needs_reading(const char *billogram_id)
{
	return missing_credentials() == NULL &&
		!bg_inflight_known(billogram_id) &&
		!bg_inflight_unreadable(billogram_id) &&
		bg_inflight_recent_failure(billogram_id) == NULL;
}

/*
 * Answer a synchronous payment whose invoice could not be read before it:
 * it was not sent, whatever the reading's failure would say of a payment.
 */
static void
refuse_unread(BgJob *job, const BgReply *failure)
{
	BgReply		reply = *failure;

	reply.may_have_reached = false;
	snprintf(reply.message, sizeof(reply.message),
			 "the invoice could not be read before its first payment, which was not sent: %s",
			 failure->message);
	answer(job, &reply, NULL, 0);
}

/*
 * bg_channel_take()'s test: one payment per invoice at a time, on an
 * invoice the ledger knows (else it is read first); a GET may start
 * whenever there is room.
 */
static bool
may_start(const BgRequest *request)
{
	if (request->kind != BG_REQUEST_CREDIT_PAYMENT)
		return true;
	if (bg_inflight_busy(request->billogram_id))
		return false;
	if (!needs_reading(request->billogram_id))
		return true;
	/* its invoice is to be looked up in the ledger, or read, first */
	bg_inflight_want(request->billogram_id);
	return false;
}

/*
 * Synchronous requests waiting in the channel, as many as may start now.
 * One on an invoice that is busy waits in the channel for its turn; if its
 * caller's time runs out first, it is answered that nothing was sent.
 */
static List *
take_submitted_requests(void)
{
	List	   *taken = NIL;
	BgTakenRequest req;
	int			room = room_now();

	BgWorker->held_call_deadline = DT_NOEND;
	BgWorker->invoice_freed = false;
	if (ShutdownRequestPending || !BgWorker->journal_recovered)
		return NIL;
	refuse_while_paused();
	while (room > 0 &&
		   bg_channel_take(&req, may_start, &BgWorker->held_call_deadline))
	{
		BgJob	   *job = new_sync_job(&req);

		if (job->request.kind == BG_REQUEST_CREDIT_PAYMENT)
		{
			const BgReply *failure;

			if (bg_inflight_busy(job->payment.billogram_id) ||
				needs_reading(job->payment.billogram_id))
			{
				/* its time ran out while it waited (may_start()) */
				refuse(job, BG_OUTCOME_INVOICE_BUSY,
					   bg_inflight_known(job->payment.billogram_id) ?
					   "another payment on the invoice was in flight or being settled" :
					   "the invoice was still being read before its first payment");
				free_job(job);
				continue;
			}
			if ((failure = bg_inflight_recent_failure(job->payment.billogram_id)) != NULL)
			{
				refuse_unread(job, failure);
				free_job(job);
				continue;
			}
			count_in_flight(job);
		}
		taken = keep(taken, job);
		room--;
	}
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

	foreach(lc, BgWorker->finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SYNC && !job->answered)
			answer(job, &job->reply, job->body, job->body_len);
		if (is_sync_read(job) && job->reply.outcome == BG_OUTCOME_OK &&
			job->body != NULL)
		{
			/*
			 * The invoice it read joins the ledger, as a reading of the
			 * worker's own (read_recorded()): a baseline for the payments
			 * that follow.  Nothing of the GET is journaled.
			 */
			job->kind = JOB_READ;
			strlcpy(job->payment.billogram_id, job->request.billogram_id,
					sizeof(job->payment.billogram_id));
		}
		else if (is_sync_read(job))
		{
			/* answered, a failed GET is done with */
			BgWorker->finished_jobs = foreach_delete_current(BgWorker->finished_jobs, lc);
			free_job(job);
		}
	}
}

static void
free_jobs(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
		free_job((BgJob *) lfirst(lc));
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
	TimestampTz by = (ShutdownRequestPending || BgWorker->held_call_deadline != DT_NOEND) ?
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
 * the queue (queue_due_at()).  A synchronous call taken, or an invoice to
 * look up for one, makes a batch due at once besides (run_batch).
 */
static TimestampTz
batch_due_at(void)
{
	if (!BgWorker->journal_recovered)
		return BgWorker->journal_retry_at;
	return Min(outcomes_due_at(), queue_due_at(false));
}

/*
 * Start what a committed batch left to start.  From here on the batch
 * cannot be undone: an ERROR while starting finishes the jobs not yet
 * started as never sent (see recover_from_error()).
 */
static void
start_committed(List *to_start)
{
	ListCell   *lc;

	BgWorker->batch_created = NIL;
	BgWorker->batch_starting = to_start;
	/* the callers of payments may be told of their committed rows now */
	foreach(lc, to_start)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SYNC && job->request_id != 0)
			bg_channel_journaled(job->slotno, job->request_id);
	}
	foreach(lc, to_start)
		start_job((BgJob *) lfirst(lc));
	BgWorker->batch_starting = NIL;
}

/*
 * Start the GETs among the synchronous requests taken, at once and outside
 * any transaction: they change nothing at Billogram, so nothing is
 * journaled and they wait for no commit.  answer_sync_callers() answers
 * them when they finish.  Only credit payments are left in batch_taken.
 *
 * An ERROR while starting them is recovered from as for any batch: the GETs
 * not started are answered "not sent", and so are the credit payments
 * taken with them, which have no 'sending' row yet.
 */
static void
start_sync_reads(void)
{
	List	   *taken = BgWorker->batch_taken;
	List	   *payments = NIL;
	List	   *reads = NIL;
	bool		any_read = false;
	ListCell   *lc;

	foreach(lc, taken)
		any_read |= is_sync_read((BgJob *) lfirst(lc));
	if (!any_read)
		return;

	foreach(lc, taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);
		const char *no_credentials;

		if (!is_sync_read(job))
			payments = keep(payments, job);
		else if ((no_credentials = missing_credentials()) != NULL)
		{
			/* Billogram would answer 401: say why without asking it */
			refuse(job, BG_OUTCOME_NO_CREDENTIALS, no_credentials);
		}
		else if (job->timeout_ms <= 0)
		{
			/* its caller's time ran out waiting for a free connection */
			bg_transport_failure(&job->reply,
								 "no connection to the API became free within billogram.timeout",
								 false);
			answer(job, &job->reply, NULL, 0);
		}
		else
			reads = keep(reads, job);
	}

	/* the GETs answered already are done with; the others start */
	BgWorker->batch_taken = payments;
	foreach(lc, taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->answered)
			free_job(job);
	}
	list_free(taken);
	start_committed(reads);
	list_free(reads);
}

/*
 * Rows a previous worker left in 'sending' become in_doubt, to be settled;
 * the invoices being settled are read before any call is taken.  Its
 * commit may be as asynchronous as the configuration says: nothing leaves
 * on its account (the GETs that settle those rows start after a later
 * batch, whose durable commit flushes this one's WAL too), and if it were
 * lost the rows would still be in 'sending' for the next recovery.
 */
static void
recover_journal(void)
{
	bool		installed;

	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	installed = bg_journal_open();
	if (installed)
	{
		bg_journal_recover();
		bg_inflight_set_unsettled(bg_journal_unsettled());
		BgWorker->unsettled_stale = false;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	BgWorker->journal_recovered = true;
	BgWorker->journal_was_ready = installed;
	BgWorker->journal_retry_ms = 0;
	BgWorker->queue_woken = true;
	MemoryContextReset(BgWorker->batch_cxt);
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

static void
run_batch(void)
{
	TimestampTz now = GetCurrentTimestamp();
	List	   *recorded = NIL;
	List	   *to_start;
	ListCell   *lc;

	if (!BgWorker->journal_recovered)
	{
		if (now >= batch_due_at())
			recover_journal();
		return;
	}

	/* callers first: nothing they wait for depends on the journal */
	answer_sync_callers();
	BgWorker->batch_taken = take_submitted_requests();
	start_sync_reads();
	if (BgWorker->batch_taken == NIL && !bg_inflight_any_wanted() &&
		now < batch_due_at())
		return;

	to_start = journal_batch(&recorded);

	/* the outcomes written and the refused callers are done with */
	free_jobs(recorded);
	foreach(lc, BgWorker->batch_taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->answered)
			free_job(job);
	}
	BgWorker->batch_taken = NIL;

	start_committed(to_start);
	MemoryContextReset(BgWorker->batch_cxt);
	report_stats(false);
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

	bg_stats_error(why);
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
		bg_channel_post_reply(job->slotno, &reply, NULL, 0);
	}

	/*
	 * The outcomes written together failed: each is written alone from now
	 * on (write_alone()), so that the one whose row cannot be written backs
	 * off by itself; anything else, and a lock that fails every write
	 * alike, backs off the whole journal.
	 */
	if (BgWorker->batch_writing_together == NIL ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
		BgWorker->journal_retry_at = backoff(&BgWorker->journal_retry_ms);
	foreach(lc, BgWorker->batch_writing_together)
	{
		/* kept in finished_jobs, written alone next to find the culprit */
		((BgJob *) lfirst(lc))->write_alone = true;
	}
	BgWorker->batch_writing_together = NIL;
	if (!BgWorker->journal_recovered)
		ereport(LOG,
				(errmsg("billogram worker: recovery of the journal failed; next try in %d ms",
						BgWorker->journal_retry_ms)));

	/* no 'sending' row was committed for these: they are not sent */
	snprintf(reason, sizeof(reason), "%s.", why);
	foreach(lc, BgWorker->batch_taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (!job->answered)
			refuse(job, BG_OUTCOME_NOT_RECORDED, reason);
		free_job(job);
	}
	free_jobs(BgWorker->batch_created);

	/* committed as 'sending' but never handed to curl: certainly not sent */
	snprintf(reason, sizeof(reason), "the worker could not start the request: %s", why);
	foreach(lc, BgWorker->batch_starting)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->started)
			continue;
		bg_transport_failure(&reply, reason, false);
		transfer_finished(job, &reply, NULL, 0);
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
	if (bg_inflight_any_wanted() && room_now() > 0)
		wake = now;
	wake = Min(wake, BgWorker->held_call_deadline);
	/* the end of a pause is when sending may start again */
	wake = Min(wake, bg_pause_ends());
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

#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
	mallopt(M_TRIM_THRESHOLD, BG_MALLOC_TRIM_THRESHOLD);
#endif

	BgWorker->jobs_cxt = AllocSetContextCreate(TopMemoryContext, "billogram jobs",
									 ALLOCSET_DEFAULT_SIZES);
	BgWorker->batch_cxt = AllocSetContextCreate(TopMemoryContext, "billogram batch",
									  ALLOCSET_DEFAULT_SIZES);
	bg_channel_attach_worker();
	bg_inflight_init();
	bg_stats_worker_started();
	bg_http_init(http_settings(), transfer_answered);
	ereport(LOG,
			(errmsg("billogram worker started, API at %s", bg_api_url)));

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
		run_batch();
		if (ShutdownRequestPending && bg_http_in_flight() == 0)
			break;

		if (BgWorker->stats_flush_at != 0 && GetCurrentTimestamp() >= BgWorker->stats_flush_at)
			report_stats(true);

		(void) bg_http_wait(ms_until_due());
		if (bg_channel_queue_woken())
		{
			/* an operator's resolution or a callback may free an invoice */
			BgWorker->unsettled_stale = true;
			if (!BgWorker->queue_woken)
			{
				BgWorker->queue_woken = true;
				BgWorker->claim_not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															   BG_CLAIM_GATHER_MS);
			}
		}
	}

	ereport(LOG, (errmsg("billogram worker shutting down")));
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
