/*-------------------------------------------------------------------------
 *
 * jsonb_fit.c
 *	  Whether Billogram's JSON text can become jsonb in this database,
 *	  found out without raising an error.
 *
 * A reply is valid UTF-8 JSON (the worker checked it), but jsonb_in cannot
 * take everything valid JSON may hold: the escape \u0000 never, and in a
 * database whose encoding is not UTF8, no character that encoding lacks,
 * written raw or as an escape.  Once a payment went through, the caller
 * must hear that it did before anything else; so the obstacles are looked
 * for first, with conversions that report rather than raise, and the
 * caller's message says both.  PostgreSQL 15 has no soft-error input
 * functions to ask jsonb_in itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "jsonb_fit.h"

/* Can the UTF-8 bytes s[0..len) be converted to the database's encoding? */
static bool
utf8_fits_server(const char *s, int len)
{
	int			enc = GetDatabaseEncoding();
	Oid			proc;
	unsigned char *buf;
	int			converted;

	/* no conversion happens into UTF8, nor into SQL_ASCII */
	if (enc == PG_UTF8 || enc == PG_SQL_ASCII || len == 0)
		return true;
	proc = FindDefaultConversionProc(PG_UTF8, enc);
	if (!OidIsValid(proc))
		return false;
	buf = palloc((Size) len * MAX_CONVERSION_GROWTH + 1);
	converted = pg_do_encoding_conversion_buf(proc, PG_UTF8, enc,
											  (unsigned char *) s, len, buf,
											  len * MAX_CONVERSION_GROWTH + 1,
											  true);
	pfree(buf);
	return converted == len;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The code unit of the \uXXXX escape at s (s[0] is the backslash), or -1 */
static long
escape_unit(const char *s, size_t left)
{
	long		unit = 0;
	int			i;

	if (left < 6 || s[1] != 'u')
		return -1;
	for (i = 2; i < 6; i++)
	{
		int			v = hex_value(s[i]);

		if (v < 0)
			return -1;
		unit = unit * 16 + v;
	}
	return unit;
}

/*
 * The first \u escape jsonb_in would refuse here, described; NULL if none.
 * A backslash appears in valid JSON only inside a string, before one
 * escaped character, so one pass that skips escapes finds every \u.
 */
static char *
escape_obstacle(const char *s, size_t len)
{
	int			enc = GetDatabaseEncoding();
	size_t		i;

	for (i = 0; i < len; i++)
	{
		long		cp;
		unsigned char utf8[8];

		if (s[i] != '\\')
			continue;
		cp = escape_unit(s + i, len - i);
		if (cp < 0)
		{
			i++;				/* \", \\, \n ...: skip the escaped char */
			continue;
		}
		i += 5;
		if (cp == 0)
			return pstrdup("the escape \\u0000, which no jsonb value can hold");
		if (cp >= 0xD800 && cp <= 0xDBFF)
		{
			long		low = escape_unit(s + i + 1, len - i - 1);

			if (low >= 0xDC00 && low <= 0xDFFF)
			{
				cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
				i += 6;
			}
		}
		if (cp < 0x80 || enc == PG_UTF8)
			continue;
		if (enc == PG_SQL_ASCII)
			return psprintf("the escape of U+%04lX, which a SQL_ASCII database cannot hold", cp);
		unicode_to_utf8((pg_wchar) cp, utf8);
		if (!utf8_fits_server((const char *) utf8, pg_utf_mblen(utf8)))
			return psprintf("the escape of U+%04lX, a character encoding %s cannot hold",
							cp, GetDatabaseEncodingName());
	}
	return NULL;
}

char *
bg_jsonb_obstacle(const char *utf8, size_t len)
{
	if (len > (size_t) (MaxAllocSize / MAX_CONVERSION_GROWTH))
		return pstrdup("more text than one conversion can take");
	if (!utf8_fits_server(utf8, (int) len))
		return psprintf("characters encoding %s cannot hold",
						GetDatabaseEncodingName());
	return escape_obstacle(utf8, len);
}
