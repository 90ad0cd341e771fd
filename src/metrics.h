/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Counters that only grow, for dashboards: the billogram_metrics view.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_METRICS_H
#define BILLOGRAM_METRICS_H

#include "reply.h"

/*
 * What a request was, as the kind label of billogram_requests_total names
 * it: a synchronous call of billogram_credit_payment() or of
 * billogram_get_invoice(), a queued payment (billogram_enqueue_credit_payment,
 * billogram_payment_trigger), a reading of an invoice before its next
 * payment, or a snapshot of an in_doubt row's invoice to settle it.
 */
typedef enum BgMetricKind
{
	BG_METRIC_CREDIT_PAYMENT,
	BG_METRIC_GET_INVOICE,
	BG_METRIC_QUEUED,
	BG_METRIC_READ,
	BG_METRIC_SNAPSHOT,
	BG_METRIC_NUM_KINDS
} BgMetricKind;

/* Set up from _PG_init when loaded through shared_preload_libraries. */
extern void bg_metrics_install_hooks(void);

/* A request's outcome is known (once per request, or per attempt of a queued one). */
extern void bg_metrics_request(BgMetricKind kind, BgOutcome outcome);

/* An HTTP exchange is over: its status (0: no answer) and its time. */
extern void bg_metrics_exchange(long http_status, long total_us);

/* Billogram asked to wait and a pause began. */
extern void bg_metrics_pause(void);

/*
 * Facts of the journal, counted when the transaction that wrote them
 * commits (a batch or subtransaction rolled back counts nothing): a queued
 * payment sent back to pending, rows made in_doubt, and a final verdict of
 * the worker's settlement of an in_doubt row ("checking" is none).
 */
extern void bg_metrics_retry(void);
extern void bg_metrics_in_doubt(int64 rows);
extern void bg_metrics_settled(const char *verdict);

#endif							/* BILLOGRAM_METRICS_H */
