/*-------------------------------------------------------------------------
 *
 * journalfuncs.c
 *	  The journal's SQL-callable functions: the summary of an invoice, the
 *	  announcement of a row's state, and the guard that keeps writes to the
 *	  extension's tables to its own code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "journal_int.h"
#include "report.h"

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
	result = bg_summary_text(utf8, strlen(utf8));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}

/*
 * billogram_announce(request_id bigint, state text) RETURNS void: the one
 * place a row's state is announced (the install script says what and to
 * whom), through pg_notify, so at commit and only then.  In C because the
 * worker announces every outcome it records: as a SQL function with its
 * own search_path it was parsed and planned again for each statement that
 * called it.  The payload is json_build_object()'s layout.
 */
PG_FUNCTION_INFO_V1(billogram_announce);

Datum
billogram_announce(PG_FUNCTION_ARGS)
{
	int64		request_id = PG_GETARG_INT64(0);
	char	   *state = text_to_cstring(PG_GETARG_TEXT_PP(1));
	StringInfoData payload;

	/* what no listener waits for */
	if (strcmp(state, bg_journal_state_name(BG_STATE_PENDING)) == 0 ||
		strcmp(state, bg_journal_state_name(BG_STATE_SENDING)) == 0)
		PG_RETURN_VOID();
	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"id\" : " INT64_FORMAT ", \"state\" : ",
					 request_id);
	escape_json(&payload, state);
	appendStringInfoChar(&payload, '}');
	DirectFunctionCall2(pg_notify,
						CStringGetTextDatum("billogram_requests"),
						CStringGetTextDatum(payload.data));
	PG_RETURN_VOID();
}

/*
 * billogram_journal_guard(): a statement trigger on each of the extension's
 * tables that refuses any write by a role below superuser (the install
 * script says why).  Every write of the extension's own runs as a superuser:
 * the worker, the SECURITY DEFINER functions, the queueing functions'
 * insert as the journal's owner.
 */
PG_FUNCTION_INFO_V1(billogram_journal_guard);

Datum
billogram_journal_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("billogram_journal_guard() must be called as a trigger")));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: only the billogram extension's own functions write %s",
						RelationGetRelationName(trigdata->tg_relation)),
				 errdetail("Nothing was written, and nothing was sent to Billogram."),
				 errhint("Queue a payment with billogram_enqueue_credit_payment() or a billogram_payment_trigger() trigger; act on journal rows with billogram_resolve(), billogram_release_held(), billogram_fail_held() and billogram_purge().")));
	return PointerGetDatum(NULL);
}

/*
 * billogram_assert_trusted() RETURNS void: 42501 while the extension's
 * objects cannot be trusted (trust.c).  The first statement of each of the
 * extension's SECURITY DEFINER functions, which run as a superuser.
 */
PG_FUNCTION_INFO_V1(billogram_assert_trusted);

Datum
billogram_assert_trusted(PG_FUNCTION_ARGS)
{
	BgJournal	journal;

	if (bg_journal_lookup(&journal) == BG_JOURNAL_UNTRUSTED)
		bg_report_untrusted(journal.refusal, "Nothing was done.");
	PG_RETURN_VOID();
}
