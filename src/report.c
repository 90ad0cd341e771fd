/*-------------------------------------------------------------------------
 *
 * report.c
 *	  The error messages and SQLSTATEs of failed requests: credit payments
 *	  and GETs of invoices.
 *
 * Each message says what happened and, for a credit payment, as a payments
 * engineer needs to know first, whether the payment may have been
 * registered at Billogram.  A GET changes nothing there, so its messages
 * say only whether it was sent, and never that money may have moved.
 *
 * What a program reads, without parsing the message:
 *
 *	- the SQLSTATE: BG followed by the HTTP status for an answer from
 *	  Billogram (BG400, BG403, ...), and the BG0xx and standard codes below;
 *	- when Billogram named its own status, the DETAIL begins with exactly
 *
 *		billogram_status=<STATUS>
 *		field=<field>
 *
 *	  one per line, the second only when Billogram named a field; the prose
 *	  follows on the next line.  STATUS is Billogram's "status" as sent (for
 *	  example INVALID_OBJECT_STATE) and field its data.field.  In PL/pgSQL:
 *	  GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, then
 *	  substring(d from '^billogram_status=([^\n]*)') and
 *	  substring(d from '\nfield=([^\n]*)').  This format is fixed: new
 *	  lines may only ever be added after these.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "report.h"
#include "schema.h"

/* BG followed by the three digits of the HTTP status, e.g. BG404. */
static int
sqlstate_for_http_status(long http_status)
{
	if (http_status < 100 || http_status > 999)
		return ERRCODE_BILLOGRAM_BAD_REPLY;
	return MAKE_SQLSTATE('B', 'G',
						 '0' + (int) (http_status / 100),
						 '0' + (int) (http_status / 10 % 10),
						 '0' + (int) (http_status % 10));
}

int
bg_reply_sqlstate(const BgReply *reply)
{
	switch (reply->outcome)
	{
		case BG_OUTCOME_OK:
			return ERRCODE_SUCCESSFUL_COMPLETION;
		case BG_OUTCOME_API_ERROR:
			return sqlstate_for_http_status(reply->http_status);
		case BG_OUTCOME_TRANSPORT:
			return ERRCODE_BILLOGRAM_NO_REPLY;
		case BG_OUTCOME_BAD_REPLY:
			return ERRCODE_BILLOGRAM_BAD_REPLY;
		case BG_OUTCOME_WORKER:
			return ERRCODE_BILLOGRAM_WORKER_LOST;
		case BG_OUTCOME_NOT_INSTALLED:
		case BG_OUTCOME_NO_CREDENTIALS:
			return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		case BG_OUTCOME_NOT_RECORDED:
			return ERRCODE_BILLOGRAM_NOT_RECORDED;
		case BG_OUTCOME_PAUSED:
			/* as the refusal that started the pause: "try again later" */
			return sqlstate_for_http_status(reply->http_status);
		case BG_OUTCOME_INVOICE_BUSY:
			return ERRCODE_OBJECT_IN_USE;
		case BG_OUTCOME_KEY_USED:
			return ERRCODE_BILLOGRAM_KEY_IN_PROGRESS;
		case BG_OUTCOME_INVALID_ROW:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case BG_OUTCOME_UNTRUSTED:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
	}
	return ERRCODE_INTERNAL_ERROR;
}

/*
 * What was asked, as messages name it: "the credit payment on 2kAEEjE",
 * "the GET of invoice 2kAEEjE".
 */
static char *
request_name(BgRequestKind kind, const char *id)
{
	switch (kind)
	{
		case BG_REQUEST_CREDIT_PAYMENT:
			return psprintf("the credit payment on %s", id);
		case BG_REQUEST_GET_INVOICE:
			return psprintf("the GET of invoice %s", id);
	}
	return psprintf("the request on %s", id);
}

static const char *
reached_text(BgRequestKind kind, const BgReply *reply)
{
	if (kind != BG_REQUEST_CREDIT_PAYMENT)
	{
		if (reply->may_have_reached || reply->outcome == BG_OUTCOME_API_ERROR)
			return "A GET changes nothing at Billogram: it is safe to repeat.";
		return "The request did not reach Billogram.";
	}
	if (reply->may_have_reached)
		return "The request may have reached Billogram and the payment may be registered: check the invoice before sending it again.";
	if (reply->outcome == BG_OUTCOME_API_ERROR)
		return "Billogram did not act on the request; no payment was registered.";
	return "The request did not reach Billogram; no payment was registered.";
}

/*
 * Whether the payment may have been registered, and, when it may have, the
 * journal row that records it (request_id, 0 if none): whoever reads the
 * error must be able to find the payment that may have moved money.
 */
static char *
reached_detail(BgRequestKind kind, const BgReply *reply, int64 request_id)
{
	if (kind != BG_REQUEST_CREDIT_PAYMENT || request_id == 0 ||
		!reply->may_have_reached)
		return pstrdup(reached_text(kind, reply));
	return psprintf("%s Row %lld of billogram_requests records it.",
					reached_text(kind, reply), (long long) request_id);
}

/* Sandbox and production credentials: a mix-up is refused like a bad password. */
#define BG_API_URL_HINT \
	"Sandbox and production credentials each work only against their own billogram.api_url: https://sandbox.billogram.com/api/v2 or https://billogram.com/api/v2."

/*
 * The hint for a refusal of the credentials (401, 403); NULL for any other
 * reply.  The first 403 a new account meets is usually PERMISSION_DENIED
 * because Billogram has not enabled stand-alone credit invoices on it,
 * which no setting of ours can fix; credentials sent to the wrong base URL
 * are refused too, so every such hint names billogram.api_url.
 */
static const char *
refusal_hint(const BgReply *reply)
{
	if (reply->http_status == 403 &&
		strcmp(reply->status, "PERMISSION_DENIED") == 0)
		return "Billogram must enable stand-alone credit invoices on the account before it accepts their payments: ask Billogram to, if it has not. "
			BG_API_URL_HINT;
	if (reply->http_status == 401 || reply->http_status == 403)
		return BG_CREDENTIALS_HINT " " BG_API_URL_HINT;
	return NULL;
}

static void
report_api_error(int elevel, const char *prefix, BgRequestKind kind,
				 const char *what, const BgReply *reply, int64 request_id)
{
	bool		retry_later = bg_reply_asks_to_wait(reply);
	bool		is_redirect = (reply->http_status >= 300 &&
							   reply->http_status < 400);
	const char *auth_hint = refusal_hint(reply);
	StringInfoData detail;

	if (reply->status[0] == '\0')
	{
		/* typically an HTML or empty page from a proxy or load balancer */
		ereport(elevel,
				(errcode(sqlstate_for_http_status(reply->http_status)),
				 errmsg("%sBillogram answered %s with HTTP %ld", prefix,
						what, reply->http_status),
				 errdetail("The reply carried no Billogram error. %s",
						   reached_detail(kind, reply, request_id)),
				 retry_later ? errhint("Billogram asks to try again later.") :
				 is_redirect && kind == BG_REQUEST_CREDIT_PAYMENT ?
				 errhint("Redirects are not followed: following one would send the payment again, elsewhere. Check billogram.api_url.") :
				 is_redirect ? errhint("Redirects are not followed. Check billogram.api_url.") :
				 auth_hint ? errhint("%s", auth_hint) : 0));
		return;
	}

	/* the fixed lines of the file header first, then the prose */
	initStringInfo(&detail);
	appendStringInfo(&detail, "billogram_status=%s\n", reply->status);
	if (reply->field_name[0])
		appendStringInfo(&detail, "field=%s\n", reply->field_name);
	if (reply->field[0])
		appendStringInfo(&detail, "Field: %s. ", reply->field);
	appendStringInfoString(&detail, reached_detail(kind, reply, request_id));

	ereport(elevel,
			(errcode(sqlstate_for_http_status(reply->http_status)),
			 errmsg("%sBillogram refused %s: HTTP %ld %s: %s", prefix,
					what, reply->http_status, reply->status,
					reply->message[0] ? reply->message : "(no message)"),
			 errdetail_internal("%s", detail.data),
			 retry_later ? errhint("Billogram asks to try again later.") :
			 auth_hint ? errhint("%s", auth_hint) : 0));
	pfree(detail.data);
}

void
bg_report_failure(int elevel, BgRequestKind kind, const char *id,
				  const BgReply *reply, int64 request_id)
{
	char	   *what = request_name(kind, id);
	/* below ERROR it goes to the server log, whose lines carry our prefix */
	const char *prefix = (elevel < ERROR) ? "billogram: " : "";

	switch (reply->outcome)
	{
		case BG_OUTCOME_OK:
			if (kind == BG_REQUEST_CREDIT_PAYMENT)
				elog(elevel, "%scredit payment on %s was registered", prefix, id);
			else
				elog(elevel, "%s%s was answered", prefix, what);
			break;
		case BG_OUTCOME_API_ERROR:
			report_api_error(elevel, prefix, kind, what, reply, request_id);
			break;
		case BG_OUTCOME_TRANSPORT:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_NO_REPLY),
					 errmsg("%sno reply from Billogram to %s: %s", prefix,
							what, reply->message),
					 errdetail("%s", reached_detail(kind, reply, request_id))));
			break;
		case BG_OUTCOME_BAD_REPLY:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_BAD_REPLY),
					 errmsg("%sunusable reply from Billogram to %s: %s", prefix,
							what, reply->message),
					 reply->http_status ?
					 errdetail("HTTP status %ld. %s", reply->http_status,
							   reached_detail(kind, reply, request_id)) :
					 errdetail("%s", reached_detail(kind, reply, request_id))));
			break;
		case BG_OUTCOME_NOT_INSTALLED:
			ereport(elevel,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%sthe billogram extension is not installed, or not at version %s, in the worker's database \"%s\"", prefix,
							BG_SCHEMA_VERSION, reply->message),
					 errdetail("Nothing was sent to Billogram: every payment is journaled in billogram_requests first."),
					 errhint("Run CREATE EXTENSION billogram, or ALTER EXTENSION billogram UPDATE, in database \"%s\" (billogram.database).",
							 reply->message)));
			break;
		case BG_OUTCOME_NOT_RECORDED:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_NOT_RECORDED),
					 errmsg("%s%s was not sent: the billogram worker could not record it in billogram_requests", prefix,
							what),
					 errdetail("%s %s", reply->message, reached_detail(kind, reply, request_id)),
					 errhint("Nothing was sent, so the call can be made again. The server log has the worker's error.")));
			break;
		case BG_OUTCOME_PAUSED:
			ereport(elevel,
					(errcode(sqlstate_for_http_status(reply->http_status)),
					 errmsg("%s%s was not sent: Billogram asked to wait (HTTP %ld)", prefix,
							what, reply->http_status),
					 errdetail("%s. %s", reply->message, reached_detail(kind, reply, request_id)),
					 errhint("Billogram asks to try again later.")));
			break;
		case BG_OUTCOME_INVOICE_BUSY:
			ereport(elevel,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("%s%s was not sent: its turn on the invoice did not come within billogram.timeout", prefix,
							what),
					 errdetail("%s. %s", reply->message, reached_detail(kind, reply, request_id)),
					 errhint("One payment per invoice is sent at a time, and an invoice is read before its first payment. Call again once it is free; billogram_in_doubt shows a payment being settled.")));
			break;
		case BG_OUTCOME_NO_CREDENTIALS:
			ereport(elevel,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%sno Billogram API credentials are configured: %s was not sent", prefix,
							what),
					 errdetail("%s. %s", reply->message, reached_detail(kind, reply, request_id)),
					 errhint(BG_CREDENTIALS_HINT)));
			break;
		case BG_OUTCOME_KEY_USED:
			/* bg_report_key_used() says more, from the journal */
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_KEY_IN_PROGRESS),
					 errmsg("%s%s was not sent: its idempotency key was used before", prefix,
							what),
					 errdetail("%s", reached_detail(kind, reply, request_id))));
			break;
		case BG_OUTCOME_INVALID_ROW:
			ereport(elevel,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s%s was not sent: its journal row is not one a caller could have made", prefix,
							what),
					 errdetail("%s. %s", reply->message, reached_detail(kind, reply, request_id)),
					 errhint("Only the extension's functions write billogram_requests. Find out who wrote the row; queue the payment again with billogram_enqueue_credit_payment() if it is wanted.")));
			break;
		case BG_OUTCOME_UNTRUSTED:
			ereport(elevel,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%s%s was not sent: the billogram worker refuses to serve the journal: %s", prefix,
							what, reply->message),
					 errdetail("Nothing was sent to Billogram."),
					 errhint(BG_UNTRUSTED_HINT)));
			break;
		case BG_OUTCOME_WORKER:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_WORKER_LOST),
					 errmsg("%sthe billogram worker could not finish %s: %s", prefix,
							what, reply->message),
					 errdetail("%s", reached_detail(kind, reply, request_id)),
					 errhint("Check the server log for the worker's messages.")));
			break;
	}
	/* below ERROR: the worker logs, and goes on for a long time */
	pfree(what);
}

/* A recorded SQLSTATE ("BG404"), or BG001 when it is not one. */
static int
recorded_sqlstate(const char *s)
{
	int			i;

	if (s == NULL || strlen(s) != 5)
		return ERRCODE_BILLOGRAM_BAD_REPLY;
	for (i = 0; i < 5; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return ERRCODE_BILLOGRAM_BAD_REPLY;
	return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

void
bg_report_untrusted(const char *why, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the billogram extension in this database refuses to run: %s", why),
			 errdetail("%s", detail),
			 errhint(BG_UNTRUSTED_HINT)));
}

void
bg_report_key_mismatch(const char *key, int64 request_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("idempotency key \"%s\" was already used for a different payment", key),
			 errdetail("Request %lld of billogram_requests was made with this key for another invoice, mode or amount. Nothing was sent.",
					   (long long) request_id),
			 errhint("A key names one payment for ever; use a new key for a new payment.")));
}

/*
 * A synchronous call whose key was used before, and whose request did not
 * leave an invoice to return: raise what the journal says of it.  Nothing
 * was sent for this call.
 */
void
bg_report_key_used(const char *key, const char *billogram_id,
				   int64 request_id, bool same_payment, const char *state,
				   const char *sqlstate, const BgReply *reply)
{
	if (state[0] != '\0' && !same_payment)
		bg_report_key_mismatch(key, request_id);
	if (state[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_BILLOGRAM_KEY_NO_INVOICE),
				 errmsg("the request made with idempotency key \"%s\" is no longer in the journal", key),
				 errdetail("Request %lld was purged by billogram_purge() once it had finished; the key is kept for ever, so nothing was sent now.",
						   (long long) request_id),
				 errhint("Read the invoice with billogram_get_invoice('%s') to see whether it was paid.",
						 billogram_id)));
	if (strcmp(state, "done") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_BILLOGRAM_KEY_NO_INVOICE),
				 errmsg("the credit payment on %s with idempotency key \"%s\" was registered, but the journal kept no invoice",
						billogram_id, key),
				 errdetail("Request %lld of billogram_requests, made with this key, is done; billogram.journal_reply kept nothing of the invoice. Nothing was sent now.",
						   (long long) request_id),
				 errhint("Read the invoice with billogram_get_invoice('%s').", billogram_id)));
	if (strcmp(state, "failed") == 0)
		ereport(ERROR,
				(errcode(recorded_sqlstate(sqlstate)),
				 errmsg("the credit payment on %s with idempotency key \"%s\" failed before: %s",
						billogram_id, key,
						reply->message[0] ? reply->message : "(no message)"),
				 reply->status[0] ?
				 errdetail_internal("billogram_status=%s\n%sRequest %lld of billogram_requests, made with this key, failed; nothing was sent now.",
									reply->status,
									reply->field[0] ? psprintf("Field: %s. ", reply->field) : "",
									(long long) request_id) :
				 errdetail("Request %lld of billogram_requests, made with this key, failed; nothing was sent now.",
						   (long long) request_id),
				 errhint("A key pays at most once: use a new key to try the payment again.")));
	ereport(ERROR,
			(errcode(ERRCODE_BILLOGRAM_KEY_IN_PROGRESS),
			 request_id == 0 || strcmp(state, "in_doubt") != 0 ?
			 errmsg("the credit payment on %s with idempotency key \"%s\" is still in progress",
					billogram_id, key) :
			 errmsg("the outcome of the credit payment on %s with idempotency key \"%s\" is unknown, see billogram_in_doubt",
					billogram_id, key),
			 request_id == 0 ?
			 errdetail("Another call with this key is being recorded at the same moment. Nothing was sent now.") :
			 errdetail("Request %lld of billogram_requests, made with this key, is %s. Nothing was sent now.",
					   (long long) request_id, state),
			 errhint("Call again with the same key later: once the request has an outcome, that outcome is returned.")));
}
