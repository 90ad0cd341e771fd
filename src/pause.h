/*-------------------------------------------------------------------------
 *
 * pause.h
 *	  The worker's pause when Billogram asks it to wait (HTTP 429, 503).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_PAUSE_H
#define BILLOGRAM_PAUSE_H

#include "datatype/timestamp.h"

#include "reply.h"

extern int	bg_pause_room(int free_connections);
extern bool bg_pause_probing(void);
extern void bg_pause_probe_started(void);
extern void bg_pause_answered(const BgReply *reply, TimestampTz started_at,
							  bool probe);
extern bool bg_pause_refusal(BgReply *refusal);
extern TimestampTz bg_pause_ends(void);

#endif							/* BILLOGRAM_PAUSE_H */
