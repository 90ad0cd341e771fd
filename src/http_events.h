/*-------------------------------------------------------------------------
 *
 * http_events.h
 *	  curl's sockets and timer in the worker's WaitEventSet; for http.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_HTTP_EVENTS_H
#define BILLOGRAM_HTTP_EVENTS_H

#include <curl/curl.h>

extern void bg_http_events_watch(CURLM *multi);
extern void bg_http_events_own_sockets(CURL *easy);
extern int	bg_http_events_connections(void);
extern bool bg_http_events_pool_has_closed(void);
extern bool bg_http_events_wait(CURLM *multi, long max_wait_ms,
								uint32 wait_event_info);

#endif							/* BILLOGRAM_HTTP_EVENTS_H */
