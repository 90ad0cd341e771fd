/*-------------------------------------------------------------------------
 *
 * channel_int.h
 *	  What the two sides of the channel share: the slots in shared memory.
 *	  channel.c is the backend's side (and the shared memory's setup),
 *	  channel_worker.c the worker's; channel.h is what others call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_CHANNEL_INT_H
#define BILLOGRAM_CHANNEL_INT_H

#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "channel.h"

/* Reply bodies up to this size are copied through the slot itself. */
#define BG_INLINE_BODY		8192

typedef enum BgSlotState
{
	SLOT_FREE,
	SLOT_SUBMITTED,				/* waiting for the worker */
	SLOT_TAKEN,					/* taken by the worker, not journaled yet */
	SLOT_JOURNALED,				/* its row is written, not yet sent */
	SLOT_SENDING,				/* handed to libcurl */
	SLOT_ABANDONED,				/* taken, but the caller stopped waiting */
	SLOT_DONE					/* reply written, caller not yet woken up */
} BgSlotState;

typedef struct BgSlot
{
	BgSlotState state;
	uint64		seq;			/* submission order */
	Latch	   *owner_latch;
	TimestampTz deadline;		/* submission + billogram.timeout */
	BgRequest	request;
	BgCreditPayment payment;	/* zeroed unless a credit payment */
	bool		handed;			/* handed to libcurl: it may have left */
	BgCallRecord record;		/* its journal row, once written */
	BgReply		reply;
	dsm_handle	body_handle;	/* DSM_HANDLE_INVALID: body is inline */
	Size		body_len;
	char		body_inline[BG_INLINE_BODY];
} BgSlot;

typedef struct BgChannel
{
	LWLock	   *lock;
	pid_t		worker_pid;		/* 0 while no worker runs */
	Latch	   *worker_latch;
	uint64		next_seq;
	bool		queue_pending;	/* committed queued payments await a look */
	int			nslots;
	BgSlot		slots[FLEXIBLE_ARRAY_MEMBER];
} BgChannel;

/* The channel in shared memory; NULL unless loaded at server start */
extern BgChannel *BgChannelShared;

/* Give back the segment that carried a large reply body, if one did. */
static inline void
release_body_segment(dsm_handle handle)
{
	if (handle != DSM_HANDLE_INVALID)
		dsm_unpin_segment(handle);
}

#endif							/* BILLOGRAM_CHANNEL_INT_H */
