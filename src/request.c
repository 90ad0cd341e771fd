/*-------------------------------------------------------------------------
 *
 * request.c
 *	  Validation of credit-payment arguments and the exact JSON body sent.
 *
 * Everything a caller passes is checked here, before any request exists, so
 * that a bad argument can never reach Billogram.  The amount is written out
 * from the numeric's own decimal text: money never passes through a double.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/numeric.h"
#if PG_VERSION_NUM >= 160000
/* VARDATA_ANY and VARSIZE_ANY_EXHDR moved out of postgres.h in 16 */
#include "varatt.h"
#endif

#include "request.h"

static void
check_billogram_id(const char *id, int len)
{
	int			i;

	if (len < 1 || len > BG_ID_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Billogram id: must be 1 to %d characters long",
						BG_ID_MAXLEN)));

	for (i = 0; i < len; i++)
	{
		char		c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9')))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid Billogram id: only letters A-Z, a-z and digits are allowed"),
					 errdetail("Billogram ids look like \"2kAEEjE\".")));
	}
}

/*
 * Return the amount's canonical decimal text after checking that it is a
 * finite, positive amount of money with at most two decimals.
 */
static char *
checked_amount_text(Numeric amount)
{
	char	   *text;
	char	   *point;
	int			integer_digits;

	if (numeric_is_nan(amount) || numeric_is_inf(amount))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid amount: must be a finite number")));

	text = DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(amount)));

	if (text[0] == '-')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid amount: must be greater than zero"),
				 errdetail("The amount given was %s.", text)));

	point = strchr(text, '.');
	integer_digits = point ? (int) (point - text) : (int) strlen(text);

	/* zeros past the cents change nothing: 12.500 is sent as 12.50 */
	if (point && strlen(point + 1) > 2 &&
		strspn(point + 3, "0") == strlen(point + 3))
		point[3] = '\0';

	if (point && strlen(point + 1) > 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid amount: at most two decimals are allowed"),
				 errdetail("The amount given was %s.", text),
				 errhint("Round the amount to whole cents (öre) first, for example with round(amount, 2).")));

	if (integer_digits > BG_AMOUNT_MAX_INTEGER_DIGITS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid amount: at most %d digits before the decimal point are allowed",
						BG_AMOUNT_MAX_INTEGER_DIGITS)));

	if (strspn(text, "0.") == strlen(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid amount: must be greater than zero"),
				 errdetail("The amount given was %s.", text)));

	return text;
}

void
bg_build_credit_payment(BgCreditPayment *req,
						text *id, text *mode, Numeric amount)
{
	char	   *mode_str;

	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Billogram id: must not be NULL")));
	check_billogram_id(VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
	memset(req, 0, sizeof(*req));
	memcpy(req->billogram_id, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));

	if (mode == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode: must not be NULL"),
				 errhint("Use mode 'remaining' or 'amount'.")));
	mode_str = text_to_cstring(mode);

	if (strcmp(mode_str, "remaining") == 0)
	{
		if (amount != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mode \"remaining\" does not take an amount"),
					 errhint("Pass NULL as the amount, or use mode 'amount'.")));
		snprintf(req->mode, sizeof(req->mode), "remaining");
		snprintf(req->body, sizeof(req->body), "{\"mode\":\"remaining\"}");
	}
	else if (strcmp(mode_str, "amount") == 0)
	{
		if (amount == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mode \"amount\" requires an amount"),
					 errhint("Pass the amount to register, for example 250.00.")));
		snprintf(req->mode, sizeof(req->mode), "amount");
		snprintf(req->amount, sizeof(req->amount), "%s",
				 checked_amount_text(amount));
		snprintf(req->body, sizeof(req->body),
				 "{\"mode\":\"amount\",\"amount\":%s}", req->amount);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", mode_str),
				 errhint("Use mode 'remaining' or 'amount'.")));
}

void
bg_identify_caller(BgCaller *caller)
{
	const char *appname = GetConfigOption("application_name", true, false);
	char	   *dbname = get_database_name(MyDatabaseId);

	memset(caller, 0, sizeof(*caller));
	namestrcpy(&caller->role, GetUserNameFromId(GetOuterUserId(), false));
	namestrcpy(&caller->effective_role, GetUserNameFromId(GetUserId(), false));
	namestrcpy(&caller->login_role, GetUserNameFromId(GetSessionUserId(), false));
	namestrcpy(&caller->database, dbname ? dbname : "");
	caller->pid = MyProcPid;
	strlcpy(caller->application_name, appname ? appname : "",
			sizeof(caller->application_name));
}

PG_FUNCTION_INFO_V1(billogram_caller);

/*
 * Who is deciding, for the resolution column of an operator's functions:
 * the role that called (SET ROLE counts), which a SECURITY DEFINER
 * function cannot see from SQL (current_user is its owner there, and
 * session_user ignores SET ROLE), with the login role when it differs.
 */
Datum
billogram_caller(PG_FUNCTION_ARGS)
{
	BgCaller	caller;

	bg_identify_caller(&caller);
	if (strcmp(NameStr(caller.role), NameStr(caller.login_role)) == 0)
		PG_RETURN_TEXT_P(cstring_to_text(NameStr(caller.role)));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s (login %s)",
											  NameStr(caller.role),
											  NameStr(caller.login_role))));
}
