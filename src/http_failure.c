/*-------------------------------------------------------------------------
 *
 * http_failure.c
 *	  What became of a transfer that libcurl ended with an error.
 *
 * A transfer that failed may still have reached Billogram: whether any of
 * the request left decides whether a payment may be sent again.  This file
 * reads that from curl and from the transfer (http_transfer.h), and words
 * the reason in its own, stable terms where curl's wording changes between
 * versions or includes timings.  Replies Billogram did send are classified
 * by reply.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "http_transfer.h"

/*
 * What became of a transfer that curl ended with an error (result), and
 * what its caller is told: reply.
 */
void
bg_http_classify_failure(BgTransfer *t, CURLcode result, long http_status,
						 BgReply *reply)
{
	curl_off_t	uploaded = 0;
	char		reason[BG_REPLY_TEXT_LEN];
	bool		sent;

	if (t->resp_too_large && http_status == 200)
	{
		bg_classify_reply(reply, http_status, "", 0);
		reply->outcome = BG_OUTCOME_BAD_REPLY;
		reply->may_have_reached = true;
		snprintf(reply->message, sizeof(reply->message),
				 "the reply is larger than billogram.max_response_size (%zu bytes)",
				 t->resp_limit);
		return;
	}
	if (t->resp_too_large && http_status > 0)
	{
		/* an oversized error page still carries its status */
		bg_classify_reply(reply, http_status, "", 0);
		return;
	}

	curl_easy_getinfo(t->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	sent = uploaded > 0 || t->body_handed > 0 || result == CURLE_SEND_FAIL_REWIND;
	if (t->body_len == 0)
	{
		/* a request without a body (a GET) is sent once its head is */
		long		request_size = 0;

		curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &request_size);
		sent = sent || request_size > 0;
	}

	/* our own wording where curl's includes timings, to keep it stable */
	if (result == CURLE_SEND_FAIL_REWIND || (result == CURLE_GOT_NOTHING && sent))
	{
		/*
		 * A reused connection that died: libcurl 7.88 says it could not
		 * rewind, 8.x sometimes that the reply was empty; the same thing.
		 */
		snprintf(reason, sizeof(reason),
				 "the connection closed after the request was sent");
	}
	else if (result == CURLE_UNSUPPORTED_PROTOCOL)
		snprintf(reason, sizeof(reason),
				 "plain http:// refused: billogram.allow_insecure_http is off");
	else if (result == CURLE_OPERATION_TIMEDOUT)
		snprintf(reason, sizeof(reason),
				 "no complete reply within billogram.timeout%s",
				 sent ? "" : " (still connecting)");
	else if (t->resp_no_memory)
		snprintf(reason, sizeof(reason), "out of memory while reading the reply");
	else if (result == CURLE_OUT_OF_MEMORY
#if LIBCURL_VERSION_NUM >= 0x080600
			 || result == CURLE_TOO_LARGE
#endif
		)
	{
		/*
		 * libcurl's code for a header over its size limit, too: before 8.6
		 * CURLE_OUT_OF_MEMORY, from 8.6 on CURLE_TOO_LARGE (Debian 12 has
		 * 7.88, Debian 13 has 8.14; both compiled).
		 */
		snprintf(reason, sizeof(reason),
				 "libcurl gave up reading the reply (a header larger than libcurl accepts, or out of memory)");
	}
	else if (result == CURLE_PARTIAL_FILE)
	{
		/* curl's wording of a cut reply changed in 8.x; ours does not */
		curl_off_t	expected = -1;
		curl_off_t	received = 0;

		curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected);
		curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &received);
		if (expected >= 0 && expected > received)
			snprintf(reason, sizeof(reason),
					 "the connection closed with %lld bytes of the reply missing",
					 (long long) (expected - received));
		else
			snprintf(reason, sizeof(reason),
					 "the connection closed before the end of the reply");
	}
	else
		snprintf(reason, sizeof(reason), "%s",
				 t->errbuf[0] ? t->errbuf : curl_easy_strerror(result));
	bg_transport_failure(reply, reason, sent);
	reply->http_status = http_status;
}
