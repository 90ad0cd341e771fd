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

/* Where 401, 403 and missing credentials send whoever has to fix them. */
#define BG_CREDENTIALS_HINT \
	"Check billogram.api_user and billogram.api_password (or billogram.api_password_file), then reload the configuration."

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
							  const BgReply *reply);

#endif							/* BILLOGRAM_REPORT_H */
