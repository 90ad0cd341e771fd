/*-------------------------------------------------------------------------
 *
 * invoice.c
 *	  The summary of an invoice that the journal keeps, built from the text
 *	  of Billogram's reply without a parse tree.
 *
 * The members are picked from the reply's text by json_span.c and copied as
 * they were written, so an amount is never converted and cannot lose a
 * digit.  Which members are kept is decided here alone: see invoice.h.
 *
 * This file deliberately uses only libc.
 *
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "invoice.h"
#include "json_span.h"

/* An invoice nested deeper than this is not one Billogram sent. */
#define BG_INVOICE_MAX_DEPTH	64

/* The invoice's members kept, in the summary's order; "events" is last. */
static const char *const invoice_keys[] = {
	"id", "invoice_no", "state", "currency", "total_sum", "remaining_sum",
	"rounding_value", "detailed_sums", "updated_at", "events",
};
#define N_INVOICE_KEYS	(sizeof(invoice_keys) / sizeof(invoice_keys[0]))
#define EVENTS_KEY		(N_INVOICE_KEYS - 1)

/* An event's members kept; "data" is read for its "amount" only. */
static const char *const event_keys[] = {
	"type", "created_at", "event_uuid", "data",
};
#define N_EVENT_KEYS	(sizeof(event_keys) / sizeof(event_keys[0]))
#define EVENT_DATA_KEY	(N_EVENT_KEYS - 1)

/* The summary being written: a growing buffer that remembers running out. */
typedef struct Out
{
	char	   *buf;
	size_t		len;
	size_t		cap;
	bool		oom;
} Out;

static void
out_bytes(Out *o, const char *s, size_t n)
{
	if (o->oom || n == 0)
		return;
	if (o->cap - o->len < n + 1)
	{
		size_t		cap = o->cap * 2 > o->len + n + 1 ? o->cap * 2 : o->len + n + 1;
		char	   *buf = realloc(o->buf, cap);

		if (buf == NULL)
		{
			o->oom = true;
			return;
		}
		o->buf = buf;
		o->cap = cap;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void
out_str(Out *o, const char *s)
{
	out_bytes(o, s, strlen(s));
}

/*
 * A value's text without the whitespace between its tokens (whitespace
 * inside strings is part of them and stays).
 */
static void
out_compact(Out *o, const BgJsonSpan *v)
{
	const char *p = v->start;
	const char *end = p + v->len;
	const char *run = p;
	bool		in_string = false;

	for (; p < end; p++)
	{
		if (in_string)
		{
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '"')
				in_string = false;
		}
		else if (*p == '"')
			in_string = true;
		else if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		{
			out_bytes(o, run, p - run);
			run = p + 1;
		}
	}
	out_bytes(o, run, end - run);
}

/*
 * ,"name":value (no comma before the first member of an object), unless the
 * member is absent (count 0) or null.  Names are plain ASCII: no escaping.
 */
static void
out_member(Out *o, bool *first, const char *name, const BgJsonSpan *v,
		   int count)
{
	if (count == 0 || v->type == BG_JSON_NULL)
		return;
	if (!*first)
		out_str(o, ",");
	*first = false;
	out_str(o, "\"");
	out_str(o, name);
	out_str(o, "\":");
	out_compact(o, v);
}

/* One event's summary: {"type":...,"created_at":...,...}. */
static void
out_event(Out *o, const BgJsonSpan *event)
{
	BgJsonSpan	values[N_EVENT_KEYS];
	int			counts[N_EVENT_KEYS];
	BgJsonSpan	amount = {NULL, 0, BG_JSON_NULL};
	int			amount_count = 0;
	bool		first = true;

	bg_json_members(event, event_keys, N_EVENT_KEYS, values, counts);
	out_str(o, "{");
	for (size_t i = 0; i < EVENT_DATA_KEY; i++)
		out_member(o, &first, event_keys[i], &values[i], counts[i]);
	if (counts[EVENT_DATA_KEY] > 0 && values[EVENT_DATA_KEY].type == BG_JSON_OBJECT)
		bg_json_member(&values[EVENT_DATA_KEY], "amount", &amount, &amount_count);
	out_member(o, &first, "amount", &amount, amount_count);
	out_str(o, "}");
}

/* "events":[...], with a summary of each event that is an object. */
static void
out_events(Out *o, bool first, const BgJsonSpan *events, int count)
{
	BgJsonIter	it;
	BgJsonSpan	event;
	bool		first_event = true;

	out_str(o, first ? "\"events\":[" : ",\"events\":[");
	if (count > 0 && events->type == BG_JSON_ARRAY)
	{
		bg_json_iter_init(&it, events);
		while (bg_json_next_element(&it, &event))
		{
			if (event.type != BG_JSON_OBJECT)
				continue;
			if (!first_event)
				out_str(o, ",");
			first_event = false;
			out_event(o, &event);
		}
	}
	out_str(o, "]");
}

char *
bg_invoice_summary(const char *data, size_t len)
{
	BgJsonSpan	invoice;
	BgJsonSpan	values[N_INVOICE_KEYS];
	int			counts[N_INVOICE_KEYS];
	Out			o;
	bool		first = true;

	if (!bg_json_validate(data, len, BG_INVOICE_MAX_DEPTH, &invoice, NULL, 0) ||
		invoice.type != BG_JSON_OBJECT)
		return NULL;

	/* the summary is never longer than the invoice but for "events":[] */
	o.cap = len + 64;
	o.len = 0;
	o.oom = false;
	if ((o.buf = malloc(o.cap)) == NULL)
		return NULL;

	bg_json_members(&invoice, invoice_keys, N_INVOICE_KEYS, values, counts);
	out_str(&o, "{");
	for (size_t i = 0; i < EVENTS_KEY; i++)
		out_member(&o, &first, invoice_keys[i], &values[i], counts[i]);
	out_events(&o, first, &values[EVENTS_KEY], counts[EVENTS_KEY]);
	out_str(&o, "}");
	if (o.oom)
	{
		free(o.buf);
		return NULL;
	}
	o.buf[o.len] = '\0';
	return o.buf;
}
