/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  The worker's health, in shared memory, for billogram_health.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_STATS_H
#define BILLOGRAM_STATS_H

#include "datatype/timestamp.h"

#include "journal.h"
#include "reply.h"

/* What became of a request, as counted since the worker started. */
typedef enum BgStatOutcome
{
	BG_STAT_DONE,
	BG_STAT_FAILED,
	BG_STAT_IN_DOUBT,
	BG_STAT_RETRIED,			/* back to pending, to be tried again */
	BG_STAT_NUM_OUTCOMES
} BgStatOutcome;

/* Set up from _PG_init when loaded through shared_preload_libraries. */
extern void bg_stats_install_hooks(void);

/* Worker side */
extern void bg_stats_worker_started(void);
extern void bg_stats_transfer_finished(long total_us);
extern void bg_stats_set_load(int in_flight, int connections);
extern void bg_stats_set_pause(TimestampTz until);
extern void bg_stats_count(BgStatOutcome outcome);
extern void bg_stats_outcome_of(BgJournalState state);
extern void bg_stats_set_refusal(const char *why);
/*
 * The last error, as billogram_health shows it to pg_monitor: message names
 * the journal row and the kind of failure, never an invoice id, an amount
 * or Billogram's own text (the journal's error column and the server log,
 * which only privileged roles read, have those).
 */
extern void bg_stats_error(const char *message);

#endif							/* BILLOGRAM_STATS_H */
