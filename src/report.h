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

/* SQLSTATEs of our own; API errors are BG followed by the HTTP status. */
#define ERRCODE_BILLOGRAM_NO_REPLY		MAKE_SQLSTATE('B','G','0','0','0')
#define ERRCODE_BILLOGRAM_BAD_REPLY		MAKE_SQLSTATE('B','G','0','0','1')
#define ERRCODE_BILLOGRAM_WORKER_LOST	MAKE_SQLSTATE('B','G','0','0','2')

/* The SQLSTATE a failed reply is reported with. */
extern int	bg_reply_sqlstate(const BgReply *reply);

/*
 * Report a reply that is not a success at elevel: ERROR for the caller, LOG
 * when the worker records the outcome of a request nobody waits for.
 */
extern void bg_report_failure(int elevel, const char *billogram_id,
							  const BgReply *reply);

#endif							/* BILLOGRAM_REPORT_H */
