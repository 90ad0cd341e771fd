/*-------------------------------------------------------------------------
 *
 * inflight.h
 *	  The worker's record of which invoices may not get another payment
 *	  now: one is in flight, or one is being settled.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_INFLIGHT_H
#define BILLOGRAM_INFLIGHT_H

#include "nodes/pg_list.h"

#include "reply.h"

extern void bg_inflight_init(void);

/* A payment on the invoice leaves (add) or is over (remove). */
extern void bg_inflight_add(const char *billogram_id);
extern void bg_inflight_remove(const char *billogram_id);

/* A row of the invoice is being settled (in_doubt, settle_at set). */
extern void bg_inflight_mark_unsettled(const char *billogram_id);

/* The invoices being settled are exactly these (bg_journal_unsettled()). */
extern void bg_inflight_set_unsettled(List *billogram_ids);

/* May no payment on the invoice leave now?  Which may not? */
extern bool bg_inflight_busy(const char *billogram_id);
extern List *bg_inflight_busy_ids(void);

/*
 * Invoices the ledger knows (a synchronous payment on any other waits for
 * a reading of its invoice), those that calls wait to have read, and the
 * failure of a reading, which the calls waiting on it are answered with
 * for BG_READ_FAILURE_MS.
 */
#define BG_READ_FAILURE_MS	1000
extern bool bg_inflight_known(const char *billogram_id);
extern void bg_inflight_note_known(const char *billogram_id);
extern void bg_inflight_want(const char *billogram_id);
extern bool bg_inflight_any_wanted(void);
extern List *bg_inflight_take_wanted(void);
extern void bg_inflight_read_failed(const char *billogram_id,
									const BgReply *reply);
extern const BgReply *bg_inflight_recent_failure(const char *billogram_id);
extern void bg_inflight_journal_missing(void);
extern void bg_inflight_journal_ready(void);
extern bool bg_inflight_unreadable(const char *billogram_id);

#endif							/* BILLOGRAM_INFLIGHT_H */
