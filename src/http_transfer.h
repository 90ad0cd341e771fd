/*-------------------------------------------------------------------------
 *
 * http_transfer.h
 *	  One transfer of the HTTP engine, as http.c and http_failure.c see it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_HTTP_TRANSFER_H
#define BILLOGRAM_HTTP_TRANSFER_H

#include <curl/curl.h>

#include "http.h"

typedef struct BgTransfer
{
	MemoryContext cxt;			/* everything of this transfer lives here */
	CURL	   *easy;
	void	   *job;
	int			timeout_ms;
	char		body[BG_BODY_MAXLEN];
	size_t		body_len;
	size_t		body_handed;	/* bytes of body given to curl so far */
	BgTransferFacts facts;		/* when it started, whether it probes */
	char	   *resp;
	size_t		resp_len;
	size_t		resp_cap;
	size_t		resp_limit;
	bool		resp_too_large;
	bool		resp_no_memory;
	char		errbuf[CURL_ERROR_SIZE];
} BgTransfer;

extern void bg_http_classify_failure(BgTransfer *t, CURLcode result,
									 long http_status, BgReply *reply);

#endif							/* BILLOGRAM_HTTP_TRANSFER_H */
