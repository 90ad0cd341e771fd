/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  billogram_payment_trigger(): a row inserted into a user's payments
 *	  table queues its payment.
 *
 * The trigger reads the billogram id, and the amount and mode when it is
 * given their columns, from the new row, and queues the payment through
 * enqueue.c in the inserting transaction: it is sent if, and only if, that
 * transaction commits.
 *
 * Who may queue: a trigger function's EXECUTE is checked only by CREATE
 * TRIGGER, never when the trigger fires, so the trigger checks at every row
 * that the owner of the table it fires on, and of every table above it in
 * its partition tree up to the root, still holds EXECUTE on
 * billogram_payment_trigger(): a revoked grant stops triggers created while
 * it was held.  A deferrable trigger is refused: at COMMIT it would record
 * the wrong role.
 *
 * The trigger pays once per source row, ever: the row's key (source_row.c)
 * is recorded in billogram_keys with the journal row, and a row inserted
 * again (restored by COPY) queues nothing; nor does the insert half of an
 * UPDATE that moves a row to another partition (row_moves.c), which
 * changes the row's primary key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/scansup.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "enqueue.h"
#include "request.h"
#include "source_row.h"

PG_FUNCTION_INFO_V1(billogram_payment_trigger);

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
		(void) bg_enqueue_pending(NULL, NULL, NULL, NULL,
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
	if (bg_enqueue_pending(&payment, "trigger", source.root_name, key_json,
					   key, &earlier) == 0)
		report_paid_before(&source, key_json, earlier);
	bg_source_close(&source);

	return PointerGetDatum(NULL);
}
