/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The worker's side of the billogram_requests journal: recording
 *	  synchronous calls, claiming queued payments, recording outcomes,
 *	  and recovering after a crash.
 *
 * Every row is in state 'sending', committed, before its request goes out,
 * so a crash can never lead to a blind resend: a row found in 'sending' when
 * the worker starts becomes 'in_doubt' for an operator to resolve.  The
 * caller batches: one transaction records the outcomes of every transfer
 * finished since the last one and claims the next rows, so there is one
 * commit per batch, not per payment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "guc.h"
#include "queue.h"
#include "report.h"

/*
 * The extension's schema and installed version, read from pg_extension
 * directly: ALTER EXTENSION UPDATE changes the version under the same OID,
 * so it is read every time.
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

BgJournalStatus
bg_journal_lookup(BgJournal *journal)
{
	/* names are cached per schema: the extension cannot be moved */
	static Oid	cached_nsp = InvalidOid;
	static char *cached_name = NULL;
	static char *cached_schema = NULL;
	Oid			nspid;
	Oid			relid;
	char	   *version;
	HeapTuple	classtup;

	if (!find_extension(&nspid, &version))
		return BG_JOURNAL_MISSING;
	journal->version = version;
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
	return BG_JOURNAL_READY;
}

/*
 * Where a row is made: this cluster (its system identifier) and this
 * database.  A worker sends only the rows made where it runs; rows that came
 * with a dump or a copy from elsewhere are held (see bg_queue_hold_foreign).
 * A promoted standby keeps its primary's system identifier, so it goes on
 * with the queue it inherited.
 */
void
bg_journal_origin(int64 *system, Oid *database)
{
	*system = (int64) GetSystemIdentifier();
	*database = MyDatabaseId;
}

/* the journal of the current batch, set by bg_queue_installed() */
static BgJournal journal;
static bool wrong_version_logged = false;

/*
 * Whether the worker can use the journal in this transaction.  An extension
 * at another version is logged once: until it is updated, the queue waits
 * and synchronous calls are refused unsent.
 */
bool
bg_queue_installed(void)
{
	switch (bg_journal_lookup(&journal))
	{
		case BG_JOURNAL_READY:
			wrong_version_logged = false;
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
 * The worker's statements, planned once and kept: a batch runs one per
 * finished transfer.  %1$s stands for the journal's qualified name, %2$s
 * for the extension's schema.
 */
typedef enum BgStatement
{
	STMT_RECORD_SYNC,
	STMT_CLAIM,
	STMT_FINISH,
	STMT_HOLD,
	STMT_SNAPSHOT,
	NUM_STATEMENTS
} BgStatement;

static const char *const statement_sql[NUM_STATEMENTS] = {
	/* $5 to $10: the caller, see BgCaller; $11, $12: bg_journal_origin() */
	[STMT_RECORD_SYNC] =
	"INSERT INTO %1$s (origin, billogram_id, mode, amount, request_body, "
	"state, attempts, sent_at, created_by, effective_role, login_role, "
	"database_name, backend_pid, application_name, made_in_system, "
	"made_in_database) "
	"VALUES ('sync', $1, $2, $3::numeric, $4, 'sending', 1, now(), "
	"$5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",

	/*
	 * $2, $3: the claim cursor, see bg_queue_claim(); $4, $5: only rows
	 * made here, see bg_journal_origin()
	 */
	[STMT_CLAIM] =
	"UPDATE %1$s r SET state = 'sending', attempts = r.attempts + 1, sent_at = now() "
	"WHERE r.id IN (SELECT id FROM %1$s WHERE state = 'pending' "
	"AND next_attempt_at <= now() AND (next_attempt_at, id) > ($2, $3) "
	"AND made_in_system = $4 AND made_in_database = $5 "
	"ORDER BY next_attempt_at, id "
	"LIMIT $1 FOR UPDATE SKIP LOCKED) "
	"RETURNING r.id, r.billogram_id, r.mode, r.amount, r.request_body, r.next_attempt_at",

	/*
	 * $1 id, $2 final state, $3 retry?, $4 HTTP status, $5 body, $6 error,
	 * $7 Retry-After seconds, $8 billogram.retry_for in seconds, $9
	 * billogram.journal_reply ('none' passes no body).  A retry waits 1 s
	 * doubling up to 5 min, with jitter, and at least Retry-After; it is
	 * made only while the row has been pending for less than retry_for:
	 * an outage fails payments by its length, not by a count of tries.
	 */
	[STMT_FINISH] =
	"WITH u AS (UPDATE %1$s r SET "
	" state = CASE WHEN $3 AND r.pending_since > now() - make_interval(secs => $8) THEN 'pending' ELSE $2 END,"
	" next_attempt_at = CASE WHEN $3 AND r.pending_since > now() - make_interval(secs => $8) THEN now() + greatest("
	"   make_interval(secs => $7),"
	"   make_interval(secs => least(300, 2 ^ (r.attempts - 1)) * (0.5 + random() / 2)))"
	"   ELSE r.next_attempt_at END,"
	" finished_at = CASE WHEN $3 AND r.pending_since > now() - make_interval(secs => $8) THEN NULL ELSE clock_timestamp() END,"
	" http_status = $4,"
	" response = CASE WHEN $2 <> 'done' THEN NULL WHEN $9 = 'full' THEN $5::jsonb -> 'data'"
	"   ELSE %2$s.billogram_invoice_summary($5::jsonb -> 'data', coalesce(r.sent_at, r.created_at)) END,"
	" error = $6::jsonb "
	" WHERE r.id = $1 RETURNING r.id, r.state) "
	"SELECT u.state, CASE WHEN u.state <> 'pending' THEN "
	" pg_notify('billogram_requests', json_build_object('id', u.id, 'state', u.state)::text) END "
	"FROM u",

	/* $1, $2: where this worker runs, see bg_journal_origin() */
	[STMT_HOLD] =
	"WITH h AS (UPDATE %1$s SET "
	" state = CASE state WHEN 'pending' THEN 'held' ELSE 'in_doubt' END,"
	" held_at = CASE state WHEN 'pending' THEN clock_timestamp() END,"
	" finished_at = CASE state WHEN 'sending' THEN clock_timestamp() END,"
	" error = CASE state WHEN 'sending' THEN jsonb_build_object('kind', 'copy',"
	"   'message', 'found in state sending in a copy of another database or cluster',"
	"   'may_have_reached_billogram', true) ELSE error END "
	" WHERE state IN ('pending', 'sending') "
	" AND (made_in_system IS DISTINCT FROM $1 OR made_in_database IS DISTINCT FROM $2) "
	" RETURNING state) "
	"SELECT count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'in_doubt') "
	"FROM h",

	/*
	 * $2: the GET's body on success (NULL for journal_reply 'none'), else
	 * the error as JSON; $4: billogram.journal_reply
	 */
	[STMT_SNAPSHOT] =
	"UPDATE %1$s SET invoice_snapshot = CASE WHEN NOT $3 THEN jsonb_build_object('error', $2::jsonb) "
	"WHEN $4 = 'full' THEN $2::jsonb -> 'data' "
	"ELSE %2$s.billogram_invoice_summary($2::jsonb -> 'data', coalesce(sent_at, created_at)) END, "
	"snapshot_at = clock_timestamp() WHERE id = $1",
};

static const int statement_nargs[NUM_STATEMENTS] = {12, 5, 9, 2, 4};
static const Oid statement_types[NUM_STATEMENTS][12] = {
	[STMT_RECORD_SYNC] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, INT8OID, OIDOID},
	[STMT_CLAIM] = {INT4OID, TIMESTAMPTZOID, INT8OID, INT8OID, OIDOID},
	[STMT_HOLD] = {INT8OID, OIDOID},
	[STMT_FINISH] = {INT8OID, TEXTOID, BOOLOID, INT4OID, TEXTOID, TEXTOID,
	INT4OID, INT4OID, TEXTOID},
	[STMT_SNAPSHOT] = {INT8OID, TEXTOID, BOOLOID, TEXTOID},
};

static SPIPlanPtr plans[NUM_STATEMENTS];
static char *plans_journal = NULL;

static SPIPlanPtr
plan_for(BgStatement stmt)
{
	int			i;

	if (plans_journal == NULL || strcmp(plans_journal, journal.name) != 0)
	{
		for (i = 0; i < NUM_STATEMENTS; i++)
		{
			if (plans[i])
				SPI_freeplan(plans[i]);
			plans[i] = NULL;
		}
		if (plans_journal)
			pfree(plans_journal);
		plans_journal = MemoryContextStrdup(TopMemoryContext, journal.name);
	}
	if (plans[stmt] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(psprintf(statement_sql[stmt], journal.name,
												journal.schema),
									   statement_nargs[stmt],
									   (Oid *) statement_types[stmt]);

		if (plan == NULL)
			elog(ERROR, "billogram worker: could not prepare a statement: %s",
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
		elog(ERROR, "billogram worker: %s failed: %s", what,
			 SPI_result_code_string(rc));
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL || s[0] == '\0');
	return *isnull ? (Datum) 0 : CStringGetTextDatum(s);
}

/* A text argument and its SPI null flag. */
static void
set_text_arg(Datum *values, char *nulls, int i, const char *s)
{
	bool		isnull;

	values[i] = text_or_null(s, &isnull);
	nulls[i] = isnull ? 'n' : ' ';
}

int64
bg_queue_record_sync(const BgCreditPayment *payment)
{
	const BgCaller *caller = &payment->caller;
	Datum		values[12];
	char		nulls[12];
	bool		isnull;
	int64		system;
	Oid			database;
	int			rc;

	set_text_arg(values, nulls, 0, payment->billogram_id);
	set_text_arg(values, nulls, 1, payment->mode);
	set_text_arg(values, nulls, 2, payment->amount);
	set_text_arg(values, nulls, 3, payment->body);
	set_text_arg(values, nulls, 4, NameStr(caller->role));
	set_text_arg(values, nulls, 5, NameStr(caller->effective_role));
	set_text_arg(values, nulls, 6, NameStr(caller->login_role));
	set_text_arg(values, nulls, 7, NameStr(caller->database));
	values[8] = Int32GetDatum(caller->pid);
	nulls[8] = ' ';
	set_text_arg(values, nulls, 9, caller->application_name);
	bg_journal_origin(&system, &database);
	values[10] = Int64GetDatum(system);
	values[11] = ObjectIdGetDatum(database);
	nulls[10] = nulls[11] = ' ';

	rc = SPI_execute_plan(plan_for(STMT_RECORD_SYNC), values, nulls, false, 1);
	check_spi(rc, SPI_OK_INSERT_RETURNING, "recording a synchronous call");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
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
bg_queue_claim(int max_rows)
{
	List	   *claimed = NIL;
	Datum		args[5];
	int64		system;
	Oid			database;
	int			rc;
	uint64		i;

	if (max_rows <= 0)
		return NIL;
	bg_journal_origin(&system, &database);
	args[0] = Int32GetDatum(max_rows);
	args[1] = TimestampTzGetDatum(claim_after_at);
	args[2] = Int64GetDatum(claim_after_id);
	args[3] = Int64GetDatum(system);
	args[4] = ObjectIdGetDatum(database);
	rc = SPI_execute_plan(plan_for(STMT_CLAIM), args, NULL, false, 0);
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
 * request may be tried again: it provably did not arrive, or Billogram said
 * to come back later.
 */
static const char *
outcome_state(bool is_sync, const BgReply *reply, bool *retry)
{
	*retry = false;
	if (reply->outcome == BG_OUTCOME_OK)
		return "done";
	if (reply->may_have_reached)
		return "in_doubt";
	if (!is_sync &&
		(reply->outcome == BG_OUTCOME_TRANSPORT || bg_reply_asks_to_wait(reply)))
		*retry = true;
	return "failed";
}

/*
 * Record the outcome of one request and notify listeners of final states.
 * Returns the state the row is now in.
 */
const char *
bg_queue_finish(int64 id, bool is_sync, const BgReply *reply,
				const char *body, size_t body_len)
{
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		retry;
	bool		isnull;
	const char *state = outcome_state(is_sync, reply, &retry);
	int			rc;

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(state);
	values[2] = BoolGetDatum(retry);
	values[3] = Int32GetDatum((int32) reply->http_status);
	nulls[3] = reply->http_status ? ' ' : 'n';
	if (reply->outcome == BG_OUTCOME_OK)
	{
		if (bg_journal_reply == BG_JOURNAL_REPLY_NONE)
			nulls[4] = 'n';
		else
			values[4] = CStringGetTextDatum(pg_any_to_server(body, (int) body_len, PG_UTF8));
		nulls[5] = 'n';
	}
	else
	{
		nulls[4] = 'n';
		values[5] = CStringGetTextDatum(error_json(reply));
	}
	values[6] = Int32GetDatum((int32) reply->retry_after);
	values[7] = Int32GetDatum(bg_retry_for_s);
	values[8] = CStringGetTextDatum(bg_journal_reply_name());

	rc = SPI_execute_plan(plan_for(STMT_FINISH), values, nulls, false, 0);
	check_spi(rc, SPI_OK_SELECT, "recording an outcome");
	if (SPI_processed != 1)
		return state;			/* the row was purged meanwhile */
	return TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
}

void
bg_queue_save_snapshot(int64 id, const BgReply *reply,
					   const char *body, size_t body_len)
{
	bool		ok = (reply->outcome == BG_OUTCOME_OK);
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(id);
	if (!ok)
		values[1] = CStringGetTextDatum(error_json(reply));
	else if (bg_journal_reply == BG_JOURNAL_REPLY_NONE)
		nulls[1] = 'n';
	else
		values[1] = CStringGetTextDatum(pg_any_to_server(body, (int) body_len, PG_UTF8));
	values[2] = BoolGetDatum(ok);
	values[3] = CStringGetTextDatum(bg_journal_reply_name());
	rc = SPI_execute_plan(plan_for(STMT_SNAPSHOT), values, nulls, false, 0);
	check_spi(rc, SPI_OK_UPDATE, "saving an invoice snapshot");
}

/*
 * Rows left 'sending' by a worker that stopped may or may not have reached
 * Billogram; they become 'in_doubt' and are returned for a snapshot.
 */
List *
bg_queue_recover(void)
{
	List	   *found = NIL;
	char	   *sql;
	int			rc;
	uint64		i;

	sql = psprintf("WITH u AS (UPDATE %s SET state = 'in_doubt', finished_at = clock_timestamp(), "
				   "error = jsonb_build_object('kind', 'worker', 'sqlstate', 'BG002', "
				   "'message', 'the worker stopped while the request was being sent', "
				   "'may_have_reached_billogram', true) "
				   "WHERE state = 'sending' "
				   "RETURNING id, billogram_id, mode, amount, request_body) "
				   "SELECT u.*, pg_notify('billogram_requests', "
				   "json_build_object('id', u.id, 'state', 'in_doubt')::text) FROM u",
				   journal.name);
	rc = SPI_execute(sql, false, 0);
	check_spi(rc, SPI_OK_SELECT, "recovering requests left in state sending");
	for (i = 0; i < SPI_processed; i++)
		found = lappend(found, queued_from_row(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc));
	if (found)
		ereport(LOG,
				(errmsg("billogram worker: %d request(s) found in state sending after a restart are now in_doubt",
						list_length(found)),
				 errhint("Check each invoice and resolve them with billogram_resolve().")));
	return found;
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
bg_queue_hold_foreign(void)
{
	Datum		args[2];
	int64		system;
	Oid			database;
	int64		held;
	int64		doubted;
	bool		isnull;
	int			rc;

	bg_journal_origin(&system, &database);
	args[0] = Int64GetDatum(system);
	args[1] = ObjectIdGetDatum(database);
	rc = SPI_execute_plan(plan_for(STMT_HOLD), args, NULL, false, 0);
	check_spi(rc, SPI_OK_SELECT, "holding requests made elsewhere");
	held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	doubted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (held + doubted > 0)
		ereport(WARNING,
				(errmsg("billogram worker: %lld request(s) made in another cluster or database are held, not sent",
						(long long) (held + doubted)),
				 errdetail("%lld pending request(s) are now held, %lld found in state sending are now in_doubt. "
						   "They came with a restored dump or a copy of the data: the server that made them may have sent them already.",
						   (long long) held, (long long) doubted),
				 errhint("Check that the server they came from is stopped or has not sent them, then call billogram_release_held() or billogram_fail_held().")));
}

/* When the queue next needs a look: the earliest due row, or a sweep. */
TimestampTz
bg_queue_next_due(void)
{
	TimestampTz sweep = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													BG_SWEEP_MS);
	bool		isnull;
	Datum		due;
	char	   *sql;
	int			rc;

	sql = psprintf("SELECT min(next_attempt_at) FROM %s WHERE state = 'pending'",
				   journal.name);
	rc = SPI_execute(sql, true, 1);
	check_spi(rc, SPI_OK_SELECT, "looking for due payments");
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || DatumGetTimestampTz(due) > sweep)
		return sweep;
	return DatumGetTimestampTz(due);
}
