/*-------------------------------------------------------------------------
 *
 * journal_int.h
 *	  What the journal's own files share, and nobody else uses: the
 *	  statements and their plan cache, the SPI helpers.
 *
 * The journal is four files, split as core splits walreceiver.c and
 * walreceiverfuncs.c:
 *	 journal.c		finding the extension, the plan cache, the worker's batch
 *					journal and installation, SPI helpers;
 *	 statements.c	the statement texts;
 *	 queue.c		inserts, claims, outcomes, idempotency keys;
 *	 settle.c		recovery, rows from elsewhere, settlement, readings,
 *					when the journal is next due;
 *	 journalfuncs.c	the SQL-callable functions.
 * Their public side is journal.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_JOURNAL_INT_H
#define BILLOGRAM_JOURNAL_INT_H

#include "executor/spi.h"
#include "utils/array.h"

#include "journal.h"

/*
 * The journal's statements (statements.c), planned once per process and
 * kept (bg_plan_for).
 */
typedef enum BgStatement
{
	STMT_INSERT,
	STMT_INSERT_SYNC,
	STMT_CLAIM,
	STMT_RECORD_OUTCOMES,
	STMT_HOLD,
	STMT_SNAPSHOT,
	STMT_SETTLE_DUE,
	STMT_SETTLE,
	STMT_UNSETTLED,
	STMT_READS_DUE,
	STMT_READ_RECORDED,
	STMT_LEDGER_KNOWN,
	STMT_INSERT_KEYED,
	STMT_KEY_OWNER,
	STMT_INSTANCE,
	STMT_NOTE_KEY,
	STMT_KEY_FIND,
	STMT_KEY_CLAIM,
	STMT_KEY_BIND,
	STMT_NEXT_DUE,
	NUM_STATEMENTS
} BgStatement;

/* statements.c: stmt prepared for journal j, not yet kept */
extern SPIPlanPtr bg_statement_prepare(const BgJournal *j, BgStatement stmt);

/* journal.c: the plan cache, and the worker's journal of this batch */
extern SPIPlanPtr bg_plan_for(const BgJournal *j, BgStatement stmt);
#define bg_worker_plan(stmt)	bg_plan_for(bg_journal_opened(), (stmt))
extern void bg_check_spi(int rc, int expected, const char *what);

/*
 * Where the rows this worker sends were made, as three statement
 * arguments from args[0]: made_in_system, made_in_database and
 * made_in_instance.  False, and nothing is to be sent, while this
 * installation has no identity (billogram_instance is empty).
 */
extern bool bg_here_args(Datum *args);

/*
 * The rows whose outcome this installation settles, over the journal's
 * columns with bg_here_args() as $1, $2 and $3: those it made, and those
 * from 0.1, which recorded no origin (an update in place, 010_upgrade).
 * Only these are recovered from 'sending' and weighed from readings of
 * their invoice; any other row that comes in_doubt and still being
 * weighed is the server's that made it (bg_journal_hold_foreign).  Never
 * NULL, so that it can be negated.
 */
#define BG_SETTLED_HERE_SQL "(made_in_system IS NULL OR (made_in_system = $1 " \
	"AND made_in_database IS NOT DISTINCT FROM $2 AND made_in_instance IS NOT DISTINCT FROM $3))"

/* SPI arguments and results; "" is NULL for text */
extern void bg_text_arg(Datum *values, char *nulls, int i, const char *s);
extern void bg_text_elem(Datum *elems, bool *nulls, int i, const char *s);
extern ArrayType *bg_text_array(Datum *elems, bool *nulls, int n);
extern ArrayType *bg_int_array(Datum *elems, bool *nulls, int n, Oid type);
extern char *bg_spi_text(int col);
extern BgQueuedRequest *bg_queued_from_row(HeapTuple tuple, TupleDesc desc);

/* What the journal writes of a reply: its error, its invoice's summary. */
extern char *bg_error_json(const BgReply *reply);
extern char *bg_summary_text(const char *utf8, size_t len);

#endif							/* BILLOGRAM_JOURNAL_INT_H */
