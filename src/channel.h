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

/* A reply as the calling backend gets it; body is palloc'd. */
typedef struct BgCallerReply
{
	BgReply		reply;
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

/* Worker side */
extern bool bg_channel_queue_woken(void);
extern void bg_channel_attach_worker(void);
typedef bool (*BgMayTake) (const BgRequest *request);
extern bool bg_channel_take(BgTakenRequest *taken, BgMayTake may_take,
							TimestampTz *next_deadline);
extern void bg_channel_post_reply(int slotno, const BgReply *reply,
								  const char *body, size_t body_len);

#endif							/* BILLOGRAM_CHANNEL_H */
