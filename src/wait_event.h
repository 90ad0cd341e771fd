/*-------------------------------------------------------------------------
 *
 * wait_event.h
 *	  The wait events billogram's processes report while they sleep.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_WAIT_EVENT_H
#define BILLOGRAM_WAIT_EVENT_H

typedef enum BgWait
{
	BG_WAIT_IDLE,				/* the worker, nothing in flight */
	BG_WAIT_HTTP,				/* the worker, transfers in flight */
	BG_WAIT_CALL				/* a session, for the worker's answer */
} BgWait;

/* The wait_event_info to report for which (pgstat_report_wait_start). */
extern uint32 bg_wait_event(BgWait which);

#endif							/* BILLOGRAM_WAIT_EVENT_H */
