/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  The billogram worker's jobs: the transfers in flight.
 *
 * A job is one transfer, from its creation (a synchronous request taken
 * from the channel, a queued row claimed, an invoice to read) to the HTTP
 * engine's report that it finished.  This file makes and frees jobs, counts
 * them in flight on their invoices, starts them, and hands a finished
 * synchronous job's reply to its caller; which requests are taken from the
 * channel, and when callers are answered, is intake.c's; the jobs' journal
 * rows are batch.c's and outcomes.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "credentials.h"
#include "guc.h"
#include "http.h"
#include "inflight.h"
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
