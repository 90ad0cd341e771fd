/*-------------------------------------------------------------------------
 *
 * worker_int.h
 *	  What the billogram worker's files (worker.c, jobs.c, intake.c,
 *	  batch.c, outcomes.c, worker_memory.c) share, and nothing else does:
 *	  the job, the worker's state and the functions they call of each
 *	  other.  worker.h is what the rest of the extension calls.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_WORKER_INT_H
#define BILLOGRAM_WORKER_INT_H

#include "nodes/pg_list.h"
#include "utils/palloc.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "http.h"
#include "journal.h"
#include "reply.h"
#include "request.h"

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
	char	   *refusal;		/* not to be sent: why (a journal row no
								 * caller could have made); NULL */
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
	 * start (bgw_recover_journal) or once CREATE or ALTER EXTENSION ...
	 * UPDATE has made it so (bgw_journal_batch).  Nothing can have been sent
	 * through a journal this worker could not use, so every 'sending' row
	 * then is a previous worker's.
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
	 * (bgw_recover_journal); no call is taken before.
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

	/*
	 * When a transfer was last in flight, and whether the free heap has
	 * been given back since (worker_memory.c).
	 */
	TimestampTz busy_at;
	bool		heap_returned;
} BgWorkerState;

extern BgWorkerState *BgWorker;

/* worker.c: the loop, and when the next thing is due */
extern TimestampTz bgw_backoff(int *delay_ms);
extern TimestampTz bgw_queue_due_at(bool riding);

/* jobs.c: the jobs in flight */
extern BgJob *bgw_new_batch_job(BgJobKind kind, const BgCreditPayment *payment,
								int64 request_id);
extern void bgw_count_in_flight(BgJob *job);
extern void bgw_free_job(BgJob *job);
extern void bgw_free_jobs(List *jobs);
extern List *bgw_keep(List *list, BgJob *job);
extern List *bgw_keep_all(List *list, List *more);
extern void bgw_transfer_finished(void *arg, const BgReply *reply,
								  const char *body, size_t body_len);
extern void bgw_transfer_answered(void *job, const BgReply *reply,
								  const BgTransferFacts *facts,
								  const char *body, size_t body_len);
extern int	bgw_room_now(void);
extern const char *bgw_missing_credentials(void);
extern void bgw_answer(BgJob *job, const BgReply *reply, const char *body,
					   size_t body_len);
extern void bgw_post_reply(BgJob *job, const BgReply *reply, const char *body,
						   size_t body_len);
extern void bgw_refuse(BgJob *job, BgOutcome outcome, const char *why);
extern void bgw_start_committed(List *to_start);

/* intake.c: the synchronous callers, their requests taken and answered */
extern void bgw_call_lost(const char *billogram_id, const char *why);
extern void bgw_answer_key_used(BgJob *job, const BgKeyUse *use);
extern List *bgw_take_submitted_requests(void);
extern void bgw_answer_sync_callers(void);
extern void bgw_start_sync_reads(void);

/* batch.c: the batch transaction */
extern ErrorData *bgw_alone(void (*work) (void *arg), void *arg);
extern List *bgw_journal_batch(List **recorded);
extern int	bgw_claim_room(bool riding, TimestampTz now);
extern void bgw_recover_journal(void);

/*
 * worker_memory.c: the C heap, kept while busy, given back when idle; what
 * pg_stat_activity shows for the worker once it has been
 */
#define BG_IDLE_ACTIVITY	"billogram: idle, free memory given back"
extern void bgw_memory_init(void);
extern void bgw_memory_after_turn(bool worked);
extern TimestampTz bgw_memory_due_at(void);

/* outcomes.c: journaling what finished */
extern List *bgw_record_finished(bool installed, bool journal_due,
								 TimestampTz now, List **waiting,
								 List **claimed);
extern void bgw_write_outcomes(List *jobs);

#endif							/* BILLOGRAM_WORKER_INT_H */
