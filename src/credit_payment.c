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
 * Whenever money moved, or may have, the caller's error says so and names
 * the journal row: an invoice this database cannot hold as jsonb is not
 * a reason to let the caller believe the payment failed.  A call with an
 * idempotency key that was used before sends nothing and answers what the
 * journal recorded of the request that used it.
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
#include "journal.h"
#include "jsonb_fit.h"
#include "report.h"
#include "request.h"

PG_FUNCTION_INFO_V1(billogram_credit_payment);
PG_FUNCTION_INFO_V1(billogram_get_invoice);

/*
 * A successful payment whose invoice cannot be returned here: the caller
 * must hear first that the payment was registered, and where it is.
 */
static void
report_unreturnable(const BgRequest *request, int64 request_id,
					const char *why)
{
	if (request->kind != BG_REQUEST_CREDIT_PAYMENT)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("the invoice %s cannot be returned in this database",
						request->billogram_id),
				 errdetail("It holds %s.", why),
				 errhint("Call billogram_get_invoice() from a database whose encoding is UTF8.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
			 errmsg("the credit payment on %s was registered, but its invoice cannot be returned in this database",
					request->billogram_id),
			 errdetail("Billogram registered the payment; row %lld of billogram_requests in database \"%s\" records it, as done once the worker has written the outcome. The invoice holds %s.",
					   (long long) request_id, bg_database, why),
			 errhint("Do not pay again. Read the row in database \"%s\", or the invoice with billogram_get_invoice() from a database whose encoding is UTF8.",
					 bg_database)));
}

/*
 * The reply's "data" as jsonb, parsed from where the worker's classification
 * found it in the body (so the envelope around it is not parsed again); the
 * body is UTF-8, as JSON must be.
 */
static Datum
invoice_from_reply(const BgRequest *request, const BgCallerReply *result)
{
	const BgReply *reply = &result->reply;
	char	   *data;
	char	   *why;

	if (reply->data_offset + reply->data_len > result->body_len ||
		reply->data_len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("billogram: the reply's data is not where the worker said"),
				 result->record.request_id != 0 ?
				 errdetail("The payment was registered: row %lld of billogram_requests records it.",
						   (long long) result->record.request_id) : 0));
	data = pnstrdup(result->body + reply->data_offset, reply->data_len);
	why = bg_jsonb_obstacle(data, reply->data_len);
	if (why != NULL)
		report_unreturnable(request, result->record.request_id, why);
	return DirectFunctionCall1(jsonb_in,
							   CStringGetDatum(pg_any_to_server(data, (int) reply->data_len,
																PG_UTF8)));
}

/*
 * Hand request to the worker, wait, and return the reply's data as jsonb;
 * anything but a success is raised as report.c words it for the request.
 * A payment whose key was used before returns what its first request left
 * in the journal, or raises what became of it.
 */
static Datum
call_worker(const BgRequest *request, const BgCreditPayment *payment)
{
	BgCallerReply result;
	const BgCallRecord *rec = &result.record;

	bg_channel_call(request, payment, bg_timeout_ms, &result);

	if (rec->repeated && result.reply.outcome == BG_OUTCOME_OK)
		ereport(NOTICE,
				(errmsg("idempotency key \"%s\" was used by request %lld: the invoice it recorded is returned, nothing was sent",
						payment->idempotency_key, (long long) rec->request_id)));
	else if (rec->repeated)
		bg_report_key_used(payment->idempotency_key, request->billogram_id,
						   rec->request_id, rec->same_payment, rec->state,
						   rec->sqlstate, &result.reply);
	if (result.reply.outcome != BG_OUTCOME_OK)
		bg_report_failure(ERROR, request->kind, request->billogram_id,
						  &result.reply, rec->request_id);

	return invoice_from_reply(request, &result);
}

/*
 * A call whose key this backend found used already (bg_find_key_here):
 * what the journal recorded, without troubling the worker, which would
 * hold the call back while that request's invoice is busy.
 */
static Datum
answer_from_journal(const BgCreditPayment *payment, const BgKeyUse *use)
{
	BgReply		reply;

	if (use->same_payment && use->response != NULL &&
		strcmp(use->state, "done") == 0)
	{
		ereport(NOTICE,
				(errmsg("idempotency key \"%s\" was used by request %lld: the invoice it recorded is returned, nothing was sent",
						payment->idempotency_key, (long long) use->request_id)));
		return DirectFunctionCall1(jsonb_in, CStringGetDatum(use->response));
	}
	memset(&reply, 0, sizeof(reply));
	reply.outcome = BG_OUTCOME_KEY_USED;
	strlcpy(reply.message, use->message ? use->message : "", sizeof(reply.message));
	strlcpy(reply.status, use->status ? use->status : "", sizeof(reply.status));
	strlcpy(reply.field, use->field ? use->field : "", sizeof(reply.field));
	bg_report_key_used(payment->idempotency_key, payment->billogram_id,
					   use->request_id, use->same_payment, use->state,
					   use->sqlstate, &reply);
	return (Datum) 0;			/* not reached */
}

Datum
billogram_credit_payment(PG_FUNCTION_ARGS)
{
	BgKeyUse	use;
	BgCreditPayment payment;
	BgRequest	request;

	bg_credit_payment_from_call(&payment, fcinfo);
	bg_request_credit_payment(&request, &payment);
	if (payment.idempotency_key[0] != '\0' && bg_find_key_here(&payment, &use))
		PG_RETURN_DATUM(answer_from_journal(&payment, &use));

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
