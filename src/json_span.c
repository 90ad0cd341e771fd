/*-------------------------------------------------------------------------
 *
 * json_span.c
 *	  The readers of text that json_validate.c validated: iteration, member
 *	  lookup, string comparison and copying.
 *
 * They trust that their span was validated and re-check nothing, but every
 * loop is bounded by the span's end, so a span that was not validated can
 * give wrong answers, never a read outside it.
 *
 * This file deliberately uses only libc.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "json_span_int.h"

/*
 * The ends of values are found by looking only at the bytes that can end
 * one, which validation made safe to trust.
 */

/* The bytes a skip over a container stops at. */
static const unsigned char structural[256] = {
	['"'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1,
};

/* The bytes a skip over a string stops at. */
static const unsigned char string_special[256] = {
	['"'] = 1, ['\\'] = 1,
};

/* The bytes a number or true, false and null can be made of. */
static const unsigned char scalar_byte[256] = {
	['+'] = 1, ['-'] = 1, ['.'] = 1,
	['0'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	['A'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	['a'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* Where the string starting at p ends, after its closing quote; or NULL. */
static const unsigned char *
string_end(const unsigned char *p, const unsigned char *end)
{
	p++;
	for (;;)
	{
		while (p < end && !string_special[*p])
			p++;
		if (p >= end)
			return NULL;
		if (*p == '"')
			return p + 1;
		if (end - p < 2)
			return NULL;
		p += 2;					/* the escaped byte cannot end the string */
	}
}

/* Where the value starting at p ends, not after end; or NULL. */
static const unsigned char *
value_end(const unsigned char *p, const unsigned char *end)
{
	const unsigned char *q = p;
	int			depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return string_end(p, end);
	if (*p != '{' && *p != '[')
	{
		while (q < end && scalar_byte[*q])
			q++;
		return q > p ? q : NULL;
	}
	for (;;)
	{
		while (q < end && !structural[*q])
			q++;
		if (q >= end)
			return NULL;
		if (*q == '"')
		{
			if ((q = string_end(q, end)) == NULL)
				return NULL;
			continue;
		}
		if (*q == '{' || *q == '[')
			depth++;
		else if (--depth == 0)
			return q + 1;		/* brackets match: validation said so */
		q++;
	}
}

void
bg_json_iter_init(BgJsonIter *iter, const BgJsonSpan *container)
{
	char		open = container->type == BG_JSON_OBJECT ? '{' : '[';

	iter->next = iter->end = NULL;
	if ((container->type == BG_JSON_OBJECT || container->type == BG_JSON_ARRAY) &&
		container->len >= 2 && container->start[0] == open)
	{
		iter->next = container->start + 1;
		iter->end = container->start + container->len - 1;
	}
}

/* End the iteration: the text is not what a validated span holds. */
static bool
iter_stop(BgJsonIter *iter)
{
	iter->next = iter->end;
	return false;
}

/* Where the next member or element starts, past a comma; NULL at the end. */
static const unsigned char *
iter_start(BgJsonIter *iter)
{
	const unsigned char *p = (const unsigned char *) iter->next;
	const unsigned char *end = (const unsigned char *) iter->end;

	if (p == NULL)
		return NULL;
	p = skip_ws(p, end);
	if (p < end && *p == ',')
		p = skip_ws(p + 1, end);
	if (p >= end)
	{
		iter_stop(iter);
		return NULL;
	}
	return p;
}

/* Span the value at p into *value and move the iteration past it. */
static bool
iter_value(BgJsonIter *iter, const unsigned char *p, BgJsonSpan *value)
{
	const unsigned char *q = value_end(p, (const unsigned char *) iter->end);

	if (q == NULL)
		return iter_stop(iter);
	value->start = (const char *) p;
	value->len = q - p;
	value->type = type_of(*p);
	iter->next = (const char *) q;
	return true;
}

bool
bg_json_next_element(BgJsonIter *iter, BgJsonSpan *value)
{
	const unsigned char *p = iter_start(iter);

	return p != NULL && iter_value(iter, p, value);
}

bool
bg_json_next_member(BgJsonIter *iter, BgJsonSpan *key, BgJsonSpan *value)
{
	const unsigned char *p = iter_start(iter);
	const unsigned char *end = (const unsigned char *) iter->end;
	const unsigned char *q;

	if (p == NULL)
		return false;
	if (*p != '"' || (q = string_end(p, end)) == NULL)
		return iter_stop(iter);
	key->start = (const char *) p;
	key->len = q - p;
	key->type = BG_JSON_STRING;
	q = skip_ws(q, end);
	if (q >= end || *q != ':')
		return iter_stop(iter);
	return iter_value(iter, skip_ws(q + 1, end), value);
}

/* The bytes between a string's quotes, if s is a string. */
static bool
string_contents(const BgJsonSpan *s, const unsigned char **p,
				const unsigned char **end)
{
	if (s->type != BG_JSON_STRING || s->len < 2 ||
		s->start[0] != '"' || s->start[s->len - 1] != '"')
		return false;
	*p = (const unsigned char *) s->start + 1;
	*end = (const unsigned char *) s->start + s->len - 1;
	return true;
}

/* Code point cp as UTF-8 into out; returns its length. */
static int
encode_utf8(long cp, unsigned char *out)
{
	if (cp < 0x80)
	{
		out[0] = cp;
		return 1;
	}
	if (cp < 0x800)
	{
		out[0] = 0xC0 | (cp >> 6);
		out[1] = 0x80 | (cp & 0x3F);
		return 2;
	}
	if (cp < 0x10000)
	{
		out[0] = 0xE0 | (cp >> 12);
		out[1] = 0x80 | ((cp >> 6) & 0x3F);
		out[2] = 0x80 | (cp & 0x3F);
		return 3;
	}
	out[0] = 0xF0 | (cp >> 18);
	out[1] = 0x80 | ((cp >> 12) & 0x3F);
	out[2] = 0x80 | ((cp >> 6) & 0x3F);
	out[3] = 0x80 | (cp & 0x3F);
	return 4;
}

/* A \u escape at p (before end) as UTF-8 into out; 0 if malformed. */
static int
decode_unicode_escape(const unsigned char *p, const unsigned char *end,
					  unsigned char *out, const unsigned char **next)
{
	long		cp;
	long		low;

	if (end - p < 6 || (cp = hex4(p + 2)) <= 0 ||
		(cp >= 0xDC00 && cp <= 0xDFFF))
		return 0;
	*next = p + 6;
	if (cp >= 0xD800 && cp <= 0xDBFF)
	{
		if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
			(low = hex4(p + 8)) < 0xDC00 || low > 0xDFFF)
			return 0;
		cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
		*next = p + 12;
	}
	return encode_utf8(cp, out);
}

/*
 * The character at p in a string's contents (before end, the closing
 * quote) as the UTF-8 it stands for, into out: an escape decoded, or one
 * raw character as it is.  Returns its length (1 to 4) and sets *next past
 * it; 0 if the text there is malformed.
 */
static int
next_char(const unsigned char *p, const unsigned char *end,
		  unsigned char *out, const unsigned char **next)
{
	int			n = 1;

	if (*p != '\\')
	{
		/* a lead byte says how long its character is */
		if (*p >= 0xF0)
			n = 4;
		else if (*p >= 0xE0)
			n = 3;
		else if (*p >= 0xC0)
			n = 2;
		if (n > end - p)
			return 0;
		memcpy(out, p, n);
		*next = p + n;
		return n;
	}
	if (end - p < 2)
		return 0;
	*next = p + 2;
	switch (p[1])
	{
		case '"':
		case '\\':
		case '/':
			out[0] = p[1];
			return 1;
		case 'b':
			out[0] = '\b';
			return 1;
		case 'f':
			out[0] = '\f';
			return 1;
		case 'n':
			out[0] = '\n';
			return 1;
		case 'r':
			out[0] = '\r';
			return 1;
		case 't':
			out[0] = '\t';
			return 1;
		case 'u':
			return decode_unicode_escape(p, end, out, next);
		default:
			return 0;
	}
}

bool
bg_json_string_equals(const BgJsonSpan *s, const char *literal)
{
	const unsigned char *l = (const unsigned char *) literal;
	const unsigned char *p;
	const unsigned char *end;

	if (!string_contents(s, &p, &end))
		return false;
	while (p < end)
	{
		unsigned char buf[4];
		int			n;

		/* most keys have no escape: compare their bytes as they are */
		if (*p != '\\')
		{
			if (*l == '\0' || *p != *l)
				return false;
			p++;
			l++;
			continue;
		}
		if ((n = next_char(p, end, buf, &p)) == 0)
			return false;
		for (int i = 0; i < n; i++, l++)
			if (*l == '\0' || buf[i] != *l)
				return false;
	}
	return *l == '\0';
}

size_t
bg_json_string_copy(const BgJsonSpan *s, char *dst, size_t dstlen)
{
	const unsigned char *p;
	const unsigned char *end;
	size_t		used = 0;

	if (dstlen == 0)
		return 0;
	if (string_contents(s, &p, &end))
	{
		/* whole characters only, so a cut never splits one */
		while (p < end)
		{
			unsigned char buf[4];
			const unsigned char *next;
			int			n = next_char(p, end, buf, &next);

			if (n == 0 || used + n > dstlen - 1)
				break;
			memcpy(dst + used, buf, n);
			used += n;
			p = next;
		}
	}
	dst[used] = '\0';
	return used;
}

void
bg_json_members(const BgJsonSpan *object, const char *const *keys, int nkeys,
				BgJsonSpan *values, int *counts)
{
	BgJsonIter	it;
	BgJsonSpan	key;
	BgJsonSpan	value;

	for (int i = 0; i < nkeys; i++)
	{
		counts[i] = 0;
		values[i].start = NULL;
		values[i].len = 0;
		values[i].type = BG_JSON_NULL;
	}
	bg_json_iter_init(&it, object);
	while (bg_json_next_member(&it, &key, &value))
	{
		for (int i = 0; i < nkeys; i++)
		{
			if (bg_json_string_equals(&key, keys[i]) && counts[i]++ == 0)
				values[i] = value;
		}
	}
}

bool
bg_json_member(const BgJsonSpan *object, const char *key, BgJsonSpan *value,
			   int *count)
{
	BgJsonSpan	found;
	int			n;

	bg_json_members(object, &key, 1, &found, &n);
	if (count != NULL)
		*count = n;
	if (n > 0)
		*value = found;
	return n > 0;
}
