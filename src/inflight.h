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

extern void bg_inflight_init(void);

/* A payment on the invoice leaves (add) or is over (remove). */
extern void bg_inflight_add(const char *billogram_id);
extern void bg_inflight_remove(const char *billogram_id);

/* A row of the invoice is being settled (in_doubt, settle_at set). */
extern void bg_inflight_mark_unsettled(const char *billogram_id);

/* The invoices being settled are exactly these (bg_journal_unsettled()). */
extern void bg_inflight_set_unsettled(List *billogram_ids);

/* May no payment on the invoice leave now? */
extern bool bg_inflight_busy(const char *billogram_id);

#endif							/* BILLOGRAM_INFLIGHT_H */
