/*-------------------------------------------------------------------------
 *
 * http_events.c
 *	  curl's sockets and timer, mirrored into the worker's WaitEventSet.
 *
 * libcurl's multi interface says which sockets to watch (on_socket) and
 * when its next timer expires (on_timer); this file keeps those in a
 * WaitEventSet together with the worker's latch and postmaster death, so
 * that the worker sleeps in WaitEventSetWait and never polls.  When the
 * wait returns it tells curl which sockets are ready, or that its timer
 * expired; what then became of the transfers is http.c's business.
 *
 * It also opens and closes curl's connections (open_socket, close_socket),
 * to count them for the statistics view and to know which sockets are
 * connections that curl keeps in its pool between transfers: those stay in
 * the set, watched only for the server closing them, and are looked at
 * before each payment (bg_http_events_pool_has_closed).
 *
 * Nothing here knows what a transfer is for, nor Billogram's pause.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>

#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "http_events.h"
#include "stats.h"

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

static MemoryContext events_cxt = NULL;

static int	open_connections = 0;	/* sockets curl has open, for stats */

/* the descriptors of those connections (open_socket(), close_socket()) */
static curl_socket_t *connection_fds = NULL;
static int	connection_fds_cap = 0;

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

			grown = MemoryContextAllocExtended(events_cxt, newcap * sizeof(BgSocket),
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
		curl_socket_t *grown = MemoryContextAllocExtended(events_cxt,
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
	bg_stats_set_load(bg_http_in_flight(), ++open_connections);
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
	bg_stats_set_load(bg_http_in_flight(), open_connections);
	return close(fd);
}

/* ---------------------------------------------------------------------
 * What http.c asks of this file
 * ---------------------------------------------------------------------
 */

/*
 * Have curl report multi's sockets and timer here.  A multi handle built
 * anew (a new API URL or CA file) starts with no sockets and no timer.
 */
void
bg_http_events_watch(CURLM *multi)
{
	if (events_cxt == NULL)
		events_cxt = AllocSetContextCreate(TopMemoryContext,
										   "billogram http events",
										   ALLOCSET_SMALL_SIZES);
	nsockets = 0;
	sockets_added_or_removed = true;
	timer_armed = false;
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
}

/* Have curl open and close the connections of easy through this file. */
void
bg_http_events_own_sockets(CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
}

/*
 * Has the server closed (or written to) a connection idle in curl's pool?
 * Asked before a payment is handed to curl, which may pick any of them.
 *
 * An idle HTTP/1.1 connection has nothing to read: a readable one carries
 * the server's FIN, a reset or a TLS close_notify, and a request written on
 * it would never be read.  libcurl up to 8.21 looked at the connection it
 * reused for exactly that; from 8.22 (curl PR #22169) it looks at most once
 * a second per connection, so a connection the server closed within a
 * second of its last use is reused blind: the POST goes out, the reply is
 * a reset, and the payment is in doubt though the server had provably
 * stopped reading before it was written.  poll() with no timeout costs a
 * system call per pooled connection, against a payment's round trip.
 */
bool
bg_http_events_pool_has_closed(void)
{
	int			i;

	for (i = 0; i < nsockets; i++)
	{
		struct pollfd p;

		if (!sockets[i].connection || sockets[i].what != 0)
			continue;
		if (sockets[i].ignored)
			return true;		/* the wait saw it stir already */
		p.fd = sockets[i].fd;
		p.events = POLLIN | POLLRDHUP;
		p.revents = 0;
		if (poll(&p, 1, 0) > 0)
			return true;
	}
	return false;
}

/* The connections curl has open, in use or idle in its pool. */
int
bg_http_events_connections(void)
{
	return open_connections;
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
		wait_set = CreateWaitEventSet(events_cxt, nsockets + 2);
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
						(errmsg("billogram: libcurl closed socket %d without notice; it is no longer watched",
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

	if (!timer_armed)
		return max_wait_ms;
	timer_ms = Max(0, TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
													  timer_deadline));
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
 * Sleep until the latch is set, a socket of multi is ready, curl's timer
 * expires or max_wait_ms (-1: no limit) pass, reporting wait_event_info
 * meanwhile, then let curl act on what is ready.  Returns true if the latch
 * was set (it has been reset).
 */
bool
bg_http_events_wait(CURLM *multi, long max_wait_ms, uint32 wait_event_info)
{
	WaitEvent	events[64];
	int			nevents;
	int			running;
	bool		latch_set = false;
	int			i;

	sync_wait_set();
	nevents = WaitEventSetWait(wait_set, wait_timeout(max_wait_ms), events,
							   lengthof(events), wait_event_info);

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

	return latch_set;
}
