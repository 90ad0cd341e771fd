/*-------------------------------------------------------------------------
 *
 * callback.c
 *	  Checking the signature of a callback Billogram sent:
 *	  billogram_verify_callback().
 *
 * Billogram signs each callback with the account's sign key:
 * HMAC-SHA256 over the Billogram-Request-Timestamp header, a colon and the
 * raw body, sent in the Billogram-Signature header.  Its documentation does
 * not say whether the signature is hex or base64, so both are accepted; the
 * comparison takes the same time whatever the signature holds.  A timestamp
 * further than billogram.callback_max_age from now, in either direction, is
 * refused, so that a callback captured once cannot be replayed later.
 *
 * The key is read from the file billogram.callback_sign_key_file names
 * (credentials.c), at each call, and overwritten once used.  Recording a
 * verified callback's event is billogram_record_callback(), in SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/base64.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#if PG_VERSION_NUM >= 160000
/* VARDATA_ANY and VARSIZE_ANY_EXHDR moved out of postgres.h in 16 */
#include "varatt.h"
#endif

#include "credentials.h"
#include "guc.h"

PG_FUNCTION_INFO_V1(billogram_verify_callback);

#define BG_HMAC_LEN		32		/* SHA-256 */

/* what pg_b64_decode() decodes into: bytes from 18 on, char before */
#if PG_VERSION_NUM >= 180000
typedef uint8 b64_byte;
#else
typedef char b64_byte;
#endif

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

/*
 * The signature's 32 bytes, from 64 hex digits or from base64 (with or
 * without padding); false if it is neither.
 */
static bool
decode_signature(const char *sig, uint8 *out)
{
	size_t		len = strlen(sig);
	b64_byte	buf[64];
	char		padded[48];
	int			n;

	if (len == 2 * BG_HMAC_LEN)
	{
		bool		ok = true;
		size_t		i;

		for (i = 0; i < BG_HMAC_LEN; i++)
		{
			int			hi = hex_value(sig[2 * i]);
			int			lo = hex_value(sig[2 * i + 1]);

			if (hi < 0 || lo < 0)
				ok = false;
			out[i] = (uint8) ((hi & 0xF) << 4 | (lo & 0xF));
		}
		if (ok)
			return true;
	}
	/* base64 of 32 bytes: 43 characters and one '=' of padding */
	if (len == 43)
	{
		memcpy(padded, sig, 43);
		padded[43] = '=';
		sig = padded;
		len = 44;
	}
	if (len != 44)
		return false;
	n = pg_b64_decode(sig, (int) len, buf, sizeof(buf));
	if (n != BG_HMAC_LEN)
		return false;
	memcpy(out, buf, BG_HMAC_LEN);
	return true;
}

static void
compute_hmac(const char *key, const char *timestamp, const char *body,
			 size_t body_len, uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL ||
		pg_hmac_init(ctx, (const uint8 *) key, strlen(key)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) timestamp, strlen(timestamp)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ":", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) body, body_len) < 0 ||
		pg_hmac_final(ctx, out, BG_HMAC_LEN) < 0)
	{
		const char *why = ctx ? pg_hmac_error(ctx) : "out of memory";

		pg_hmac_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256: %s", why)));
	}
	pg_hmac_free(ctx);
}

/* Seconds since the epoch with a fraction, as Billogram sends them. */
static bool
timestamp_is_fresh(const char *timestamp)
{
	char	   *end;
	double		sent;
	double		now;

	errno = 0;
	sent = strtod(timestamp, &end);
	if (errno != 0 || end == timestamp || *end != '\0' || !isfinite(sent))
		return false;
	now = (double) (GetCurrentTimestamp() - SetEpochTimestamp()) / USECS_PER_SEC;
	return fabs(now - sent) <= bg_callback_max_age_s;
}

Datum
billogram_verify_callback(PG_FUNCTION_ARGS)
{
	char	   *timestamp;
	char	   *signature;
	text	   *body;
	char	   *key;
	uint8		expected[BG_HMAC_LEN];
	uint8		given[BG_HMAC_LEN];
	bool		signed_by_key;

	/* read first: a missing key is reported whatever the arguments */
	key = bg_read_callback_sign_key();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
	{
		bg_forget_secret(key);
		PG_RETURN_BOOL(false);
	}

	timestamp = text_to_cstring(PG_GETARG_TEXT_PP(0));
	signature = text_to_cstring(PG_GETARG_TEXT_PP(1));
	body = PG_GETARG_TEXT_PP(2);

	signed_by_key = decode_signature(signature, given);
	if (signed_by_key)
	{
		compute_hmac(key, timestamp, VARDATA_ANY(body),
					 VARSIZE_ANY_EXHDR(body), expected);
		signed_by_key = timingsafe_bcmp(expected, given, BG_HMAC_LEN) == 0;
		explicit_bzero(expected, sizeof(expected));
	}
	bg_forget_secret(key);
	PG_RETURN_BOOL(signed_by_key && timestamp_is_fresh(timestamp));
}
