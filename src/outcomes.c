/*-------------------------------------------------------------------------
 *
 * outcomes.c
 *	  The billogram worker's journaling of what finished: the outcomes of
 *	  credit payments, the readings of invoices, the snapshots that settle
 *	  in_doubt rows.
 *
 * Runs inside the batch's transaction (batch.c).  Outcomes are written
 * together, in one statement; a row whose write failed is written alone
 * from then on, in a subtransaction of its own and with its own backoff,
 * so that it holds up no other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/timestamp.h"

#include "inflight.h"
#include "journal.h"
#include "stats.h"
#include "worker_int.h"

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
		bg_stats_error(job->reply.http_status != 0 ?
					   psprintf("request %lld: %s, HTTP %ld",
								(long long) job->request_id,
								bg_outcome_kind(job->reply.outcome),
								job->reply.http_status) :
					   psprintf("request %lld: %s",
								(long long) job->request_id,
								bg_outcome_kind(job->reply.outcome)));
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
void
bgw_write_outcomes(List *jobs)
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
		finished[i].summary = bg_journal_summary_text(&job->reply, job->body);
		finished[i].invoice = bg_journal_invoice_text(&job->reply, job->body,
													  finished[i].summary);
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
 * on it); a failed one is what those calls are told.  With may_claim, the
 * queued payments that go are claimed with it as far as a claim may take
 * them now (bgw_claim_room(); the synchronous calls taken ride along):
 * returns them, as bg_journal_claim() does.
 */
static List *
write_readings(List *jobs, bool may_claim, TimestampTz now)
{
	int			n = list_length(jobs);
	BgRead	   *reads = palloc0(n * sizeof(BgRead));
	List	   *claimed;
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
	/* what they let go is due at once */
	BgWorker->queue_woken = true;
	claimed = bg_journal_reads_recorded(reads, n, may_claim ?
										bgw_claim_room(BgWorker->batch_taken != NIL, now) :
										0);
	for (i = 0; i < n; i++)
	{
		if (reads[i].known)
			bg_inflight_note_known(reads[i].billogram_id);
		else
			bg_inflight_read_failed(reads[i].billogram_id, reads[i].reply);
	}
	return claimed;
}

/*
 * What write_alone() writes: a snapshot and its settlement, a reading
 * before sending, or an outcome.
 */
static void
write_one(void *arg)
{
	BgJob	   *job = arg;

	if (job->kind == JOB_READ)
	{
		/*
		 * claims none: jobs made inside this subtransaction would outlive
		 * its rollback
		 */
		(void) write_readings(list_make1(job), false, 0);
	}
	else if (job->kind == JOB_SNAPSHOT)
	{
		const char *summary = bg_journal_summary_text(&job->reply, job->body);

		bg_journal_save_snapshot(job->request_id, &job->reply,
								 bg_journal_invoice_text(&job->reply, job->body,
														 summary));
		if (bg_journal_settle(job->request_id, &job->reply, summary))
		{
			/* a final verdict frees the invoice for what is queued on it */
			BgWorker->unsettled_stale = true;
			BgWorker->queue_woken = true;
		}
		else					/* still checking: read it at its settle_at */
			BgWorker->queue_next_due = Min(BgWorker->queue_next_due,
										   bg_journal_next_due(bg_inflight_busy_ids()));
	}
	else
		bgw_write_outcomes(list_make1(job));
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
	ErrorData  *error = bgw_alone(write_one, job);

	if (error == NULL)
		return true;
	bg_stats_error(psprintf("request %lld: its %s is not recorded yet, SQLSTATE %s",
							(long long) job->request_id,
							job->kind == JOB_SNAPSHOT ? "invoice read" : "outcome",
							unpack_sql_state(error->sqlerrcode)));
	job->write_alone = true;
	job->retry_at = bgw_backoff(&job->retry_ms);
	ereport(LOG,
			(errmsg("billogram: the %s of request %lld is not recorded yet; next try in %d ms",
					job->kind == JOB_SNAPSHOT ? "invoice read" : "outcome",
					(long long) job->request_id, job->retry_ms),
			 errdetail("%s", error->message)));
	FreeErrorData(error);
	return false;
}

/*
 * Journal what finished and is due: the outcomes of credit payments
 * together, in one statement; snapshots, and outcomes that failed to be
 * written before, one by one (write_alone()).  Returns the jobs written;
 * the ones not due yet, or not written, are appended to *waiting.  The
 * queued payments the readings written together let go are claimed with
 * them when a claim is due (bgw_claim_room()): *claimed, as
 * bg_journal_claim() returns them.
 */
List *
bgw_record_finished(bool installed, bool journal_due, TimestampTz now,
					List **waiting, List **claimed)
{
	List	   *recorded = NIL;
	List	   *together = NIL;
	List	   *readings = NIL;
	ListCell   *lc;

	*claimed = NIL;
	foreach(lc, BgWorker->finished_jobs)
	{
		BgJob	   *job = (BgJob *) lfirst(lc);

		if (!journal_due || job->retry_at > now)
		{
			*waiting = bgw_keep(*waiting, job);
			continue;
		}
		recorded = bgw_keep(recorded, job);
		if (!installed ||
			(job->kind != JOB_SNAPSHOT && job->kind != JOB_READ &&
			 job->request_id == 0))
			continue;
		if (job->kind == JOB_READ && !job->write_alone)
			readings = bgw_keep(readings, job);
		else if (job->kind == JOB_SNAPSHOT || job->write_alone)
		{
			if (!write_alone(job))
			{
				/* kept, and written later than the others */
				recorded = list_delete_last(recorded);
				*waiting = bgw_keep(*waiting, job);
			}
		}
		else
			together = bgw_keep(together, job);
	}
	if (together != NIL)
	{
		BgWorker->batch_writing_together = together;
		bgw_write_outcomes(together);
		BgWorker->batch_writing_together = NIL;
	}
	if (readings != NIL)
	{
		/* on an error, each is written alone from then on, as outcomes are */
		BgWorker->batch_writing_together = readings;
		*claimed = write_readings(readings, true, now);
		BgWorker->batch_writing_together = NIL;
	}
	return recorded;
}
