/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The worker's HTTP engine: libcurl's multi interface driven from a
 *	  PostgreSQL WaitEventSet.
 *
 * One multi handle serves every request, so connections and the parsed CA
 * bundle are kept and reused across calls from all backends; a share handle
 * keeps TLS sessions, so even a new connection skips the full handshake.
 * curl tells us which sockets to watch and when its next timer expires; the
 * worker sleeps in WaitEventSetWait on those sockets, its latch and postmaster
 * death, and never polls.
 *
 * It knows nothing of Billogram's paths: a request (request.h) comes with
 * its method, its path below billogram.api_url and its body, and the engine
 * adds the base URL, the credentials and TLS, and sends it.  What the reply
 * is for is the caller's business, through the pointer it passed.
 *
 * When Billogram answers 429 or 503 it is asking every request to wait, not
 * just that one: the engine then starts nothing for the Retry-After (or its
 * own backoff, 1 s doubling to 5 minutes, when there is none), then lets
 * one request through as a probe, and only when that one is answered
 * otherwise goes back to full concurrency.  Requests refused meanwhile are
 * not sent at all.
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

#include <fcntl.h>

#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "credentials.h"
#include "guc.h"
#include "http.h"
#include "stats.h"

/* Connections idle longer than this are not reused: servers close them. */
/* the Makefile passes the control file's default_version */
#ifndef BG_EXTVERSION
#error "BG_EXTVERSION is not defined: build with the project's Makefile"
#endif

#define BG_MAX_IDLE_CONNECTION_SECS 50

typedef struct BgTransfer
{
	MemoryContext cxt;			/* everything of this transfer lives here */
	CURL	   *easy;
	void	   *job;
	int			timeout_ms;
	char		body[BG_BODY_MAXLEN];
	size_t		body_len;
	size_t		body_handed;	/* bytes of body given to curl so far */
	bool		probe;			/* started while probing after a pause */
	char	   *resp;
	size_t		resp_len;
	size_t		resp_cap;
	size_t		resp_limit;
	bool		resp_too_large;
	bool		resp_no_memory;
	char		errbuf[CURL_ERROR_SIZE];
} BgTransfer;

typedef struct BgSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN, _OUT, _INOUT; 0: idle in
								 * curl's pool */
	int			pos;			/* position in the wait event set, or -1 */
	bool		changed;
	bool		ignored;		/* idle and readable: left out of the set */
	bool		connection;		/* a connection opened by open_socket() */
} BgSocket;

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
static int	open_connections = 0;	/* sockets curl has open, for stats */

/* the descriptors of those connections (open_socket(), close_socket()) */
static curl_socket_t *connection_fds = NULL;
static int	connection_fds_cap = 0;

/* the pause Billogram asked for (429, 503), see bg_http_paused() */
#define BG_PAUSE_MIN_MS		1000
#define BG_PAUSE_MAX_MS		(5 * 60 * 1000)
static TimestampTz paused_until = 0;
static int	pause_ms = 0;		/* the last pause; doubles while refused */
static long pause_status = 0;	/* the HTTP status that asked for it */
static bool probing = false;	/* one request at a time until answered */

/* settings the multi handle was built with */
static char *built_ca_file = NULL;
static char *built_api_url = NULL;
static bool rebuild_when_idle = false;

/* curl's sockets and timer, mirrored into a WaitEventSet */
static BgSocket *sockets = NULL;
static int	nsockets = 0;
static int	sockets_cap = 0;
static bool sockets_added_or_removed = true;
static bool sockets_changed = false;
static WaitEventSet *wait_set = NULL;
static TimestampTz timer_deadline = 0;
static bool timer_armed = false;

/* ---------------------------------------------------------------------
 * curl callbacks.  They run inside curl and so must never ereport(ERROR).
 * ---------------------------------------------------------------------
 */

static void forget_socket(curl_socket_t fd);

/* Is fd a connection open_socket() opened (and not yet closed)? */
static bool
is_connection(curl_socket_t fd)
{
	int			i;

	for (i = 0; i < open_connections; i++)
		if (connection_fds[i] == fd)
			return true;
	return false;
}

static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			break;

	if (what == CURL_POLL_REMOVE)
	{
		/*
		 * Usually a transfer ended and its connection went back to curl's
		 * pool, to be used again by the next one: it stays in the wait set,
		 * watched only for the server closing it, so that the set is not
		 * rebuilt twice per request.  close_socket() drops it for good.  Any
		 * other socket (the threaded resolver's socketpair) goes at once:
		 * curl closes it itself, without close_socket(), and a closed
		 * descriptor left in the set fails every wait after (EBADF).
		 */
		if (i < nsockets && !sockets[i].connection)
			forget_socket(fd);
		else if (i < nsockets && sockets[i].what != 0)
		{
			sockets[i].what = 0;
			sockets[i].changed = true;
			sockets_changed = true;
		}
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == sockets_cap)
		{
			int			newcap = Max(16, sockets_cap * 2);
			BgSocket   *grown;

			grown = MemoryContextAllocExtended(http_cxt, newcap * sizeof(BgSocket),
											   MCXT_ALLOC_NO_OOM);
			if (grown == NULL)
				return -1;
			if (sockets)
			{
				memcpy(grown, sockets, nsockets * sizeof(BgSocket));
				pfree(sockets);
			}
			sockets = grown;
			sockets_cap = newcap;
		}
		sockets[i].fd = fd;
		sockets[i].pos = -1;
		sockets[i].ignored = false;
		sockets[i].changed = false;
		sockets[i].connection = is_connection(fd);
		nsockets++;
		sockets_added_or_removed = true;
	}
	else if (sockets[i].ignored)
	{
		/* curl uses it again: it was left out of the set, put it back */
		sockets[i].ignored = false;
		sockets_added_or_removed = true;
	}
	else if (sockets[i].what != what)
	{
		sockets[i].changed = true;
		sockets_changed = true;
	}
	sockets[i].what = what;
	return 0;
}

/* curl closed a socket: it leaves the wait set (and the fd may be reused). */
static void
forget_socket(curl_socket_t fd)
{
	int			i;

	for (i = 0; i < nsockets; i++)
	{
		if (sockets[i].fd == fd)
		{
			sockets[i] = sockets[--nsockets];
			sockets_added_or_removed = true;
			return;
		}
	}
}

static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
	timer_armed = (timeout_ms >= 0);
	if (timer_armed)
		timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 timeout_ms);
	return 0;
}

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
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) bg_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) bg_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) bg_max_connections);
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
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_NOTHING);
	apply_connection_limits();

	if (built_ca_file)
		pfree(built_ca_file);
	if (built_api_url)
		pfree(built_api_url);
	built_ca_file = MemoryContextStrdup(http_cxt, bg_ca_file ? bg_ca_file : "");
	built_api_url = MemoryContextStrdup(http_cxt, bg_api_url ? bg_api_url : "");
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
	nsockets = 0;
	sockets_added_or_removed = true;
	timer_armed = false;
	build_multi();
	ereport(LOG,
			(errmsg("billogram worker: new API URL or CA file in use")));
}

void
bg_http_init(BgTransferDone on_done)
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
	build_multi();
}

void
bg_http_settings_changed(void)
{
	apply_connection_limits();
	if (strcmp(built_ca_file, bg_ca_file ? bg_ca_file : "") != 0 ||
		strcmp(built_api_url, bg_api_url ? bg_api_url : "") != 0)
	{
		rebuild_when_idle = true;
		rebuild_multi_if_due();
	}
}

bool
bg_http_can_start(void)
{
	if (paused_until != 0 && GetCurrentTimestamp() < paused_until)
		return false;
	if (probing && in_flight > 0)
		return false;
	return !rebuild_when_idle && in_flight < bg_max_connections;
}

/*
 * How many transfers may start now: none during a pause, one at a time
 * while probing after it, else up to billogram.max_connections.
 */
int
bg_http_room(void)
{
	if (!bg_http_can_start())
		return 0;
	if (probing)
		return 1 - in_flight;
	return bg_max_connections - in_flight;
}

/*
 * Whether sending is paused because Billogram asked to wait; if so, fills
 * *refusal with what to tell a caller whose request is therefore not sent.
 */
bool
bg_http_paused(BgReply *refusal)
{
	TimestampTz now = GetCurrentTimestamp();

	if (paused_until == 0 || now >= paused_until)
		return false;
	memset(refusal, 0, sizeof(*refusal));
	refusal->outcome = BG_OUTCOME_PAUSED;
	refusal->http_status = pause_status;
	refusal->retry_after = (TimestampDifferenceMilliseconds(now, paused_until) + 999) / 1000;
	snprintf(refusal->message, sizeof(refusal->message),
			 "sending to Billogram is paused for another %ld s",
			 refusal->retry_after);
	return true;
}

/*
 * Every answer adjusts the pause: a 429 or 503 starts one (or, from the
 * probe, a longer one); anything else Billogram answered to the probe ends
 * probing.  An answer to a request that was already under way when the
 * pause began says nothing about now (a snapshot's GET answered 200 just
 * after a 429 once ended the pause at once).
 */
static void
adjust_pause(const BgReply *reply, bool from_probe)
{
	if (bg_reply_asks_to_wait(reply))
	{
		int			wait_ms;

		pause_ms = (pause_ms == 0) ? BG_PAUSE_MIN_MS :
			Min(pause_ms * 2, BG_PAUSE_MAX_MS);
		wait_ms = Max(pause_ms, (int) Min(reply->retry_after, 86400) * 1000);
		if (!probing || GetCurrentTimestamp() >= paused_until)
			ereport(LOG,
					(errmsg("billogram worker: Billogram answered HTTP %ld; sending is paused for %d ms, then one request probes",
							reply->http_status, wait_ms)));
		paused_until = Max(paused_until,
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms));
		pause_status = reply->http_status;
		probing = true;
		bg_stats_set_pause(paused_until);
	}
	else if (reply->http_status != 0 && probing && from_probe)
	{
		ereport(LOG,
				(errmsg("billogram worker: Billogram answers again; sending resumes")));
		probing = false;
		pause_ms = 0;
		paused_until = 0;
		bg_stats_set_pause(0);
	}
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
	const char *base = bg_api_url;
	int			baselen = strlen(base);

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;
	return psprintf("%.*s%s", baselen, base, req->path);
}

/*
 * curl opens and closes its sockets through these, so that the connections
 * the worker holds (in use or kept alive in the pool) can be counted.
 */
static curl_socket_t
open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *address)
{
	curl_socket_t fd = socket(address->family, address->socktype,
							  address->protocol);

	if (fd == CURL_SOCKET_BAD)
		return fd;
	if (open_connections == connection_fds_cap)
	{
		int			newcap = Max(16, connection_fds_cap * 2);
		curl_socket_t *grown = MemoryContextAllocExtended(http_cxt,
														  newcap * sizeof(curl_socket_t),
														  MCXT_ALLOC_NO_OOM);

		if (grown == NULL)
		{
			close(fd);
			return CURL_SOCKET_BAD;
		}
		if (connection_fds)
		{
			memcpy(grown, connection_fds, open_connections * sizeof(curl_socket_t));
			pfree(connection_fds);
		}
		connection_fds = grown;
		connection_fds_cap = newcap;
	}
	connection_fds[open_connections] = fd;
	bg_stats_set_load(in_flight, ++open_connections);
	return fd;
}

static int
close_socket(void *arg, curl_socket_t fd)
{
	int			i;

	forget_socket(fd);
	for (i = 0; i < open_connections; i++)
	{
		if (connection_fds[i] == fd)
		{
			connection_fds[i] = connection_fds[--open_connections];
			break;
		}
	}
	bg_stats_set_load(in_flight, open_connections);
	return close(fd);
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
					 bg_allow_insecure_http ? "http,https" : "https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS,
					 (long) (bg_allow_insecure_http ?
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
	if (bg_ca_file && bg_ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, bg_ca_file);

	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERNAME, bg_api_user ? bg_api_user : "");
	curl_easy_setopt(e, CURLOPT_PASSWORD, bg_api_password_in_use());
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
	}
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_response);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);

	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
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
	t->resp_limit = (size_t) bg_max_response_kb * 1024;
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
 * may start now); the answer to every request, whatever it is for, adjusts
 * the pause.
 */
void
bg_http_start(void *job, const BgRequest *req, int timeout_ms)
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
	t->probe = probing && GetCurrentTimestamp() >= paused_until;
	mrc = curl_multi_add_handle(multi, t->easy);
	if (mrc != CURLM_OK)
		ereport(ERROR,
				(errmsg("could not start a libcurl transfer: %s",
						curl_multi_strerror(mrc))));
	in_flight++;
	bg_stats_set_load(in_flight, open_connections);
}

/* What became of a transfer that curl ended with an error. */
static void
classify_failed_transfer(BgTransfer *t, CURLcode result, long http_status,
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

/*
 * Keep a finished transfer's handle for the next transfer, options reset
 * (they are all set again), or clean it up when enough are kept.
 */
static void
keep_or_clean_up(CURL *easy)
{
	if (nidle_handles >= bg_max_connections)
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
		classify_failed_transfer(t, result, http_status, &reply);
	{
		curl_off_t	retry_after = 0;

		if (curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
			retry_after > 0)
			reply.retry_after = (long) Min(retry_after, 86400);
	}

	adjust_pause(&reply, t->probe);
	curl_multi_remove_handle(multi, easy);
	keep_or_clean_up(easy);
	in_flight--;
	bg_stats_set_load(in_flight, open_connections);

	transfer_done(t->job, &reply, t->resp, t->resp_len);
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

/* ---------------------------------------------------------------------
 * Waiting
 * ---------------------------------------------------------------------
 */

/* An idle pooled connection is watched for the server closing it. */
static uint32
wait_events_for(int what)
{
	uint32		events = 0;

	if (what == 0)
		return WL_SOCKET_READABLE;
	if (what & CURL_POLL_IN)
		events |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		events |= WL_SOCKET_WRITEABLE;
	return events;
}

/*
 * Bring the wait event set in line with curl's sockets: rebuilt when a
 * socket came or went, adjusted in place when only the interest changed.
 */
static void
sync_wait_set(void)
{
	int			i;

	if (sockets_added_or_removed || wait_set == NULL)
	{
		if (wait_set)
			FreeWaitEventSet(wait_set);
		/* the latch and postmaster death, then one entry per socket */
#if PG_VERSION_NUM >= 170000
		wait_set = CreateWaitEventSet(NULL, nsockets + 2);
#else
		wait_set = CreateWaitEventSet(http_cxt, nsockets + 2);
#endif
		AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (i = 0; i < nsockets; i++)
		{
			/*
			 * A descriptor curl closed without telling us would fail this
			 * and every later wait: leave it out, and say so.
			 */
			if (fcntl(sockets[i].fd, F_GETFD) < 0 && errno == EBADF)
			{
				ereport(LOG,
						(errmsg("billogram worker: libcurl closed socket %d without notice; it is no longer watched",
								(int) sockets[i].fd)));
				sockets[i--] = sockets[--nsockets];
				continue;
			}
			sockets[i].pos = sockets[i].ignored ? -1 :
				AddWaitEventToSet(wait_set, wait_events_for(sockets[i].what),
								  sockets[i].fd, NULL, NULL);
			sockets[i].changed = false;
		}
		sockets_added_or_removed = false;
		sockets_changed = false;
		return;
	}
	if (!sockets_changed)
		return;
	for (i = 0; i < nsockets; i++)
	{
		if (sockets[i].changed && sockets[i].pos >= 0)
			ModifyWaitEvent(wait_set, sockets[i].pos,
							wait_events_for(sockets[i].what), NULL);
		sockets[i].changed = false;
	}
	sockets_changed = false;
}

/* The sooner of curl's timer and the caller's limit; -1 waits forever. */
static long
wait_timeout(long max_wait_ms)
{
	long		timer_ms;
	TimestampTz now = GetCurrentTimestamp();

	/* the end of a pause is when sending may start again */
	if (paused_until > now)
	{
		long		pause_left = TimestampDifferenceMilliseconds(now, paused_until) + 1;

		max_wait_ms = (max_wait_ms < 0) ? pause_left : Min(max_wait_ms, pause_left);
	}
	if (!timer_armed)
		return max_wait_ms;
	timer_ms = Max(0, TimestampDifferenceMilliseconds(now, timer_deadline));
	return (max_wait_ms < 0) ? timer_ms : Min(timer_ms, max_wait_ms);
}

/*
 * An idle pooled connection became readable: the server closed it (or sent
 * something nobody asked for).  curl finds that out when it next takes the
 * connection from its pool; until then it is left out of the wait set, or
 * it would wake every wait.
 */
static bool
idle_socket_stirred(pgsocket fd)
{
	int			i;

	for (i = 0; i < nsockets; i++)
	{
		if (sockets[i].fd == fd)
		{
			if (sockets[i].what != 0)
				return false;
			sockets[i].ignored = true;
			sockets_added_or_removed = true;
			return true;
		}
	}
	return false;
}

/*
 * Sleep until the latch is set, a socket is ready, curl's timer expires or
 * max_wait_ms (-1: no limit) pass, then let curl act and hand over finished
 * transfers.  Returns true if the latch was set (it has been reset).
 */
bool
bg_http_wait(long max_wait_ms)
{
	WaitEvent	events[64];
	int			nevents;
	int			running;
	bool		latch_set = false;
	int			i;

	sync_wait_set();
	nevents = WaitEventSetWait(wait_set, wait_timeout(max_wait_ms), events,
							   lengthof(events), PG_WAIT_EXTENSION);

	for (i = 0; i < nevents; i++)
	{
		int			flags = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
			continue;
		}
		if (idle_socket_stirred(events[i].fd))
			continue;
		if (events[i].events & WL_SOCKET_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			flags |= CURL_CSELECT_OUT;
		if (flags)
			curl_multi_socket_action(multi, events[i].fd, flags, &running);
	}

	if (timer_armed && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_armed = false;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}

	finish_completed_transfers();
	return latch_set;
}
