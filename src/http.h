/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The worker's HTTP engine: libcurl's multi interface on a WaitEventSet.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_HTTP_H
#define BILLOGRAM_HTTP_H

#include "reply.h"
#include "request.h"

/*
 * Called once per finished transfer with the caller's own pointer; body is
 * valid only during the call.
 */
typedef void (*BgTransferDone) (void *job, const BgReply *reply,
								const char *body, size_t body_len);

extern void bg_http_init(BgTransferDone on_done);
extern void bg_http_settings_changed(void);
extern bool bg_http_can_start(void);
extern bool bg_http_paused(BgReply *refusal);
extern int	bg_http_room(void);
extern int	bg_http_in_flight(void);
extern void bg_http_start(void *job, const BgRequest *req, int timeout_ms);
extern bool bg_http_wait(long max_wait_ms);

#endif							/* BILLOGRAM_HTTP_H */
