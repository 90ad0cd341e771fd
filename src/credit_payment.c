/*-------------------------------------------------------------------------
 *
 * credit_payment.c
 *	  The synchronous SQL entry points: billogram_credit_payment() and
 *	  billogram_get_invoice().
 *
 * The calling backend validates its arguments, hands the request to the
 * worker and waits; it never talks HTTP itself.  A success returns the
 * invoice, the reply's "data", parsed by PostgreSQL's own jsonb input so
 * that every amount stays exact: after a payment the updated invoice, from
 * a GET the invoice as it is now.  The worker journals the payment; the GET
 * changes nothing at Billogram and is journaled nowhere.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "channel.h"
#include "guc.h"
#include "report.h"
#include "request.h"

PG_FUNCTION_INFO_V1(billogram_credit_payment);
PG_FUNCTION_INFO_V1(billogram_get_invoice);

/*
 * The reply's "data" as jsonb, parsed from where the worker's classification
 * found it in the body (so the envelope around it is not parsed again); the
 * body is UTF-8, as JSON must be.
 */
static Datum
invoice_from_reply(const BgReply *reply, const char *body, size_t len)
{
	char	   *data;

	if (reply->data_offset + reply->data_len > len || reply->data_len == 0)
		elog(ERROR, "billogram: the reply's data is not where the worker said");
	data = pnstrdup(body + reply->data_offset, reply->data_len);
	return DirectFunctionCall1(jsonb_in,
							   CStringGetDatum(pg_any_to_server(data, (int) reply->data_len,
																PG_UTF8)));
}

/*
 * Hand request to the worker, wait, and return the reply's data as jsonb;
 * anything but a success is raised as report.c words it for the request.
 */
static Datum
call_worker(const BgRequest *request, const BgCreditPayment *payment)
{
	BgCallerReply result;

	bg_channel_call(request, payment, bg_timeout_ms, &result);

	if (result.reply.outcome != BG_OUTCOME_OK)
		bg_report_failure(ERROR, request->kind, request->billogram_id,
						  &result.reply);

	return invoice_from_reply(&result.reply, result.body, result.body_len);
}

Datum
billogram_credit_payment(PG_FUNCTION_ARGS)
{
	BgCreditPayment payment;
	BgRequest	request;

	bg_build_credit_payment(&payment,
							PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
							PG_ARGISNULL(2) ? NULL : PG_GETARG_NUMERIC(2));
	bg_identify_caller(&payment.caller);
	bg_request_credit_payment(&request, &payment);

	PG_RETURN_DATUM(call_worker(&request, &payment));
}

Datum
billogram_get_invoice(PG_FUNCTION_ARGS)
{
	BgRequest	request;

	bg_build_get_invoice(&request,
						 PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));

	PG_RETURN_DATUM(call_worker(&request, NULL));
}
