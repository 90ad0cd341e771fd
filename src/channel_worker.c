/*-------------------------------------------------------------------------
 *
 * channel_worker.c
 *	  The worker's side of the channel (channel.c): attaching to it, taking
 *	  the requests backends submitted, and answering them.
 *
 * What became of a call is returned to the worker, which logs what a
 * payment's caller was not there to hear (intake.c): the channel itself says
 * nothing of payments' outcomes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "channel_int.h"

/* Test and clear the flag bg_channel_wake_queue() sets. */
bool
bg_channel_queue_woken(void)
{
	bool		woken;

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	woken = BgChannelShared->queue_pending;
	BgChannelShared->queue_pending = false;
	LWLockRelease(BgChannelShared->lock);
	return woken;
}

static void
fail_slot(BgSlot *slot, const char *why, bool may_have_reached)
{
	memset(&slot->reply, 0, sizeof(slot->reply));
	slot->reply.outcome = BG_OUTCOME_WORKER;
	slot->reply.may_have_reached = may_have_reached;
	snprintf(slot->reply.message, sizeof(slot->reply.message), "%s", why);
	slot->body_handle = DSM_HANDLE_INVALID;
	slot->body_len = 0;
	slot->state = SLOT_DONE;
	SetLatch(slot->owner_latch);
}

/* The worker's report of the payments given up unanswered */
static BgCallLost call_lost = NULL;

/*
 * The credit payments given up unanswered: whose caller had stopped
 * waiting, and which may have reached Billogram.
 */
typedef struct BgLostCalls
{
	int			n;
	char		(*billogram_ids)[BG_ID_MAXLEN + 1];
} BgLostCalls;

/*
 * Answer every slot the worker holds or would have taken: requests in flight
 * may have reached Billogram, submitted ones certainly did not.  Runs with
 * the lock held; the payments given up unanswered are added to *lost, for
 * the worker to be told of once the lock is released (report_lost()).
 */
static void
fail_outstanding_slots(const char *why, BgLostCalls *lost)
{
	int			i;

	for (i = 0; i < BgChannelShared->nslots; i++)
	{
		BgSlot	   *slot = &BgChannelShared->slots[i];

		if (slot->state == SLOT_SENDING)
			fail_slot(slot, why, true);
		else if (slot->state == SLOT_SUBMITTED || slot->state == SLOT_TAKEN ||
				 slot->state == SLOT_JOURNALED)
			fail_slot(slot, why, false);
		else if (slot->state == SLOT_ABANDONED)
		{
			if (slot->request.kind == BG_REQUEST_CREDIT_PAYMENT && slot->handed)
				memcpy(lost->billogram_ids[lost->n++],
					   slot->request.billogram_id, BG_ID_MAXLEN + 1);
			slot->state = SLOT_FREE;
		}
	}
}

/*
 * Room for every slot's payment, made once when the worker attaches, so
 * that nothing is allocated on the way out.
 */
static BgLostCalls lost_calls;

/* Tell the worker of the payments given up unanswered, with why. */
static void
report_lost(BgLostCalls *lost, const char *why)
{
	int			i;

	for (i = 0; i < lost->n; i++)
		if (call_lost)
			call_lost(lost->billogram_ids[i], why);
	lost->n = 0;
}

static void
detach_worker(int code, Datum arg)
{
	const char *why = "the billogram worker stopped";

	LWLockReleaseAll();
	lost_calls.n = 0;
	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	BgChannelShared->worker_pid = 0;
	BgChannelShared->worker_latch = NULL;
	fail_outstanding_slots(why, &lost_calls);
	LWLockRelease(BgChannelShared->lock);
	report_lost(&lost_calls, why);
}

/*
 * Attach this process to the channel as its worker.  lost is told of each
 * credit payment the channel gives up unanswered, its caller gone, that may
 * have reached Billogram: left behind by a predecessor now, or in flight
 * when this worker exits.
 */
void
bg_channel_attach_worker(BgCallLost lost)
{
	const char *why = "the billogram worker restarted";

	if (BgChannelShared == NULL)
		ereport(ERROR,
				(errmsg("billogram: worker started without its shared memory")));

	call_lost = lost;
	lost_calls.n = 0;
	lost_calls.billogram_ids =
		MemoryContextAlloc(TopMemoryContext,
						   BgChannelShared->nslots * (BG_ID_MAXLEN + 1));
	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	if (BgChannelShared->worker_pid != 0)
	{
		LWLockRelease(BgChannelShared->lock);
		ereport(ERROR,
				(errmsg("another billogram worker is already running with PID %d",
						(int) BgChannelShared->worker_pid)));
	}
	/* a predecessor that exited without its callback leaves slots behind */
	fail_outstanding_slots(why, &lost_calls);
	BgChannelShared->worker_pid = MyProcPid;
	BgChannelShared->worker_latch = MyLatch;
	LWLockRelease(BgChannelShared->lock);
	report_lost(&lost_calls, why);

	before_shmem_exit(detach_worker, (Datum) 0);
}

/*
 * Take the oldest submitted request that may_take (NULL: any) accepts, or
 * whose caller's time is up, for the worker to answer.  The ones left
 * waiting stay submitted, so their callers may still give up with nothing
 * sent; *next_deadline (if given) gets the earliest time one of them is up.
 */
bool
bg_channel_take(BgTakenRequest *taken, BgMayTake may_take,
				TimestampTz *next_deadline)
{
	int			i;
	int			oldest = -1;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < BgChannelShared->nslots; i++)
	{
		BgSlot	   *slot = &BgChannelShared->slots[i];

		if (slot->state != SLOT_SUBMITTED ||
			(oldest >= 0 && slot->seq > BgChannelShared->slots[oldest].seq))
			continue;
		if (may_take && slot->deadline > now && !may_take(&slot->request))
		{
			if (next_deadline)
				*next_deadline = Min(*next_deadline, slot->deadline);
			continue;
		}
		oldest = i;
	}
	if (oldest >= 0)
	{
		BgSlot	   *slot = &BgChannelShared->slots[oldest];

		slot->state = SLOT_TAKEN;
		taken->slotno = oldest;
		/* the time left of the caller's billogram.timeout; 0 if none */
		taken->timeout_ms = (int) TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																  slot->deadline);
		taken->request = slot->request;
		taken->payment = slot->payment;
	}
	LWLockRelease(BgChannelShared->lock);
	return oldest >= 0;
}

/*
 * Copy the body into the slot, or into a pinned segment when it is big.
 * Returns the segment's handle, DSM_HANDLE_INVALID when none was made.
 */
static dsm_handle
store_body(BgSlot *slot, const char *body, size_t body_len)
{
	dsm_segment *seg;

	slot->body_len = body_len;
	slot->body_handle = DSM_HANDLE_INVALID;
	if (body_len <= BG_INLINE_BODY)
	{
		if (body_len > 0)
			memcpy(slot->body_inline, body, body_len);
		return DSM_HANDLE_INVALID;
	}

	seg = dsm_create(body_len, 0);
	memcpy(dsm_segment_address(seg), body, body_len);
	dsm_pin_segment(seg);
	slot->body_handle = dsm_segment_handle(seg);
	dsm_detach(seg);
	return slot->body_handle;
}

/*
 * The request in slotno has its journal row: the caller will be told its
 * id, with its outcome or when it stops waiting.
 */
void
bg_channel_journaled(int slotno, int64 request_id)
{
	BgSlot	   *slot = &BgChannelShared->slots[slotno];

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	slot->record.request_id = request_id;
	if (slot->state == SLOT_TAKEN)
		slot->state = SLOT_JOURNALED;
	LWLockRelease(BgChannelShared->lock);
}

/* What the caller is told of the journal with the reply about to be posted */
void
bg_channel_set_record(int slotno, const BgCallRecord *record)
{
	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	BgChannelShared->slots[slotno].record = *record;
	LWLockRelease(BgChannelShared->lock);
}

/*
 * The worker is about to hand the request in slotno to libcurl: from now
 * on it may reach Billogram, and a caller who stops waiting is told so.
 * Returns false, and the request must not be sent, when the caller has
 * stopped waiting already: it was told that nothing was sent.
 */
bool
bg_channel_hand_over(int slotno)
{
	BgSlot	   *slot = &BgChannelShared->slots[slotno];
	bool		go;

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	go = (slot->state != SLOT_ABANDONED);
	if (go)
	{
		slot->state = SLOT_SENDING;
		slot->handed = true;
	}
	LWLockRelease(BgChannelShared->lock);
	return go;
}

/*
 * Post the reply to the request in slotno and wake its caller.  Returns
 * whether the caller had it: false when the caller had stopped waiting, and
 * then *request_id is the journal row the slot recorded (0 if none), for the
 * worker to log the outcome nobody heard.
 */
bool
bg_channel_post_reply(int slotno, const BgReply *reply,
					  const char *body, size_t body_len, int64 *request_id)
{
	BgSlot	   *slot = &BgChannelShared->slots[slotno];

	/* read before the slot is freed below: it may be reused at once */
	int64		recorded_id = slot->record.request_id;
	dsm_handle	stored = DSM_HANDLE_INVALID;
	Latch	   *owner = NULL;
	bool		abandoned;

	/* Only the invoice of a success is needed by the caller. */
	if (reply->outcome != BG_OUTCOME_OK)
		body_len = 0;

	LWLockAcquire(BgChannelShared->lock, LW_SHARED);
	abandoned = (slot->state == SLOT_ABANDONED);
	LWLockRelease(BgChannelShared->lock);

	if (!abandoned)
	{
		slot->reply = *reply;
		stored = store_body(slot, body, body_len);
	}

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	abandoned = (slot->state == SLOT_ABANDONED);
	if (abandoned)
		slot->state = SLOT_FREE;
	else
	{
		slot->state = SLOT_DONE;
		owner = slot->owner_latch;
	}
	LWLockRelease(BgChannelShared->lock);

	if (owner)
	{
		SetLatch(owner);
		return true;
	}

	/* the caller has gone: the segment made for it is ours to free */
	release_body_segment(stored);
	*request_id = recorded_id;
	return false;
}
