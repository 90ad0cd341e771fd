/*-------------------------------------------------------------------------
 *
 * journal.c
 *	  The journal, billogram_requests: where it is, and how its statements
 *	  run.
 *
 * This file finds the extension and its journal (bg_journal_lookup), opens
 * it for each of the worker's batches (bg_journal_open, with this
 * installation's identity), keeps the plans of the statements
 * (statements.c) and holds the SPI helpers the journal's other files
 * share: queue.c (inserts, claims, outcomes), settle.c (recovery,
 * settlement, readings) and journalfuncs.c (the SQL-callable functions).
 * The table's states are an enum here (BgJournalState).
 *
 * Every row is in state 'sending', committed, before its request goes out,
 * so a crash can never lead to a blind resend: a row found in 'sending' when
 * the worker starts becomes 'in_doubt', to be settled from the evidence.
 * The worker batches: one transaction records the outcomes of every
 * transfer finished since the last one, in one statement, and claims the
 * next rows, so there is one commit and a few statements per batch, not
 * per payment.
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
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "guc.h"
#include "invoice.h"
#include "journal_int.h"
#include "jsonb_fit.h"
#include "report.h"
#include "stats.h"
#include "trust.h"

/*
 * The extension's OID, the version of its catalog row (xmin), its schema
 * and installed version, read from pg_extension directly: ALTER EXTENSION
 * UPDATE changes the version under the same OID, so it is read again for
 * every command (see bg_journal_lookup).
 */
static bool
find_extension(Oid *extoid, TransactionId *xmin, Oid *nspid, char **version)
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

		*extoid = ((Form_pg_extension) GETSTRUCT(tuple))->oid;
		*xmin = HeapTupleHeaderGetXmin(tuple->t_data);
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
	Oid			extoid;
	TransactionId ext_xmin;
	Oid			nspid;
	Oid			relid;
	char	   *version;
	const char *refusal;
	HeapTuple	classtup;
	CommandId	cid = GetCurrentCommandId(false);

	if (answer_lxid == MY_LXID && answer_cid == cid &&
		answer_lxid != InvalidLocalTransactionId)
	{
		*journal = answer;
		return answer_status;
	}

	memset(journal, 0, sizeof(*journal));
	if (!find_extension(&extoid, &ext_xmin, &nspid, &version))
		return BG_JOURNAL_MISSING;
	strlcpy(answer_version, version, sizeof(answer_version));
	journal->version = answer_version;
	if (strcmp(version, BG_SCHEMA_VERSION) != 0)
		return BG_JOURNAL_WRONG_VERSION;

	/*
	 * Nothing of the extension is used unless all of it is a superuser's;
	 * the journal is the table of that name in its schema that is its
	 * member.
	 */
	refusal = bg_trust_refusal(extoid, ext_xmin, nspid);
	relid = get_relname_relid("billogram_requests", nspid);
	if (refusal == NULL && !bg_trust_is_member_table(relid))
		refusal = "table billogram_requests in the extension's schema is not the extension's";
	if (refusal != NULL)
	{
		journal->refusal = refusal;
		return BG_JOURNAL_UNTRUSTED;
	}
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

static void read_instance(void);

/*
 * Why the worker refuses the journal now (BG_JOURNAL_UNTRUSTED), kept in
 * TopMemoryContext so that a change of reason is logged, and the end of a
 * refusal too; NULL while it serves the journal.
 */
static char *refusal = NULL;

static void
refuse(const char *why)
{
	if (refusal != NULL && strcmp(refusal, why) == 0)
		return;
	ereport(LOG,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("billogram: refusing to serve the journal in database \"%s\": %s",
					bg_database, why),
			 errdetail("It runs as a superuser, and so would whatever a non-superuser made in or on the extension's objects. Nothing is sent until this is mended: queued payments wait, synchronous calls are refused."),
			 errhint("As a superuser, drop what was added or give it back to a superuser; billogram_health.refusal shows the reason.")));
	if (refusal)
		pfree(refusal);
	refusal = MemoryContextStrdup(TopMemoryContext, why);
	bg_stats_set_refusal(refusal);
}

static void
stop_refusing(void)
{
	if (refusal == NULL)
		return;
	ereport(LOG,
			(errmsg("billogram: serving the journal in database \"%s\" again: nothing there is refused any more",
					bg_database)));
	pfree(refusal);
	refusal = NULL;
	bg_stats_set_refusal(NULL);
}

/* Why the worker refused the journal at its last bg_journal_open(), or NULL. */
const char *
bg_journal_refusal(void)
{
	return refusal;
}

/*
 * Whether the worker can use the journal in this transaction.  An extension
 * at another version is logged once: until it is updated, the queue waits
 * and synchronous calls are refused unsent.  So it is while anything of the
 * extension is not a superuser's (trust.c): logged when that starts, when
 * its reason changes and when it ends, and shown in billogram_health.
 */
bool
bg_journal_open(void)
{
	BgJournalStatus status = bg_journal_lookup(&journal);

	if (status == BG_JOURNAL_UNTRUSTED)
		refuse(journal.refusal);
	else
		stop_refusing();
	switch (status)
	{
		case BG_JOURNAL_READY:
			wrong_version_logged = false;
			read_instance();
			return true;
		case BG_JOURNAL_UNTRUSTED:
			return false;
		case BG_JOURNAL_WRONG_VERSION:
			if (!wrong_version_logged)
				ereport(WARNING,
						(errmsg("billogram: the extension in database \"%s\" is at version %s, this library needs %s",
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
 * Plans per process, for the journal they were made for: a backend queues
 * into its own database's journal, the worker into billogram.database's.
 */
static SPIPlanPtr plans[NUM_STATEMENTS];
static char *plans_journal = NULL;

SPIPlanPtr
bg_plan_for(const BgJournal *j, BgStatement stmt)
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
		SPIPlanPtr	plan = bg_statement_prepare(j, stmt);

		SPI_keepplan(plan);
		plans[stmt] = plan;
	}
	return plans[stmt];
}

void
bg_check_spi(int rc, int expected, const char *what)
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

	rc = SPI_execute_plan(bg_plan_for(&journal, STMT_INSTANCE), NULL, NULL, true, 1);
	bg_check_spi(rc, SPI_OK_SELECT, "reading billogram_instance");
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
				(errmsg("billogram: table billogram_instance in database \"%s\" is empty",
						bg_database),
				 errdetail("Queued payments are not sent: without this installation's identity the worker cannot tell them from rows restored from a dump."),
				 errhint("As a superuser: INSERT INTO billogram_instance DEFAULT VALUES; then check the held rows and call billogram_release_held().")));
		no_instance_logged = true;
	}
}

/* The journal the worker opened for the current batch. */
const BgJournal *
bg_journal_opened(void)
{
	return &journal;
}

/* See journal_int.h. */
bool
bg_here_args(Datum *args)
{
	int64		system;
	Oid			database;

	if (!have_instance)
		return false;
	bg_journal_origin(&system, &database);
	args[0] = Int64GetDatum(system);
	args[1] = ObjectIdGetDatum(database);
	args[2] = UUIDPGetDatum(&instance);
	return true;
}

/* A text argument and its SPI null flag; "" is NULL. */
void
bg_text_arg(Datum *values, char *nulls, int i, const char *s)
{
	bool		isnull = (s == NULL || s[0] == '\0');

	values[i] = isnull ? (Datum) 0 : CStringGetTextDatum(s);
	nulls[i] = isnull ? 'n' : ' ';
}

/* An element of a text array under construction; "" is NULL. */
void
bg_text_elem(Datum *elems, bool *nulls, int i, const char *s)
{
	nulls[i] = (s == NULL || s[0] == '\0');
	elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(s);
}

ArrayType *
bg_text_array(Datum *elems, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
							  TYPALIGN_INT);
}

ArrayType *
bg_int_array(Datum *elems, bool *nulls, int n, Oid type)
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

/* A text column of the current SPI row, palloc'd; NULL for NULL. */
char *
bg_spi_text(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

BgQueuedRequest *
bg_queued_from_row(HeapTuple tuple, TupleDesc desc)
{
	BgQueuedRequest *q = palloc0(sizeof(BgQueuedRequest));
	BgCreditPayment *p = &q->payment;
	bool		isnull;
	char	   *id = SPI_getvalue(tuple, desc, 2);
	char	   *amount = SPI_getvalue(tuple, desc, 4);
	char	   *body = SPI_getvalue(tuple, desc, 5);

	q->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	strlcpy(p->billogram_id, id, sizeof(p->billogram_id));
	strlcpy(p->mode, SPI_getvalue(tuple, desc, 3), sizeof(p->mode));
	if (amount)
		strlcpy(p->amount, amount, sizeof(p->amount));

	/*
	 * What is sent is made from the columns an operator reads, by the rule
	 * callers' payments are made with; a row that rule could not have made
	 * is not sent at all.
	 */
	bg_credit_payment_body(p);
	q->problem = bg_billogram_id_problem(id, strlen(id));
	if (q->problem == NULL)
		q->problem = bg_journaled_payment_problem(p);
	if (q->problem == NULL && (amount ? strlen(amount) : 0) >= sizeof(p->amount))
		q->problem = "invalid amount: too long";
	if (q->problem == NULL && strcmp(body, p->body) != 0)
		q->problem = psprintf("its request_body %s is not the body of its mode and amount, %s",
							  body, p->body);
	return q;
}

/* The error column: what went wrong, as an operator needs it. */
char *
bg_error_json(const BgReply *reply)
{
	char	   *json = bg_reply_error_json(reply,
										   unpack_sql_state(bg_reply_sqlstate(reply)));
	char	   *result = pstrdup(json ? json : "{\"kind\":\"unknown\"}");

	free(json);
	return result;
}

/*
 * The summary of an invoice given as UTF-8 JSON text, palloc'd in the
 * server's encoding.
 */
char *
bg_summary_text(const char *utf8, size_t len)
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
 * are exactly Billogram's.  summary is the reply's bg_journal_summary_text(),
 * made once: when the summary is what is kept, it is returned itself, so
 * that a caller can tell (bg_journal_record_outcomes sends it once).
 */
const char *
bg_journal_invoice_text(const BgReply *reply, const char *body,
						const char *summary)
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
	return summary;
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
	return bg_summary_text(body + reply->data_offset, reply->data_len);
}
