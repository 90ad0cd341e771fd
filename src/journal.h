/*-------------------------------------------------------------------------
 *
 * journal.h
 *	  The journal: the billogram_requests table, the one record of every
 *	  credit payment, its state and its outcome.
 *
 * The journal's files (journal.c, statements.c, queue.c, settle.c and
 * journalfuncs.c: see journal_int.h) are the only code that reads or
 * writes it.  Backends queue payments through bg_journal_insert(); the
 * worker uses the rest, inside a transaction it started, with SPI
 * connected, so that one commit covers a whole batch; bg_journal_open()
 * comes first in each such transaction and the others only if it returned
 * true.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_JOURNAL_H
#define BILLOGRAM_JOURNAL_H

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "reply.h"
#include "request.h"
#include "schema.h"

/*
 * The states of a journal row.  The table's CHECK constraint lists the same
 * names; bg_journal_state_name() is the only place C spells them.
 */
typedef enum BgJournalState
{
	BG_STATE_PENDING,			/* queued, waiting for its turn */
	BG_STATE_SENDING,			/* committed before its request left */
	BG_STATE_DONE,				/* Billogram registered it */
	BG_STATE_FAILED,			/* certainly not registered */
	BG_STATE_IN_DOUBT,			/* may have been registered: for a person */
	BG_STATE_HELD				/* made elsewhere: waits for an operator */
} BgJournalState;

/* A journal row the worker is about to send, or must snapshot. */
typedef struct BgQueuedRequest
{
	int64		id;
	BgCreditPayment payment;	/* its body made from its columns */
	const char *problem;		/* why no caller could have made it; NULL */
} BgQueuedRequest;

/*
 * The outcome of one finished request, as bg_journal_record_outcomes()
 * writes it: id, reply and what to keep of the invoice go in, the state the
 * row is left in comes out (pending again when it is to be retried).
 */
typedef struct BgFinished
{
	int64		id;
	bool		is_sync;		/* a synchronous call: never retried */
	const BgReply *reply;
	const char *summary;		/* bg_journal_summary_text(), or NULL */
	const char *invoice;		/* bg_journal_invoice_text(), or NULL; the
								 * summary itself when that is what is kept */
	BgJournalState state;		/* out */
	bool		recorded;		/* out: false if the row was purged */
} BgFinished;

/*
 * A reading of an invoice, as bg_journal_reads_recorded() records it in the
 * ledger: the invoice, the GET's reply and body go in; whether the ledger
 * now knows the invoice comes out.
 */
typedef struct BgRead
{
	const char *billogram_id;
	const BgReply *reply;
	const char *body;
	bool		known;			/* out */
} BgRead;

/*
 * What an idempotency key was used for: the request that used it (0 while
 * its call is being recorded in this very transaction), whether for the
 * same invoice, mode and amount, its state ("" once purged), and what the
 * journal kept of its outcome (the invoice as text in the server's
 * encoding; a failure's SQLSTATE, message, Billogram status and field).
 */
typedef struct BgKeyUse
{
	int64		request_id;
	bool		same_payment;
	char		state[16];
	char		sqlstate[6];
	char	   *response;
	char	   *message;
	char	   *status;
	char	   *field;
} BgKeyUse;

/* Longest wait between two looks at the queue, in milliseconds. */
#define BG_SWEEP_MS		10000

typedef enum BgJournalStatus
{
	BG_JOURNAL_MISSING,			/* no extension in this database */
	BG_JOURNAL_WRONG_VERSION,	/* installed at another version */
	BG_JOURNAL_UNTRUSTED,		/* something of it is not a superuser's:
								 * refusal says what (trust.c) */
	BG_JOURNAL_READY
} BgJournalStatus;

/* Where the journal is, as bg_journal_lookup() found it. */
typedef struct BgJournal
{
	const char *name;			/* schema-qualified, quoted as needed */
	const char *schema;			/* the extension's schema, quoted */
	Oid			owner;			/* the journal table's owner */
	const char *version;		/* the extension's installed version */
	const char *refusal;		/* BG_JOURNAL_UNTRUSTED: why */
} BgJournal;

extern const char *bg_journal_state_name(BgJournalState state);

/* Catalog lookups only, no SPI; cached for the current command. */
extern BgJournalStatus bg_journal_lookup(BgJournal *journal);
extern void bg_journal_origin(int64 *system, Oid *database);

/*
 * Insert one pending row and return its id; SPI must be connected.  The
 * queuing functions' way in.
 */
extern int64 bg_journal_insert(const BgJournal *journal,
							   const BgCreditPayment *payment,
							   const char *origin,
							   const char *source_table,
							   const char *source_key);

/*
 * The same for a payment that pays once per key, ever (billogram_keys):
 * returns 0 and sets *earlier to the row the key made when it has paid.
 */
extern int64 bg_journal_insert_keyed(const BgJournal *journal,
									 const BgCreditPayment *payment,
									 const char *origin,
									 const char *source_table,
									 const char *source_key,
									 const char *key_kind, const char *key,
									 int64 *earlier);

extern int64 bg_journal_note_key(const BgJournal *journal,
								 const char *key_kind, const char *key);

/* What the journal keeps of a successful reply's invoice (see guc.h). */
extern const char *bg_journal_invoice_text(const BgReply *reply,
										   const char *body,
										   const char *summary);
/* What the ledger records of a successful reply's invoice. */
extern char *bg_journal_summary_text(const BgReply *reply, const char *body);

/* Idempotency keys of calls (billogram_keys, kind 'call'); SPI connected. */
extern bool bg_journal_find_key(const BgJournal *journal,
								const BgCreditPayment *payment, BgKeyUse *use);
extern bool bg_journal_claim_key(const BgJournal *journal,
								 const BgCreditPayment *payment,
								 int64 request_id, BgKeyUse *use);

/* A backend's own look at a key, in billogram.database only (enqueue.c) */
extern bool bg_find_key_here(const BgCreditPayment *payment, BgKeyUse *use);

/* The worker's side. */
extern bool bg_journal_open(void);
extern const char *bg_journal_refusal(void);
extern const BgJournal *bg_journal_opened(void);
extern void bg_journal_bind_keys(const BgCreditPayment *const *payments,
								 const int64 *ids, int n);
extern int64 bg_journal_hold_foreign(void);
extern void bg_journal_insert_sync(const BgCreditPayment *const *payments,
								   int n, int64 *ids);
extern List *bg_journal_claim(int max_rows);
extern void bg_journal_record_outcomes(BgFinished *finished, int n);
extern void bg_journal_save_snapshot(int64 id, const BgReply *reply,
									 const char *invoice);
extern void bg_journal_recover(void);
extern List *bg_journal_settle_due(int max_rows, int hold_secs);
extern bool bg_journal_settle(int64 id, const BgReply *reply,
							  const char *summary);
extern List *bg_journal_unsettled(void);
extern List *bg_journal_reads_due(int max_rows, List *busy);
extern List *bg_journal_reads_recorded(BgRead *reads, int n, int claim_max);
extern List *bg_journal_ledger_known(List *ids);
extern TimestampTz bg_journal_next_due(List *busy);

#endif							/* BILLOGRAM_JOURNAL_H */
