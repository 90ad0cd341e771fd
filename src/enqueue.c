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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "parser/scansup.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "channel.h"
#include "guc.h"
#include "queue.h"
#include "request.h"

PG_FUNCTION_INFO_V1(billogram_enqueue_credit_payment);
PG_FUNCTION_INFO_V1(billogram_payment_trigger);
PG_FUNCTION_INFO_V1(billogram_wake_worker_at_commit);

static bool wake_at_commit = false;
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

static Datum
text_arg(const char *s, char *isnull)
{
	*isnull = (s == NULL || s[0] == '\0') ? 'n' : ' ';
	return (*isnull == 'n') ? (Datum) 0 : CStringGetTextDatum(s);
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
 * Insert one pending row; returns its id.  The statement is planned once
 * per backend and kept: a trigger may insert thousands of rows.
 */
static int64
insert_pending(const BgCreditPayment *payment, const char *origin,
			   const char *source_table, const char *source_key)
{
	static SPIPlanPtr plan = NULL;
	static const char *plan_journal = NULL;
	const char *journal;
	Datum		args[7];
	char		nulls[7];
	bool		isnull;
	int64		id;
	int			rc;

	check_queue_is_served();
	SPI_connect();
	journal = bg_journal_name();
	if (journal == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the billogram extension is not installed in this database")));
	if (plan == NULL || strcmp(plan_journal, journal) != 0)
	{
		Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID};
		char	   *sql;

		sql = psprintf("INSERT INTO %s (origin, billogram_id, mode, amount, "
					   "request_body, source_table, source_key) "
					   "VALUES ($1, $2, $3, $4::numeric, $5, $6, $7::jsonb) RETURNING id",
					   journal);
		if (plan)
			SPI_freeplan(plan);
		plan = SPI_prepare(sql, 7, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the queue insert: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plan_journal = MemoryContextStrdup(TopMemoryContext, journal);
	}

	args[0] = text_arg(origin, &nulls[0]);
	args[1] = text_arg(payment->billogram_id, &nulls[1]);
	args[2] = text_arg(payment->mode, &nulls[2]);
	args[3] = text_arg(payment->amount, &nulls[3]);
	args[4] = text_arg(payment->body, &nulls[4]);
	args[5] = text_arg(source_table, &nulls[5]);
	args[6] = text_arg(source_key, &nulls[6]);

	rc = SPI_execute_plan(plan, args, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not queue the credit payment: %s",
			 SPI_result_code_string(rc));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	request_wake_at_commit();
	return id;
}

Datum
billogram_enqueue_credit_payment(PG_FUNCTION_ARGS)
{
	BgCreditPayment payment;

	bg_build_credit_payment(&payment,
							PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
							PG_ARGISNULL(2) ? NULL : PG_GETARG_NUMERIC(2));
	PG_RETURN_INT64(insert_pending(&payment, "enqueue", NULL, NULL));
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
	if (nargs < 1 || nargs > 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billogram_payment_trigger takes 1 or 2 arguments, got %d", nargs),
				 errhint("Name the billogram id column and, optionally, the amount column.")));
}

static text *
column_as_text(Relation rel, HeapTuple tuple, int attnum)
{
	char	   *value = SPI_getvalue(tuple, RelationGetDescr(rel), attnum);

	return value ? cstring_to_text(value) : NULL;
}

static Numeric
column_as_numeric(Relation rel, HeapTuple tuple, int attnum)
{
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *value;

	if (TupleDescAttr(desc, attnum - 1)->atttypid == NUMERICOID)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tuple, desc, attnum, &isnull);

		return isnull ? NULL : DatumGetNumeric(d);
	}
	/* any other type goes through its text form, as a cast would */
	value = SPI_getvalue(tuple, desc, attnum);
	if (value == NULL)
		return NULL;
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(value),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/* The row's primary key as a JSON object of its text values, or NULL. */
static char *
source_key_json(Relation rel, HeapTuple tuple)
{
	/*
	 * One argument in every supported major: 15 and 17 both declare
	 * RelationGetPrimaryKeyIndex(Relation) in utils/relcache.h (checked by
	 * building on each).  A major that changes it is not supported until it
	 * has been built and tested here.
	 */
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	Relation	index;
	StringInfoData buf;
	int			i;

	if (!OidIsValid(pk))
		return NULL;
	index = index_open(pk, AccessShareLock);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < index->rd_index->indnkeyatts; i++)
	{
		int			attnum = index->rd_index->indkey.values[i];
		char	   *value = SPI_getvalue(tuple, RelationGetDescr(rel), attnum);

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, SPI_fname(RelationGetDescr(rel), attnum));
		appendStringInfoChar(&buf, ':');
		if (value)
			escape_json(&buf, value);
		else
			appendStringInfoString(&buf, "null");
	}
	appendStringInfoChar(&buf, '}');
	index_close(index, AccessShareLock);
	return buf.data;
}

Datum
billogram_payment_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	tuple;
	char	  **args;
	int			id_col;
	Numeric		amount = NULL;
	BgCreditPayment payment;
	char	   *source_table;

	check_trigger_use(fcinfo);
	rel = trigdata->tg_relation;
	tuple = trigdata->tg_trigtuple;
	args = trigdata->tg_trigger->tgargs;

	id_col = column_number(rel, args[0]);
	if (trigdata->tg_trigger->tgnargs == 2)
		amount = column_as_numeric(rel, tuple, column_number(rel, args[1]));

	/* a NULL amount, or no amount column, pays the remaining sum */
	bg_build_credit_payment(&payment,
							column_as_text(rel, tuple, id_col),
							cstring_to_text(amount ? "amount" : "remaining"),
							amount);

	source_table = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											  RelationGetRelationName(rel));
	insert_pending(&payment, "trigger", source_table, source_key_json(rel, tuple));

	return PointerGetDatum(NULL);
}
