/*-------------------------------------------------------------------------
 *
 * intake.c
 *	  The billogram worker's synchronous callers: taking their requests
 *	  from the channel, and answering them.
 *
 * A request submitted through the channel is taken when it may start: at
 * once during a pause (refused: nothing is sent), when its invoice is free
 * and known to the ledger for a credit payment (else held back in the
 * channel while the invoice is busy, looked up or read), whenever there is
 * room for a GET.  A GET starts at once, outside any transaction; a payment
 * is journaled by the next batch (batch.c) before it leaves.  Callers are
 * answered as soon as their transfer finishes, before its outcome is
 * journaled.  The jobs themselves, and the answering of one, are jobs.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "postmaster/interrupt.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "http.h"
#include "inflight.h"
#include "journal.h"
#include "pause.h"
#include "worker_int.h"

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

/*
 * The channel's report of a credit payment it gave up unanswered, whose
 * caller had gone: nobody else will hear that it may have been registered.
 */
void
bgw_call_lost(const char *billogram_id, const char *why)
{
	ereport(LOG,
			(errmsg("billogram: the outcome of the credit payment on %s is unknown: %s",
					billogram_id, why),
			 errdetail("The request may have reached Billogram; check the invoice.")));
}

/*
 * Answer a call whose idempotency key was used before, from what the
 * journal says of the request that used it: that request's invoice when it
 * was the same payment and is done with one kept, else a refusal that
 * bg_report_key_used() words from the record.  Nothing is sent.
 */
void
bgw_answer_key_used(BgJob *job, const BgKeyUse *use)
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
	bgw_answer(job, &reply, body, body_len);
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

		bgw_answer(job, &refusal, NULL, 0);
		bgw_free_job(job);
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
	return bgw_missing_credentials() == NULL &&
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
	bgw_answer(job, &reply, NULL, 0);
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
List *
bgw_take_submitted_requests(void)
{
	List	   *taken = NIL;
	BgTakenRequest req;
	int			room = bgw_room_now();

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
				bgw_refuse(job, BG_OUTCOME_INVOICE_BUSY,
					   bg_inflight_known(job->payment.billogram_id) ?
					   "another payment on the invoice was in flight or being settled" :
					   "the invoice was still being read before its first payment");
				bgw_free_job(job);
				continue;
			}
			if ((failure = bg_inflight_recent_failure(job->payment.billogram_id)) != NULL)
			{
				refuse_unread(job, failure);
				bgw_free_job(job);
				continue;
			}
			bgw_count_in_flight(job);
		}
		taken = bgw_keep(taken, job);
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
void
bgw_answer_sync_callers(void)
{
	ListCell   *lc;

	foreach(lc, BgWorker->finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->kind == JOB_SYNC && !job->answered)
			bgw_answer(job, &job->reply, job->body, job->body_len);
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
			BgWorker->finished_jobs =
				foreach_delete_current(BgWorker->finished_jobs, lc);
			bgw_free_job(job);
		}
	}
}

/*
 * Start the GETs among the synchronous requests taken, at once and outside
 * any transaction: they change nothing at Billogram, so nothing is
 * journaled and they wait for no commit.  bgw_answer_sync_callers() answers
 * them when they finish.  Only credit payments are left in batch_taken.
 *
 * An ERROR while starting them is recovered from as for any batch: the GETs
 * not started are answered "not sent", and so are the credit payments
 * taken with them, which have no 'sending' row yet.
 */
void
bgw_start_sync_reads(void)
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
			payments = bgw_keep(payments, job);
		else if ((no_credentials = bgw_missing_credentials()) != NULL)
		{
			/* Billogram would answer 401: say why without asking it */
			bgw_refuse(job, BG_OUTCOME_NO_CREDENTIALS, no_credentials);
		}
		else if (job->timeout_ms <= 0)
		{
			/* its caller's time ran out waiting for a free connection */
			bg_transport_failure(&job->reply,
								 "no connection to the API became free within billogram.timeout",
								 false);
			bgw_answer(job, &job->reply, NULL, 0);
		}
		else
			reads = bgw_keep(reads, job);
	}

	/* the GETs answered already are done with; the others start */
	BgWorker->batch_taken = payments;
	foreach(lc, taken)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (job->answered)
			bgw_free_job(job);
	}
	list_free(taken);
	bgw_start_committed(reads);
	list_free(reads);
}
