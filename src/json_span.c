/*-------------------------------------------------------------------------
 *
 * json_span.c
 *	  A validating JSON scanner that builds no tree, and the readers of the
 *	  text it validated.
 *
 * Billogram's replies are checked here before anything reads them, in one
 * pass over the bytes with no allocation: a tree parse of an invoice cost
 * more than the whole CPU budget of a payment.  Nesting is tracked in a bit
 * stack on the C stack, one bit per level, so depth costs no recursion.
 *
 * The readers (iteration, member lookup, string comparison and copying)
 * trust that their span was validated and re-check nothing, but every loop
 * is bounded by the span's end, so a span that was not validated can give
 * wrong answers, never a read outside it.
 *
 * This file deliberately uses only libc.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json_span.h"

/* A value's type, from its first byte (the caller knows it starts one). */
static inline BgJsonType
type_of(unsigned char first)
{
	switch (first)
	{
		case '{':
			return BG_JSON_OBJECT;
		case '[':
			return BG_JSON_ARRAY;
		case '"':
			return BG_JSON_STRING;
		case 't':
			return BG_JSON_TRUE;
		case 'f':
			return BG_JSON_FALSE;
		case 'n':
			return BG_JSON_NULL;
		default:
			return BG_JSON_NUMBER;
	}
}

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

static inline bool
is_ws(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static inline const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && is_ws(*p))
		p++;
	return p;
}

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

/* The value of four hex digits at p (at least four bytes there), or -1. */
static long
hex4(const unsigned char *p)
{
	long		v = 0;

	for (int i = 0; i < 4; i++)
	{
		unsigned char c = p[i];

		v <<= 4;
		if (is_digit(c))
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
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

/*
 * Readers of validated text.  They find ends of values by looking only at
 * the bytes that can end one, which validation made safe to trust.
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
