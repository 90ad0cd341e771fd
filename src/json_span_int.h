/*-------------------------------------------------------------------------
 *
 * json_span_int.h
 *	  What the validator (json_validate.c) and the readers (json_span.c)
 *	  both need: the byte classes of JSON's grammar.
 *
 * Plain C, like the files that include it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_JSON_SPAN_INT_H
#define BILLOGRAM_JSON_SPAN_INT_H

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

/* The value of four hex digits at p (at least four bytes there), or -1. */
static inline long
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

#endif							/* BILLOGRAM_JSON_SPAN_INT_H */
