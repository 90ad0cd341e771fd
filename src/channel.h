/*-------------------------------------------------------------------------
 *
 * channel.h
 *	  Shared-memory hand-off of requests between backends and the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_CHANNEL_H
#define BILLOGRAM_CHANNEL_H

#include "utils/timestamp.h"

#include "reply.h"
#include "request.h"

/*
 * A request as the worker takes it from the channel: what to send, whose
 * kind says what to do with it, and for a credit payment what the journal
 * records of it (zeroed for a request that is not journaled).
 */
typedef struct BgTakenRequest
{
	int			slotno;
	int			timeout_ms;		/* what is left of the caller's timeout */
	BgRequest	request;
	BgCreditPayment payment;
} BgTakenRequest;

/*
 * What the journal holds of a synchronous credit payment, beside its reply:
 * the row that records it (0 while none does), and for a call whose
 * idempotency key was used before, the request that used it and what
 * became of it.
 */
typedef struct BgCallRecord
{
	int64		request_id;
	bool		repeated;		/* the key was used before: nothing sent now */
	bool		same_payment;	/* ... for this invoice, mode and amount */
	char		state[16];		/* that request's state; "" once purged */
	char		sqlstate[6];	/* the SQLSTATE a failed one was given */
} BgCallRecord;

/* A reply as the calling backend gets it; body is palloc'd. */
typedef struct BgCallerReply
{
	BgReply		reply;
	BgCallRecord record;
	char	   *body;
	size_t		body_len;
} BgCallerReply;

/* Set up from _PG_init when loaded through shared_preload_libraries. */
extern void bg_channel_install_hooks(void);

/*
 * Backend side: hand request to the worker and wait for its reply.  payment
 * is the credit payment's journal data; NULL for any other kind.
 */
extern void bg_channel_call(const BgRequest *request,
							const BgCreditPayment *payment, int timeout_ms,
							BgCallerReply *result);

/* Wake the worker at commit: queued payments are waiting */
extern void bg_channel_wake_queue(void);

/*
 * Worker side (channel_worker.c).  The channel returns what happened to a
 * call; the worker logs payments' outcomes.
 */
extern bool bg_channel_queue_woken(void);

/*
 * Told of a credit payment the channel gives up unanswered, its caller
 * gone, that may have reached Billogram; why is the channel's reason.
 */
typedef void (*BgCallLost) (const char *billogram_id, const char *why);
extern void bg_channel_attach_worker(BgCallLost lost);
typedef bool (*BgMayTake) (const BgRequest *request);
extern bool bg_channel_take(BgTakenRequest *taken, BgMayTake may_take,
							TimestampTz *next_deadline);
extern void bg_channel_journaled(int slotno, int64 request_id);
extern void bg_channel_set_record(int slotno, const BgCallRecord *record);
extern bool bg_channel_hand_over(int slotno);
extern bool bg_channel_post_reply(int slotno, const BgReply *reply,
								  const char *body, size_t body_len,
								  int64 *request_id);

#endif							/* BILLOGRAM_CHANNEL_H */
