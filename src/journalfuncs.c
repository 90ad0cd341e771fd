/*-------------------------------------------------------------------------
 *
 * journalfuncs.c
 *	  The journal's SQL-callable functions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

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
