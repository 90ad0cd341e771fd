/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The worker's HTTP engine: libcurl's multi interface driven from a
 *	  PostgreSQL WaitEventSet.
 *
 * This file owns a transfer's life: the multi and share handles, the easy
 * handle's set-up, the request body, finishing it and handing over the
 * reply.  What became of a transfer curl ended with an error is
 * http_failure.c's to say.
 *
 * One multi handle serves every request, so connections and the parsed CA
 * bundle are kept and reused across calls from all backends; a share handle
 * keeps TLS sessions, so even a new connection skips the full handshake.
 *
 * It knows nothing of Billogram's paths: a request (request.h) comes with
 * its method, its path below billogram.api_url and its body, and the engine
 * adds the base URL, the credentials and TLS, and sends it.  What the reply
 * is for is the caller's business, through the pointer it passed.
 *
 * Its settings (billogram.api_url, the CA file, the user and password,
 * max_connections ...) are given by the worker, at start and on every
 * reload (BgHttpSettings); nothing here reads a GUC.  Whether a request may
 * start now is the worker's decision too (pause.c keeps Billogram's 429 and
 * 503): the engine reports with each finished transfer when it started and
 * whether the worker started it as the probe.  curl's sockets and timer in
 * the worker's WaitEventSet are http_events.c's.
 *
 * A POST may not be idempotent (a credit payment is not), so a request
 * body, once handed to curl, is never handed over again: the body is given
 * through a read callback whose seek callback refuses to rewind.  That
 * turns curl's silent retry of a request on a reused connection that died
 * into an error that says the request may have reached Billogram.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "http_events.h"
#include "http_transfer.h"
#include "metrics.h"
#include "stats.h"
#include "wait_event.h"

/* the Makefile passes the control file's default_version */
#ifndef BG_EXTVERSION
#error "BG_EXTVERSION is not defined: build with the project's Makefile"
#endif

/* Connections idle longer than this are not reused: servers close them. */
#define BG_MAX_IDLE_CONNECTION_SECS 50


static CURLM *multi = NULL;
static CURLSH *share = NULL;	/* TLS sessions and DNS, across transfers */
static struct curl_slist *json_headers = NULL;
static char *user_agent = NULL;	/* "billogram/0.1 (+libcurl/8.1.2)" */
static BgTransferDone transfer_done = NULL;
static MemoryContext http_cxt = NULL;
static int	in_flight = 0;

/*
 * Easy handles of finished transfers, reset and kept for the next ones:
 * creating and destroying one per request was a measurable part of the
 * worker's time.  At most billogram.max_connections are kept.
 */
static CURL **idle_handles = NULL;
static int	nidle_handles = 0;
static int	idle_handles_cap = 0;

/* the settings in use, their strings copied into http_cxt */
static BgHttpSettings settings;

/* settings the multi handle was built with */
static char *built_ca_file = NULL;
static char *built_api_url = NULL;
static bool rebuild_when_idle = false;

/* ---------------------------------------------------------------------
 * curl callbacks.  They run inside curl and so must never ereport(ERROR).
 * ---------------------------------------------------------------------
 */

static size_t
read_body(char *buffer, size_t size, size_t nitems, void *arg)
{
	BgTransfer *t = (BgTransfer *) arg;
	size_t		n = Min(size * nitems, t->body_len - t->body_handed);

	memcpy(buffer, t->body + t->body_handed, n);
	t->body_handed += n;
	return n;
}

/* Never let curl send the body a second time: see the file header. */
static int
seek_body(void *arg, curl_off_t offset, int origin)
{
	BgTransfer *t = (BgTransfer *) arg;

	if (t->body_handed == 0 && origin == SEEK_SET && offset == 0)
		return CURL_SEEKFUNC_OK;
	return CURL_SEEKFUNC_FAIL;
}

static size_t
write_response(char *data, size_t size, size_t nmemb, void *arg)
{
	BgTransfer *t = (BgTransfer *) arg;
	size_t		n = size * nmemb;

	if (n > t->resp_limit - t->resp_len)
	{
		t->resp_too_large = true;
		return 0;				/* makes curl stop with CURLE_WRITE_ERROR */
	}
	if (t->resp_len + n > t->resp_cap)
	{
		size_t		newcap = Max(Max(t->resp_cap * 2, 16384), t->resp_len + n);
		char	   *grown;

		newcap = Min(newcap, t->resp_limit);
		grown = MemoryContextAllocExtended(t->cxt, newcap,
										   MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
		if (grown == NULL)
		{
			t->resp_no_memory = true;
			return 0;
		}
		if (t->resp_len > 0)
			memcpy(grown, t->resp, t->resp_len);
		if (t->resp)
			pfree(t->resp);
		t->resp = grown;
		t->resp_cap = newcap;
	}
	memcpy(t->resp + t->resp_len, data, n);
	t->resp_len += n;
	return n;
}

/* ---------------------------------------------------------------------
 * The multi handle
 * ---------------------------------------------------------------------
 */

static void
apply_connection_limits(void)
{
	long		n = settings.max_connections;

	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, n);
}

static void
build_multi(void)
{
	/*
	 * Each transfer has its own easy handle, so TLS sessions are shared
	 * explicitly: a new connection resumes a session instead of a full
	 * handshake.  The worker is single-threaded, so no lock callbacks.
	 */
	share = curl_share_init();
	if (share == NULL ||
		curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
		curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl share handle")));

	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	bg_http_events_watch(multi);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_NOTHING);
	apply_connection_limits();

	if (built_ca_file)
		pfree(built_ca_file);
	if (built_api_url)
		pfree(built_api_url);
	built_ca_file = MemoryContextStrdup(http_cxt, settings.ca_file);
	built_api_url = MemoryContextStrdup(http_cxt, settings.api_url);
	rebuild_when_idle = false;
}

/*
 * A new CA file or API host must not be served by connections or a CA cache
 * made with the old ones, so the multi handle is rebuilt, once the transfers
 * still running on it are done.
 */
static void
rebuild_multi_if_due(void)
{
	if (!rebuild_when_idle || in_flight > 0)
		return;
	while (nidle_handles > 0)
		curl_easy_cleanup(idle_handles[--nidle_handles]);
	curl_multi_cleanup(multi);
	multi = NULL;
	/* cached sessions were verified against the old CA file */
	curl_share_cleanup(share);
	share = NULL;
	build_multi();
	ereport(LOG,
			(errmsg("billogram: new API URL or CA file in use")));
}

/* A copy of s in http_cxt, NULL as "". */
static char *
copy_setting(const char *s)
{
	return MemoryContextStrdup(http_cxt, s ? s : "");
}

/* Free a copied setting; a password is wiped first. */
static void
free_setting(const char *s, bool secret)
{
	if (s == NULL)
		return;
	if (secret)
		explicit_bzero((char *) s, strlen(s));
	pfree((char *) s);
}

/* Take new settings: their strings are copied, the old ones freed. */
static void
take_settings(const BgHttpSettings *new)
{
	BgHttpSettings old = settings;

	settings = *new;
	settings.api_url = copy_setting(new->api_url);
	settings.api_user = copy_setting(new->api_user);
	settings.api_password = copy_setting(new->api_password);
	settings.ca_file = copy_setting(new->ca_file);
	settings.max_connections = Max(1, new->max_connections);
	free_setting(old.api_url, false);
	free_setting(old.api_user, false);
	free_setting(old.api_password, true);
	free_setting(old.ca_file, false);
}

/*
 * Start the engine with the worker's settings; on_done is called with
 * each finished transfer.
 */
void
bg_http_init(const BgHttpSettings *new_settings, BgTransferDone on_done)
{
	CURLcode	rc;
	MemoryContext oldcxt;

	http_cxt = AllocSetContextCreate(TopMemoryContext, "billogram http",
									 ALLOCSET_DEFAULT_SIZES);
	rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errmsg("could not initialize libcurl: %s", curl_easy_strerror(rc))));

	json_headers = curl_slist_append(json_headers, "Content-Type: application/json");
	json_headers = curl_slist_append(json_headers, "Accept: application/json");
	/* no "Expect: 100-continue" round trip */
	json_headers = curl_slist_append(json_headers, "Expect:");
	if (json_headers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	/*
	 * Name the extension and its version in every request, so that the API's
	 * operators can tell its traffic apart and ask about a given release; the
	 * libcurl version is the one loaded at run time, which may be newer than
	 * the one built against.  BG_EXTVERSION comes from the control file
	 * through the Makefile.
	 */
	oldcxt = MemoryContextSwitchTo(http_cxt);
	user_agent = psprintf("billogram/%s (+libcurl/%s)", BG_EXTVERSION,
						  curl_version_info(CURLVERSION_NOW)->version);
	MemoryContextSwitchTo(oldcxt);

	transfer_done = on_done;
	take_settings(new_settings);
	build_multi();
}

/* The worker's settings after a reload. */
void
bg_http_settings_changed(const BgHttpSettings *new_settings)
{
	take_settings(new_settings);
	apply_connection_limits();
	if (strcmp(built_ca_file, settings.ca_file) != 0 ||
		strcmp(built_api_url, settings.api_url) != 0)
	{
		rebuild_when_idle = true;
		rebuild_multi_if_due();
	}
}

/*
 * How many more transfers the connections allow now (none while the multi
 * handle waits to be rebuilt).  Whether Billogram lets them start is the
 * caller's business.
 */
int
bg_http_room(void)
{
	if (rebuild_when_idle)
		return 0;
	return Max(0, settings.max_connections - in_flight);
}

int
bg_http_in_flight(void)
{
	return in_flight;
}

/* ---------------------------------------------------------------------
 * Transfers
 * ---------------------------------------------------------------------
 */

/* The base URL without its trailing slashes, then the request's path. */
static char *
api_url_for(const BgRequest *req)
{
	const char *base = settings.api_url;
	int			baselen = strlen(base);

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;
	return psprintf("%.*s%s", baselen, base, req->path);
}

static void
set_transfer_options(BgTransfer *t, BgHttpMethod method, const char *url,
					 int timeout_ms)
{
	CURL	   *e = t->easy;

	curl_easy_setopt(e, CURLOPT_URL, url);
	/* curl itself refuses anything else, whatever the URL says */
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR,
					 settings.allow_insecure_http ? "http,https" : "https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS,
					 (long) (settings.allow_insecure_http ?
							 CURLPROTO_HTTP | CURLPROTO_HTTPS : CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_SHARE, share);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);

	/* TLS verification is always on; only the trusted CAs can be chosen */
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (settings.ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, settings.ca_file);

	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERNAME, settings.api_user);
	curl_easy_setopt(e, CURLOPT_PASSWORD, settings.api_password);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, json_headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);

	if (method == BG_HTTP_POST)
	{
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) t->body_len);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_body);
		curl_easy_setopt(e, CURLOPT_READDATA, t);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_body);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, t);

		/*
		 * Never on a pooled connection the server has closed: that one
		 * would take the POST and lose it, and the payment would be in
		 * doubt (see bg_http_events_pool_has_closed).  curl cannot be told
		 * which connection to avoid, so while one is in the pool a payment
		 * takes a new connection; curl drops the closed one once it looks
		 * at it.  Letting curl resend the POST on a new connection after
		 * the old one died instead would be a blind resend: a reset after
		 * the request may also mean a server that read it and then failed.
		 */
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT,
						 bg_http_events_pool_has_closed() ? 1L : 0L);
	}
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_response);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);

	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	bg_http_events_own_sockets(e);
	curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long) BG_MAX_IDLE_CONNECTION_SECS);
}

static BgTransfer *
new_transfer(void *job, const BgRequest *req, int timeout_ms)
{
	MemoryContext cxt;
	BgTransfer *t;

	cxt = AllocSetContextCreate(http_cxt, "billogram transfer",
								ALLOCSET_SMALL_SIZES);
	t = MemoryContextAllocZero(cxt, sizeof(BgTransfer));
	t->cxt = cxt;
	t->job = job;
	t->timeout_ms = timeout_ms;
	t->body_len = strlen(req->body);
	memcpy(t->body, req->body, t->body_len);
	t->resp_limit = (size_t) settings.max_response_kb * 1024;
	t->easy = (nidle_handles > 0) ? idle_handles[--nidle_handles] : curl_easy_init();
	if (t->easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	return t;
}

/*
 * Send req; job is handed back to transfer_done when the exchange is over.
 * When to start one is the caller's decision (bg_http_room() says how many
 * the connections allow); probe is the caller's too, and comes back with
 * the transfer's start time in its BgTransferFacts.
 */
void
bg_http_start(void *job, const BgRequest *req, int timeout_ms, bool probe)
{
	BgTransfer *t;
	MemoryContext old;
	CURLMcode	mrc;

	if (req->path[0] != '/')
		elog(ERROR, "billogram: request path \"%s\" does not start with \"/\"",
			 req->path);

	t = new_transfer(job, req, timeout_ms);
	old = MemoryContextSwitchTo(t->cxt);
	set_transfer_options(t, req->method, api_url_for(req), t->timeout_ms);
	MemoryContextSwitchTo(old);

	/* one started during the pause (a snapshot's GET may be) is no probe */
	t->facts.started_at = GetCurrentTimestamp();
	t->facts.probe = probe;
	mrc = curl_multi_add_handle(multi, t->easy);
	if (mrc != CURLM_OK)
		ereport(ERROR,
				(errmsg("could not start a libcurl transfer: %s",
						curl_multi_strerror(mrc))));
	in_flight++;
	bg_stats_set_load(in_flight, bg_http_events_connections());
}

/*
 * Keep a finished transfer's handle for the next transfer, options reset
 * (they are all set again), or clean it up when enough are kept.
 */
static void
keep_or_clean_up(CURL *easy)
{
	if (nidle_handles >= settings.max_connections)
	{
		curl_easy_cleanup(easy);
		return;
	}
	if (nidle_handles >= idle_handles_cap)
	{
		int			cap = Max(16, idle_handles_cap * 2);

		idle_handles = idle_handles ?
			repalloc(idle_handles, cap * sizeof(CURL *)) :
			MemoryContextAlloc(http_cxt, cap * sizeof(CURL *));
		idle_handles_cap = cap;
	}
	curl_easy_reset(easy);
	idle_handles[nidle_handles++] = easy;
}

static void
finish_transfer(CURL *easy, CURLcode result)
{
	BgTransfer *t = NULL;
	long		http_status = 0;
	curl_off_t	total_us = 0;
	BgReply		reply;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http_status);
	if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK)
		bg_stats_transfer_finished((long) total_us);

	if (result == CURLE_OK)
		bg_classify_reply(&reply, http_status, t->resp, t->resp_len);
	else
		bg_http_classify_failure(t, result, http_status, &reply);
	/* an answer cut short is no answer: its class is "none" */
	bg_metrics_exchange(reply.outcome == BG_OUTCOME_TRANSPORT ? 0 : http_status,
						(long) total_us);
	{
		curl_off_t	retry_after = 0;

		if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
			retry_after > 0)
			reply.retry_after = (long) Min(retry_after, 86400);
	}

	curl_multi_remove_handle(multi, easy);
	keep_or_clean_up(easy);
	in_flight--;
	bg_stats_set_load(in_flight, bg_http_events_connections());

	transfer_done(t->job, &reply, &t->facts, t->resp, t->resp_len);
	MemoryContextDelete(t->cxt);
}

static void
finish_completed_transfers(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
			finish_transfer(msg->easy_handle, msg->data.result);
	}
	rebuild_multi_if_due();
}

/*
 * Sleep until the latch is set, a transfer can move on or max_wait_ms (-1:
 * no limit) pass (http_events.c), then hand over the finished transfers.
 * Returns true if the latch was set (it has been reset).
 */
bool
bg_http_wait(long max_wait_ms)
{
	bool		latch_set;

	latch_set = bg_http_events_wait(multi, max_wait_ms,
									bg_wait_event(in_flight > 0 ?
												  BG_WAIT_HTTP : BG_WAIT_IDLE));

	finish_completed_transfers();
	return latch_set;
}
