/*-------------------------------------------------------------------------
 *
 * request.c
 *	  Validation of what callers pass, and the requests sent to Billogram:
 *	  method, path, exact body, and what each is for.
 *
 * Everything a caller passes is checked here, before any request exists, so
 * that a bad argument can never reach Billogram.  The amount is written out
 * from the numeric's own decimal text: money never passes through a double.
 *
 * This is the one place that knows Billogram's paths.  The HTTP engine adds
 * the base URL (billogram.api_url) and the credentials, and sends what it
 * is given.
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

/*
 * Why id (len bytes) is not a Billogram id, or NULL if it is one: 1 to
 * BG_ID_MAXLEN letters and digits.  Callers' ids and journal rows are held
 * to the same rule, so that no id can name another path.
 */
const char *
bg_billogram_id_problem(const char *id, size_t len)
{
	if (len < 1 || len > BG_ID_MAXLEN)
		return psprintf("invalid Billogram id: must be 1 to %d characters long",
						BG_ID_MAXLEN);
	for (size_t i = 0; i < len; i++)
	{
		char		c = id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9')))
			return "invalid Billogram id: only letters A-Z, a-z and digits are allowed";
	}
	return NULL;
}

static void
check_billogram_id(const char *id, int len)
{
	const char *problem = bg_billogram_id_problem(id, len);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", problem),
				 errdetail("Billogram ids look like \"2kAEEjE\".")));
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

/* Check id, which may be NULL, and copy it into dest (BG_ID_MAXLEN + 1). */
static void
copy_billogram_id(char *dest, text *id)
{
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Billogram id: must not be NULL")));
	check_billogram_id(VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
	memcpy(dest, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
	dest[VARSIZE_ANY_EXHDR(id)] = '\0';
}

void
bg_build_credit_payment(BgCreditPayment *req,
						text *id, text *mode, Numeric amount)
{
	char	   *mode_str;

	memset(req, 0, sizeof(*req));
	copy_billogram_id(req->billogram_id, id);

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
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", mode_str),
				 errhint("Use mode 'remaining' or 'amount'.")));
	bg_credit_payment_body(req);
}

/* The request body of req's mode and amount: the one place it is written. */
void
bg_credit_payment_body(BgCreditPayment *req)
{
	if (strcmp(req->mode, "amount") == 0)
		snprintf(req->body, sizeof(req->body),
				 "{\"mode\":\"amount\",\"amount\":%s}", req->amount);
	else
		snprintf(req->body, sizeof(req->body), "{\"mode\":\"remaining\"}");
}

/* Whether a is digits, with one to two decimals or none, as numeric_out. */
static bool
is_amount_text(const char *a)
{
	size_t		whole = strspn(a, "0123456789");
	size_t		cents;

	if (whole < 1 || whole > BG_AMOUNT_MAX_INTEGER_DIGITS)
		return false;
	if (a[whole] == '\0')
		return true;
	if (a[whole] != '.')
		return false;
	cents = strspn(a + whole + 1, "0123456789");
	return cents >= 1 && cents <= 2 && a[whole + 1 + cents] == '\0';
}

/*
 * Why a payment read back from the journal is not one that
 * bg_build_credit_payment() could have made, or NULL.  The journal is
 * written only by the extension's own code (its guard refuses everyone
 * else below superuser), so this is a second line: a row that fails it is
 * never sent.
 */
const char *
bg_journaled_payment_problem(const BgCreditPayment *p)
{
	const char *problem = bg_billogram_id_problem(p->billogram_id,
												  strlen(p->billogram_id));

	if (problem)
		return problem;
	if (strcmp(p->mode, "remaining") == 0)
		return p->amount[0] == '\0' ? NULL : "mode \"remaining\" with an amount";
	if (strcmp(p->mode, "amount") != 0)
		return psprintf("invalid mode \"%s\"", p->mode);
	if (!is_amount_text(p->amount))
		return psprintf("invalid amount \"%s\": not a positive amount of at most %d digits and two decimals",
						p->amount, BG_AMOUNT_MAX_INTEGER_DIGITS);
	if (strspn(p->amount, "0.") == strlen(p->amount))
		return "invalid amount: must be greater than zero";
	return NULL;
}

/*
 * A key names one payment for ever, in one namespace for every caller; it
 * is journaled, logged and shown back in messages, so it is kept to
 * printable ASCII: no byte that an encoding conversion could change.
 */
void
bg_set_idempotency_key(BgCreditPayment *req, text *key)
{
	const char *s;
	int			len;
	int			i;

	req->idempotency_key[0] = '\0';
	if (key == NULL)
		return;
	s = VARDATA_ANY(key);
	len = VARSIZE_ANY_EXHDR(key);
	if (len < 1 || len > BG_KEY_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid idempotency key: must be 1 to %d bytes long",
						BG_KEY_MAXLEN),
				 errdetail("The key given was %d bytes long. Nothing was sent.", len),
				 errhint("Pass NULL for a call without a key, or a key such as a UUID.")));
	for (i = 0; i < len; i++)
	{
		if (s[i] < 0x20 || s[i] > 0x7E)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid idempotency key: only printable ASCII characters are allowed"),
					 errdetail("Byte %d of the key is 0x%02x. Nothing was sent.",
							   i + 1, (unsigned char) s[i]),
					 errhint("Use letters, digits and punctuation, for example a UUID.")));
	}
	memcpy(req->idempotency_key, s, len);
	req->idempotency_key[len] = '\0';
}

void
bg_build_get_invoice(BgRequest *req, text *id)
{
	char		billogram_id[BG_ID_MAXLEN + 1];

	copy_billogram_id(billogram_id, id);
	bg_request_get_invoice(req, billogram_id);
}

/*
 * Append "/billogram/" and the id to req->path, every byte but A-Z, a-z
 * and 0-9 percent-encoded.  Ids are letters and digits (the worker refuses a
 * journal row with any other); encoding "." as well means that even such a
 * row could never make a dot segment, which libcurl would resolve into
 * another path.
 */
static void
set_invoice_path(BgRequest *req, const char *billogram_id)
{
	static const char hex[] = "0123456789ABCDEF";
	char	   *out = req->path;
	const unsigned char *c;

	StaticAssertStmt(BG_PATH_MAXLEN > sizeof("/billogram/") + 3 * BG_ID_MAXLEN +
					 sizeof("/command/credit-payment"),
					 "BG_PATH_MAXLEN holds every path");

	strlcpy(req->billogram_id, billogram_id, sizeof(req->billogram_id));
	out += strlcpy(out, "/billogram/", sizeof(req->path));
	for (c = (const unsigned char *) req->billogram_id; *c; c++)
	{
		if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			(*c >= '0' && *c <= '9'))
			*out++ = (char) *c;
		else
		{
			*out++ = '%';
			*out++ = hex[*c >> 4];
			*out++ = hex[*c & 0x0F];
		}
	}
	*out = '\0';
}

/*
 * POST /billogram/{id}/command/credit-payment with the payment's exact
 * body, from a payment validated by bg_build_credit_payment() or read back
 * from the journal.
 */
void
bg_request_credit_payment(BgRequest *req, const BgCreditPayment *payment)
{
	memset(req, 0, sizeof(*req));
	req->kind = BG_REQUEST_CREDIT_PAYMENT;
	req->method = BG_HTTP_POST;
	set_invoice_path(req, payment->billogram_id);
	strlcat(req->path, "/command/credit-payment", sizeof(req->path));
	strlcpy(req->body, payment->body, sizeof(req->body));
}

/* GET /billogram/{id}: the invoice as it is now; changes nothing. */
void
bg_request_get_invoice(BgRequest *req, const char *billogram_id)
{
	memset(req, 0, sizeof(*req));
	req->kind = BG_REQUEST_GET_INVOICE;
	req->method = BG_HTTP_GET;
	set_invoice_path(req, billogram_id);
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

/*
 * The payment a call of billogram_credit_payment() or
 * billogram_enqueue_credit_payment() asks for: (id, mode, amount
 * [, idempotency_key]), checked, with who called.
 */
void
bg_credit_payment_from_call(BgCreditPayment *req, FunctionCallInfo fcinfo)
{
	bg_build_credit_payment(req,
							PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
							PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1),
							PG_ARGISNULL(2) ? NULL : PG_GETARG_NUMERIC(2));
	bg_set_idempotency_key(req, PG_NARGS() > 3 && !PG_ARGISNULL(3) ?
						   PG_GETARG_TEXT_PP(3) : NULL);
	bg_identify_caller(&req->caller);
}
