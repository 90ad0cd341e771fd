/*-------------------------------------------------------------------------
 *
 * channel.c
 *	  Shared-memory hand-off of requests (credit payments, GETs of invoices)
 *	  between backends and the background worker: the shared memory, and
 *	  the backend's side that submits a request and waits for its reply.
 *	  The worker's side, which takes requests and answers them, is
 *	  channel_worker.c.
 *
 * A calling backend fills a free slot, wakes the worker through its latch
 * and sleeps on its own latch.  The worker takes submitted slots oldest
 * first, and when the HTTP exchange is over writes the outcome back and sets
 * the caller's latch.  Reply bodies that fit are copied into the slot; larger
 * ones travel in a pinned dynamic shared memory segment that the caller
 * unpins once it has read it, so replies of any size get through.
 *
 * A slot carries the request itself, whose kind tells the worker what to do
 * with it, and for a credit payment what the journal records of it.
 *
 * A slot's life: FREE -> SUBMITTED -> TAKEN [-> JOURNALED] -> SENDING ->
 * DONE -> FREE.  TAKEN: the worker has it; JOURNALED: its 'sending' row is
 * written (the row's id is in the slot); SENDING: handed to libcurl, and
 * only from then on may it have reached Billogram.  A caller that stops
 * waiting (cancel, statement_timeout, termination) abandons its slot: a
 * SUBMITTED slot is simply freed and nothing is sent; any other becomes
 * ABANDONED, and the worker, which owns it, frees it when done.  One
 * abandoned before it was handed to libcurl is never sent (see
 * bg_channel_hand_over), so the caller can be told "not sent" truthfully;
 * one abandoned later has its outcome logged.  Only a credit payment's fate
 * is told: a GET changes nothing at Billogram, whether it was sent or not.
 *
 * All state changes happen under one LWLock held for a few instructions;
 * reply data is copied outside it, by the one process that owns the slot in
 * its current state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "channel_int.h"
#include "report.h"
#include "wait_event.h"

/* How long a caller waits beyond its own timeout before giving up. */
#define BG_WORKER_GRACE_MS	5000

BgChannel  *BgChannelShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The slot this backend waits on, for cleanup on exit; -1 if none. */
static int	my_slot = -1;
static bool exit_callback_registered = false;

/*
 * One slot per backend would do, but a caller that gave up on a request
 * still being sent may call again before the worker is done with it.
 */
static int
channel_nslots(void)
{
	return 2 * MaxBackends;
}

static Size
channel_size(void)
{
	return add_size(offsetof(BgChannel, slots),
					mul_size(channel_nslots(), sizeof(BgSlot)));
}

static void
channel_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(channel_size());
	RequestNamedLWLockTranche("billogram", 1);
}

static void
channel_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BgChannelShared = ShmemInitStruct("billogram channel", channel_size(),
									  &found);
	if (!found)
	{
		memset(BgChannelShared, 0, channel_size());
		BgChannelShared->lock = &(GetNamedLWLockTranche("billogram"))->lock;
		BgChannelShared->nslots = channel_nslots();
		BgChannelShared->next_seq = 1;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
bg_channel_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = channel_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = channel_shmem_startup;
}

/* ---------------------------------------------------------------------
 * Backend side
 * ---------------------------------------------------------------------
 */

/*
 * Give up on a slot.  Returns the state it was in, which tells whether the
 * request had been sent.
 */
static BgSlotState
abandon_slot(int slotno, int64 *request_id)
{
	BgSlot	   *slot = &BgChannelShared->slots[slotno];
	BgSlotState was;
	dsm_handle	leftover = DSM_HANDLE_INVALID;

	if (LWLockHeldByMe(BgChannelShared->lock))
		LWLockRelease(BgChannelShared->lock);

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	was = slot->state;
	*request_id = slot->record.request_id;
	switch (was)
	{
		case SLOT_SUBMITTED:
			slot->state = SLOT_FREE;
			break;
		case SLOT_TAKEN:
		case SLOT_JOURNALED:
		case SLOT_SENDING:
			slot->state = SLOT_ABANDONED;
			break;
		case SLOT_DONE:
			leftover = slot->body_handle;
			slot->state = SLOT_FREE;
			break;
		default:
			break;
	}
	LWLockRelease(BgChannelShared->lock);

	release_body_segment(leftover);
	my_slot = -1;
	return was;
}

static void
abandon_on_exit(int code, Datum arg)
{
	int64		request_id;

	if (my_slot >= 0 && BgChannelShared != NULL)
		abandon_slot(my_slot, &request_id);
}

static void
check_worker_available(void)
{
	if (BgChannelShared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram is not loaded through shared_preload_libraries"),
				 errhint("Add billogram to shared_preload_libraries in postgresql.conf and restart the server.")));
}

static int
submit(const BgRequest *request, const BgCreditPayment *payment,
	   int timeout_ms)
{
	int			i;
	int			slotno = -1;
	Latch	   *worker_latch;

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	if (BgChannelShared->worker_pid == 0)
	{
		LWLockRelease(BgChannelShared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the billogram background worker is not running"),
				 errdetail("Nothing was sent to Billogram."),
				 errhint(RecoveryInProgress() ?
						 "The worker does not run while the server is in recovery; call the function on the primary." :
						 "The postmaster restarts the worker within seconds; if it keeps failing, check the server log (is billogram.database an existing database?).")));
	}
	for (i = 0; i < BgChannelShared->nslots; i++)
	{
		if (BgChannelShared->slots[i].state == SLOT_FREE)
		{
			slotno = i;
			break;
		}
	}
	if (slotno < 0)
	{
		LWLockRelease(BgChannelShared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many billogram requests in progress"),
				 errdetail("Nothing was sent to Billogram."),
				 errhint("Retry when earlier requests have finished.")));
	}

	{
		BgSlot	   *slot = &BgChannelShared->slots[slotno];

		slot->request = *request;
		if (payment)
			slot->payment = *payment;
		else
			memset(&slot->payment, 0, sizeof(slot->payment));
		slot->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 timeout_ms);
		slot->owner_latch = MyLatch;
		slot->body_handle = DSM_HANDLE_INVALID;
		slot->body_len = 0;
		slot->handed = false;
		memset(&slot->record, 0, sizeof(slot->record));
		slot->seq = BgChannelShared->next_seq++;
		slot->state = SLOT_SUBMITTED;
	}
	my_slot = slotno;
	worker_latch = BgChannelShared->worker_latch;
	LWLockRelease(BgChannelShared->lock);

	SetLatch(worker_latch);
	return slotno;
}

/* Copy the reply out of a DONE slot and free the slot. */
static void
collect_reply(BgSlot *slot, BgCallerReply *result)
{
	result->reply = slot->reply;
	result->record = slot->record;
	result->body_len = slot->body_len;
	result->body = palloc(slot->body_len + 1);

	if (slot->body_handle == DSM_HANDLE_INVALID)
		memcpy(result->body, slot->body_inline, slot->body_len);
	else
	{
		dsm_segment *seg = dsm_attach(slot->body_handle);

		if (seg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_BILLOGRAM_WORKER_LOST),
					 errmsg("could not read the reply of the billogram worker"),
					 slot->record.request_id != 0 ?
					 errdetail("The payment may have been registered: see row %lld of billogram_requests.",
							   (long long) slot->record.request_id) : 0));
		memcpy(result->body, dsm_segment_address(seg), slot->body_len);
		dsm_detach(seg);
		dsm_unpin_segment(slot->body_handle);
	}
	result->body[slot->body_len] = '\0';

	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	slot->state = SLOT_FREE;
	LWLockRelease(BgChannelShared->lock);
	my_slot = -1;
}

static void
wait_for_reply(int slotno, int timeout_ms, BgCallerReply *result)
{
	BgSlot	   *slot = &BgChannelShared->slots[slotno];
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  timeout_ms + BG_WORKER_GRACE_MS);

	for (;;)
	{
		BgSlotState state;
		int64		request_id;
		long		wait_ms;

		LWLockAcquire(BgChannelShared->lock, LW_SHARED);
		state = slot->state;
		request_id = slot->record.request_id;
		LWLockRelease(BgChannelShared->lock);

		if (state == SLOT_DONE)
		{
			collect_reply(slot, result);
			return;
		}

		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), give_up);
		if (wait_ms <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_BILLOGRAM_WORKER_LOST),
					 errmsg("the billogram worker did not answer within %d ms",
							timeout_ms + BG_WORKER_GRACE_MS),
					 request_id != 0 ?
					 errdetail("Row %lld of billogram_requests records the request.",
							   (long long) request_id) : 0,
					 errhint("Check the server log for the worker's messages.")));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, bg_wait_event(BG_WAIT_CALL));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Tell the caller, after a cancel or timeout, whether the payment left.  A
 * WARNING rather than more text on the error, because only now, after the
 * slot has been given up, is the answer certain.  A GET changes nothing at
 * Billogram: whether it left matters to nobody.
 */
static void
report_abandoned(const BgRequest *request, BgSlotState was, int64 request_id)
{
	if (request->kind != BG_REQUEST_CREDIT_PAYMENT)
		return;
	if (was == SLOT_SUBMITTED || was == SLOT_TAKEN)
		ereport(NOTICE,
				(errmsg("the credit payment on %s was not sent to Billogram",
						request->billogram_id),
				 was == SLOT_TAKEN ?
				 errdetail("The worker had taken it but not yet recorded it; it will not send it now (a row it still writes will say failed).") : 0));
	else if (was == SLOT_JOURNALED)
		ereport(NOTICE,
				(errmsg("the credit payment on %s was not sent to Billogram",
						request->billogram_id),
				 errdetail("The worker had recorded it as row %lld of billogram_requests but not yet sent it; it will not send it now, and the row will say failed.",
						   (long long) request_id)));
	else if (was == SLOT_SENDING)
		ereport(WARNING,
				(errmsg("billogram: the credit payment on %s had already been sent to Billogram",
						request->billogram_id),
				 errdetail("The worker finishes the request and records its outcome in row %lld of billogram_requests and in the server log.",
						   (long long) request_id)));
	else if (was == SLOT_DONE)
		ereport(WARNING,
				(errmsg("billogram: the credit payment on %s was answered by Billogram as the wait ended",
						request->billogram_id),
				 errdetail("Its outcome is recorded in row %lld of billogram_requests.",
						   (long long) request_id)));
}

/*
 * Wait for the reply in submitted slot slotno; the slot is a shared resource,
 * so give it back if the wait is cut short (cancel, timeout, worker lost).
 *
 * A function of its own, never inlined, so that the frame holding PG_TRY's
 * sigsetjmp has only these parameters, none of them changed after it.  Were
 * submit() inlined into the same frame, its locals (the loop counter) would
 * be live across sigsetjmp and might be clobbered by the longjmp, as gcc's
 * -Wclobbered says.
 */
static pg_noinline void
wait_or_abandon(const BgRequest *request, int slotno, int timeout_ms,
				BgCallerReply *result)
{
	PG_TRY();
	{
		wait_for_reply(slotno, timeout_ms, result);
	}
	PG_CATCH();
	{
		int64		request_id;
		BgSlotState was = abandon_slot(slotno, &request_id);

		report_abandoned(request, was, request_id);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

void
bg_channel_call(const BgRequest *request, const BgCreditPayment *payment,
				int timeout_ms, BgCallerReply *result)
{
	int			slotno;

	/* what the worker journals, and only that, comes with its data */
	Assert((request->kind == BG_REQUEST_CREDIT_PAYMENT) == (payment != NULL));
	check_worker_available();
	if (!exit_callback_registered)
	{
		before_shmem_exit(abandon_on_exit, (Datum) 0);
		exit_callback_registered = true;
	}

	slotno = submit(request, payment, timeout_ms);
	wait_or_abandon(request, slotno, timeout_ms, result);
}

void
bg_channel_wake_queue(void)
{
	Latch	   *worker_latch;

	if (BgChannelShared == NULL)
		return;
	LWLockAcquire(BgChannelShared->lock, LW_EXCLUSIVE);
	BgChannelShared->queue_pending = true;
	worker_latch = BgChannelShared->worker_latch;
	LWLockRelease(BgChannelShared->lock);
	if (worker_latch)
		SetLatch(worker_latch);
}
