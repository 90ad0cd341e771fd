/*-------------------------------------------------------------------------
 *
 * json_span.h
 *	  Validating JSON text without building a tree, and reading values of
 *	  validated text where they lie.
 *
 * A value is described by a span: where its text starts, how long it is and
 * what it is.  bg_json_validate() checks a whole text in one pass with no
 * allocation; the other functions take spans of text that passed it, and
 * never read outside the span they are given (whatever that span holds).
 *
 * Plain C with no PostgreSQL or jansson dependency, so that it can be fuzzed
 * and benchmarked on its own, like reply.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_JSON_SPAN_H
#define BILLOGRAM_JSON_SPAN_H

#include <stdbool.h>
#include <stddef.h>

typedef enum BgJsonType
{
	BG_JSON_OBJECT,
	BG_JSON_ARRAY,
	BG_JSON_STRING,
	BG_JSON_NUMBER,
	BG_JSON_TRUE,
	BG_JSON_FALSE,
	BG_JSON_NULL
} BgJsonType;

/*
 * The raw text of one value, with no surrounding whitespace: a string's span
 * includes its quotes and escapes, a number's is its digits as written.
 */
typedef struct BgJsonSpan
{
	const char *start;
	size_t		len;
	BgJsonType	type;
} BgJsonSpan;

/* The deepest nesting bg_json_validate() can be asked to allow. */
#define BG_JSON_DEPTH_LIMIT		4096

/*
 * Whether text[0..len) is exactly one JSON value (RFC 8259), optionally
 * surrounded by whitespace, nested no deeper than max_depth objects and
 * arrays (a top-level object is depth 1; values above BG_JSON_DEPTH_LIMIT
 * count as that limit).  On success *root spans the value.  On failure why
 * gets a short reason with the byte offset (why may be NULL).
 *
 * Stricter than RFC 8259 where PostgreSQL and jansson are: no \u0000, no
 * lone or misordered UTF-16 surrogate escapes, only well-formed UTF-8.
 * Numbers are checked against the grammar only, never converted, so their
 * size is not limited (jansson refuses a real like 1e999 as an overflow;
 * here it is valid, and its text stays exact).
 */
extern bool bg_json_validate(const char *text, size_t len, int max_depth,
							 BgJsonSpan *root, char *why, size_t whylen);

/*
 * Walking the members of an object or the elements of an array:
 *
 *		BgJsonIter	it;
 *
 *		bg_json_iter_init(&it, &object);
 *		while (bg_json_next_member(&it, &key, &value))
 *			...
 *
 * Any span that is not an object or array yields nothing.
 */
typedef struct BgJsonIter
{
	const char *next;			/* where to look for the next one */
	const char *end;			/* the container's closing bracket */
} BgJsonIter;

extern void bg_json_iter_init(BgJsonIter *iter, const BgJsonSpan *container);
extern bool bg_json_next_member(BgJsonIter *iter, BgJsonSpan *key,
								BgJsonSpan *value);
extern bool bg_json_next_element(BgJsonIter *iter, BgJsonSpan *value);

/*
 * Find the member named key (compared after unescaping, so "st\u0061tus"
 * is status): *value gets its first occurrence, *count (if not NULL) how
 * many times it occurs.  Returns whether it occurs at all.  A caller that
 * reads a key should refuse an object that has it more than once: other
 * readers of the same text may take the last occurrence (jsonb does).
 */
extern bool bg_json_member(const BgJsonSpan *object, const char *key,
						   BgJsonSpan *value, int *count);

/*
 * The same for nkeys keys in one pass over the object: values[i] and
 * counts[i] for keys[i].  An absent key has count 0 and a NULL span.
 */
extern void bg_json_members(const BgJsonSpan *object, const char *const *keys,
							int nkeys, BgJsonSpan *values, int *counts);

/* Whether s is a string whose unescaped value is literal. */
extern bool bg_json_string_equals(const BgJsonSpan *s, const char *literal);

/*
 * Copy the unescaped value of string s into dst, NUL-terminated, cut at a
 * UTF-8 character boundary if it does not fit.  Returns the bytes written
 * before the NUL.  A span that is not a string copies as "".
 */
extern size_t bg_json_string_copy(const BgJsonSpan *s, char *dst,
								  size_t dstlen);

#endif							/* BILLOGRAM_JSON_SPAN_H */
