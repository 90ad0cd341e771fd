/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The billogram_requests journal, as the worker uses it.
 *
 * All functions run inside a transaction the caller started, with SPI
 * connected, so that one commit covers a whole batch; bg_queue_installed()
 * comes first in each transaction and the others only if it returned true.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_QUEUE_H
#define BILLOGRAM_QUEUE_H

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "reply.h"
#include "request.h"

/* A journal row the worker is about to send, or must snapshot. */
typedef struct BgQueuedRequest
{
	int64		id;
	BgCreditPayment payment;
} BgQueuedRequest;

/* Longest wait between two looks at the queue, in milliseconds. */
#define BG_SWEEP_MS		10000

/*
 * The journal's schema version this library's statements are written for:
 * in a database whose extension is at another version the queue is not
 * served and nothing is journaled, until ALTER EXTENSION billogram UPDATE.
 */
#define BG_SCHEMA_VERSION	"0.2"

typedef enum BgJournalStatus
{
	BG_JOURNAL_MISSING,			/* no extension in this database */
	BG_JOURNAL_WRONG_VERSION,	/* installed at another version */
	BG_JOURNAL_READY
} BgJournalStatus;

/* Where the journal is, as bg_journal_lookup() found it. */
typedef struct BgJournal
{
	const char *name;			/* schema-qualified, quoted as needed */
	const char *schema;			/* the extension's schema, quoted */
	Oid			owner;			/* the journal table's owner */
	const char *version;		/* the extension's installed version */
} BgJournal;

/* Catalog lookups only, no SPI; cheap enough for every batch or row. */
extern BgJournalStatus bg_journal_lookup(BgJournal *journal);
extern void bg_journal_origin(int64 *system, Oid *database);
extern bool bg_queue_installed(void);
extern void bg_queue_hold_foreign(void);
extern int64 bg_queue_record_sync(const BgCreditPayment *payment);
extern List *bg_queue_claim(int max_rows);
extern const char *bg_queue_finish(int64 id, bool is_sync, const BgReply *reply,
								   const char *body, size_t body_len);
extern void bg_queue_save_snapshot(int64 id, const BgReply *reply,
								   const char *body, size_t body_len);
extern List *bg_queue_recover(void);
extern TimestampTz bg_queue_next_due(void);

#endif							/* BILLOGRAM_QUEUE_H */
