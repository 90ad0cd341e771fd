/*-------------------------------------------------------------------------
 *
 * statements.c
 *	  The journal's statements: every SQL text the journal's C code runs
 *	  through a kept plan, with its arguments' types.
 *
 * The statements are planned once per process (bg_plan_for, journal.c)
 * with generic plans forced: the custom plan PostgreSQL would otherwise try
 * first, and keep choosing for the claim, costs a planner run per
 * execution.  In a text, %1$s stands for the journal's qualified name,
 * %2$s for the column list every INSERT names (journal_columns), %3$s for
 * the extension's schema and %4$s for the journal's id sequence as a
 * literal.  The table's INSERT is written once, in STMT_INSERT (and its
 * keyed and batched forms).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "journal_int.h"

/* What a new row is made of, in the order both INSERTs give it. */
static const char journal_columns[] =
"origin, billogram_id, mode, amount, request_body, source_table, source_key, "
"created_by, effective_role, login_role, database_name, backend_pid, "
"application_name, made_in_system, made_in_database, state, attempts, sent_at, "
"made_in_instance, idempotency_key";

/*
 * The installation a row is made by (billogram_instance, never dumped), as
 * the last value of every INSERT: rows restored from a dump, even into the
 * same database, carry another one and are held, not sent.
 */
#define INSTANCE_SQL "(SELECT i.id FROM %3$s.billogram_instance i)"

/*
 * Why a queued row is read before it is sent, as it is inserted: its
 * invoice's first payment, when the ledger knows nothing of it (see
 * STMT_READS_DUE); $2 is the invoice.
 */
#define FIRST_PAYMENT_SQL "CASE WHEN NOT EXISTS (SELECT 1 FROM %3$s.billogram_ledger l " \
	"WHERE l.billogram_id = $2) THEN 'first_payment' END"

/*
 * What the ledger knows of the invoice of row x, fixed on the row as it
 * becomes 'sending' (see billogram_ledger_baselines): a subquery per row,
 * so that each row looks its invoice up by the ledger's key.
 */
#define BASELINE_SQL(x) "(SELECT b.baseline FROM %3$s.billogram_ledger_baselines b " \
	"WHERE b.billogram_id = " x ".billogram_id)"

/*
 * One payment per invoice in flight, in order: the pending row p is not
 * taken while its invoice has an earlier pending row, a row sending, or one
 * still being settled (STMT_CLAIM, STMT_READS_DUE).
 */
#define INVOICE_FREE_SQL "NOT EXISTS (SELECT 1 FROM %1$s o WHERE o.billogram_id = p.billogram_id " \
	"  AND o.id <> p.id AND (o.state = 'sending' OR o.settle_at IS NOT NULL " \
	"  OR (o.state = 'pending' AND o.id < p.id))) "

static const char *const statement_sql[NUM_STATEMENTS] = {
	/*
	 * A queued payment, made by a backend.  $8 to $13: the caller, see
	 * BgCaller; $14, $15: bg_journal_origin().  Every type is
	 * schema-qualified: backends run it with a pinned search_path (see
	 * enqueue.c).
	 */
	[STMT_INSERT] =
	"INSERT INTO %1$s (%2$s, verify_reason) "
	"VALUES ($1, $2, $3, $4::pg_catalog.numeric, $5, $6, $7::pg_catalog.jsonb, "
	"$8, $9, $10, $11, $12, $13, $14, $15, 'pending', 0, NULL, " INSTANCE_SQL ", $16, "
	FIRST_PAYMENT_SQL ") "
	"RETURNING id",

	/*
	 * The synchronous calls of a batch, made by the worker in one
	 * statement, already 'sending': arrays of id, mode, amount and body,
	 * then of the callers' columns ($5 to $10); $11, $12:
	 * bg_journal_origin(); $13 the idempotency keys.  A backend has at most
	 * one call in progress, so backend_pid tells the rows apart.
	 */
	[STMT_INSERT_SYNC] =
	"INSERT INTO %1$s (%2$s, baseline) "
	"SELECT 'sync', u.billogram_id, u.mode, u.amount::numeric, u.body, NULL, NULL, "
	"u.created_by, u.effective_role, u.login_role, u.database_name, u.backend_pid, "
	"u.application_name, $11, $12, 'sending', 1, now(), " INSTANCE_SQL ", u.idempotency_key, "
	BASELINE_SQL("u") " "
	"FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
	"$6::text[], $7::text[], $8::text[], $9::int4[], $10::text[], $13::text[]) "
	"AS u(billogram_id, mode, amount, body, created_by, effective_role, "
	"login_role, database_name, backend_pid, application_name, idempotency_key) "
	"RETURNING id, backend_pid",

	/*
	 * $2, $3: the claim cursor, see bg_journal_claim(); $4, $5, $6: only
	 * rows made here, by this installation, see bg_journal_origin() and
	 * bg_journal_open().  One payment per invoice in
	 * flight, in order: a row waits while its invoice has an earlier
	 * pending row, a row sending, or one still being settled.  Only rows
	 * that need no reading of their invoice first (verify_reason, see
	 * STMT_READS_DUE) are claimed; each gets the ledger's view of its
	 * invoice as its baseline, which is exact now that nothing else of
	 * ours is in flight on it.
	 */
	[STMT_CLAIM] =
	"UPDATE %1$s r SET state = 'sending', attempts = r.attempts + 1, sent_at = now(), "
	"baseline = " BASELINE_SQL("r") " "
	"WHERE r.id IN (SELECT p.id FROM %1$s p WHERE p.state = 'pending' "
	"AND p.next_attempt_at <= now() AND (p.next_attempt_at, p.id) > ($2, $3) "
	"AND p.made_in_system = $4 AND p.made_in_database = $5 AND p.made_in_instance = $6 "
	"AND p.verify_reason IS NULL "
	"AND " INVOICE_FREE_SQL
	"ORDER BY p.next_attempt_at, p.id "
	"LIMIT $1 FOR UPDATE SKIP LOCKED) "
	"RETURNING r.id, r.billogram_id, r.mode, r.amount, r.request_body, r.next_attempt_at",

	/*
	 * Every outcome of a batch in one statement, over arrays: $1 ids, $2
	 * final states, $3 retry?, $4 HTTP statuses, $5 what to keep of the
	 * invoice when it is not the summary, $6 errors, $7 Retry-After
	 * seconds; $8 billogram.retry_for in seconds; $9 the invoice's summary
	 * whatever is kept, for the ledger and for the events the payment added
	 * to its baseline (event_uuids); $10 whether the summary is what is kept.
	 * Each summary is parsed once, in o: parsing its text for each of its
	 * three uses was a fifth of this statement's time.  A
	 * retry waits 1 s doubling up to 5 min, with jitter, and at least
	 * Retry-After; it is made only while the row has been pending
	 * for less than retry_for: an outage fails payments by its length, not
	 * by a count of tries.  Whether a row goes back to pending (again: to be
	 * retried, within retry_for) is decided once per row, from the row as
	 * updated.  Final states are announced (billogram_announce).  The
	 * summaries join the ledger in one call for the batch (l, which each row
	 * of the result joins so that it runs).
	 */
	[STMT_RECORD_OUTCOMES] =
	"WITH o AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::bool[], $4::int4[], "
	"  $5::text[], $6::text[], $7::int4[], $9::text[]::jsonb[], $10::bool[]) "
	"  AS o(id, state, retry, http_status, invoice, error, retry_after, summary, keeps_summary)), "
	"u AS (UPDATE %1$s r SET "
	" (state, next_attempt_at, finished_at, settle_at) = (SELECT"
	"   CASE WHEN w.again THEN 'pending' ELSE o.state END,"
	"   CASE WHEN w.again THEN now() + greatest("
	"     make_interval(secs => o.retry_after),"
	"     make_interval(secs => least(300, 2 ^ (r.attempts - 1)) * (0.5 + random() / 2)))"
	"     ELSE r.next_attempt_at END,"
	"   CASE WHEN w.again THEN NULL ELSE clock_timestamp() END,"
	"   CASE WHEN o.state = 'in_doubt' AND NOT w.again THEN now() END"
	"   FROM (SELECT o.retry AND r.pending_since > now() - make_interval(secs => $8) AS again) w),"
	" http_status = o.http_status,"
	" response = CASE WHEN o.keeps_summary THEN o.summary ELSE o.invoice::jsonb END,"
	" error = o.error::jsonb,"
	" event_uuids = CASE WHEN o.summary IS NOT NULL AND r.baseline IS NOT NULL THEN ARRAY("
	"   SELECT e ->> 'event_uuid' FROM jsonb_array_elements(o.summary -> 'events') e"
	"    WHERE jsonb_typeof(e -> 'event_uuid') = 'string'"
	"      AND NOT coalesce(r.baseline -> 'events' ? (e ->> 'event_uuid'), false))"
	"   ELSE r.event_uuids END "
	" FROM o WHERE r.id = o.id RETURNING r.id, r.state, r.billogram_id, o.summary), "
	"l AS (SELECT %3$s.billogram_ledger_record(array_agg(u.billogram_id ORDER BY u.id), "
	"  array_agg(u.summary ORDER BY u.id), array_agg(u.id ORDER BY u.id)) "
	"  FROM u WHERE u.summary IS NOT NULL) "
	"SELECT u.id, u.state, %3$s.billogram_announce(u.id, u.state) FROM u, l",

	/*
	 * $1, $2, $3: where this worker runs and its installation.  A pending
	 * row made elsewhere is held.  One caught sending, or in_doubt and
	 * still being weighed by the server that made it (settle_at set, made
	 * neither here nor by 0.1: see BG_SETTLED_HERE_SQL), is in_doubt with a
	 * verdict of its own, 'inherited' (see billogram_in_doubt): nothing
	 * reads its invoice, since nothing here knew the invoice before that
	 * server sent it, and the verdict was that server's to reach.  What
	 * that server's evidence said, if anything, is kept under 'original';
	 * the error saying why it became in_doubt there stays.
	 */
	[STMT_HOLD] =
	"WITH h AS (UPDATE %1$s SET "
	" state = CASE state WHEN 'pending' THEN 'held' ELSE 'in_doubt' END,"
	" held_at = CASE state WHEN 'pending' THEN clock_timestamp() ELSE held_at END,"
	" finished_at = CASE state WHEN 'sending' THEN clock_timestamp() ELSE finished_at END,"
	" settle_at = NULL,"
	" error = CASE state WHEN 'sending' THEN jsonb_build_object('kind', 'copy',"
	"   'message', 'found in state sending in a copy of another database, cluster or installation',"
	"   'may_have_reached_billogram', true) ELSE error END,"
	" evidence = CASE WHEN state = 'pending' THEN evidence ELSE jsonb_build_object('verdict', 'inherited',"
	"   'why', CASE state WHEN 'sending'"
	"     THEN 'it came from another database, cluster or installation while that server was sending it, so it may have been sent'"
	"     ELSE 'it came from another database, cluster or installation while that server was still reading its invoice to settle it, so it may have been sent' END)"
	"   || CASE WHEN evidence IS NOT NULL THEN jsonb_build_object('original', evidence) ELSE '{}' END END"
	" WHERE state IN ('pending', 'sending', 'in_doubt') "
	" AND CASE state WHEN 'in_doubt' THEN settle_at IS NOT NULL AND NOT " BG_SETTLED_HERE_SQL
	"   ELSE made_in_system IS DISTINCT FROM $1 OR made_in_database IS DISTINCT FROM $2"
	"     OR made_in_instance IS DISTINCT FROM $3 END "
	" RETURNING state) "
	"SELECT count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'in_doubt') "
	"FROM h",

	/* $2: the invoice to keep, $3: the error when the GET failed */
	[STMT_SNAPSHOT] =
	"UPDATE %1$s SET invoice_snapshot = CASE WHEN $3 IS NOT NULL "
	"THEN jsonb_build_object('error', $3::jsonb) ELSE $2::jsonb END, "
	"snapshot_at = clock_timestamp() WHERE id = $1",

	/*
	 * in_doubt rows whose invoice is due to be read again, at most $4; the
	 * next reading is put off by $5 seconds (the GET's timeout and some),
	 * which the verdict then replaces: a worker that stops in between
	 * reads it again then.  $1, $2, $3: only the rows this installation
	 * settles; one restored with a dump after the last look for rows from
	 * elsewhere (STMT_HOLD) waits for the next one, unread.
	 */
	[STMT_SETTLE_DUE] =
	"UPDATE %1$s r SET settle_at = now() + make_interval(secs => $5) "
	"WHERE r.id IN (SELECT id FROM %1$s WHERE settle_at <= now() AND " BG_SETTLED_HERE_SQL " "
	"ORDER BY settle_at LIMIT $4 FOR UPDATE SKIP LOCKED) AND r.state = 'in_doubt' "
	"RETURNING r.id, r.billogram_id, r.mode, r.amount, r.request_body",

	/* $2: the invoice's summary, $3: why it could not be read; $4: settle_time */
	[STMT_SETTLE] =
	"SELECT %3$s.billogram_settle($1, $2::pg_catalog.jsonb, $3::pg_catalog.jsonb, $4)",

	/* the invoices held back by a row being settled */
	[STMT_UNSETTLED] =
	"SELECT DISTINCT billogram_id FROM %1$s WHERE settle_at IS NOT NULL",

	/*
	 * Invoices to read before the payment at the head of their queue may
	 * go (see billogram_read_recorded): the row has a verify_reason, its
	 * first payment (the ledger knew nothing of it when it was queued), a
	 * resend or a takeover.  At most $1, through the partial index on such
	 * rows, leaving out the invoices $2 the worker has a request in flight
	 * on (bg_inflight_busy_ids), its readings included.  Nothing is
	 * written: a GET is safe to repeat, so a reading in flight needs no
	 * durable mark, and the row's next due time stays for the reading's
	 * outcome to replace.  Putting the row off meanwhile cost an UPDATE,
	 * one more version of every row of a drain.  $3, $4, $5: as for the
	 * claim.
	 */
	[STMT_READS_DUE] =
	"SELECT p.billogram_id, p.id FROM %1$s p WHERE p.state = 'pending' "
	"AND p.next_attempt_at <= now() "
	"AND p.made_in_system = $3 AND p.made_in_database = $4 AND p.made_in_instance = $5 "
	"AND p.verify_reason IS NOT NULL AND p.billogram_id <> ALL ($2) "
	"AND " INVOICE_FREE_SQL
	"ORDER BY p.next_attempt_at, p.id LIMIT $1",

	/*
	 * Readings of invoices, in arrays: $1 the invoices, $2 their summaries,
	 * $3 why each could not be read; $4 billogram.retry_for in seconds; $5
	 * how many of the payments they let go to claim at once, $6, $7, $8: as
	 * for the claim.  Returns the rows claimed, as the claim does.
	 */
	[STMT_READ_RECORDED] =
	"SELECT * FROM %3$s.billogram_read_recorded($1::pg_catalog.text[], "
	"$2::pg_catalog.text[]::pg_catalog.jsonb[], $3::pg_catalog.text[]::pg_catalog.jsonb[], "
	"$4, $5, $6, $7, $8)",

	/* which of the invoices $1 the ledger knows */
	[STMT_LEDGER_KNOWN] =
	"SELECT billogram_id FROM %3$s.billogram_ledger WHERE billogram_id = ANY ($1::text[])",

	/*
	 * A payment with a key that pays once, ever (billogram_keys): $1 to
	 * $15 as in STMT_INSERT, $16 the key's kind, $17 the key.  The key is
	 * taken first, with the journal row's id; a key already taken, or being
	 * taken by a transaction still open (ON CONFLICT waits for it), inserts
	 * nothing.
	 */
	[STMT_INSERT_KEYED] =
	"WITH k AS (INSERT INTO %3$s.billogram_keys (kind, key, request_id) "
	"VALUES ($16, $17, pg_catalog.nextval(%4$s::pg_catalog.regclass)) "
	"ON CONFLICT (kind, key) DO NOTHING RETURNING request_id) "
	"INSERT INTO %1$s (id, %2$s, verify_reason) "
	"SELECT k.request_id, $1, $2, $3, $4::pg_catalog.numeric, $5, $6, $7::pg_catalog.jsonb, "
	"$8, $9, $10, $11, $12, $13, $14, $15, 'pending', 0, NULL, " INSTANCE_SQL ", NULL, "
	FIRST_PAYMENT_SQL " FROM k "
	"RETURNING id",

	/* the journal row a key made */
	[STMT_KEY_OWNER] =
	"SELECT request_id FROM %3$s.billogram_keys WHERE kind = $1 AND key = $2",

	/* this installation, read by the worker in each batch */
	[STMT_INSTANCE] =
	"SELECT id FROM %3$s.billogram_instance",

	/*
	 * A key taken without a payment of its own (request_id 0): a row
	 * moved to another partition, whose payment its first key made.
	 */
	[STMT_NOTE_KEY] =
	"INSERT INTO %3$s.billogram_keys (kind, key, request_id) VALUES ($1, $2, 0) "
	"ON CONFLICT (kind, key) DO NOTHING",

	/*
	 * What a call's key ($1) was used for: the request (its row
	 * gone once purged; 0 while its call is being recorded by this very
	 * transaction), whether it was the same payment ($2 to $4), its state,
	 * the invoice kept and the error.
	 */
	[STMT_KEY_FIND] =
	"SELECT k.request_id, r.state, "
	"r.billogram_id = $2 AND r.mode = $3 AND r.amount IS NOT DISTINCT FROM $4::pg_catalog.numeric, "
	"r.response::pg_catalog.text, r.error ->> 'sqlstate', r.error ->> 'message', "
	"r.error ->> 'status', r.error ->> 'field' "
	"FROM %3$s.billogram_keys k LEFT JOIN %1$s r ON r.id = k.request_id "
	"WHERE k.kind = 'call' AND k.key = $1",

	/* the key $1 for request $2, unless it is taken */
	[STMT_KEY_CLAIM] =
	"INSERT INTO %3$s.billogram_keys (kind, key, request_id) VALUES ('call', $1, $2) "
	"ON CONFLICT (kind, key) DO NOTHING RETURNING request_id",

	/* the worker's claims of a batch get their rows: keys $1, ids $2 */
	[STMT_KEY_BIND] =
	"UPDATE %3$s.billogram_keys k SET request_id = u.id "
	"FROM unnest($1::pg_catalog.text[], $2::pg_catalog.int8[]) AS u(key, id) "
	"WHERE k.kind = 'call' AND k.key = u.key",

	/*
	 * When the journal next has something due (bg_journal_next_due): the
	 * earliest time a pending row may be claimed (STMT_CLAIM) or its
	 * invoice read (STMT_READS_DUE), asked as they ask it (rows made here
	 * only: one restored from elsewhere after the last look would keep the
	 * due time in the past until bg_journal_hold_foreign() holds it), or
	 * the earliest reading of an in_doubt row still being checked here
	 * (STMT_SETTLE_DUE; $1, $2, $3: bg_here_args()).  $4: the invoices the
	 * worker has a request in flight on, whose readings (STMT_READS_DUE)
	 * are not due again while they are in flight.  A row behind another
	 * payment of its invoice is left out: counting it kept the next due
	 * time in the past, and the worker claimed nothing in a loop, for as
	 * long as that payment was settled; whatever ends it wakes the worker.
	 * Each part matches one partial index's predicate and walks it in
	 * order only past the rows that wait on their invoice.
	 */
	[STMT_NEXT_DUE] =
	"SELECT least("
	"(SELECT p.next_attempt_at FROM %1$s p WHERE p.state = 'pending' AND p.verify_reason IS NULL "
	"  AND p.made_in_system = $1 AND p.made_in_database = $2 AND p.made_in_instance = $3 "
	"  AND " INVOICE_FREE_SQL "ORDER BY p.next_attempt_at, p.id LIMIT 1), "
	"(SELECT p.next_attempt_at FROM %1$s p WHERE p.state = 'pending' AND p.verify_reason IS NOT NULL "
	"  AND p.made_in_system = $1 AND p.made_in_database = $2 AND p.made_in_instance = $3 "
	"  AND p.billogram_id <> ALL ($4) "
	"  AND " INVOICE_FREE_SQL "ORDER BY p.next_attempt_at, p.id LIMIT 1), "
	"(SELECT min(settle_at) FROM %1$s WHERE settle_at IS NOT NULL AND state = 'in_doubt' "
	"  AND " BG_SETTLED_HERE_SQL "))",
};

static const int statement_nargs[NUM_STATEMENTS] = {
	[STMT_INSERT] = 16,
	[STMT_INSERT_SYNC] = 13,
	[STMT_CLAIM] = 6,
	[STMT_RECORD_OUTCOMES] = 10,
	[STMT_HOLD] = 3,
	[STMT_SNAPSHOT] = 3,
	[STMT_SETTLE_DUE] = 5,
	[STMT_SETTLE] = 4,
	[STMT_UNSETTLED] = 0,
	[STMT_READS_DUE] = 5,
	[STMT_READ_RECORDED] = 8,
	[STMT_LEDGER_KNOWN] = 1,
	[STMT_INSERT_KEYED] = 17,
	[STMT_KEY_OWNER] = 2,
	[STMT_INSTANCE] = 0,
	[STMT_NOTE_KEY] = 2,
	[STMT_KEY_FIND] = 4,
	[STMT_KEY_CLAIM] = 2,
	[STMT_KEY_BIND] = 2,
	[STMT_NEXT_DUE] = 4,
};
static const Oid statement_types[NUM_STATEMENTS][17] = {
	[STMT_INSERT] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID,
	INT8OID, OIDOID, TEXTOID},
	[STMT_INSERT_SYNC] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, INT8OID, OIDOID, TEXTARRAYOID},
	[STMT_CLAIM] = {INT4OID, TIMESTAMPTZOID, INT8OID, INT8OID, OIDOID, UUIDOID},
	[STMT_RECORD_OUTCOMES] = {INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID,
	INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4OID, TEXTARRAYOID,
	BOOLARRAYOID},
	[STMT_HOLD] = {INT8OID, OIDOID, UUIDOID},
	[STMT_SNAPSHOT] = {INT8OID, TEXTOID, TEXTOID},
	[STMT_SETTLE_DUE] = {INT8OID, OIDOID, UUIDOID, INT4OID, INT4OID},
	[STMT_SETTLE] = {INT8OID, TEXTOID, TEXTOID, INT4OID},
	[STMT_READS_DUE] = {INT4OID, TEXTARRAYOID, INT8OID, OIDOID, UUIDOID},
	[STMT_READ_RECORDED] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4OID,
	INT4OID, INT8OID, OIDOID, UUIDOID},
	[STMT_LEDGER_KNOWN] = {TEXTARRAYOID},
	[STMT_INSERT_KEYED] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID,
	INT8OID, OIDOID, TEXTOID, TEXTOID},
	[STMT_KEY_OWNER] = {TEXTOID, TEXTOID},
	[STMT_NOTE_KEY] = {TEXTOID, TEXTOID},
	[STMT_KEY_FIND] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID},
	[STMT_KEY_CLAIM] = {TEXTOID, INT8OID},
	[STMT_KEY_BIND] = {TEXTARRAYOID, INT8ARRAYOID},
	[STMT_NEXT_DUE] = {INT8OID, OIDOID, UUIDOID, TEXTARRAYOID},
};

static char *
statement_text(const BgJournal *j, BgStatement stmt)
{
	const char *names[4];
	StringInfoData sql;
	const char *p;

	names[0] = j->name;
	names[1] = journal_columns;
	names[2] = j->schema;
	names[3] = quote_literal_cstr(psprintf("%s.billogram_requests_id_seq", j->schema));

	/*
	 * Spliced in by hand: printf's positional arguments would need every
	 * statement to use all four.
	 */
	initStringInfo(&sql);
	for (p = statement_sql[stmt]; *p; p++)
	{
		if (p[0] == '%' && p[1] >= '1' && p[1] <= '4' && p[2] == '$' && p[3] == 's')
		{
			appendStringInfoString(&sql, names[p[1] - '1']);
			p += 3;
		}
		else
			appendStringInfoChar(&sql, *p);
	}
	return sql.data;
}

/*
 * stmt, prepared for the journal j with a generic plan; the caller keeps
 * it (SPI_keepplan).
 */
SPIPlanPtr
bg_statement_prepare(const BgJournal *j, BgStatement stmt)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(statement_text(j, stmt),
										  statement_nargs[stmt],
										  (Oid *) statement_types[stmt],
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "billogram: could not prepare a journal statement: %s",
			 SPI_result_code_string(SPI_result));
	return plan;
}
