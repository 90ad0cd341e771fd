/*-------------------------------------------------------------------------
 *
 * pause.c
 *	  The worker's pause when Billogram asks it to wait: when it begins,
 *	  how long it lasts, which request probes and when it ends.
 *
 * A 429 or 503 asks every request to wait, not just the one it answers.
 * The first such answer outside a pause starts one: for the Retry-After,
 * exactly (at most a day), or, when there is none, for a backoff of its
 * own that starts at 1 s.  Nothing starts during the pause.  Once it is
 * over one request goes alone, the probe: if Billogram answers it with
 * another 429 or 503, the pause begins again, for that answer's
 * Retry-After, or for twice the last backoff (at most 5 minutes); any other
 * answer ends the pause and full concurrency returns.  A probe that gets no
 * answer at all (a transport failure) says nothing about the limit: the
 * next request probes again.
 *
 * Only the probe's answer lengthens or ends a pause.  When Billogram starts
 * refusing, every request already under way is answered the same way, and
 * each of those answers counting once made eight requests in flight double
 * a 2-second Retry-After into two minutes; an answer 200 to a request sent
 * before the pause said nothing of the limit either, and ended it too soon.
 *
 * This is the worker's policy; the HTTP engine (http.c) only reports, with
 * each finished transfer, when it started and whether it was the probe.
 * The worker asks here how many transfers may start (bg_pause_room),
 * whether the one it starts is the probe (bg_pause_probing, then
 * bg_pause_probe_started), until when to sleep (bg_pause_ends), and what to
 * answer synchronous callers meanwhile (bg_pause_refusal).  The statistics
 * view shows the pause's end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "metrics.h"
#include "pause.h"
#include "stats.h"

/* the backoff when Billogram gives no Retry-After: doubling, min to max */
#define BG_PAUSE_MIN_MS		1000
#define BG_PAUSE_MAX_MS		(5 * 60 * 1000)

/* the longest Retry-After obeyed */
#define BG_PAUSE_RETRY_AFTER_MAX_S	86400

/* when the pause began; 0 when sending is not paused */
static TimestampTz began = 0;

/* nothing starts before this; from then on, one request probes */
static TimestampTz paused_until = 0;

/* the HTTP status that asked for the pause */
static long pause_status = 0;

/* the last backoff used for want of a Retry-After; 0 when none was */
static int	backoff_ms = 0;

/* the probe has started and is not answered yet */
static bool probe_in_flight = false;

/*
 * The pause's length for the answer reply: its Retry-After, else the
 * backoff, doubled from the last one.
 */
static int64
pause_length_ms(const BgReply *reply)
{
	if (reply->retry_after > 0)
		return (int64) Min(reply->retry_after,
						   BG_PAUSE_RETRY_AFTER_MAX_S) * 1000;
	backoff_ms = (backoff_ms == 0) ? BG_PAUSE_MIN_MS :
		Min(backoff_ms * 2, BG_PAUSE_MAX_MS);
	return backoff_ms;
}

static void
pause_for(const BgReply *reply, bool from_probe)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		ms = pause_length_ms(reply);

	if (!from_probe)
	{
		began = now;
		bg_metrics_pause();
	}
	paused_until = TimestampTzPlusMilliseconds(now, ms);
	pause_status = reply->http_status;
	bg_stats_set_pause(paused_until);
	if (from_probe)
		ereport(LOG,
				(errmsg("billogram: the probe was answered HTTP %ld; sending stays paused for %lld ms, then one request probes",
						reply->http_status, (long long) ms)));
	else
		ereport(LOG,
				(errmsg("billogram: Billogram answered HTTP %ld; sending is paused for %lld ms, then one request probes",
						reply->http_status, (long long) ms)));
}

static void
resume(void)
{
	ereport(LOG,
			(errmsg("billogram: Billogram answers again; sending resumes")));
	began = 0;
	paused_until = 0;
	pause_status = 0;
	backoff_ms = 0;
	probe_in_flight = false;
	bg_stats_set_pause(0);
}

/*
 * How many transfers may start now, of free_connections: none during a
 * pause, one once it is over (the probe) until it is answered, all of them
 * otherwise.  Requests still under way from before the pause do not hold
 * the probe back: their answers do not count.
 */
int
bg_pause_room(int free_connections)
{
	if (began == 0)
		return free_connections;
	if (probe_in_flight || GetCurrentTimestamp() < paused_until)
		return 0;
	return Min(free_connections, 1);
}

/* Is a transfer that starts now the probe? */
bool
bg_pause_probing(void)
{
	return began != 0 && !probe_in_flight &&
		GetCurrentTimestamp() >= paused_until;
}

/*
 * The probe has been handed to the HTTP engine: nothing else starts until
 * it is answered.  Told after the start succeeded, so that a probe that
 * never left cannot hold sending back.
 */
void
bg_pause_probe_started(void)
{
	probe_in_flight = true;
}

/*
 * A transfer that started at started_at is over, answered with reply; probe
 * says whether it was started as the probe (bg_pause_probing()).
 */
void
bg_pause_answered(const BgReply *reply, TimestampTz started_at, bool probe)
{
	bool		counts = probe && began != 0 && started_at >= began;

	if (counts)
		probe_in_flight = false;
	if (bg_reply_asks_to_wait(reply))
	{
		if (began == 0)
			pause_for(reply, false);
		else if (counts)
			pause_for(reply, true);
		/* else: one of those already under way when the pause began */
		return;
	}
	/* a probe that got no answer says nothing: the next request probes */
	if (counts && reply->http_status != 0)
		resume();
}

/*
 * Whether sending is paused now; if so, fills *refusal with what to tell a
 * caller whose request is therefore not sent.
 */
bool
bg_pause_refusal(BgReply *refusal)
{
	TimestampTz now = GetCurrentTimestamp();

	if (began == 0 || now >= paused_until)
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

/* When the pause ends, for the worker's wait; DT_NOEND when none is due. */
TimestampTz
bg_pause_ends(void)
{
	if (began == 0 || GetCurrentTimestamp() >= paused_until)
		return DT_NOEND;
	return paused_until;
}
