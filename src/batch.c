/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The billogram worker's batch: one transaction of database work.
 *
 * A batch records what finished (outcomes.c), journals the synchronous
 * credit payments taken (their idempotency keys first), reads the invoices
 * due to be read, takes the in_doubt rows due to be settled and claims due
 * queued rows, and commits as durably as what it is about to send needs.
 * The recovery of the journal at start is a batch of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "guc.h"
#include "inflight.h"
#include "journal.h"
#include "report.h"
#include "worker_int.h"

/*
 * Run work(arg) in a subtransaction of its own, so that its error fails
 * only itself and not the batch.  Returns NULL if it succeeded, or its error,
 * copied into the caller's memory context (FreeErrorData when done).
 */
ErrorData *
bgw_alone(void (*work) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		work(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return error;
}

/* What claim_key() is asked, and what it found. */
typedef struct KeyClaim
{
	BgJob	   *job;
	bool		claimed;
	BgKeyUse	use;
} KeyClaim;

static void
claim_key(void *arg)
{
	KeyClaim   *claim = arg;

	claim->claimed = bg_journal_claim_key(bg_journal_opened(),
										  &claim->job->payment, 0,
										  &claim->use);
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
	KeyClaim	claim = {.job = job};
	ErrorData  *error = bgw_alone(claim_key, &claim);

	if (error != NULL)
	{
		char		why[BG_REPLY_TEXT_LEN];

		snprintf(why, sizeof(why), "%s.", error->message);
		FreeErrorData(error);
		bgw_refuse(job, BG_OUTCOME_NOT_RECORDED, why);
		return false;
	}
	if (!claim.claimed)
		bgw_answer_key_used(job, &claim.use);
	return claim.claimed;
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

		/* bgw_start_sync_reads() has taken the GETs out */
		Assert(job->request.kind == BG_REQUEST_CREDIT_PAYMENT);
		if (!installed && bg_journal_refusal() != NULL)
			bgw_refuse(job, BG_OUTCOME_UNTRUSTED, bg_journal_refusal());
		else if (!installed)
			bgw_refuse(job, BG_OUTCOME_NOT_INSTALLED, bg_database);
		else if (no_credentials)
		{
			/* Billogram would answer 401: say why without asking it */
			bgw_refuse(job, BG_OUTCOME_NO_CREDENTIALS, no_credentials);
		}
		else if (job->payment.idempotency_key[0] == '\0' ||
				 claim_key_alone(job))
			to_record = bgw_keep(to_record, job);
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
			bgw_write_outcomes(list_make1(job));
			bgw_answer(job, &job->reply, NULL, 0);
			continue;
		}
		to_start = bgw_keep(to_start, job);
	}
	return to_start;
}

/*
 * How many queued payments a claim may take now, riding along with
 * requests that leave anyway or not: none while no credentials can be sent
 * or no claim is due (bgw_queue_due_at()), else the free connections left
 * beside the synchronous calls taken.
 */
int
bgw_claim_room(bool riding, TimestampTz now)
{
	if (bgw_missing_credentials() != NULL || now < bgw_queue_due_at(riding))
		return 0;
	return Max(bgw_room_now() - list_length(BgWorker->batch_taken), 0);
}

/* Jobs for the rows a claim marked 'sending' (BgQueuedRequests). */
static List *
claimed_jobs(List *claimed)
{
	List	   *jobs = NIL;
	ListCell   *lc;

	foreach(lc, claimed)
	{
		BgQueuedRequest *q = (BgQueuedRequest *) lfirst(lc);
		BgJob	   *job = bgw_new_batch_job(JOB_QUEUED, &q->payment, q->id);

		bgw_count_in_flight(job);
		if (q->problem)
			job->refusal = MemoryContextStrdup(BgWorker->jobs_cxt, q->problem);
		jobs = bgw_keep(jobs, job);
	}
	return jobs;
}

/* Claim due queued rows for up to capacity free connections. */
static List *
claim_queued(int capacity, const char *no_credentials, TimestampTz now)
{
	List	   *to_start;
	List	   *claimed;

	if (no_credentials)
	{
		/* they stay pending; a reload with credentials wakes us */
		if (!BgWorker->warned_no_credentials)
			ereport(WARNING,
					(errmsg("billogram: queued payments are not sent: %s",
							no_credentials),
					 errhint(BG_CREDENTIALS_HINT)));
		BgWorker->warned_no_credentials = true;
		BgWorker->queue_woken = false;
		BgWorker->queue_next_due =
			TimestampTzPlusMilliseconds(now, BG_SWEEP_MS);
		return NIL;
	}
	claimed = bg_journal_claim(capacity);
	to_start = claimed_jobs(claimed);
	/* a full batch means more may be waiting: look again next time */
	BgWorker->queue_woken = (list_length(claimed) == capacity);
	BgWorker->claim_not_before = 0;
	if (!BgWorker->queue_woken)
		BgWorker->queue_next_due = bg_journal_next_due(bg_inflight_busy_ids());
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

		checks = bgw_keep(checks,
						  bgw_new_batch_job(JOB_SNAPSHOT, &q->payment, q->id));
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
	job = bgw_new_batch_job(JOB_READ, &payment, 0);
	bgw_count_in_flight(job);
	return job;
}

/*
 * The invoices to read before their next payment goes, as GETs for up to
 * capacity free connections: queued rows with a verify_reason, and the
 * invoices synchronous calls wait on that the ledger does not know.  A
 * reading counts as a payment in flight on its invoice, so that nothing
 * else leaves on it before the reading is recorded, and the journal's
 * readings due leave it out meanwhile (bg_inflight_busy_ids).
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
			reads = bgw_keep(reads, read_job(id));
	}
	if (capacity - list_length(reads) > 0 &&
		GetCurrentTimestamp() >= bgw_queue_due_at(true))
	{
		foreach(lc, bg_journal_reads_due(capacity - list_length(reads),
										 bg_inflight_busy_ids()))
			reads = bgw_keep(reads, read_job((const char *) lfirst(lc)));
	}
	return reads;
}

/*
 * How durable the commit of a batch must be, set for that transaction only.
 *
 * A batch after which payments leave commits durably whatever
 * synchronous_commit the worker's session was given (postgresql.conf,
 * ALTER SYSTEM, ALTER DATABASE, ALTER ROLE): its commit of 'sending' is
 * what keeps a crash after the POST from sending the payment again, and a
 * synchronous call's row from being lost with it.  'off' becomes 'on';
 * 'local', 'remote_write', 'remote_apply' and 'on' are kept as configured,
 * as they all wait for the local WAL flush (what waiting for a standby
 * buys is the README's).
 *
 * Any other batch commits asynchronously on purpose.  One that only
 * records outcomes: lost in a crash, its rows are found in 'sending' and
 * become in_doubt, never re-sent.  One after which only readings leave
 * (GETs, safe to repeat): lost, the invoices are read again, and the
 * batch before the next payment flushes its WAL with its own.  That saves
 * a synchronous call on an invoice the ledger does not know one of its two
 * WAL flushes.
 */
static void
choose_commit_durability(List *to_start)
{
	const char *value = NULL;
	bool		payment_leaves = false;
	ListCell   *lc;

	foreach(lc, to_start)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SYNC || job->kind == JOB_QUEUED)
			payment_leaves = true;
	}
	if (!payment_leaves)
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
 * every finished transfer that is due (the readings among them claim the
 * queued rows they let go), journal the synchronous requests in
 * batch_taken, take the in_doubt rows whose invoice is due to be read
 * (settle_due) and claim due queued rows.  Returns the jobs to start and
 * sets *recorded to the finished jobs whose outcome it wrote.
 *
 * The commit is durable when the batch is about to send a payment, whatever
 * the configuration says: 'sending' must be on disk before a request
 * leaves.  Other batches commit asynchronously (see
 * choose_commit_durability()).
 */
List *
bgw_journal_batch(List **recorded)
{
	List	   *to_start;
	List	   *waiting = NIL;
	List	   *claimed_read = NIL;
	bool		installed;
	int			capacity;
	TimestampTz now = GetCurrentTimestamp();
	bool		journal_due = (now >= BgWorker->journal_retry_at);
	const char *no_credentials = bgw_missing_credentials();
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
		/* rows it takes out of settling free their invoices */
		if (bg_journal_hold_foreign() > 0)
			BgWorker->unsettled_stale = true;
		BgWorker->hold_check_due =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BG_SWEEP_MS);
	}
	if (installed && !BgWorker->journal_was_ready)
		bg_inflight_journal_ready();
	else if (!installed)
		bg_inflight_journal_missing();
	if (!installed)
	{
		/* nothing to claim until CREATE EXTENSION: just sweep now and then */
		BgWorker->queue_woken = false;
		BgWorker->queue_next_due =
			TimestampTzPlusMilliseconds(now, BG_SWEEP_MS);
	}

	*recorded = bgw_record_finished(installed, journal_due, now, &waiting,
									&claimed_read);
	to_start = record_sync_requests(installed, no_credentials);
	to_start = bgw_keep_all(to_start, claimed_jobs(claimed_read));

	capacity = bgw_room_now() - list_length(to_start);
	if (installed && journal_due && !ShutdownRequestPending && capacity > 0 &&
		no_credentials == NULL)
	{
		List	   *reads = reads_due(capacity);

		capacity -= list_length(reads);
		to_start = bgw_keep_all(to_start, reads);
	}
	/* a claim rides along with requests that leave anyway */
	if (installed && capacity > 0 && now >= bgw_queue_due_at(to_start != NIL))
	{
		List	   *checks = settle_due(capacity);

		capacity -= list_length(checks);
		to_start = bgw_keep_all(to_start, checks);
		to_start = bgw_keep_all(to_start,
							claim_queued(capacity, no_credentials, now));
	}
	if (installed && BgWorker->unsettled_stale)
	{
		bg_inflight_set_unsettled(bg_journal_unsettled());
		BgWorker->unsettled_stale = false;
		BgWorker->invoice_freed = true;
	}

	choose_commit_durability(to_start);

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
 * Rows a previous worker left in 'sending' become in_doubt, to be settled;
 * the invoices being settled are read before any call is taken.  Its
 * commit may be as asynchronous as the configuration says: nothing leaves
 * on its account (the GETs that settle those rows start after a later
 * batch, whose durable commit flushes this one's WAL too), and if it were
 * lost the rows would still be in 'sending' for the next recovery.
 */
void
bgw_recover_journal(void)
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
