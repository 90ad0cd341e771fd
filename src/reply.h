/*-------------------------------------------------------------------------
 *
 * reply.h
 *	  What one HTTP exchange with Billogram came to.
 *
 * Plain C with no PostgreSQL dependency, so that the classification can be
 * fuzzed on its own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_REPLY_H
#define BILLOGRAM_REPLY_H

#include <stdbool.h>
#include <stddef.h>

typedef enum BgOutcome
{
	BG_OUTCOME_OK,				/* 200 with a valid {"status":"OK","data":{}} */
	BG_OUTCOME_API_ERROR,		/* Billogram answered with an error status */
	BG_OUTCOME_BAD_REPLY,		/* an answer we cannot use */
	BG_OUTCOME_TRANSPORT,		/* no complete answer at all */
	BG_OUTCOME_WORKER,			/* the worker lost the request */
	BG_OUTCOME_NOT_INSTALLED,	/* no journal in billogram.database */
	BG_OUTCOME_NOT_RECORDED,	/* not sent: its journal row could not be
								 * written */
	BG_OUTCOME_NO_CREDENTIALS,	/* not sent: no API user or password set */
	BG_OUTCOME_PAUSED,			/* not sent: Billogram asked to wait
								 * (http_status says how) */
	BG_OUTCOME_INVOICE_BUSY,	/* not sent: another payment on the invoice
								 * was in flight or being settled for all
								 * of the caller's timeout */
	BG_OUTCOME_KEY_USED,		/* not sent: its idempotency key was used
								 * before (the channel's BgCallRecord says
								 * by which request, and what became of it) */
	BG_OUTCOME_INVALID_ROW,		/* not sent: its journal row is not one a
								 * caller could have made */
	BG_OUTCOME_UNTRUSTED		/* not sent: the worker refuses the journal,
								 * message says why (trust.c) */
} BgOutcome;

#define BG_REPLY_STATUS_LEN		64
#define BG_REPLY_TEXT_LEN		512
#define BG_REPLY_FIELD_LEN		128

/*
 * A fixed-size summary, so it can be copied through shared memory as is.
 * For BG_OUTCOME_OK the reply body follows it in shared memory, and
 * data_offset and data_len say where in that body the "data" object's text
 * is: it was validated by bg_classify_reply(), so it can be read in place
 * (bg_invoice_summary(), json_span.h) without being parsed again.  Amounts
 * are read from the text as written, never converted.
 */
typedef struct BgReply
{
	BgOutcome	outcome;
	long		http_status;	/* 0 when there was no HTTP reply */
	long		retry_after;	/* seconds from Retry-After, or 0 */
	bool		may_have_reached;	/* could Billogram have acted on it? */
	char		status[BG_REPLY_STATUS_LEN];	/* Billogram's "status" */
	char		message[BG_REPLY_TEXT_LEN]; /* data.message or our reason */
	char		field[BG_REPLY_TEXT_LEN];	/* data.field and field_path */
	char		field_name[BG_REPLY_FIELD_LEN]; /* data.field alone */
	size_t		data_offset;	/* BG_OUTCOME_OK: "data" starts at this byte */
	size_t		data_len;		/* ... and is this many bytes long */
} BgReply;

/*
 * Classify a complete HTTP reply.  body need not be NUL-terminated and may
 * contain anything.  A key the classification reads ("status", "data", and
 * in an error's data "message", "field", "field_path") given twice in its
 * object makes the body unusable; other duplicates are not looked at.
 */
extern void bg_classify_reply(BgReply *reply, long http_status,
							  const char *body, size_t len);

/* The journal's name for an outcome ("api_error", "no_reply", ...). */
extern const char *bg_outcome_kind(BgOutcome outcome);

/*
 * The reply as a JSON object for the journal's error column; malloc'd, NULL
 * when out of memory.
 */
extern char *bg_reply_error_json(const BgReply *reply, const char *sqlstate);

/*
 * Whether Billogram asked to come back later (429 or 503): the request was
 * not acted on, and the worker pauses all sending for a while.  The one
 * place that rule is written.
 */
extern bool bg_reply_asks_to_wait(const BgReply *reply);

/*
 * Whether a queued request that got this reply may be sent again: it
 * certainly did not reach Billogram, or Billogram asked to come back later.
 * The one place the retry rule is written.
 */
extern bool bg_reply_worth_retrying(const BgReply *reply);

/* Fill *reply for an exchange that never produced a complete reply. */
extern void bg_transport_failure(BgReply *reply, const char *reason,
								 bool may_have_reached);

#endif							/* BILLOGRAM_REPLY_H */
