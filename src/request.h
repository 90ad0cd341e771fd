/*-------------------------------------------------------------------------
 *
 * request.h
 *	  What is sent to Billogram: validated arguments, and each request as a
 *	  value (method, path, body, and what its reply is for).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_REQUEST_H
#define BILLOGRAM_REQUEST_H

#include "fmgr.h"
#include "utils/numeric.h"

/* Billogram ids are short alphanumeric strings such as 2kAEEjE. */
#define BG_ID_MAXLEN		64

/*
 * Longest amount we accept: 15 integer digits and two decimals.  The body is
 * built from that, so its size is bounded too.
 */
#define BG_AMOUNT_MAX_INTEGER_DIGITS 15
#define BG_BODY_MAXLEN		64

/*
 * Longest path of a request: "/billogram/", the id with every byte
 * percent-encoded, and "/command/credit-payment".
 */
#define BG_PATH_MAXLEN		256

/* Longest idempotency key, in bytes (printable ASCII only), as Stripe's. */
#define BG_KEY_MAXLEN		255

/*
 * Who asked for a payment, as the journal records it: the role that called
 * or inserted (SET ROLE counts, SECURITY DEFINER does not), the effective
 * role at that moment (differs inside a SECURITY DEFINER function), the
 * role that logged in, and where the call came from.
 */
typedef struct BgCaller
{
	NameData	role;
	NameData	effective_role;
	NameData	login_role;
	NameData	database;
	int			pid;
	char		application_name[NAMEDATALEN];
} BgCaller;

typedef struct BgCreditPayment
{
	char		billogram_id[BG_ID_MAXLEN + 1];
	char		mode[16];		/* "remaining" or "amount" */
	char		amount[32];		/* decimal text; empty in mode remaining */
	char		body[BG_BODY_MAXLEN];	/* exact JSON request body */
	BgCaller	caller;			/* unset for rows claimed from the queue */
	char		idempotency_key[BG_KEY_MAXLEN + 1]; /* "": none given */
} BgCreditPayment;

/*
 * What a request is, and so what the worker does with its reply: a credit
 * payment moves money, is journaled before it leaves and is never sent
 * twice; a GET of an invoice changes nothing at Billogram, is not journaled
 * and is safe to repeat.
 */
typedef enum BgRequestKind
{
	BG_REQUEST_CREDIT_PAYMENT,	/* POST /billogram/{id}/command/credit-payment */
	BG_REQUEST_GET_INVOICE		/* GET /billogram/{id} */
} BgRequestKind;

typedef enum BgHttpMethod
{
	BG_HTTP_GET,
	BG_HTTP_POST
} BgHttpMethod;

/*
 * One request to Billogram's API, complete but for the base URL and the
 * credentials, which the HTTP engine adds.  Fixed-size, so that it can be
 * copied through shared memory as is.
 */
typedef struct BgRequest
{
	BgRequestKind kind;
	BgHttpMethod method;
	char		billogram_id[BG_ID_MAXLEN + 1];	/* the invoice, for messages */
	char		path[BG_PATH_MAXLEN];	/* below billogram.api_url, from "/" */
	char		body[BG_BODY_MAXLEN];	/* exact JSON body; empty: none */
} BgRequest;

/*
 * Check id, mode and amount (any may be NULL) and fill *req.  Raises
 * ERRCODE_INVALID_PARAMETER_VALUE for anything Billogram would refuse or
 * that could be misread, so nothing invalid ever leaves the database.
 */
extern void bg_build_credit_payment(BgCreditPayment *req,
									text *id, text *mode, Numeric amount);

/* Why id (len bytes) is not a Billogram id; NULL if it is one. */
extern const char *bg_billogram_id_problem(const char *id, size_t len);

/* The body of req's mode and amount (bg_build_credit_payment calls it). */
extern void bg_credit_payment_body(BgCreditPayment *req);

/*
 * Why a payment read back from the journal is not one a caller could have
 * made (id, mode, amount); NULL if it is.
 */
extern const char *bg_journaled_payment_problem(const BgCreditPayment *p);

/*
 * Check an idempotency key (NULL: none) and copy it into req; 22023 for
 * an empty, too long or non-printable one.
 */
extern void bg_set_idempotency_key(BgCreditPayment *req, text *key);

/* Check id (may be NULL) as above, and fill *req with its GET. */
extern void bg_build_get_invoice(BgRequest *req, text *id);

/* The requests themselves, from what was validated or journaled. */
extern void bg_request_credit_payment(BgRequest *req,
									  const BgCreditPayment *payment);
extern void bg_request_get_invoice(BgRequest *req, const char *billogram_id);

/* Fill *caller from the current backend, for the journal. */
extern void bg_identify_caller(BgCaller *caller);

/* All of the above for the arguments (id, mode, amount [, key]) of a call. */
extern void bg_credit_payment_from_call(BgCreditPayment *req,
										FunctionCallInfo fcinfo);

#endif							/* BILLOGRAM_REQUEST_H */
