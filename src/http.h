/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The worker's HTTP engine: libcurl's multi interface on a WaitEventSet.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_HTTP_H
#define BILLOGRAM_HTTP_H

#include "datatype/timestamp.h"

#include "reply.h"
#include "request.h"

/*
 * What the engine is to use, given by the worker at start and on every
 * reload; the engine keeps copies of the strings (NULL is taken as "").
 */
typedef struct BgHttpSettings
{
	const char *api_url;		/* billogram.api_url */
	const char *api_user;		/* billogram.api_user */
	const char *api_password;	/* the password in use (credentials.h) */
	const char *ca_file;		/* billogram.ca_file; "" for the system's */
	bool		allow_insecure_http;	/* billogram.allow_insecure_http */
	int			max_connections;	/* billogram.max_connections */
	int			max_response_kb;	/* billogram.max_response_size */
} BgHttpSettings;

/* What the engine knows of a finished transfer besides its reply. */
typedef struct BgTransferFacts
{
	TimestampTz started_at;		/* when it was handed to curl */
	bool		probe;			/* as bg_http_start() was told */
} BgTransferFacts;

/*
 * Called once per finished transfer with the caller's own pointer; body is
 * valid only during the call.
 */
typedef void (*BgTransferDone) (void *job, const BgReply *reply,
								const BgTransferFacts *facts,
								const char *body, size_t body_len);

extern void bg_http_init(const BgHttpSettings *settings,
						 BgTransferDone on_done);
extern void bg_http_settings_changed(const BgHttpSettings *settings);
extern int	bg_http_room(void);
extern int	bg_http_in_flight(void);
extern void bg_http_start(void *job, const BgRequest *req, int timeout_ms,
						  bool probe);
extern bool bg_http_wait(long max_wait_ms);

#endif							/* BILLOGRAM_HTTP_H */
