/*-------------------------------------------------------------------------
 *
 * wait_event.c
 *	  The wait events billogram's processes report while they sleep, as
 *	  pg_stat_activity.wait_event shows them.
 *
 * From PostgreSQL 17 on, an extension names its own wait events
 * (WaitEventExtensionNew), so a dashboard tells the worker idle
 * (BillogramIdle) from the worker waiting on Billogram (BillogramHttp), and
 * a session waiting for its call's answer (BillogramCall) from any other
 * extension's wait.  Before 17 all three are the generic "Extension".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/wait_event.h"

#include "wait_event.h"

#if PG_VERSION_NUM >= 170000

static const char *const names[] = {
	[BG_WAIT_IDLE] = "BillogramIdle",
	[BG_WAIT_HTTP] = "BillogramHttp",
	[BG_WAIT_CALL] = "BillogramCall",
};

/* 0 until looked up; the ids are the cluster's, the same in every process */
static uint32 ids[lengthof(names)];

uint32
bg_wait_event(BgWait which)
{
	if (ids[which] == 0)
		ids[which] = WaitEventExtensionNew(names[which]);
	return ids[which];
}

#else

uint32
bg_wait_event(BgWait which)
{
	return PG_WAIT_EXTENSION;
}

#endif
