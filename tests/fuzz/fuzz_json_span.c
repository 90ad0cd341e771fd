/*
 * libFuzzer harness for src/json_span.c and src/invoice.c, differential
 * against jansson.
 *
 * On every input, bg_json_validate() must agree with jansson's json_loadb()
 * (any value at the top, integers read as reals, duplicates allowed, since
 * they are not the validator's business) on whether it is JSON, except for
 * the documented differences:
 *
 *	- jansson converts numbers and refuses those a double cannot hold (1e999,
 *	  "real number overflow"); the validator keeps numbers as text and
 *	  accepts them.
 *	- jansson's lexer loses a NUL byte that directly follows a number or a
 *	  literal ("[1\0]" is accepted); the validator refuses any NUL outside a
 *	  string, and must accept the input once its NUL bytes are removed.
 *
 * jansson's own nesting limit (JSON_PARSER_MAX_DEPTH, 2048) is the
 * validator's max_depth here, so that deep inputs are compared too.
 *
 * On valid input every value is walked: each span must lie within its
 * container, validate on its own as the same value, and match jansson's tree
 * (types, array elements, object keys after unescaping, string values after
 * unescaping, also when cut short).  Objects also go through
 * bg_invoice_summary(), whose output must be a valid object by both parsers,
 * with each kept member equal to jansson's.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../src/invoice.h"
#include "../../src/json_span.h"

#define JANSSON_MAX_DEPTH	2048
#define INVOICE_MAX_DEPTH	64	/* BG_INVOICE_MAX_DEPTH in src/invoice.c */

static const json_type jansson_type[] = {
	[BG_JSON_OBJECT] = JSON_OBJECT,
	[BG_JSON_ARRAY] = JSON_ARRAY,
	[BG_JSON_STRING] = JSON_STRING,
	[BG_JSON_NUMBER] = JSON_REAL,	/* JSON_DECODE_INT_AS_REAL */
	[BG_JSON_TRUE] = JSON_TRUE,
	[BG_JSON_FALSE] = JSON_FALSE,
	[BG_JSON_NULL] = JSON_NULL,
};

static json_t *
jansson_load(const char *text, size_t len, json_error_t *err)
{
	return json_loadb(text, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, err);
}

static bool
is_overflow(const json_error_t *err)
{
	return strstr(err->text, "overflow") != NULL;
}

/* s lies within [lo, hi) and validates on its own as exactly itself. */
static void
check_span(const BgJsonSpan *s, const char *lo, const char *hi)
{
	BgJsonSpan	again;

	assert(s->start >= lo && s->len > 0 && s->len <= (size_t) (hi - s->start));
	assert(bg_json_validate(s->start, s->len, JANSSON_MAX_DEPTH, &again, NULL, 0));
	assert(again.start == s->start && again.len == s->len && again.type == s->type);
}

/*
 * String span s unescapes to jansson's value j: copied whole, compared, and
 * copied into a buffer too small, which must give a prefix cut before a
 * character, not inside one.
 */
static void
check_string(const BgJsonSpan *s, const char *value, size_t value_len)
{
	char	   *buf = malloc(s->len + 1);
	size_t		n;
	size_t		cut;

	assert(buf != NULL);
	n = bg_json_string_copy(s, buf, s->len + 1);
	assert(n == value_len && memcmp(buf, value, n) == 0 && buf[n] == '\0');
	assert(bg_json_string_equals(s, value));

	cut = bg_json_string_copy(s, buf, value_len / 2 + 1);
	assert(cut <= value_len / 2 && buf[cut] == '\0');
	assert(memcmp(buf, value, cut) == 0);
	assert(cut == value_len || ((unsigned char) value[cut] & 0xC0) != 0x80);
	/* and no character that would have fitted was left out */
	assert(cut == value_len || cut + 4 > value_len / 2);
	free(buf);
}

static void walk(const BgJsonSpan *v, json_t *j);

static void
walk_array(const BgJsonSpan *v, json_t *j)
{
	BgJsonIter	it;
	BgJsonSpan	element;
	size_t		i = 0;

	bg_json_iter_init(&it, v);
	while (bg_json_next_element(&it, &element))
	{
		check_span(&element, v->start + 1, v->start + v->len - 1);
		walk(&element, json_array_get(j, i));
		i++;
	}
	assert(i == json_array_size(j));
}

static void
walk_object(const BgJsonSpan *v, json_t *j)
{
	BgJsonIter	it;
	BgJsonSpan	key;
	BgJsonSpan	value;
	size_t		unique = 0;

	bg_json_iter_init(&it, v);
	while (bg_json_next_member(&it, &key, &value))
	{
		char	   *name = malloc(key.len + 1);
		BgJsonSpan	found;
		int			count;
		json_t	   *jv;

		assert(name != NULL);
		check_span(&key, v->start + 1, v->start + v->len - 1);
		check_span(&value, key.start + key.len, v->start + v->len - 1);
		assert(key.type == BG_JSON_STRING);
		bg_json_string_copy(&key, name, key.len + 1);
		jv = json_object_get(j, name);
		assert(jv != NULL);

		/* jansson keeps the last of duplicates; the lookup the first */
		assert(bg_json_member(v, name, &found, &count) && count >= 1);
		if (found.start == value.start)
			unique++;
		if (count == 1)
		{
			assert(found.len == value.len && found.type == value.type);
			walk(&value, jv);
		}
		else
			walk(&value, NULL);
		free(name);
	}
	assert(unique == json_object_size(j));
}

/* Walk value span v; j is jansson's value for it, or NULL if unknown. */
static void
walk(const BgJsonSpan *v, json_t *j)
{
	if (j != NULL)
		assert(json_typeof(j) == jansson_type[v->type]);
	if (v->type == BG_JSON_STRING && j != NULL)
		check_string(v, json_string_value(j), json_string_length(j));
	else if (v->type == BG_JSON_ARRAY && j != NULL)
		walk_array(v, j);
	else if (v->type == BG_JSON_OBJECT && j != NULL)
		walk_object(v, j);
	else if (v->type == BG_JSON_OBJECT || v->type == BG_JSON_ARRAY)
	{
		/* under a duplicate key: spans only */
		BgJsonIter	it;
		BgJsonSpan	key;
		BgJsonSpan	value;

		bg_json_iter_init(&it, v);
		while (v->type == BG_JSON_OBJECT ? bg_json_next_member(&it, &key, &value)
			   : bg_json_next_element(&it, &value))
		{
			check_span(&value, v->start + 1, v->start + v->len - 1);
			walk(&value, NULL);
		}
	}
}

/*
 * Member name of the summary object got is jansson's member name of want,
 * where the spans say it is not a duplicate (jansson keeps the last of
 * duplicates, the summary the first).
 */
static void
check_kept(json_t *got, const char *as, json_t *want, const char *name,
		   const BgJsonSpan *object)
{
	BgJsonSpan	found;
	int			count;
	json_t	   *w = json_object_get(want, name);
	json_t	   *g = json_object_get(got, as);

	if (bg_json_member(object, name, &found, &count) && count > 1)
		return;
	if (w == NULL || json_is_null(w))
		assert(g == NULL);
	else
		assert(g != NULL && json_equal(g, w));
}

/* One event's summary got against jansson's event want (span event). */
static void
check_event(json_t *got, json_t *want, const BgJsonSpan *event)
{
	BgJsonSpan	data;
	int			count = 0;

	check_kept(got, "type", want, "type", event);
	check_kept(got, "created_at", want, "created_at", event);
	check_kept(got, "event_uuid", want, "event_uuid", event);
	bg_json_member(event, "data", &data, &count);
	if (count == 1 && data.type == BG_JSON_OBJECT)
		check_kept(got, "amount", json_object_get(want, "data"), "amount", &data);
	else if (count == 0 || data.type != BG_JSON_OBJECT)
		assert(json_object_get(got, "amount") == NULL);
}

/* The summary's events against jansson's invoice (span object). */
static void
check_events(json_t *summary, json_t *invoice, const BgJsonSpan *object)
{
	json_t	   *got = json_object_get(summary, "events");
	json_t	   *want = json_object_get(invoice, "events");
	BgJsonSpan	events;
	BgJsonSpan	event;
	BgJsonIter	it;
	int			count;
	size_t		i = 0;
	size_t		k = 0;

	assert(json_is_array(got));
	if (!bg_json_member(object, "events", &events, &count) || !json_is_array(want))
	{
		assert(json_array_size(got) == 0);
		return;
	}
	if (count > 1)
		return;
	bg_json_iter_init(&it, &events);
	while (bg_json_next_element(&it, &event))
	{
		if (event.type == BG_JSON_OBJECT)
			check_event(json_array_get(got, k++), json_array_get(want, i), &event);
		i++;
	}
	assert(k == json_array_size(got));
}

static void
check_summary(const char *text, size_t len, json_t *invoice,
			  const BgJsonSpan *object)
{
	static const char *const kept[] = {
		"id", "invoice_no", "state", "currency", "total_sum", "remaining_sum",
		"rounding_value", "detailed_sums", "updated_at",
	};
	char	   *summary = bg_invoice_summary(text, len);
	BgJsonSpan	root;
	BgJsonSpan	events;
	int			count;
	json_error_t err;
	json_t	   *parsed;

	/* an invoice is refused when nested deeper than an invoice can be */
	if (!bg_json_validate(text, len, INVOICE_MAX_DEPTH, &root, NULL, 0))
	{
		assert(summary == NULL);
		return;
	}
	assert(summary != NULL);
	assert(bg_json_validate(summary, strlen(summary), JANSSON_MAX_DEPTH,
							&root, NULL, 0));
	assert(root.type == BG_JSON_OBJECT && root.len == strlen(summary));
	assert(bg_json_member(&root, "events", &events, &count) && count == 1);
	assert(events.type == BG_JSON_ARRAY);

	parsed = jansson_load(summary, strlen(summary), &err);
	if (parsed == NULL)
	{
		/* only a number jansson cannot hold, copied from the invoice */
		assert(invoice == NULL && is_overflow(&err));
		free(summary);
		return;
	}
	assert(json_is_object(parsed));
	if (invoice != NULL)
	{
		for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
			check_kept(parsed, kept[i], invoice, kept[i], object);
		check_events(parsed, invoice, object);
	}
	json_decref(parsed);
	free(summary);
}

/* The input without its NUL bytes validates (jansson dropped them). */
static void
check_without_nuls(const uint8_t *data, size_t size)
{
	char	   *copy = malloc(size ? size : 1);
	size_t		n = 0;
	BgJsonSpan	root;

	assert(copy != NULL);
	for (size_t i = 0; i < size; i++)
		if (data[i] != '\0')
			copy[n++] = data[i];
	assert(n < size);
	assert(bg_json_validate(copy, n, JANSSON_MAX_DEPTH, &root, NULL, 0));
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *) data;
	char		why[256];
	BgJsonSpan	root;
	json_error_t err;
	json_t	   *theirs;
	bool		ours;

	ours = bg_json_validate(text, size, JANSSON_MAX_DEPTH, &root, why, sizeof(why));
	theirs = jansson_load(text, size, &err);
	if (!ours)
		assert(why[0] != '\0' && memchr(why, '\0', sizeof(why)) != NULL);

	if (theirs == NULL && !ours)
		return 0;
	if (theirs == NULL)
	{
		if (!is_overflow(&err))
		{
			fprintf(stderr, "jansson refuses what bg_json_validate accepts: %s\n", err.text);
			abort();
		}
	}
	else if (!ours)
	{
		if (memchr(data, '\0', size) == NULL)
		{
			fprintf(stderr, "bg_json_validate refuses what jansson accepts: %s\n", why);
			abort();
		}
		check_without_nuls(data, size);
		json_decref(theirs);
		return 0;
	}

	/* valid: the root lies within the input, whitespace only around it */
	assert(root.start >= text && root.start + root.len <= text + size);
	walk(&root, theirs);
	if (root.type == BG_JSON_OBJECT)
		check_summary(text, size, theirs, &root);
	if (theirs != NULL)
		json_decref(theirs);
	return 0;
}
