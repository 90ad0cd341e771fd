/*-------------------------------------------------------------------------
 *
 * journal.c
 *	  The journal, billogram_requests: every read and write of it.
 *
 * Backends insert queued payments (bg_journal_insert, through enqueue.c);
 * the worker records synchronous calls, claims queued payments, records
 * outcomes and recovers after a crash.  The table's states are an enum here
 * (BgJournalState); its INSERT is written once, in STMT_INSERT.
 *
 * Every row is in state 'sending', committed, before its request goes out,
 * so a crash can never lead to a blind resend: a row found in 'sending' when
 * the worker starts becomes 'in_doubt' for an operator to resolve.  The
 * worker batches: one transaction records the outcomes of every transfer
 * finished since the last one, in one statement, and claims the next rows,
 * so there is one commit and a few statements per batch, not per payment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "guc.h"
#include "invoice.h"
#include "journal.h"
#include "jsonb_fit.h"
#include "report.h"

/*
 * The extension's schema and installed version, read from pg_extension
 * directly: ALTER EXTENSION UPDATE changes the version under the same OID,
 * so it is read again for every command (see bg_journal_lookup).
 */
static bool
find_extension(Oid *nspid, char **version)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("billogram"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		v = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		*nspid = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
		*version = isnull ? pstrdup("") : TextDatumGetCString(v);
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The journal as the current command sees it.  A trigger asks once per row,
 * so the answer is kept for the rest of the command: the extension cannot
 * be created, updated or dropped within one command of this transaction
 * without a new command id.
 */
/* this backend's current local transaction id; PGPROC's layout changed in 17 */
#if PG_VERSION_NUM >= 170000
#define MY_LXID		(MyProc->vxid.lxid)
#else
#define MY_LXID		(MyProc->lxid)
#endif

BgJournalStatus
bg_journal_lookup(BgJournal *journal)
{
	/* names are cached per schema: the extension cannot be moved */
	static Oid	cached_nsp = InvalidOid;
	static char *cached_name = NULL;
	static char *cached_schema = NULL;
	/* the last answer, and the command it is valid for */
	static LocalTransactionId answer_lxid = InvalidLocalTransactionId;
	static CommandId answer_cid = InvalidCommandId;
	static BgJournalStatus answer_status;
	static BgJournal answer;
	static char answer_version[NAMEDATALEN];
	Oid			nspid;
	Oid			relid;
	char	   *version;
	HeapTuple	classtup;
	CommandId	cid = GetCurrentCommandId(false);

	if (answer_lxid == MY_LXID && answer_cid == cid &&
		answer_lxid != InvalidLocalTransactionId)
	{
		*journal = answer;
		return answer_status;
	}

	memset(journal, 0, sizeof(*journal));
	if (!find_extension(&nspid, &version))
		return BG_JOURNAL_MISSING;
	strlcpy(answer_version, version, sizeof(answer_version));
	journal->version = answer_version;
	if (strcmp(version, BG_SCHEMA_VERSION) != 0)
		return BG_JOURNAL_WRONG_VERSION;

	relid = get_relname_relid("billogram_requests", nspid);
	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(classtup))
		return BG_JOURNAL_MISSING;
	journal->owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	if (nspid != cached_nsp)
	{
		char	   *nspname = get_namespace_name(nspid);

		if (cached_name)
			pfree(cached_name);
		if (cached_schema)
			pfree(cached_schema);
		cached_name = MemoryContextStrdup(TopMemoryContext,
										  quote_qualified_identifier(nspname, "billogram_requests"));
		cached_schema = MemoryContextStrdup(TopMemoryContext,
											quote_identifier(nspname));
		cached_nsp = nspid;
	}
	journal->name = cached_name;
	journal->schema = cached_schema;

	/* only a usable journal is remembered: the others end in an error */
	answer = *journal;
	answer_status = BG_JOURNAL_READY;
	answer_lxid = MY_LXID;
	answer_cid = cid;
	return BG_JOURNAL_READY;
}

/*
 * Where a row is made: this cluster (its system identifier) and this
 * database.  A worker sends only the rows made where it runs; rows that came
 * with a dump or a copy from elsewhere are held (see bg_journal_hold_foreign).
 * A promoted standby keeps its primary's system identifier, so it goes on
 * with the queue it inherited.
 */
void
bg_journal_origin(int64 *system, Oid *database)
{
	*system = (int64) GetSystemIdentifier();
	*database = MyDatabaseId;
}

/* the journal of the current batch, set by bg_journal_open() */
static BgJournal journal;
static bool wrong_version_logged = false;

/*
 * This installation (billogram_instance), read in every batch: a restore
 * with pg_restore --clean makes the extension anew, with a new instance,
 * while the worker runs.  have_instance is false when the row is missing:
 * nothing queued is sent then.
 */
static pg_uuid_t instance;
static bool have_instance = false;
static bool no_instance_logged = false;

const char *
bg_journal_state_name(BgJournalState state)
{
	static const char *const names[] = {
		[BG_STATE_PENDING] = "pending",
		[BG_STATE_SENDING] = "sending",
		[BG_STATE_DONE] = "done",
		[BG_STATE_FAILED] = "failed",
		[BG_STATE_IN_DOUBT] = "in_doubt",
		[BG_STATE_HELD] = "held",
	};

	return names[state];
}

static BgJournalState
state_from_name(const char *name)
{
	BgJournalState state;

	for (state = BG_STATE_PENDING; state <= BG_STATE_HELD; state++)
		if (strcmp(name, bg_journal_state_name(state)) == 0)
			return state;
	elog(ERROR, "billogram: unknown journal state \"%s\"", name);
	return BG_STATE_FAILED;		/* keep the compiler quiet */
}

static void read_instance(void);

/*
 * Whether the worker can use the journal in this transaction.  An extension
 * at another version is logged once: until it is updated, the queue waits
 * and synchronous calls are refused unsent.
 */
bool
bg_journal_open(void)
{
	switch (bg_journal_lookup(&journal))
	{
		case BG_JOURNAL_READY:
			wrong_version_logged = false;
			read_instance();
			return true;
		case BG_JOURNAL_WRONG_VERSION:
			if (!wrong_version_logged)
				ereport(WARNING,
						(errmsg("billogram worker: the extension in database \"%s\" is at version %s, this library needs %s",
								bg_database, journal.version, BG_SCHEMA_VERSION),
						 errdetail("Nothing is sent until it is updated: queued payments wait, synchronous calls are refused."),
						 errhint("Run ALTER EXTENSION billogram UPDATE in database \"%s\".",
								 bg_database)));
			wrong_version_logged = true;
			return false;
		case BG_JOURNAL_MISSING:
			break;
	}
	return false;
}

/*
 * The journal's statements, planned once per process and kept.  Generic
 * plans are forced: the custom plan PostgreSQL would otherwise try first,
 * and keep choosing for the claim, costs a planner run per execution.
 * %1$s stands for the journal's qualified name, %2$s for the column list
 * every INSERT names (journal_columns), %3$s for the extension's schema and
 * %4$s for the journal's id sequence as a literal.
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
	STMT_NEXT_DUE,
	STMT_LEDGER_KNOWN,
	STMT_INSERT_KEYED,
	STMT_KEY_OWNER,
	STMT_INSTANCE,
	STMT_NOTE_KEY,
	STMT_KEY_FIND,
	STMT_KEY_CLAIM,
	STMT_KEY_BIND,
	NUM_STATEMENTS
} BgStatement;

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
	"%3$s.billogram_ledger_baseline(u.billogram_id) "
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
	"baseline = %3$s.billogram_ledger_baseline(r.billogram_id) "
	"WHERE r.id IN (SELECT p.id FROM %1$s p WHERE p.state = 'pending' "
	"AND p.next_attempt_at <= now() AND (p.next_attempt_at, p.id) > ($2, $3) "
	"AND p.made_in_system = $4 AND p.made_in_database = $5 AND p.made_in_instance = $6 "
	"AND p.verify_reason IS NULL "
	"AND NOT EXISTS (SELECT 1 FROM %1$s o WHERE o.billogram_id = p.billogram_id "
	"  AND o.id <> p.id AND (o.state = 'sending' OR o.settle_at IS NOT NULL "
	"  OR (o.state = 'pending' AND o.id < p.id))) "
	"ORDER BY p.next_attempt_at, p.id "
	"LIMIT $1 FOR UPDATE SKIP LOCKED) "
	"RETURNING r.id, r.billogram_id, r.mode, r.amount, r.request_body, r.next_attempt_at",

	/*
	 * Every outcome of a batch in one statement, over arrays: $1 ids, $2
	 * final states, $3 retry?, $4 HTTP statuses, $5 what to keep of the
	 * invoice, $6 errors, $7 Retry-After seconds; $8 billogram.retry_for in
	 * seconds; $9 the invoice's summary whatever is kept, for the ledger and
	 * for the events the payment added to its baseline (event_uuids).  A retry waits 1 s doubling up to 5 min, with jitter, and
	 * at least Retry-After; it is made only while the row has been pending
	 * for less than retry_for: an outage fails payments by its length, not
	 * by a count of tries.  Final states are announced on the
	 * billogram_requests channel.
	 */
	[STMT_RECORD_OUTCOMES] =
	"WITH o AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::bool[], $4::int4[], "
	"  $5::text[], $6::text[], $7::int4[], $9::text[]) "
	"  AS o(id, state, retry, http_status, invoice, error, retry_after, summary)), "
	"u AS (UPDATE %1$s r SET "
	" state = CASE WHEN o.retry AND r.pending_since > now() - make_interval(secs => $8) THEN 'pending' ELSE o.state END,"
	" next_attempt_at = CASE WHEN o.retry AND r.pending_since > now() - make_interval(secs => $8) THEN now() + greatest("
	"   make_interval(secs => o.retry_after),"
	"   make_interval(secs => least(300, 2 ^ (r.attempts - 1)) * (0.5 + random() / 2)))"
	"   ELSE r.next_attempt_at END,"
	" finished_at = CASE WHEN o.retry AND r.pending_since > now() - make_interval(secs => $8) THEN NULL ELSE clock_timestamp() END,"
	" settle_at = CASE WHEN o.state = 'in_doubt' AND NOT (o.retry AND r.pending_since > now() - make_interval(secs => $8)) THEN now() END,"
	" http_status = o.http_status,"
	" response = o.invoice::jsonb,"
	" error = o.error::jsonb,"
	" event_uuids = CASE WHEN o.summary IS NOT NULL AND r.baseline IS NOT NULL THEN ARRAY("
	"   SELECT e ->> 'event_uuid' FROM jsonb_array_elements(o.summary::jsonb -> 'events') e"
	"    WHERE jsonb_typeof(e -> 'event_uuid') = 'string'"
	"      AND NOT coalesce(r.baseline -> 'events' ? (e ->> 'event_uuid'), false))"
	"   ELSE r.event_uuids END "
	" FROM o WHERE r.id = o.id RETURNING r.id, r.state, r.billogram_id, o.summary) "
	"SELECT u.id, u.state, CASE WHEN u.state <> 'pending' THEN "
	" pg_notify('billogram_requests', json_build_object('id', u.id, 'state', u.state)::text) END, "
	" CASE WHEN u.summary IS NOT NULL THEN "
	" %3$s.billogram_ledger_record(u.billogram_id, u.summary::jsonb, u.id) END "
	"FROM u",

	/* $1, $2, $3: where this worker runs and its installation */
	[STMT_HOLD] =
	"WITH h AS (UPDATE %1$s SET "
	" state = CASE state WHEN 'pending' THEN 'held' ELSE 'in_doubt' END,"
	" held_at = CASE state WHEN 'pending' THEN clock_timestamp() END,"
	" finished_at = CASE state WHEN 'sending' THEN clock_timestamp() END,"
	" error = CASE state WHEN 'sending' THEN jsonb_build_object('kind', 'copy',"
	"   'message', 'found in state sending in a copy of another database, cluster or installation',"
	"   'may_have_reached_billogram', true) ELSE error END "
	" WHERE state IN ('pending', 'sending') "
	" AND (made_in_system IS DISTINCT FROM $1 OR made_in_database IS DISTINCT FROM $2"
	"   OR made_in_instance IS DISTINCT FROM $3) "
	" RETURNING state) "
	"SELECT count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'in_doubt') "
	"FROM h",

	/* $2: the invoice to keep, $3: the error when the GET failed */
	[STMT_SNAPSHOT] =
	"UPDATE %1$s SET invoice_snapshot = CASE WHEN $3 IS NOT NULL "
	"THEN jsonb_build_object('error', $3::jsonb) ELSE $2::jsonb END, "
	"snapshot_at = clock_timestamp() WHERE id = $1",

	/*
	 * in_doubt rows whose invoice is due to be read again, at most $1; the
	 * next reading is put off by $2 seconds (the GET's timeout and some),
	 * which the verdict then replaces: a worker that stops in between
	 * reads it again then.
	 */
	[STMT_SETTLE_DUE] =
	"UPDATE %1$s r SET settle_at = now() + make_interval(secs => $2) "
	"WHERE r.id IN (SELECT id FROM %1$s WHERE settle_at <= now() "
	"ORDER BY settle_at LIMIT $1 FOR UPDATE SKIP LOCKED) AND r.state = 'in_doubt' "
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
	 * rows; each is put off by $2 seconds (the GET's timeout and some)
	 * meanwhile, which the reading's outcome replaces.  $3, $4, $5: as for
	 * the claim.
	 */
	[STMT_READS_DUE] =
	"WITH due AS (SELECT p.billogram_id, p.id FROM %1$s p WHERE p.state = 'pending' "
	"AND p.next_attempt_at <= now() "
	"AND p.made_in_system = $3 AND p.made_in_database = $4 AND p.made_in_instance = $5 "
	"AND p.verify_reason IS NOT NULL "
	"AND NOT EXISTS (SELECT 1 FROM %1$s o WHERE o.billogram_id = p.billogram_id "
	"  AND o.id <> p.id AND (o.state = 'sending' OR o.settle_at IS NOT NULL "
	"  OR (o.state = 'pending' AND o.id < p.id))) "
	"ORDER BY p.next_attempt_at, p.id LIMIT $1 FOR UPDATE SKIP LOCKED), "
	"put_off AS (UPDATE %1$s r SET next_attempt_at = now() + make_interval(secs => $2) "
	"  FROM due WHERE r.id = due.id RETURNING r.id) "
	"SELECT due.billogram_id, due.id FROM due JOIN put_off USING (id)",

	/*
	 * Readings of invoices, in arrays: $1 the invoices, $2 their summaries,
	 * $3 why each could not be read; $4 billogram.retry_for in seconds.
	 */
	[STMT_READ_RECORDED] =
	"SELECT %3$s.billogram_read_recorded(u.i, u.s::pg_catalog.jsonb, u.f::pg_catalog.jsonb, $4) "
	"FROM unnest($1::pg_catalog.text[], $2::pg_catalog.text[], $3::pg_catalog.text[]) "
	"WITH ORDINALITY AS u(i, s, f, n) ORDER BY u.n",

	/*
	 * The earliest time a row may be claimed (STMT_CLAIM) or read
	 * (STMT_READS_DUE), with the same test of its invoice being free; each
	 * part matches one partial index's predicate, and walks it in order only
	 * past the rows that wait on their invoice.  Then the earliest reading of
	 * an in_doubt row.
	 */
	[STMT_NEXT_DUE] =
	"SELECT least("
	"(SELECT p.next_attempt_at FROM %1$s p WHERE p.state = 'pending' AND p.verify_reason IS NULL "
	"  AND NOT EXISTS (SELECT 1 FROM %1$s o WHERE o.billogram_id = p.billogram_id "
	"  AND o.id <> p.id AND (o.state = 'sending' OR o.settle_at IS NOT NULL "
	"  OR (o.state = 'pending' AND o.id < p.id))) "
	"  ORDER BY p.next_attempt_at, p.id LIMIT 1), "
	"(SELECT p.next_attempt_at FROM %1$s p WHERE p.state = 'pending' AND p.verify_reason IS NOT NULL "
	"  AND NOT EXISTS (SELECT 1 FROM %1$s o WHERE o.billogram_id = p.billogram_id "
	"  AND o.id <> p.id AND (o.state = 'sending' OR o.settle_at IS NOT NULL "
	"  OR (o.state = 'pending' AND o.id < p.id))) "
	"  ORDER BY p.next_attempt_at, p.id LIMIT 1), "
	"(SELECT min(settle_at) FROM %1$s WHERE settle_at IS NOT NULL))",

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
};

static const int statement_nargs[NUM_STATEMENTS] = {
	[STMT_INSERT] = 16,
	[STMT_INSERT_SYNC] = 13,
	[STMT_CLAIM] = 6,
	[STMT_RECORD_OUTCOMES] = 9,
	[STMT_HOLD] = 3,
	[STMT_SNAPSHOT] = 3,
	[STMT_SETTLE_DUE] = 2,
	[STMT_SETTLE] = 4,
	[STMT_UNSETTLED] = 0,
	[STMT_READS_DUE] = 5,
	[STMT_READ_RECORDED] = 4,
	[STMT_NEXT_DUE] = 0,
	[STMT_LEDGER_KNOWN] = 1,
	[STMT_INSERT_KEYED] = 17,
	[STMT_KEY_OWNER] = 2,
	[STMT_INSTANCE] = 0,
	[STMT_NOTE_KEY] = 2,
	[STMT_KEY_FIND] = 4,
	[STMT_KEY_CLAIM] = 2,
	[STMT_KEY_BIND] = 2,
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
	INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4OID, TEXTARRAYOID},
	[STMT_HOLD] = {INT8OID, OIDOID, UUIDOID},
	[STMT_SNAPSHOT] = {INT8OID, TEXTOID, TEXTOID},
	[STMT_SETTLE_DUE] = {INT4OID, INT4OID},
	[STMT_SETTLE] = {INT8OID, TEXTOID, TEXTOID, INT4OID},
	[STMT_READS_DUE] = {INT4OID, INT4OID, INT8OID, OIDOID, UUIDOID},
	[STMT_READ_RECORDED] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4OID},
	[STMT_NEXT_DUE] = {0},
	[STMT_LEDGER_KNOWN] = {TEXTARRAYOID},
	[STMT_INSERT_KEYED] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID,
	INT8OID, OIDOID, TEXTOID, TEXTOID},
	[STMT_KEY_OWNER] = {TEXTOID, TEXTOID},
	[STMT_NOTE_KEY] = {TEXTOID, TEXTOID},
	[STMT_KEY_FIND] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID},
	[STMT_KEY_CLAIM] = {TEXTOID, INT8OID},
	[STMT_KEY_BIND] = {TEXTARRAYOID, INT8ARRAYOID},
};

/*
 * Plans per process, for the journal they were made for: a backend queues
 * into its own database's journal, the worker into billogram.database's.
 */
static SPIPlanPtr plans[NUM_STATEMENTS];
static char *plans_journal = NULL;

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

static SPIPlanPtr
plan_for(const BgJournal *j, BgStatement stmt)
{
	int			i;

	if (plans_journal == NULL || strcmp(plans_journal, j->name) != 0)
	{
		for (i = 0; i < NUM_STATEMENTS; i++)
		{
			if (plans[i])
				SPI_freeplan(plans[i]);
			plans[i] = NULL;
		}
		if (plans_journal)
			pfree(plans_journal);
		plans_journal = MemoryContextStrdup(TopMemoryContext, j->name);
	}
	if (plans[stmt] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(statement_text(j, stmt),
											  statement_nargs[stmt],
											  (Oid *) statement_types[stmt],
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "billogram: could not prepare a journal statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[stmt] = plan;
	}
	return plans[stmt];
}

static void
check_spi(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "billogram: %s failed: %s", what,
			 SPI_result_code_string(rc));
}

static void
read_instance(void)
{
	bool		isnull = true;
	Datum		id = (Datum) 0;
	int			rc;

	rc = SPI_execute_plan(plan_for(&journal, STMT_INSTANCE), NULL, NULL, true, 1);
	check_spi(rc, SPI_OK_SELECT, "reading billogram_instance");
	if (SPI_processed == 1)
		id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	have_instance = !isnull;
	if (have_instance)
	{
		memcpy(&instance, DatumGetUUIDP(id), sizeof(instance));
		no_instance_logged = false;
	}
	else if (!no_instance_logged)
	{
		ereport(WARNING,
				(errmsg("billogram worker: table billogram_instance in database \"%s\" is empty",
						bg_database),
				 errdetail("Queued payments are not sent: without this installation's identity the worker cannot tell them from rows restored from a dump."),
				 errhint("As a superuser: INSERT INTO billogram_instance DEFAULT VALUES; then check the held rows and call billogram_release_held().")));
		no_instance_logged = true;
	}
}

/* A text argument and its SPI null flag; "" is NULL. */
static void
set_text_arg(Datum *values, char *nulls, int i, const char *s)
{
	bool		isnull = (s == NULL || s[0] == '\0');

	values[i] = isnull ? (Datum) 0 : CStringGetTextDatum(s);
	nulls[i] = isnull ? 'n' : ' ';
}

/* The values of a new pending row, $1 to $15 of STMT_INSERT. */
static void
insert_args(Datum *values, char *nulls, const BgCreditPayment *payment,
			const char *origin, const char *source_table,
			const char *source_key)
{
	const BgCaller *caller = &payment->caller;
	int64		system;
	Oid			database;

	set_text_arg(values, nulls, 0, origin);
	set_text_arg(values, nulls, 1, payment->billogram_id);
	set_text_arg(values, nulls, 2, payment->mode);
	set_text_arg(values, nulls, 3, payment->amount);
	set_text_arg(values, nulls, 4, payment->body);
	set_text_arg(values, nulls, 5, source_table);
	set_text_arg(values, nulls, 6, source_key);
	set_text_arg(values, nulls, 7, NameStr(caller->role));
	set_text_arg(values, nulls, 8, NameStr(caller->effective_role));
	set_text_arg(values, nulls, 9, NameStr(caller->login_role));
	set_text_arg(values, nulls, 10, NameStr(caller->database));
	values[11] = Int32GetDatum(caller->pid);
	nulls[11] = ' ';
	set_text_arg(values, nulls, 12, caller->application_name);
	bg_journal_origin(&system, &database);
	values[13] = Int64GetDatum(system);
	values[14] = ObjectIdGetDatum(database);
	nulls[13] = nulls[14] = ' ';
}

/*
 * Insert one pending row and return its id: $1 to $15 as insert_args()
 * makes them, $16 the call's idempotency key (NULL if none).
 */
int64
bg_journal_insert(const BgJournal *j, const BgCreditPayment *payment,
				  const char *origin, const char *source_table,
				  const char *source_key)
{
	Datum		values[16];
	char		nulls[16];
	bool		isnull;
	int			rc;

	insert_args(values, nulls, payment, origin, source_table, source_key);
	set_text_arg(values, nulls, 15, payment->idempotency_key);
	rc = SPI_execute_plan(plan_for(j, STMT_INSERT), values, nulls, false, 1);
	check_spi(rc, SPI_OK_INSERT_RETURNING, "queuing a credit payment");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The same, once per key, ever: returns the new row's id, or 0 when the
 * key has paid before, with *earlier set to the journal row it made.  Two
 * transactions taking the same key at once make one row: the second waits
 * for the first and inserts nothing if it commits.
 */
int64
bg_journal_insert_keyed(const BgJournal *j, const BgCreditPayment *payment,
						const char *origin, const char *source_table,
						const char *source_key, const char *key_kind,
						const char *key, int64 *earlier)
{
	Datum		values[17];
	char		nulls[17];
	bool		isnull;
	int			rc;

	insert_args(values, nulls, payment, origin, source_table, source_key);
	set_text_arg(values, nulls, 15, key_kind);
	set_text_arg(values, nulls, 16, key);
	rc = SPI_execute_plan(plan_for(j, STMT_INSERT_KEYED), values, nulls, false, 1);
	check_spi(rc, SPI_OK_INSERT_RETURNING, "queuing a keyed credit payment");
	*earlier = 0;
	if (SPI_processed == 1)
		return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));

	rc = SPI_execute_plan(plan_for(j, STMT_KEY_OWNER), values + 15, nulls + 15,
						  false, 1);
	check_spi(rc, SPI_OK_SELECT, "reading a payment key");
	if (SPI_processed == 1)
		*earlier = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	return 0;
}

/* Take a key without a payment (see STMT_NOTE_KEY); returns 0. */
int64
bg_journal_note_key(const BgJournal *j, const char *key_kind, const char *key)
{
	Datum		values[2];
	char		nulls[2];
	int			rc;

	set_text_arg(values, nulls, 0, key_kind);
	set_text_arg(values, nulls, 1, key);
	rc = SPI_execute_plan(plan_for(j, STMT_NOTE_KEY), values, nulls, false, 0);
	check_spi(rc, SPI_OK_INSERT, "noting a payment key");
	return 0;
}

/* An element of a text array under construction; "" is NULL. */
static void
set_text_elem(Datum *elems, bool *nulls, int i, const char *s)
{
	nulls[i] = (s == NULL || s[0] == '\0');
	elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(s);
}

static ArrayType *text_array(Datum *elems, bool *nulls, int n);
static ArrayType *int_array(Datum *elems, bool *nulls, int n, Oid type);

void
bg_journal_insert_sync(const BgCreditPayment *const *payments, int n,
					   int64 *ids)
{
	enum
	{
		ID, MODE, AMOUNT, BODY, ROLE, EFFECTIVE, LOGIN, DATABASE, PID, APP,
		KEY, NCOLS
	};
	Datum	   *elems[NCOLS];
	bool	   *elem_nulls[NCOLS];
	Datum		args[13];
	int64		system;
	Oid			database;
	int			rc;
	int			col;
	int			i;
	uint64		r;

	if (n == 0)
		return;
	for (col = 0; col < NCOLS; col++)
	{
		elems[col] = palloc(n * sizeof(Datum));
		elem_nulls[col] = palloc0(n * sizeof(bool));
	}
	for (i = 0; i < n; i++)
	{
		const BgCreditPayment *p = payments[i];
		const BgCaller *c = &p->caller;

		set_text_elem(elems[ID], elem_nulls[ID], i, p->billogram_id);
		set_text_elem(elems[MODE], elem_nulls[MODE], i, p->mode);
		set_text_elem(elems[AMOUNT], elem_nulls[AMOUNT], i, p->amount);
		set_text_elem(elems[BODY], elem_nulls[BODY], i, p->body);
		set_text_elem(elems[ROLE], elem_nulls[ROLE], i, NameStr(c->role));
		set_text_elem(elems[EFFECTIVE], elem_nulls[EFFECTIVE], i, NameStr(c->effective_role));
		set_text_elem(elems[LOGIN], elem_nulls[LOGIN], i, NameStr(c->login_role));
		set_text_elem(elems[DATABASE], elem_nulls[DATABASE], i, NameStr(c->database));
		elems[PID][i] = Int32GetDatum(c->pid);
		set_text_elem(elems[APP], elem_nulls[APP], i, c->application_name);
		set_text_elem(elems[KEY], elem_nulls[KEY], i, p->idempotency_key);
		ids[i] = 0;
	}
	for (col = 0; col < APP + 1; col++)
		args[col] = PointerGetDatum(col == PID ?
									int_array(elems[col], NULL, n, INT4OID) :
									text_array(elems[col], elem_nulls[col], n));
	bg_journal_origin(&system, &database);
	args[10] = Int64GetDatum(system);
	args[11] = ObjectIdGetDatum(database);
	args[12] = PointerGetDatum(text_array(elems[KEY], elem_nulls[KEY], n));

	rc = SPI_execute_plan(plan_for(&journal, STMT_INSERT_SYNC), args, NULL,
						  false, 0);
	check_spi(rc, SPI_OK_INSERT_RETURNING, "journaling synchronous calls");
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		HeapTuple	tuple = SPI_tuptable->vals[r];
		int64		id = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
		int32		pid = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));

		for (i = 0; i < n; i++)
			if (payments[i]->caller.pid == pid && ids[i] == 0)
			{
				ids[i] = id;
				break;
			}
	}
	for (i = 0; i < n; i++)
		if (ids[i] == 0)
			elog(ERROR, "billogram worker: the journal row of the synchronous call of process %d is missing",
				 payments[i]->caller.pid);
}

/*
 * The summary of an invoice given as UTF-8 JSON text, palloc'd in the
 * server's encoding.
 */
static char *
summary_text(const char *utf8, size_t len)
{
	char	   *summary = bg_invoice_summary(utf8, len);
	char	   *result;

	if (summary == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	result = pg_any_to_server(summary, (int) strlen(summary), PG_UTF8);
	if (result == summary)
		result = pstrdup(summary);
	free(summary);
	return result;
}

/*
 * What the journal keeps of the invoice in a successful reply, as JSON
 * text, by billogram.journal_reply: its summary, the whole of "data", or
 * nothing.  Taken from the span the classification found, so the reply is
 * not parsed again; the summary's values are copied as text, so its amounts
 * are exactly Billogram's.
 */
char *
bg_journal_invoice_text(const BgReply *reply, const char *body)
{
	if (reply->outcome != BG_OUTCOME_OK || body == NULL ||
		bg_journal_reply == BG_JOURNAL_REPLY_NONE)
		return NULL;
	if (bg_journal_reply == BG_JOURNAL_REPLY_FULL)
	{
		/* the span ends inside the body: a string of its own first */
		char	   *data = pnstrdup(body + reply->data_offset, reply->data_len);

		/*
		 * An invoice jsonb cannot hold here must not keep the outcome of a
		 * payment from being written: its summary is kept instead.
		 */
		if (bg_jsonb_obstacle(data, reply->data_len) == NULL)
			return pg_any_to_server(data, (int) reply->data_len, PG_UTF8);
	}
	return summary_text(body + reply->data_offset, reply->data_len);
}

/*
 * The summary of the invoice in a successful reply, whatever
 * billogram.journal_reply keeps: what the ledger records of it.  NULL for
 * any other reply.
 */
char *
bg_journal_summary_text(const BgReply *reply, const char *body)
{
	if (reply->outcome != BG_OUTCOME_OK || body == NULL)
		return NULL;
	return summary_text(body + reply->data_offset, reply->data_len);
}

/*
 * billogram_invoice_summary(invoice jsonb) RETURNS jsonb: the same summary,
 * from SQL, for rows journaled in full.
 */
PG_FUNCTION_INFO_V1(billogram_invoice_summary);

Datum
billogram_invoice_summary(PG_FUNCTION_ARGS)
{
	Jsonb	   *invoice = PG_GETARG_JSONB_P(0);
	char	   *text;
	char	   *utf8;
	char	   *result;

	if (!JB_ROOT_IS_OBJECT(invoice))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an invoice must be a JSON object")));
	text = JsonbToCString(NULL, &invoice->root, VARSIZE(invoice));
	utf8 = pg_server_to_any(text, (int) strlen(text), PG_UTF8);
	result = summary_text(utf8, strlen(utf8));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}

static BgQueuedRequest *
queued_from_row(HeapTuple tuple, TupleDesc desc)
{
	BgQueuedRequest *q = palloc0(sizeof(BgQueuedRequest));
	bool		isnull;
	char	   *amount;

	q->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	strlcpy(q->payment.billogram_id, SPI_getvalue(tuple, desc, 2),
			sizeof(q->payment.billogram_id));
	strlcpy(q->payment.mode, SPI_getvalue(tuple, desc, 3),
			sizeof(q->payment.mode));
	amount = SPI_getvalue(tuple, desc, 4);
	if (amount)
		strlcpy(q->payment.amount, amount, sizeof(q->payment.amount));
	strlcpy(q->payment.body, SPI_getvalue(tuple, desc, 5),
			sizeof(q->payment.body));
	return q;
}

/*
 * Where the next claim starts in the pending index: just after the last row
 * claimed.  The index keeps an entry for every row version that was ever
 * pending, and while any transaction in the cluster holds back the xmin
 * horizon none of those entries can be dropped; a claim starting from the
 * beginning would step over every row already claimed, which made a drain
 * alongside one long transaction ten times slower.  A claim that comes up
 * short starts the next one from the beginning again, so rows whose key
 * sorts before the cursor (a transaction that committed late, an operator's
 * resend) wait at most one pass.
 */
static TimestampTz claim_after_at = DT_NOBEGIN;
static int64 claim_after_id = 0;

/*
 * Mark up to max_rows due rows 'sending' and return them.  SKIP LOCKED
 * keeps an operator's open transaction on one row from stalling the rest.
 */
List *
bg_journal_claim(int max_rows)
{
	List	   *claimed = NIL;
	Datum		args[6];
	int64		system;
	Oid			database;
	int			rc;
	uint64		i;

	if (max_rows <= 0 || !have_instance)
		return NIL;
	bg_journal_origin(&system, &database);
	args[0] = Int32GetDatum(max_rows);
	args[1] = TimestampTzGetDatum(claim_after_at);
	args[2] = Int64GetDatum(claim_after_id);
	args[3] = Int64GetDatum(system);
	args[4] = ObjectIdGetDatum(database);
	args[5] = UUIDPGetDatum(&instance);
	rc = SPI_execute_plan(plan_for(&journal, STMT_CLAIM), args, NULL, false, 0);
	check_spi(rc, SPI_OK_UPDATE_RETURNING, "claiming queued payments");

	if (SPI_processed < (uint64) max_rows)
	{
		claim_after_at = DT_NOBEGIN;
		claim_after_id = 0;
	}
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		BgQueuedRequest *q = queued_from_row(tuple, SPI_tuptable->tupdesc);
		bool		isnull;
		TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tuple, SPI_tuptable->tupdesc,
														   6, &isnull));

		if (SPI_processed == (uint64) max_rows &&
			(at > claim_after_at || (at == claim_after_at && q->id > claim_after_id)))
		{
			claim_after_at = at;
			claim_after_id = q->id;
		}
		claimed = lappend(claimed, q);
	}
	return claimed;
}

/* The error column: what went wrong, as an operator needs it. */
static char *
error_json(const BgReply *reply)
{
	char	   *json = bg_reply_error_json(reply,
										   unpack_sql_state(bg_reply_sqlstate(reply)));
	char	   *result = pstrdup(json ? json : "{\"kind\":\"unknown\"}");

	free(json);
	return result;
}

/*
 * Where a finished request goes: 'done'; 'failed' when Billogram certainly
 * did not act; 'in_doubt' when it may have.  *retry is set when a queued
 * request may be tried again (bg_reply_worth_retrying()); the statement
 * then makes it pending again while billogram.retry_for allows.
 */
static BgJournalState
outcome_state(bool is_sync, const BgReply *reply, bool *retry)
{
	*retry = false;
	if (reply->outcome == BG_OUTCOME_OK)
		return BG_STATE_DONE;
	if (reply->may_have_reached)
		return BG_STATE_IN_DOUBT;
	*retry = !is_sync && bg_reply_worth_retrying(reply);
	return BG_STATE_FAILED;
}

static ArrayType *
text_array(Datum *elems, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
							  TYPALIGN_INT);
}

static ArrayType *
int_array(Datum *elems, bool *nulls, int n, Oid type)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	if (type == INT8OID)
		return construct_md_array(elems, nulls, 1, dims, lbs, INT8OID, 8,
								  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	if (type == BOOLOID)
		return construct_md_array(elems, nulls, 1, dims, lbs, BOOLOID, 1,
								  true, TYPALIGN_CHAR);
	return construct_md_array(elems, nulls, 1, dims, lbs, INT4OID, 4, true,
							  TYPALIGN_INT);
}

/*
 * Record the outcomes of n finished requests in one statement, and set
 * each one's state (and whether its row still existed: an operator may
 * have purged it meanwhile).
 */
void
bg_journal_record_outcomes(BgFinished *finished, int n)
{
	Datum	   *ids = palloc(n * sizeof(Datum));
	Datum	   *states = palloc(n * sizeof(Datum));
	Datum	   *retries = palloc(n * sizeof(Datum));
	Datum	   *statuses = palloc(n * sizeof(Datum));
	bool	   *status_nulls = palloc(n * sizeof(bool));
	Datum	   *invoices = palloc(n * sizeof(Datum));
	bool	   *invoice_nulls = palloc(n * sizeof(bool));
	Datum	   *errors = palloc(n * sizeof(Datum));
	bool	   *error_nulls = palloc(n * sizeof(bool));
	Datum	   *retry_afters = palloc(n * sizeof(Datum));
	Datum	   *summaries = palloc(n * sizeof(Datum));
	bool	   *summary_nulls = palloc(n * sizeof(bool));
	Datum		args[9];
	int			rc;
	int			i;
	uint64		r;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
	{
		const BgReply *reply = finished[i].reply;
		bool		retry;

		finished[i].state = outcome_state(finished[i].is_sync, reply, &retry);
		finished[i].recorded = false;
		ids[i] = Int64GetDatum(finished[i].id);
		states[i] = CStringGetTextDatum(bg_journal_state_name(finished[i].state));
		retries[i] = BoolGetDatum(retry);
		statuses[i] = Int32GetDatum((int32) reply->http_status);
		status_nulls[i] = (reply->http_status == 0);
		invoice_nulls[i] = (finished[i].invoice == NULL);
		invoices[i] = invoice_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(finished[i].invoice);
		error_nulls[i] = (reply->outcome == BG_OUTCOME_OK);
		errors[i] = error_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(error_json(reply));
		retry_afters[i] = Int32GetDatum((int32) reply->retry_after);
		summary_nulls[i] = (finished[i].summary == NULL);
		summaries[i] = summary_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(finished[i].summary);
	}
	args[0] = PointerGetDatum(int_array(ids, NULL, n, INT8OID));
	args[1] = PointerGetDatum(text_array(states, NULL, n));
	args[2] = PointerGetDatum(int_array(retries, NULL, n, BOOLOID));
	args[3] = PointerGetDatum(int_array(statuses, status_nulls, n, INT4OID));
	args[4] = PointerGetDatum(text_array(invoices, invoice_nulls, n));
	args[5] = PointerGetDatum(text_array(errors, error_nulls, n));
	args[6] = PointerGetDatum(int_array(retry_afters, NULL, n, INT4OID));
	args[7] = Int32GetDatum(bg_retry_for_s);
	args[8] = PointerGetDatum(text_array(summaries, summary_nulls, n));

	rc = SPI_execute_plan(plan_for(&journal, STMT_RECORD_OUTCOMES), args, NULL,
						  false, 0);
	check_spi(rc, SPI_OK_SELECT, "recording outcomes");

	/* batches are a few dozen rows at most: a linear match is enough */
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc,
													 1, &isnull));
		char	   *state = SPI_getvalue(tuple, SPI_tuptable->tupdesc, 2);

		for (i = 0; i < n; i++)
		{
			if (finished[i].id == id)
			{
				finished[i].state = state_from_name(state);
				finished[i].recorded = true;
				break;
			}
		}
	}
}

/* A GET's invoice (or the error that stopped it) beside an in_doubt row. */
void
bg_journal_save_snapshot(int64 id, const BgReply *reply, const char *invoice)
{
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(id);
	set_text_arg(values, nulls, 1, invoice);
	if (reply->outcome == BG_OUTCOME_OK)
		nulls[2] = 'n';
	else
		values[2] = CStringGetTextDatum(error_json(reply));
	rc = SPI_execute_plan(plan_for(&journal, STMT_SNAPSHOT), values, nulls,
						  false, 0);
	check_spi(rc, SPI_OK_UPDATE, "saving an invoice snapshot");
}

/*
 * A server that took over from another (a promoted standby, a point-in-time
 * recovery) is on a new WAL timeline.  Its pending rows may have been sent
 * by the server before it, in WAL this one never received (an asynchronous
 * standby lags): each is read before it goes (verify_reason 'promotion',
 * see billogram_read_recorded), and held for an operator unless the
 * invoice shows nothing the ledger did not know.  The timeline last seen
 * is kept in billogram_instance; the first look only records it.
 */
static void
check_takeover(void)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	char	   *sql;
	int			rc;
	bool		isnull;
	int64		marked;

	args[0] = Int64GetDatum((int64) GetWALInsertionTimeLine());
	sql = psprintf("WITH i AS (UPDATE %2$s.billogram_instance i SET timeline = $1 "
				   "  FROM (SELECT timeline AS old FROM %2$s.billogram_instance) o "
				   "  WHERE i.timeline IS DISTINCT FROM $1 RETURNING o.old), "
				   "u AS (UPDATE %1$s SET verify_reason = 'promotion' "
				   "  WHERE state = 'pending' AND EXISTS (SELECT 1 FROM i WHERE i.old IS NOT NULL) "
				   "  RETURNING 1) "
				   "SELECT count(*) FROM u",
				   journal.name, journal.schema);
	rc = SPI_execute_with_args(sql, 1, types, args, NULL, false, 0);
	check_spi(rc, SPI_OK_SELECT, "looking for a change of timeline");
	marked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	if (marked > 0)
		ereport(LOG,
				(errmsg("billogram worker: this server took over on a new timeline; %lld pending request(s) are checked against their invoice before they are sent",
						(long long) marked),
				 errdetail("The server before it may have sent them in WAL this server never received."),
				 errhint("Those whose invoice shows anything the journal did not know are held: see billogram_queue_status and billogram_release_held().")));
}

/*
 * Rows left 'sending' by a worker that stopped may or may not have reached
 * Billogram; they become 'in_doubt', to be settled from the evidence.
 */
void
bg_journal_recover(void)
{
	char	   *sql;
	int			rc;

	sql = psprintf("WITH u AS (UPDATE %s SET state = 'in_doubt', finished_at = clock_timestamp(), "
				   "settle_at = now(), "
				   "error = jsonb_build_object('kind', 'worker', 'sqlstate', 'BG002', "
				   "'message', 'the worker stopped while the request was being sent', "
				   "'may_have_reached_billogram', true) "
				   "WHERE state = 'sending' "
				   "RETURNING id, billogram_id, mode, amount, request_body) "
				   "SELECT u.*, pg_notify('billogram_requests', "
				   "json_build_object('id', u.id, 'state', 'in_doubt')::text) FROM u",
				   journal.name);
	check_takeover();
	rc = SPI_execute(sql, false, 0);
	check_spi(rc, SPI_OK_SELECT, "recovering requests left in state sending");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("billogram worker: %llu request(s) found in state sending after a restart are now in_doubt",
						(unsigned long long) SPI_processed),
				 errhint("The worker reads their invoices to settle them; billogram_in_doubt shows what it finds.")));
}

/*
 * Rows that came from elsewhere, with a restored dump or a copy made by
 * another cluster or database, are never sent on their own: the server
 * that made them may have sent them since.  Pending ones become 'held'
 * until an operator releases them (billogram_release_held()); one caught in
 * 'sending' becomes in_doubt.  The claim skips them anyway; this puts them
 * where the status view and the operator see them, and says so in the log.
 */
void
bg_journal_hold_foreign(void)
{
	Datum		args[3];
	int64		system;
	Oid			database;
	int64		held;
	int64		doubted;
	bool		isnull;
	int			rc;

	if (!have_instance)
		return;
	bg_journal_origin(&system, &database);
	args[0] = Int64GetDatum(system);
	args[1] = ObjectIdGetDatum(database);
	args[2] = UUIDPGetDatum(&instance);
	rc = SPI_execute_plan(plan_for(&journal, STMT_HOLD), args, NULL, false, 0);
	check_spi(rc, SPI_OK_SELECT, "holding requests made elsewhere");
	held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	doubted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (held + doubted > 0)
		ereport(WARNING,
				(errmsg("billogram worker: %lld request(s) made in another cluster or database are held, not sent",
						(long long) (held + doubted)),
				 errdetail("%lld pending request(s) are now held, %lld found in state sending are now in_doubt. "
						   "They came with a restored dump (into this database too: the extension made anew has an identity of its own), a copy of the data, or an upgrade that inherited them: "
						   "the server that made them may have sent them already.",
						   (long long) held, (long long) doubted),
				 errhint("Check that the server they came from is stopped or has not sent them, then call billogram_release_held() or billogram_fail_held().")));
}

/*
 * Take up to max_rows in_doubt rows whose invoice is due to be read again,
 * putting their next reading off by hold_secs meanwhile.
 */
List *
bg_journal_settle_due(int max_rows, int hold_secs)
{
	List	   *due = NIL;
	Datum		args[2];
	int			rc;
	uint64		i;

	if (max_rows <= 0)
		return NIL;
	args[0] = Int32GetDatum(max_rows);
	args[1] = Int32GetDatum(hold_secs);
	rc = SPI_execute_plan(plan_for(&journal, STMT_SETTLE_DUE), args, NULL, false, 0);
	check_spi(rc, SPI_OK_UPDATE_RETURNING, "taking in_doubt rows to settle");
	for (i = 0; i < SPI_processed; i++)
		due = lappend(due, queued_from_row(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc));
	return due;
}

/*
 * Weigh what the GET of an in_doubt row's invoice returned (billogram_settle
 * in SQL): the invoice's summary, whatever billogram.journal_reply keeps,
 * since the evidence is read from its sums and events; or why it failed.
 * Returns whether the row is settled for now (no further reading due).
 */
bool
bg_journal_settle(int64 id, const BgReply *reply, const char *body)
{
	Datum		args[4];
	char		nulls[4] = {' ', 'n', 'n', ' '};
	bool		isnull;
	Datum		verdict;
	int			rc;

	args[0] = Int64GetDatum(id);
	if (reply->outcome == BG_OUTCOME_OK && body != NULL)
		set_text_arg(args, nulls, 1,
					 summary_text(body + reply->data_offset, reply->data_len));
	else
	{
		args[2] = CStringGetTextDatum(error_json(reply));
		nulls[2] = ' ';
	}
	args[3] = Int32GetDatum(bg_settle_time_s);
	rc = SPI_execute_plan(plan_for(&journal, STMT_SETTLE), args, nulls, false, 1);
	check_spi(rc, SPI_OK_SELECT, "settling an in_doubt request");
	verdict = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull || strcmp(TextDatumGetCString(verdict), "checking") != 0;
}

/*
 * Take up to max_rows invoices to read before their next payment goes (see
 * STMT_READS_DUE), putting that payment off by hold_secs meanwhile.  Each
 * comes back as the queued row at the head of its invoice's queue.
 */
List *
bg_journal_reads_due(int max_rows, int hold_secs)
{
	List	   *due = NIL;
	Datum		args[5];
	int64		system;
	Oid			database;
	int			rc;
	uint64		i;

	if (max_rows <= 0 || !have_instance)
		return NIL;
	bg_journal_origin(&system, &database);
	args[0] = Int32GetDatum(max_rows);
	args[1] = Int32GetDatum(hold_secs);
	args[2] = Int64GetDatum(system);
	args[3] = ObjectIdGetDatum(database);
	args[4] = UUIDPGetDatum(&instance);
	rc = SPI_execute_plan(plan_for(&journal, STMT_READS_DUE), args, NULL, false, 0);
	check_spi(rc, SPI_OK_SELECT, "taking invoices to read before sending");
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		due = lappend(due, id);
	}
	return due;
}

/*
 * What readings of invoices showed (see billogram_read_recorded in SQL), n
 * of them in one statement: each invoice joins the ledger and its payments
 * may go, or the reading's failure is recorded on the rows waiting for it.
 * known[i] says whether the ledger now knows invoice i.
 */
void
bg_journal_reads_recorded(BgRead *reads, int n)
{
	Datum	   *ids = palloc(n * sizeof(Datum));
	Datum	   *summaries = palloc(n * sizeof(Datum));
	bool	   *summary_nulls = palloc(n * sizeof(bool));
	Datum	   *failures = palloc(n * sizeof(Datum));
	bool	   *failure_nulls = palloc(n * sizeof(bool));
	Datum		args[4];
	int			rc;
	int			i;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
	{
		char	   *summary = bg_journal_summary_text(reads[i].reply, reads[i].body);

		ids[i] = CStringGetTextDatum(reads[i].billogram_id);
		summary_nulls[i] = (summary == NULL);
		summaries[i] = summary ? CStringGetTextDatum(summary) : (Datum) 0;
		failure_nulls[i] = (summary != NULL);
		failures[i] = summary ? (Datum) 0 :
			CStringGetTextDatum(error_json(reads[i].reply));
		reads[i].known = (summary != NULL);
	}
	args[0] = PointerGetDatum(text_array(ids, NULL, n));
	args[1] = PointerGetDatum(text_array(summaries, summary_nulls, n));
	args[2] = PointerGetDatum(text_array(failures, failure_nulls, n));
	args[3] = Int32GetDatum(bg_retry_for_s);
	rc = SPI_execute_plan(plan_for(&journal, STMT_READ_RECORDED), args, NULL,
						  false, 0);
	check_spi(rc, SPI_OK_SELECT, "recording invoice readings");
}

/* Those of the invoices ids (a List of C strings) the ledger knows. */
List *
bg_journal_ledger_known(List *ids)
{
	List	   *known = NIL;
	Datum	   *elems;
	Datum		args[1];
	ListCell   *lc;
	int			n = 0;
	int			rc;
	uint64		i;

	if (ids == NIL)
		return NIL;
	elems = palloc(list_length(ids) * sizeof(Datum));
	foreach(lc, ids)
		elems[n++] = CStringGetTextDatum((const char *) lfirst(lc));
	args[0] = PointerGetDatum(text_array(elems, NULL, n));
	rc = SPI_execute_plan(plan_for(&journal, STMT_LEDGER_KNOWN), args, NULL, true, 0);
	check_spi(rc, SPI_OK_SELECT, "looking invoices up in the ledger");
	for (i = 0; i < SPI_processed; i++)
		known = lappend(known, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	return known;
}

/* The invoices on which a row is being settled: no payment goes out on them. */
List *
bg_journal_unsettled(void)
{
	List	   *ids = NIL;
	int			rc;
	uint64		i;

	rc = SPI_execute_plan(plan_for(&journal, STMT_UNSETTLED), NULL, NULL, false, 0);
	check_spi(rc, SPI_OK_SELECT, "looking for invoices being settled");
	for (i = 0; i < SPI_processed; i++)
		ids = lappend(ids, SPI_getvalue(SPI_tuptable->vals[i],
										SPI_tuptable->tupdesc, 1));
	return ids;
}

/*
 * When the queue next needs a look: the earliest time a row could be
 * claimed or read, or a sweep.  A pending row behind another payment of its
 * invoice (one in flight, being settled, or queued before it) is not
 * counted: it cannot go before that one is over, and whatever ends it (an
 * outcome, a verdict, an operator's resolution) wakes the worker anyway.
 * Counting it made the worker claim nothing in a loop for as long as an
 * earlier payment was settled, which may be days.
 */
TimestampTz
bg_journal_next_due(void)
{
	TimestampTz sweep = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													BG_SWEEP_MS);
	bool		isnull;
	Datum		due;
	int			rc;

	rc = SPI_execute_plan(plan_for(&journal, STMT_NEXT_DUE), NULL, NULL, true, 1);
	check_spi(rc, SPI_OK_SELECT, "looking for due payments");
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || DatumGetTimestampTz(due) > sweep)
		return sweep;
	return DatumGetTimestampTz(due);
}

/* The journal the worker opened for the current batch. */
const BgJournal *
bg_journal_opened(void)
{
	return &journal;
}

/* A text column of the current SPI row, palloc'd; NULL for NULL. */
static char *
spi_text(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

/*
 * What payment's idempotency key was used for before; false if never.
 * SPI connected, as the journal's owner.
 */
bool
bg_journal_find_key(const BgJournal *j, const BgCreditPayment *payment,
					BgKeyUse *use)
{
	Datum		values[4];
	char		nulls[4];
	bool		isnull;
	char	   *text;
	int			rc;

	memset(use, 0, sizeof(*use));
	set_text_arg(values, nulls, 0, payment->idempotency_key);
	set_text_arg(values, nulls, 1, payment->billogram_id);
	set_text_arg(values, nulls, 2, payment->mode);
	set_text_arg(values, nulls, 3, payment->amount);
	rc = SPI_execute_plan(plan_for(j, STMT_KEY_FIND), values, nulls, false, 1);
	check_spi(rc, SPI_OK_SELECT, "looking up an idempotency key");
	if (SPI_processed == 0)
		return false;
	use->request_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	if ((text = spi_text(2)) != NULL)
		strlcpy(use->state, text, sizeof(use->state));
	use->same_payment = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 3, &isnull)) && !isnull;
	use->response = spi_text(4);
	if ((text = spi_text(5)) != NULL)
		strlcpy(use->sqlstate, text, sizeof(use->sqlstate));
	use->message = spi_text(6);
	use->status = spi_text(7);
	use->field = spi_text(8);
	return true;
}

/*
 * Record payment's idempotency key for request_id (0: the worker binds it
 * to its row later in the same transaction, bg_journal_bind_keys).  When
 * the key is taken, fills *use with what it was used for and returns
 * false.  A key recorded by a transaction still in progress is waited for.
 */
bool
bg_journal_claim_key(const BgJournal *j, const BgCreditPayment *payment,
					 int64 request_id, BgKeyUse *use)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			rc;

	values[0] = CStringGetTextDatum(payment->idempotency_key);
	values[1] = Int64GetDatum(request_id);
	rc = SPI_execute_plan(plan_for(j, STMT_KEY_CLAIM), values, nulls, false, 1);
	check_spi(rc, SPI_OK_INSERT_RETURNING, "recording an idempotency key");
	if (SPI_processed == 1)
		return true;
	if (!bg_journal_find_key(j, payment, use))
	{
		/* taken by a transaction this one's snapshot cannot see */
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("idempotency key \"%s\" was recorded by a concurrent transaction",
						payment->idempotency_key),
				 errdetail("Nothing was sent or queued."),
				 errhint("Retry the transaction: the key's first request is then found.")));
	}
	return false;
}

/* The keys of n journaled calls (those with one) get their rows, ids[]. */
void
bg_journal_bind_keys(const BgCreditPayment *const *payments,
					 const int64 *ids, int n)
{
	Datum	   *keys = palloc(n * sizeof(Datum));
	Datum	   *key_ids = palloc(n * sizeof(Datum));
	Datum		args[2];
	int			nkeys = 0;
	int			rc;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (payments[i]->idempotency_key[0] == '\0')
			continue;
		keys[nkeys] = CStringGetTextDatum(payments[i]->idempotency_key);
		key_ids[nkeys] = Int64GetDatum(ids[i]);
		nkeys++;
	}
	if (nkeys == 0)
		return;
	args[0] = PointerGetDatum(text_array(keys, NULL, nkeys));
	args[1] = PointerGetDatum(int_array(key_ids, NULL, nkeys, INT8OID));
	rc = SPI_execute_plan(plan_for(&journal, STMT_KEY_BIND), args, NULL, false, 0);
	check_spi(rc, SPI_OK_UPDATE, "binding idempotency keys to their rows");
	if (SPI_processed != (uint64) nkeys)
		elog(ERROR, "billogram worker: %llu of %d idempotency keys bound to their rows",
			 (unsigned long long) SPI_processed, nkeys);
}
