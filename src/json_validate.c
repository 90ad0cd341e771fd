/*-------------------------------------------------------------------------
 *
 * json_validate.c
 *	  A validating JSON scanner that builds no tree.
 *
 * Billogram's replies are checked here before anything reads them, in one
 * pass over the bytes with no allocation: a tree parse of an invoice cost
 * more than the whole CPU budget of a payment.  Nesting is tracked in a bit
 * stack on the C stack, one bit per level, so depth costs no recursion.
 * What the scan accepts is what json_span.c's readers may trust.
 *
 * This file deliberately uses only libc.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json_span_int.h"

/* State of one bg_json_validate() call, for its helpers. */
typedef struct Scan
{
	const unsigned char *text;	/* the start, for offsets in messages */
	const unsigned char *end;
	char	   *why;
	size_t		whylen;
} Scan;

/*
 * Bytes that a string's scan can step over without looking closer: printable
 * ASCII other than '"' and '\\'.  Most of an invoice is such bytes.
 */
static const unsigned char plain_in_string[256] = {
	[0x20] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,	/* not '"' */
	[0x30] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x40] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x50] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,	/* not '\\' */
	[0x60] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	[0x70] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/*
 * Record why the text is invalid, with the offset of at.  Returns NULL so
 * that scanning helpers can "return fail(...)".
 */
static const unsigned char *fail(Scan *s, const unsigned char *at,
								 const char *fmt,...) __attribute__((format(printf, 3, 4)));

static const unsigned char *
fail(Scan *s, const unsigned char *at, const char *fmt,...)
{
	char		reason[128];
	va_list		ap;

	if (s->why == NULL || s->whylen == 0)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(s->why, s->whylen, "%s at byte %zu", reason, (size_t) (at - s->text));
	return NULL;
}

/* Name the byte at p for a message: 'x' if printable ASCII, else 0xNN. */
static const unsigned char *
fail_unexpected(Scan *s, const unsigned char *p, const char *expected)
{
	if (p >= s->end)
		return fail(s, p, "unexpected end of input, %s expected", expected);
	if (*p > 0x20 && *p < 0x7F)
		return fail(s, p, "unexpected '%c', %s expected", *p, expected);
	return fail(s, p, "unexpected byte 0x%02x, %s expected", *p, expected);
}

/*
 * One UTF-8 character of more than one byte, starting at p (*p >= 0x80).
 * Only the shortest form of a code point up to U+10FFFF that is not a
 * surrogate is valid (RFC 3629): the ranges below are its table 3-7.
 */
static const unsigned char *
scan_utf8(Scan *s, const unsigned char *p)
{
	unsigned char lead = *p;
	unsigned char lo = 0x80,
				hi = 0xBF;
	int			more;

	if (lead >= 0xC2 && lead <= 0xDF)
		more = 1;
	else if (lead >= 0xE0 && lead <= 0xEF)
	{
		more = 2;
		if (lead == 0xE0)
			lo = 0xA0;			/* shorter would be an overlong */
		else if (lead == 0xED)
			hi = 0x9F;			/* higher would be a surrogate */
	}
	else if (lead >= 0xF0 && lead <= 0xF4)
	{
		more = 3;
		if (lead == 0xF0)
			lo = 0x90;			/* overlong */
		else if (lead == 0xF4)
			hi = 0x8F;			/* above U+10FFFF */
	}
	else
		return fail(s, p, "invalid UTF-8 byte 0x%02x", lead);

	if (s->end - p <= more)
		return fail(s, p, "truncated UTF-8 character");
	if (p[1] < lo || p[1] > hi)
		return fail(s, p, "invalid UTF-8 sequence");
	for (int i = 2; i <= more; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return fail(s, p, "invalid UTF-8 sequence");
	return p + more + 1;
}

/*
 * One escape sequence at p (*p == '\\', and p[1] is within the text).  \u0000 is refused because
 * PostgreSQL's text cannot hold it, and surrogate escapes only as a high
 * one directly followed by a low one, which together are one character.
 */
static const unsigned char *
scan_escape(Scan *s, const unsigned char *p)
{
	long		cp;
	long		low;

	switch (p[1])
	{
		case '"':
		case '\\':
		case '/':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			return p + 2;
		case 'u':
			break;
		default:
			if (p[1] > 0x20 && p[1] < 0x7F)
				return fail(s, p, "invalid escape \\%c", p[1]);
			return fail(s, p, "invalid escape");
	}
	if (s->end - p < 6 || (cp = hex4(p + 2)) < 0)
		return fail(s, p, "\\u not followed by four hex digits");
	if (cp == 0)
		return fail(s, p, "\\u0000 is not allowed");
	if (cp >= 0xDC00 && cp <= 0xDFFF)
		return fail(s, p, "low surrogate \\u%04lX without a high one before it", cp);
	if (cp < 0xD800 || cp > 0xDBFF)
		return p + 6;
	if (s->end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
		(low = hex4(p + 8)) < 0xDC00 || low > 0xDFFF)
		return fail(s, p, "high surrogate \\u%04lX not followed by a low one", cp);
	return p + 12;
}

/* A string at p (*p == '"'); returns where it ends, after the quote. */
static const unsigned char *
scan_string(Scan *s, const unsigned char *p)
{
	const unsigned char *open = p;
	const unsigned char *end = s->end;

	p++;
	for (;;)
	{
		while (p < end && plain_in_string[*p])
			p++;
		if (p >= end)
			return fail(s, open, "unterminated string");
		if (*p == '"')
			return p + 1;
		if (*p == '\\' && s->end - p < 2)
			return fail(s, open, "unterminated string");
		if (*p == '\\')
			p = scan_escape(s, p);
		else if (*p >= 0x80)
			p = scan_utf8(s, p);
		else
			return fail(s, p, "control character 0x%02x in a string", *p);
		if (p == NULL)
			return NULL;
	}
}

static const unsigned char *
scan_digits(Scan *s, const unsigned char *p, const char *after)
{
	if (p >= s->end || !is_digit(*p))
		return fail(s, p, "a digit must follow %s", after);
	while (p < s->end && is_digit(*p))
		p++;
	return p;
}

/*
 * A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.  What follows it
 * is the caller's business ("01" is 0 followed by an unexpected 1).
 */
static const unsigned char *
scan_number(Scan *s, const unsigned char *p)
{
	if (*p == '-')
		p++;
	if (p < s->end && *p == '0')
		p++;
	else if ((p = scan_digits(s, p, "'-'")) == NULL)
		return NULL;
	if (p < s->end && *p == '.')
	{
		if ((p = scan_digits(s, p + 1, "'.'")) == NULL)
			return NULL;
	}
	if (p < s->end && (*p == 'e' || *p == 'E'))
	{
		p++;
		if (p < s->end && (*p == '+' || *p == '-'))
			p++;
		if ((p = scan_digits(s, p, "an exponent's 'e'")) == NULL)
			return NULL;
	}
	return p;
}

static const unsigned char *
scan_literal(Scan *s, const unsigned char *p, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (s->end - p) < n || memcmp(p, word, n) != 0)
		return fail(s, p, "invalid literal, %s expected", word);
	return p + n;
}

/* Any value but an object or array, at p (p < end). */
static const unsigned char *
scan_scalar(Scan *s, const unsigned char *p)
{
	switch (*p)
	{
		case '"':
			return scan_string(s, p);
		case 't':
			return scan_literal(s, p, "true");
		case 'f':
			return scan_literal(s, p, "false");
		case 'n':
			return scan_literal(s, p, "null");
		default:
			if (*p == '-' || is_digit(*p))
				return scan_number(s, p);
			return fail_unexpected(s, p, "a value");
	}
}

/* An object's key and its colon at p; returns where its value starts. */
static const unsigned char *
scan_key(Scan *s, const unsigned char *p)
{
	if (p >= s->end || *p != '"')
		return fail_unexpected(s, p, "a string key");
	if ((p = scan_string(s, p)) == NULL)
		return NULL;
	p = skip_ws(p, s->end);
	if (p >= s->end || *p != ':')
		return fail_unexpected(s, p, "':'");
	return skip_ws(p + 1, s->end);
}

/* The bit stack of open containers: a set bit is an object. */
typedef struct Nesting
{
	int			depth;
	int			max_depth;
	uint64_t	is_object[BG_JSON_DEPTH_LIMIT / 64];
} Nesting;

static inline bool
inside_object(const Nesting *n)
{
	int			top = n->depth - 1;

	return (n->is_object[top / 64] >> (top % 64)) & 1;
}

static inline void
push(Nesting *n, bool object)
{
	uint64_t	bit = (uint64_t) 1 << (n->depth % 64);

	if (object)
		n->is_object[n->depth / 64] |= bit;
	else
		n->is_object[n->depth / 64] &= ~bit;
	n->depth++;
}

/*
 * After a complete value at p: close what it completes, then step to the
 * next value (over a comma, and a key inside an object).  Returns where the
 * next value starts, or where the whole text's value ends once depth is 0.
 */
static const unsigned char *
after_value(Scan *s, const unsigned char *p, Nesting *n)
{
	while (n->depth > 0)
	{
		bool		object = inside_object(n);

		p = skip_ws(p, s->end);
		if (p < s->end && *p == ',')
		{
			p = skip_ws(p + 1, s->end);
			return object ? scan_key(s, p) : p;
		}
		if (p >= s->end || *p != (object ? '}' : ']'))
			return fail_unexpected(s, p, object ? "',' or '}'" : "',' or ']'");
		p++;
		n->depth--;
	}
	return p;
}

bool
bg_json_validate(const char *text, size_t len, int max_depth,
				 BgJsonSpan *root, char *why, size_t whylen)
{
	Scan		s;
	Nesting		n;
	const unsigned char *p;
	const unsigned char *value;

	s.text = (const unsigned char *) text;
	s.end = s.text + len;
	s.why = why;
	s.whylen = whylen;
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	n.depth = 0;
	n.max_depth = max_depth < BG_JSON_DEPTH_LIMIT ? max_depth : BG_JSON_DEPTH_LIMIT;

	p = value = skip_ws(s.text, s.end);
	if (p >= s.end)
	{
		fail(&s, p, "no JSON value");
		return false;
	}
	while (p != NULL)
	{
		/* p is where a value starts */
		if (p < s.end && (*p == '{' || *p == '['))
		{
			bool		object = (*p == '{');

			if (n.depth >= n.max_depth)
			{
				fail(&s, p, "nested deeper than %d levels", n.max_depth);
				return false;
			}
			push(&n, object);
			p = skip_ws(p + 1, s.end);
			if (p >= s.end || *p != (object ? '}' : ']'))
			{
				/* its first member or element is next */
				if (object)
					p = scan_key(&s, p);
				continue;
			}
			/* empty, so complete: go on after it */
			n.depth--;
			p++;
		}
		else if (p >= s.end)
			p = fail_unexpected(&s, p, "a value");
		else
			p = scan_scalar(&s, p);
		if (p != NULL)
			p = after_value(&s, p, &n);
		if (p != NULL && n.depth == 0)
			break;
	}
	if (p == NULL)
		return false;

	if (skip_ws(p, s.end) < s.end)
	{
		fail_unexpected(&s, skip_ws(p, s.end), "end of text");
		return false;
	}
	if (root != NULL)
	{
		root->start = (const char *) value;
		root->len = p - value;
		root->type = type_of(*value);
	}
	return true;
}
