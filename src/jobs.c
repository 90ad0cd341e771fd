/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  The billogram worker's jobs: the transfers in flight, and the
 *	  channel's intake and answers.
 *
 * A job is one transfer, from its creation (a synchronous request taken
 * from the channel, a queued row claimed, an invoice to read) to the HTTP
 * engine's report that it finished.  This file makes and frees jobs, starts
 * them, takes the synchronous requests submitted (refused at once during a
 * pause, held back while their invoice is busy or being read), and answers
 * their callers; the jobs' journal rows are batch.c's and outcomes.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "postmaster/interrupt.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "credentials.h"
#include "guc.h"
#include "http.h"
#include "inflight.h"
#include "journal.h"
#include "metrics.h"
#include "pause.h"
#include "report.h"
#include "worker_int.h"

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
void
bgw_count_in_flight(BgJob *job)
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

void
bgw_free_job(BgJob *job)
{
	if (job->counted)
	{
		bg_inflight_remove(job->payment.billogram_id);
		BgWorker->invoice_freed = true;
	}
	if (job->body)
		pfree(job->body);
	if (job->refusal)
		pfree(job->refusal);
	pfree(job);
}

void
bgw_free_jobs(List *jobs)
{
	ListCell   *lc;

	foreach(lc, jobs)
		bgw_free_job((BgJob *) lfirst(lc));
}

/*
 * What a job is, for billogram_requests_total.  A synchronous call is
 * counted when its caller is answered (bgw_post_reply()), every other job
 * when its transfer is over (bgw_transfer_finished()): each once.
 */
static BgMetricKind
request_kind(const BgJob *job)
{
	switch (job->kind)
	{
		case JOB_SYNC:
			return job->request.kind == BG_REQUEST_CREDIT_PAYMENT ?
				BG_METRIC_CREDIT_PAYMENT : BG_METRIC_GET_INVOICE;
		case JOB_QUEUED:
			return BG_METRIC_QUEUED;
		case JOB_SNAPSHOT:
			return BG_METRIC_SNAPSHOT;
		case JOB_READ:
			break;
	}
	return BG_METRIC_READ;
}

/* The HTTP engine's callback: keep the outcome until the next batch. */
void
bgw_transfer_finished(void *arg, const BgReply *reply, const char *body,
					  size_t body_len)
{
	BgJob	   *job = (BgJob *) arg;
	MemoryContext old;

	if (job->kind != JOB_SYNC)
		bg_metrics_request(request_kind(job), reply->outcome);
	old = MemoryContextSwitchTo(BgWorker->jobs_cxt);

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
void
bgw_transfer_answered(void *job, const BgReply *reply,
					  const BgTransferFacts *facts,
					  const char *body, size_t body_len)
{
	bg_pause_answered(reply, facts->started_at, facts->probe);
	bgw_transfer_finished(job, reply, body, body_len);
}

/* How many transfers may start now: free connections, as the pause allows. */
int
bgw_room_now(void)
{
	return bg_pause_room(bg_http_room());
}

/*
 * Append to a list of the batch: it outlives the batch's transaction (SPI's
 * memory, current during the batch, is gone after SPI_finish()) and is
 * freed with batch_cxt when the batch ends or fails.
 */
List *
bgw_keep(List *list, BgJob *job)
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
List *
bgw_keep_all(List *list, List *more)
{
	MemoryContext old = MemoryContextSwitchTo(BgWorker->batch_cxt);

	list = list_concat(list, more);
	MemoryContextSwitchTo(old);
	return list;
}

/* A job the batch made: freed by the error recovery if the batch fails. */
BgJob *
bgw_new_batch_job(BgJobKind kind, const BgCreditPayment *payment,
				  int64 request_id)
{
	BgJob	   *job = new_job(kind, payment, request_id);

	BgWorker->batch_created = bgw_keep(BgWorker->batch_created, job);
	return job;
}

/* The reply of a request that was not sent: outcome, and why. */
static void
unsent_reply(BgReply *reply, BgOutcome outcome, const char *why)
{
	memset(reply, 0, sizeof(*reply));
	reply->outcome = outcome;
	strlcpy(reply->message, why, sizeof(reply->message));
}

/*
 * Hand a job to libcurl.  A job refused at its claim, and a synchronous
 * caller who stopped waiting before this moment (it was told that nothing
 * was sent), finish unsent instead: a payment's row then says failed.
 */
static void
start_job(BgJob *job)
{
	bool		probe;

	if (job->refusal != NULL)
	{
		BgReply		reply;

		unsent_reply(&reply, BG_OUTCOME_INVALID_ROW, job->refusal);
		job->started = true;	/* dealt with: it is finished, unsent */
		bgw_transfer_finished(job, &reply, NULL, 0);
		return;
	}
	if (job->kind == JOB_SYNC && !bg_channel_hand_over(job->slotno))
	{
		BgReply		reply;

		bg_transport_failure(&reply, "its caller stopped waiting before it was sent",
							 false);
		job->started = true;	/* dealt with: it is finished, unsent */
		bgw_transfer_finished(job, &reply, NULL, 0);
		return;
	}
	probe = bg_pause_probing();
	bg_http_start(job, &job->request, job->timeout_ms, probe);
	if (probe)
		bg_pause_probe_started();
	job->started = true;
}

void
bgw_answer(BgJob *job, const BgReply *reply, const char *body, size_t body_len)
{
	BgWorker->batch_answering = job;
	bgw_post_reply(job, reply, body, body_len);
	job->answered = true;
	BgWorker->batch_answering = NULL;
}

/*
 * Hand a reply to job's caller.  A credit payment whose caller had stopped
 * waiting has its outcome logged instead, so that it is not lost.
 */
void
bgw_post_reply(BgJob *job, const BgReply *reply, const char *body,
			   size_t body_len)
{
	int64		request_id;
	bool		delivered;

	delivered = bg_channel_post_reply(job->slotno, reply, body, body_len,
									  &request_id);
	bg_metrics_request(request_kind(job), reply->outcome);
	if (delivered || job->request.kind != BG_REQUEST_CREDIT_PAYMENT)
		return;
	ereport(LOG,
			(errmsg("billogram: the caller of the credit payment on %s stopped waiting; its outcome follows",
					job->request.billogram_id)));
	bg_report_failure(LOG, job->request.kind, job->request.billogram_id,
					  reply, request_id);
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

/* Answer a synchronous caller whose request is not sent, with outcome. */
void
bgw_refuse(BgJob *job, BgOutcome outcome, const char *why)
{
	BgReply		reply;

	unsent_reply(&reply, outcome, why);
	bgw_answer(job, &reply, NULL, 0);
}

/* Why no credentials can be sent, naming the setting; NULL if they can. */
const char *
bgw_missing_credentials(void)
{
	if (bg_api_user == NULL || bg_api_user[0] == '\0')
		return "billogram.api_user is empty";
	if (bg_api_password_in_use()[0] != '\0')
		return NULL;
	if (bg_api_password_file && bg_api_password_file[0] != '\0')
		return "the file named by billogram.api_password_file could not be used (the server log says why)";
	return "billogram.api_password_file is not set";
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
 * Start what a committed batch left to start.  From here on the batch
 * cannot be undone: an ERROR while starting finishes the jobs not yet
 * started as never sent (see recover_from_error()).
 */
void
bgw_start_committed(List *to_start)
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
