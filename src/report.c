/*-------------------------------------------------------------------------
 *
 * report.c
 *	  The error messages and SQLSTATEs of failed credit payments.
 *
 * Each message says what happened and, as a payments engineer needs to know
 * first, whether the payment may have been registered at Billogram.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "queue.h"
#include "report.h"

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
			return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
	}
	return ERRCODE_INTERNAL_ERROR;
}

static const char *
reached_detail(const BgReply *reply)
{
	if (reply->may_have_reached)
		return "The request may have reached Billogram and the payment may be registered: check the invoice before sending it again.";
	if (reply->outcome == BG_OUTCOME_API_ERROR)
		return "Billogram did not act on the request; no payment was registered.";
	return "The request did not reach Billogram; no payment was registered.";
}

static void
report_api_error(int elevel, const char *id, const BgReply *reply)
{
	bool		retry_later = (reply->http_status == 429 ||
							   reply->http_status == 503);
	bool		is_redirect = (reply->http_status >= 300 &&
							   reply->http_status < 400);

	if (reply->status[0] == '\0')
	{
		/* typically an HTML or empty page from a proxy or load balancer */
		ereport(elevel,
				(errcode(sqlstate_for_http_status(reply->http_status)),
				 errmsg("Billogram answered the credit payment on %s with HTTP %ld",
						id, reply->http_status),
				 errdetail("The reply carried no Billogram error. %s",
						   reached_detail(reply)),
				 retry_later ? errhint("Billogram asks to try again later.") :
				 is_redirect ? errhint("Redirects are not followed: following one would send the payment again, elsewhere. Check billogram.api_url.") : 0));
		return;
	}

	ereport(elevel,
			(errcode(sqlstate_for_http_status(reply->http_status)),
			 errmsg("Billogram refused the credit payment on %s: HTTP %ld %s: %s",
					id, reply->http_status, reply->status,
					reply->message[0] ? reply->message : "(no message)"),
			 reply->field[0] ?
			 errdetail("Field: %s. %s", reply->field, reached_detail(reply)) :
			 errdetail("%s", reached_detail(reply)),
			 retry_later ? errhint("Billogram asks to try again later.") : 0));
}

void
bg_report_failure(int elevel, const char *id, const BgReply *reply)
{
	switch (reply->outcome)
	{
		case BG_OUTCOME_OK:
			elog(elevel, "credit payment on %s was registered", id);
			break;
		case BG_OUTCOME_API_ERROR:
			report_api_error(elevel, id, reply);
			break;
		case BG_OUTCOME_TRANSPORT:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_NO_REPLY),
					 errmsg("no reply from Billogram to the credit payment on %s: %s",
							id, reply->message),
					 errdetail("%s", reached_detail(reply))));
			break;
		case BG_OUTCOME_BAD_REPLY:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_BAD_REPLY),
					 errmsg("unusable reply from Billogram to the credit payment on %s: %s",
							id, reply->message),
					 reply->http_status ?
					 errdetail("HTTP status %ld. %s", reply->http_status,
							   reached_detail(reply)) :
					 errdetail("%s", reached_detail(reply))));
			break;
		case BG_OUTCOME_NOT_INSTALLED:
			ereport(elevel,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the billogram extension is not installed, or not at version %s, in the worker's database \"%s\"",
							BG_SCHEMA_VERSION, reply->message),
					 errdetail("Nothing was sent to Billogram: every payment is journaled in billogram_requests first."),
					 errhint("Run CREATE EXTENSION billogram, or ALTER EXTENSION billogram UPDATE, in database \"%s\" (billogram.database).",
							 reply->message)));
			break;
		case BG_OUTCOME_WORKER:
			ereport(elevel,
					(errcode(ERRCODE_BILLOGRAM_WORKER_LOST),
					 errmsg("the billogram worker could not finish the credit payment on %s: %s",
							id, reply->message),
					 errdetail("%s", reached_detail(reply)),
					 errhint("Check the server log for the worker's messages.")));
			break;
	}
}
