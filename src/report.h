/*-------------------------------------------------------------------------
 *
 * report.h
 *	  Turning a failed reply into an ereport with its documented SQLSTATE.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_REPORT_H
#define BILLOGRAM_REPORT_H

#include "reply.h"
#include "request.h"

/* SQLSTATEs of our own; API errors are BG followed by the HTTP status. */
#define ERRCODE_BILLOGRAM_NO_REPLY		MAKE_SQLSTATE('B','G','0','0','0')
#define ERRCODE_BILLOGRAM_BAD_REPLY		MAKE_SQLSTATE('B','G','0','0','1')
#define ERRCODE_BILLOGRAM_WORKER_LOST	MAKE_SQLSTATE('B','G','0','0','2')
/* not sent, because its journal row could not be written: safe to call again */
#define ERRCODE_BILLOGRAM_NOT_RECORDED	MAKE_SQLSTATE('B','G','0','0','3')
/*
 * Not sent: the idempotency key was used by a request still pending,
 * being sent, in doubt or held; call again later with the same key.
 */
#define ERRCODE_BILLOGRAM_KEY_IN_PROGRESS	MAKE_SQLSTATE('B','G','0','0','4')
/*
 * Not sent: the idempotency key was used by a request that finished, of
 * which the journal keeps no invoice (journal_reply = none, or purged).
 */
#define ERRCODE_BILLOGRAM_KEY_NO_INVOICE	MAKE_SQLSTATE('B','G','0','0','5')

/* Where missing or refused (401, 403) credentials send whoever has to fix them. */
#define BG_CREDENTIALS_HINT \
	"Check billogram.api_user and the password in the file named by billogram.api_password_file, then reload the configuration."

/* Where a refusal of trust.c sends whoever has to mend it. */
#define BG_UNTRUSTED_HINT \
	"Everything in and on the extension's objects must be a superuser's and the extension's own: as a superuser, drop what was added, or give it back to a superuser."

/*
 * 42501: the extension's objects cannot be trusted (trust.c says why);
 * detail says what was not done.  Raises ERROR.
 */
extern void bg_report_untrusted(const char *why, const char *detail);

/* The SQLSTATE a failed reply is reported with. */
extern int	bg_reply_sqlstate(const BgReply *reply);

/*
 * Report a reply that is not a success at elevel: ERROR for the caller, LOG
 * when the worker records the outcome of a request nobody waits for.  kind
 * is the request's: whether a payment may have been registered is said of
 * credit payments only.
 */
extern void bg_report_failure(int elevel, BgRequestKind kind,
							  const char *billogram_id,
							  const BgReply *reply, int64 request_id);

/*
 * A call whose idempotency key was used before: 22023 for another payment,
 * else what the journal says of the request that used it (its SQLSTATE
 * when it failed; BG004 in progress or in doubt; BG005 done or purged with
 * no invoice kept).  Both raise ERROR.
 */
extern void bg_report_key_mismatch(const char *key, int64 request_id);
extern void bg_report_key_used(const char *key, const char *billogram_id,
							   int64 request_id, bool same_payment,
							   const char *state, const char *sqlstate,
							   const BgReply *reply);

#endif							/* BILLOGRAM_REPORT_H */
