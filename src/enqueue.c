/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  Queued credit payments: billogram_enqueue_credit_payment() and the
 *	  billogram_payment_trigger() trigger function.
 *
 * Both only insert a 'pending' row into billogram_requests inside the
 * caller's transaction: a payment exists, and will be sent, if and only if
 * that transaction commits.  At commit the worker is woken through its latch,
 * so the happy path has no polling delay.
 *
 * Who may queue: the functions are SECURITY INVOKER, so that the journal
 * records the caller's own roles; only the insert itself runs as the
 * journal's owner, with a pinned search_path.  EXECUTE on
 * billogram_enqueue_credit_payment() is checked by the executor.  A trigger
 * function's EXECUTE is checked only by CREATE TRIGGER, never when the
 * trigger fires, so the trigger checks at every row that the owner of the
 * table it fires on, and of every table above it in its partition tree up
 * to the root, still holds EXECUTE on billogram_payment_trigger(): a
 * revoked grant stops triggers created while it was held.  A deferrable
 * trigger is refused: at COMMIT it would record the wrong role.
 *
 * The trigger pays once per source row, ever: the row's key (source_row.c)
 * is recorded in billogram_keys with the journal row, and a row inserted
 * again (restored by COPY) queues nothing; nor does the insert half of an
 * UPDATE that moves a row to another partition (row_moves.c), which
 * changes the row's primary key.
 *
 * A payment queued with an idempotency key records the key in
 * billogram_keys in the same transaction; a key used before queues nothing
 * and returns the request that used it (22023 when that was another
 * payment).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "channel.h"
#include "guc.h"
#include "journal.h"
#include "report.h"
#include "request.h"
#include "source_row.h"

PG_FUNCTION_INFO_V1(billogram_enqueue_credit_payment);
PG_FUNCTION_INFO_V1(billogram_payment_trigger);
PG_FUNCTION_INFO_V1(billogram_wake_worker_at_commit);

static bool wake_at_commit = false;

/* A copy in the memory of the caller of SPI_connect(), for after SPI_finish() */
static char *
copy_out_of_spi(const char *s)
{
	char	   *copy = SPI_palloc(strlen(s) + 1);

	strcpy(copy, s);
	return copy;
}
static bool xact_callback_registered = false;

static void
wake_worker_on_commit(XactEvent event, void *arg)
{
	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		bg_channel_wake_queue();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

static void
request_wake_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_worker_on_commit, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * Only the worker's own database has its queue served: a payment queued in
 * any other would wait forever, so it is refused.
 */
static void
check_queue_is_served(void)
{
	static bool checked = false;
	char	   *here;

	if (checked)
		return;
	if (bg_database == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram is not loaded through shared_preload_libraries"),
				 errdetail("Nothing was queued: without the worker it would never be sent."),
				 errhint("Add billogram to shared_preload_libraries in postgresql.conf and restart the server.")));
	here = get_database_name(MyDatabaseId);
	if (here == NULL || strcmp(here, bg_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payments can only be queued in database \"%s\"", bg_database),
				 errdetail("The billogram worker sends the queue of billogram.database only; a payment queued here would never be sent."),
				 errhint("Queue payments in database \"%s\", or call billogram_credit_payment() here.", bg_database)));
	checked = true;
}

/*
 * The journal as this backend may write to it; raises a clear error when
 * the extension is missing here or not at the version this library speaks.
 */
static const BgJournal *
journal_for_queuing(void)
{
	static BgJournal journal;	/* bg_journal_lookup() keeps it per command */

	check_queue_is_served();
	switch (bg_journal_lookup(&journal))
	{
		case BG_JOURNAL_MISSING:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the billogram extension is not installed in this database")));
			break;
		case BG_JOURNAL_WRONG_VERSION:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the billogram extension in this database is at version %s, the server's library needs %s",
							journal.version, BG_SCHEMA_VERSION),
					 errdetail("Nothing was queued."),
					 errhint("Run ALTER EXTENSION billogram UPDATE.")));
			break;
		case BG_JOURNAL_UNTRUSTED:
			bg_report_untrusted(journal.refusal, "Nothing was queued.");
			break;
		case BG_JOURNAL_READY:
			break;
	}
	return &journal;
}

/*
 * Insert the pending row, and record its idempotency key if it has one;
 * returns its id.  A key used before inserts nothing: the request that
 * used it is returned as a negative id, after a NOTICE, or 22023 is raised
 * when that was another payment.  Two transactions queuing with one key at
 * once: the second waits for the first, and if that commits, fails with
 * 40001 and queues nothing (its retry finds the first request).
 */
static int64
insert_or_find(const BgJournal *journal, const BgCreditPayment *payment,
			   const char *origin, const char *source_table,
			   const char *source_key)
{
	BgKeyUse	use;
	int64		id;

	if (payment->idempotency_key[0] != '\0' &&
		bg_journal_find_key(journal, payment, &use))
	{
		if (use.state[0] != '\0' && !use.same_payment)
			bg_report_key_mismatch(payment->idempotency_key, use.request_id);
		ereport(NOTICE,
				(errmsg("idempotency key \"%s\" was used by request %lld: nothing was queued",
						payment->idempotency_key, (long long) use.request_id)));
		return -use.request_id;
	}
	id = bg_journal_insert(journal, payment, origin, source_table, source_key);
	if (payment->idempotency_key[0] != '\0' &&
		!bg_journal_claim_key(journal, payment, id, &use))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("idempotency key \"%s\" was used by request %lld, committed while this one was being queued",
						payment->idempotency_key, (long long) use.request_id),
				 errdetail("Nothing was queued."),
				 errhint("Retry the transaction: the key's request is then returned.")));
	return id;
}

/*
 * Insert one pending row as the journal's owner; returns its id, or 0 when
 * its source key has paid before (*earlier: the row it made); a call's
 * idempotency key used before returns the request that used it (see
 * insert_or_find()).  With no payment, only notes the source key as taken
 * (a row moved to another partition).  Callers
 * hold no privilege on the journal, so that the only rows they can add are
 * validated payments with their own names on them.  While the owner's
 * identity is borrowed, search_path is pinned and the operation is
 * security-restricted, as PostgreSQL does for maintenance commands run as a
 * table's owner: nothing the caller defined can be reached from here.  An
 * error restores both at transaction or subtransaction abort.
 *
 * The statement itself is journal.c's, planned once per backend: a trigger
 * may insert thousands of rows.
 */
static int64
insert_pending(const BgCreditPayment *payment, const char *origin,
			   const char *source_table, const char *source_key,
			   const char *key, int64 *earlier)
{
	const BgJournal *journal = journal_for_queuing();
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	int64		id;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(journal->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	SPI_connect();
	if (payment == NULL)
		id = bg_journal_note_key(journal, "source", key);
	else if (key != NULL)
		id = bg_journal_insert_keyed(journal, payment, origin, source_table,
									 source_key, "source", key, earlier);
	else
		id = insert_or_find(journal, payment, origin, source_table, source_key);
	SPI_finish();

	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (id > 0 && payment != NULL)
		request_wake_at_commit();
	return id > 0 ? id : -id;
}

/*
 * What payment's idempotency key was used for, looked up by a backend in
 * billogram.database, as the journal's owner like an insert: false when it
 * was never used, or when this is another database (only the worker can
 * look there).  The first, cheap look of a synchronous call with a key.
 */
bool
bg_find_key_here(const BgCreditPayment *payment, BgKeyUse *use)
{
	static BgJournal journal;
	char	   *here = get_database_name(MyDatabaseId);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		found;

	if (bg_database == NULL || here == NULL || strcmp(here, bg_database) != 0 ||
		bg_journal_lookup(&journal) != BG_JOURNAL_READY)
		return false;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(journal.owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	found = bg_journal_find_key(&journal, payment, use);
	/* what it found outlives SPI's memory */
	if (found)
	{
		use->response = use->response ? copy_out_of_spi(use->response) : NULL;
		use->message = use->message ? copy_out_of_spi(use->message) : NULL;
		use->status = use->status ? copy_out_of_spi(use->status) : NULL;
		use->field = use->field ? copy_out_of_spi(use->field) : NULL;
	}
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return found;
}

Datum
billogram_enqueue_credit_payment(PG_FUNCTION_ARGS)
{
	BgCreditPayment payment;

	bg_credit_payment_from_call(&payment, fcinfo);
	PG_RETURN_INT64(insert_pending(&payment, "enqueue", NULL, NULL, NULL, NULL));
}

/* Used by billogram_resolve(): a row set back to pending is sent soon. */
Datum
billogram_wake_worker_at_commit(PG_FUNCTION_ARGS)
{
	request_wake_at_commit();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * The trigger
 * ---------------------------------------------------------------------
 */

/*
 * A trigger argument names a column as an SQL identifier would: unquoted
 * names fold to lower case, "Quoted Names" keep their case and may contain
 * anything, with "" for a double quote.
 */
static char *
column_from_argument(const char *arg)
{
	size_t		len = strlen(arg);

	if (len >= 2 && arg[0] == '"' && arg[len - 1] == '"')
	{
		StringInfoData buf;
		size_t		i;

		initStringInfo(&buf);
		for (i = 1; i < len - 1; i++)
		{
			if (arg[i] == '"')
			{
				if (i + 1 < len - 1 && arg[i + 1] == '"')
					i++;
				else
					return NULL;
			}
			appendStringInfoChar(&buf, arg[i]);
		}
		return buf.data;
	}
	if (len == 0 || strchr(arg, '"'))
		return NULL;
	return downcase_identifier(arg, (int) len, false, true);
}

static int
column_number(Relation rel, const char *arg)
{
	char	   *name = column_from_argument(arg);
	int			attnum = name ? SPI_fnumber(RelationGetDescr(rel), name) : SPI_ERROR_NOATTRIBUTE;

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billogram_payment_trigger: invalid column name %s", arg),
				 errhint("Write column names as in SQL: amount, or \"Amount Due\" in double quotes.")));
	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("billogram_payment_trigger: column \"%s\" of table \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint("The trigger's arguments name the billogram id column and, optionally, the amount column.")));
	return attnum;
}

static void
check_trigger_use(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	int			nargs;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("billogram_payment_trigger must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("billogram_payment_trigger must be an AFTER INSERT ... FOR EACH ROW trigger"),
				 errhint("CREATE TRIGGER ... AFTER INSERT ON payments FOR EACH ROW EXECUTE FUNCTION billogram_payment_trigger('billogram_id', 'amount');")));
	nargs = trigdata->tg_trigger->tgnargs;
	if (nargs < 1 || nargs > 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billogram_payment_trigger takes 1 to 3 arguments, got %d", nargs),
				 errhint("Name the billogram id column and, optionally, the amount column and a mode column.")));

	/*
	 * TriggerData says only whether the trigger may be deferred, not whether
	 * it was: SET CONSTRAINTS can defer an INITIALLY IMMEDIATE one too.
	 */
	if (trigdata->tg_trigger->tgdeferrable)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("billogram_payment_trigger cannot be a deferrable trigger"),
				 errdetail("A deferred trigger fires at COMMIT, as whatever role is current then, so the journal could not record the role that inserted the row. Nothing was queued."),
				 errhint("Create it as a plain AFTER INSERT ... FOR EACH ROW trigger, or as a NOT DEFERRABLE constraint trigger.")));
}

/*
 * CREATE TRIGGER checked EXECUTE once, for whoever created the trigger;
 * firing checks nothing.  Every row therefore checks that the table's owner
 * holds EXECUTE on this function now: a revoked grant, or a table given to
 * a role without it, stops queuing at once.  A partition's rows are those
 * of every table above it too, so the owner of each, up to the root, must
 * hold it as well.
 */
static void
check_owner_may_queue(FunctionCallInfo fcinfo, Oid relid)
{
	Oid			fn = fcinfo->flinfo->fn_oid;
	HeapTuple	tuple;
	Oid			owner;
	AclResult	aclresult;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

#if PG_VERSION_NUM >= 160000
	aclresult = object_aclcheck(ProcedureRelationId, fn, owner, ACL_EXECUTE);
#else
	aclresult = pg_proc_aclcheck(fn, owner, ACL_EXECUTE);
#endif
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table \"%s\" may not queue Billogram payments",
						get_rel_name(relid)),
				 errdetail("Its owner, role \"%s\", does not hold EXECUTE on function %s. Nothing was queued.",
						   GetUserNameFromId(owner, false),
						   format_procedure(fn)),
				 errhint("A superuser or the function's owner can GRANT EXECUTE ON FUNCTION %s TO the table's owner.",
						 format_procedure(fn))));
}

static void
check_owners_may_queue(FunctionCallInfo fcinfo, Relation rel)
{
	List	   *ancestors;
	ListCell   *lc;

	check_owner_may_queue(fcinfo, RelationGetRelid(rel));
	if (!rel->rd_rel->relispartition)
		return;
	ancestors = get_partition_ancestors(RelationGetRelid(rel));
	foreach(lc, ancestors)
		check_owner_may_queue(fcinfo, lfirst_oid(lc));
	list_free(ancestors);
}

static text *
column_as_text(Relation rel, HeapTuple tuple, int attnum)
{
	char	   *value = SPI_getvalue(tuple, RelationGetDescr(rel), attnum);

	return value ? cstring_to_text(value) : NULL;
}

static text *
mode_from_row(Relation rel, HeapTuple tuple, int attnum)
{
	text	   *mode = column_as_text(rel, tuple, attnum);

	if (mode == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billogram_payment_trigger: the mode in column %s is NULL",
						SPI_fname(RelationGetDescr(rel), attnum)),
				 errdetail("Nothing was queued."),
				 errhint("Set the mode to 'amount' or 'remaining'.")));
	return mode;
}

/*
 * A row inserted again (an UPDATE moving it to another partition, a COPY of
 * restored rows) is legitimately there: the INSERT goes on, and nothing is
 * queued.
 */
static void
report_paid_before(const BgSourceTable *source, const char *key_json,
				   int64 earlier)
{
	if (earlier == 0)
		ereport(NOTICE,
				(errmsg("billogram_payment_trigger: row %s of %s has queued its payment before, under the key it had before an UPDATE moved it to another partition; nothing was queued",
						key_json, source->root_name)));
	else
		ereport(NOTICE,
				(errmsg("billogram_payment_trigger: row %s of %s has queued its payment before, in billogram request %lld; nothing was queued",
						key_json, source->root_name, (long long) earlier),
				 errdetail("Each row of a payments table pays once, ever: this one was inserted again (a restore, or a row deleted and inserted with the same key)."),
				 errhint("To pay again, queue a new payment with a new row or billogram_enqueue_credit_payment().")));
}

/*
 * An UPDATE that moves a row to another partition inserts it there: the
 * row queued its payment when it was first inserted.
 */
static void
report_moved(const BgSourceTable *source)
{
	ereport(NOTICE,
			(errmsg("billogram_payment_trigger: a row of %s moved to partition %s by an UPDATE; nothing was queued",
					source->root_name, RelationGetRelationName(source->rel)),
			 errdetail("The row queued its payment when it was inserted; an UPDATE never queues one.")));
}

Datum
billogram_payment_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	tuple;
	char	  **args;
	int			nargs;
	int			id_col;
	Numeric		amount = NULL;
	text	   *mode;
	BgCreditPayment payment;
	BgSourceTable source;
	char	   *key_json;
	char	   *key;
	int64		earlier;

	check_trigger_use(fcinfo);
	rel = trigdata->tg_relation;
	tuple = trigdata->tg_trigtuple;
	args = trigdata->tg_trigger->tgargs;
	nargs = trigdata->tg_trigger->tgnargs;
	bg_source_open(&source, rel);
	if (bg_row_is_moving(rel))
	{
		/* its new key is taken too: a COPY of it restored later pays nothing */
		key_json = bg_source_key_json(&source, tuple);
		(void) insert_pending(NULL, NULL, NULL, NULL,
							  psprintf("%s %s", source.root_name, key_json), NULL);
		report_moved(&source);
		bg_source_close(&source);
		return PointerGetDatum(NULL);
	}
	check_owners_may_queue(fcinfo, rel);

	id_col = column_number(rel, args[0]);
	if (nargs >= 2)
		amount = bg_source_amount(rel, tuple, column_number(rel, args[1]));

	/*
	 * Mode 'remaining' pays out everything, so it is never inferred from a
	 * missing value: with an amount column and no mode column the mode is
	 * 'amount' and a NULL amount is refused; 'remaining' comes only from
	 * naming no amount column, or from a mode column that says so.
	 */
	if (nargs == 3)
		mode = mode_from_row(rel, tuple, column_number(rel, args[2]));
	else if (nargs == 2)
	{
		if (amount == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("billogram_payment_trigger: the amount in column %s is NULL", args[1]),
					 errdetail("Nothing was queued: a missing amount is refused, never paid out as the remaining sum."),
					 errhint("To pay out the remaining sum, give the trigger a mode column as its third argument and set it to 'remaining'.")));
		mode = cstring_to_text("amount");
	}
	else
		mode = cstring_to_text("remaining");

	bg_build_credit_payment(&payment, column_as_text(rel, tuple, id_col),
							mode, amount);
	bg_identify_caller(&payment.caller);

	/* the row's identity: its partition tree's root and its key there */
	key_json = bg_source_key_json(&source, tuple);
	key = psprintf("%s %s", source.root_name, key_json);
	if (insert_pending(&payment, "trigger", source.root_name, key_json,
					   key, &earlier) == 0)
		report_paid_before(&source, key_json, earlier);
	bg_source_close(&source);

	return PointerGetDatum(NULL);
}
