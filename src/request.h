/*-------------------------------------------------------------------------
 *
 * request.h
 *	  A validated credit-payment request, ready to be handed to the worker.
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
} BgCreditPayment;

/*
 * Check id, mode and amount (any may be NULL) and fill *req.  Raises
 * ERRCODE_INVALID_PARAMETER_VALUE for anything Billogram would refuse or
 * that could be misread, so nothing invalid ever leaves the database.
 */
extern void bg_build_credit_payment(BgCreditPayment *req,
									text *id, text *mode, Numeric amount);

/* Fill *caller from the current backend, for the journal. */
extern void bg_identify_caller(BgCaller *caller);

#endif							/* BILLOGRAM_REQUEST_H */
