/*-------------------------------------------------------------------------
 *
 * enqueue.h
 *	  The insert of a pending journal row, shared by
 *	  billogram_enqueue_credit_payment() and the trigger (trigger.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_ENQUEUE_H
#define BILLOGRAM_ENQUEUE_H

#include "request.h"

extern int64 bg_enqueue_pending(const BgCreditPayment *payment,
								const char *origin, const char *source_table,
								const char *source_key, const char *key,
								int64 *earlier);

#endif							/* BILLOGRAM_ENQUEUE_H */
