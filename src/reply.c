/*-------------------------------------------------------------------------
 *
 * reply.c
 *	  Turning an HTTP status and body from Billogram into an outcome.
 *
 * Every reply is treated as hostile: any status, any bytes, any size.  The
 * rules follow the API notes: a 200 counts only with a well-formed envelope
 * whose status is "OK" and whose data is an object; any other status is an
 * API error whether or not its body is the documented error envelope.
 *
 * Every body is validated by json_validate.c and read by json_span.c, which
 * build no tree: a tree parse of an invoice cost more than the CPU budget of
 * a whole payment.
 * jansson is still used where time does not matter: to word why a body is
 * not valid JSON as it always was, to print an error's field_path, and to
 * build the journal's error column.
 *
 * This file deliberately uses only libc, jansson and those two files.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_span.h"
#include "reply.h"

/* Nesting deeper than this is not an invoice. */
#define BG_MAX_JSON_DEPTH	64

/* The envelope's members the classification reads, and an error's. */
static const char *const envelope_keys[] = {"status", "data"};
static const char *const error_keys[] = {"message", "field", "field_path"};

#define ENV_STATUS		0
#define ENV_DATA		1
#define N_ENVELOPE_KEYS	2
#define ERR_MESSAGE		0
#define ERR_FIELD		1
#define ERR_FIELD_PATH	2
#define N_ERROR_KEYS	3
#define MAX_KEYS_READ	3		/* the longer of the two lists */

/*
 * Copy src into dst, cut if it must be at a UTF-8 character boundary.
 * Billogram's messages are UTF-8 (Swedish, mostly): half a character at the
 * end would make the whole text invalid, and jansson and PostgreSQL then
 * refuse all of it, not just the last character.  At most three bytes are
 * given up (a character is at most four); text that is not UTF-8 anyway is
 * cut where it is.
 */
static void
copy_text(char *dst, size_t dstlen, const char *src)
{
	size_t		len;
	int			back = 0;

	if (dstlen == 0)
		return;
	if (src == NULL)
		src = "";
	len = strlen(src);
	if (len >= dstlen)
	{
		len = dstlen - 1;
		/* src[len] is the first byte left out: not inside a character */
		while (len > 0 && back < 3 && ((unsigned char) src[len] & 0xC0) == 0x80)
		{
			len--;
			back++;
		}
		if (((unsigned char) src[len] & 0xC0) == 0x80)
			len = dstlen - 1;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * Whether body has more than BG_MAX_JSON_DEPTH brackets open at once,
 * counted as if it were JSON however invalid it is.  Only for wording a
 * refusal as it always was (a body with thousands of brackets was refused for
 * its depth before anything else was looked at), and to keep it away from
 * jansson's parser, which recurses once per nesting level.
 */
static bool
nesting_too_deep(const char *body, size_t len)
{
	int			depth = 0;
	bool		in_string = false;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		char		c = body[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > BG_MAX_JSON_DEPTH)
				return true;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return false;
}

/*
 * Why a body that failed validation is not valid JSON.  The messages name
 * jansson's reasons ("premature end of input near ...") since before the
 * scanner, and the expected outputs show them, so a refused body, which is
 * rare and where time does not matter, is handed to jansson for its words.
 * Where jansson accepts what the scanner refused (it drops a NUL byte right
 * after a number or literal), the scanner's own reason is given.
 */
static void
explain_invalid(const char *body, size_t len, const char *scanner_why,
				char *why, size_t whylen)
{
	json_error_t err;
	json_t	   *root;

	if (nesting_too_deep(body, len))
	{
		snprintf(why, whylen, "the JSON is nested deeper than %d levels",
				 BG_MAX_JSON_DEPTH);
		return;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
					  &err);
	if (root == NULL)
		snprintf(why, whylen, "the body is not valid JSON: %s", err.text);
	else
	{
		json_decref(root);
		snprintf(why, whylen, "the body is not valid JSON: %s", scanner_why);
	}
}

/* Validate body as JSON into *root, or return false with a reason in why. */
static bool
validate_body(const char *body, size_t len, BgJsonSpan *root,
			  char *why, size_t whylen)
{
	char		scanner_why[128];

	if (len == 0)
	{
		copy_text(why, whylen, "the body is empty");
		return false;
	}
	if (bg_json_validate(body, len, BG_MAX_JSON_DEPTH, root,
						 scanner_why, sizeof(scanner_why)))
		return true;
	explain_invalid(body, len, scanner_why, why, whylen);
	return false;
}

/*
 * Look up the keys the classification reads in obj.  Such a key given twice
 * makes the body unusable, with a reason in why: which occurrence counts
 * would be a guess, and PostgreSQL's jsonb keeps the last.  Duplicates of
 * other keys are not looked at (jansson, before the scanner, refused any).
 */
static bool
read_members(const BgJsonSpan *obj, const char *const *keys, int nkeys,
			 BgJsonSpan *values, const char *where, char *why, size_t whylen)
{
	int			counts[MAX_KEYS_READ];

	bg_json_members(obj, keys, nkeys, values, counts);
	for (int i = 0; i < nkeys; i++)
	{
		if (counts[i] > 1)
		{
			snprintf(why, whylen, "%s has \"%s\" more than once", where, keys[i]);
			return false;
		}
	}
	return true;
}

/* Copy string s's value into dst, unless s is absent or not a string. */
static void
copy_string(char *dst, size_t dstlen, const BgJsonSpan *s)
{
	if (s->start != NULL && s->type == BG_JSON_STRING)
		bg_json_string_copy(s, dst, dstlen);
}

/* Whether the array span a has at least one element. */
static bool
array_has_elements(const BgJsonSpan *a)
{
	BgJsonIter	it;
	BgJsonSpan	first;

	bg_json_iter_init(&it, a);
	return bg_json_next_element(&it, &first);
}

/*
 * field_path as compact JSON (["amount"]), printed by jansson, which also
 * turns escapes into the characters they stand for.  A path jansson cannot
 * hold (a number too large for it) is shown as Billogram wrote it.
 */
static char *
field_path_text(const BgJsonSpan *path)
{
	json_t	   *parsed = json_loadb(path->start, path->len, 0, NULL);
	char	   *text;

	if (parsed != NULL)
	{
		text = json_dumps(parsed, JSON_COMPACT);
		json_decref(parsed);
		return text;
	}
	text = malloc(path->len + 1);
	if (text != NULL)
	{
		memcpy(text, path->start, path->len);
		text[path->len] = '\0';
	}
	return text;
}

/*
 * Billogram's status and error details from the envelope in root.  Returns
 * false, filling nothing, if a key read is given twice (why says which).
 */
static bool
fill_error_details(BgReply *reply, const BgJsonSpan *root,
				   char *why, size_t whylen)
{
	BgJsonSpan	env[N_ENVELOPE_KEYS];
	BgJsonSpan	err[N_ERROR_KEYS] = {{0}};

	if (!read_members(root, envelope_keys, N_ENVELOPE_KEYS, env,
					  "the body", why, whylen))
		return false;
	if (env[ENV_DATA].start != NULL && env[ENV_DATA].type == BG_JSON_OBJECT &&
		!read_members(&env[ENV_DATA], error_keys, N_ERROR_KEYS, err,
					  "the body's \"data\"", why, whylen))
		return false;

	copy_string(reply->status, sizeof(reply->status), &env[ENV_STATUS]);
	copy_string(reply->message, sizeof(reply->message), &err[ERR_MESSAGE]);
	copy_string(reply->field, sizeof(reply->field), &err[ERR_FIELD]);
	copy_string(reply->field_name, sizeof(reply->field_name), &err[ERR_FIELD]);
	if (err[ERR_FIELD_PATH].start != NULL &&
		err[ERR_FIELD_PATH].type == BG_JSON_ARRAY &&
		array_has_elements(&err[ERR_FIELD_PATH]))
	{
		char	   *path = field_path_text(&err[ERR_FIELD_PATH]);

		if (path)
		{
			char		both[2 * BG_REPLY_TEXT_LEN];

			/* built whole, then cut at a character boundary */
			snprintf(both, sizeof(both), "%s%sfield_path %s", reply->field,
					 reply->field[0] ? ", " : "", path);
			copy_text(reply->field, sizeof(reply->field), both);
			free(path);
		}
	}
	return true;
}

bool
bg_reply_asks_to_wait(const BgReply *reply)
{
	return reply->outcome == BG_OUTCOME_API_ERROR &&
		(reply->http_status == 429 || reply->http_status == 503);
}

bool
bg_reply_worth_retrying(const BgReply *reply)
{
	if (reply->may_have_reached)
		return false;
	return reply->outcome == BG_OUTCOME_TRANSPORT || bg_reply_asks_to_wait(reply);
}

static void
classify_error_reply(BgReply *reply, long http_status,
					 const char *body, size_t len)
{
	char		why[BG_REPLY_TEXT_LEN];
	BgJsonSpan	root;

	reply->outcome = BG_OUTCOME_API_ERROR;

	/*
	 * A 4xx is a refusal and 503 means "not now": neither acted on the
	 * request.  Any other status (500, 502, 504, anything unexpected) may
	 * come after Billogram registered the payment.
	 */
	reply->may_have_reached = !((http_status >= 400 && http_status < 500) ||
								http_status == 503);

	/* a body we cannot read (why) only means no details: the status says it */
	if (validate_body(body, len, &root, why, sizeof(why)) &&
		root.type == BG_JSON_OBJECT)
		fill_error_details(reply, &root, why, sizeof(why));
	if (reply->message[0] == '\0')
		snprintf(reply->message, sizeof(reply->message),
				 "HTTP %ld without a Billogram error in the body", http_status);
}

static void
bad_reply(BgReply *reply, const char *why)
{
	reply->outcome = BG_OUTCOME_BAD_REPLY;
	reply->may_have_reached = true;
	copy_text(reply->message, sizeof(reply->message), why);
}

/* A 200's envelope, once the body is known to be a valid JSON object. */
static void
classify_envelope(BgReply *reply, const char *body, const BgJsonSpan *root)
{
	char		why[BG_REPLY_TEXT_LEN];
	BgJsonSpan	env[N_ENVELOPE_KEYS];

	if (!read_members(root, envelope_keys, N_ENVELOPE_KEYS, env,
					  "the body", why, sizeof(why)))
		bad_reply(reply, why);
	else if (env[ENV_STATUS].start == NULL || env[ENV_STATUS].type != BG_JSON_STRING)
		bad_reply(reply, "the body has no \"status\" string");
	else if (!bg_json_string_equals(&env[ENV_STATUS], "OK"))
	{
		/* an error envelope inside a 200: report it, but as unusable */
		char		whole[BG_REPLY_STATUS_LEN + BG_REPLY_TEXT_LEN + 32];

		if (!fill_error_details(reply, root, why, sizeof(why)))
		{
			bad_reply(reply, why);
			return;
		}
		/* built whole, then cut at a character boundary by bad_reply() */
		snprintf(whole, sizeof(whole), "HTTP 200 with status \"%s\": %s",
				 reply->status, reply->message);
		bad_reply(reply, whole);
	}
	else if (env[ENV_DATA].start == NULL || env[ENV_DATA].type != BG_JSON_OBJECT)
		bad_reply(reply, "the body's \"data\" is missing or not an object");
	else
	{
		reply->outcome = BG_OUTCOME_OK;
		reply->may_have_reached = true;
		copy_text(reply->status, sizeof(reply->status), "OK");
		reply->data_offset = env[ENV_DATA].start - body;
		reply->data_len = env[ENV_DATA].len;
	}
}

void
bg_classify_reply(BgReply *reply, long http_status, const char *body, size_t len)
{
	char		why[BG_REPLY_TEXT_LEN];
	BgJsonSpan	root;

	memset(reply, 0, sizeof(*reply));
	reply->http_status = http_status;

	if (http_status != 200 && (http_status < 200 || http_status > 299))
	{
		classify_error_reply(reply, http_status, body, len);
		return;
	}
	if (http_status != 200)
	{
		snprintf(why, sizeof(why), "unexpected HTTP status %ld, Billogram answers commands with 200",
				 http_status);
		bad_reply(reply, why);
		return;
	}

	if (!validate_body(body, len, &root, why, sizeof(why)))
		bad_reply(reply, why);
	else if (root.type != BG_JSON_OBJECT)
		bad_reply(reply, "the body is not a JSON object");
	else
		classify_envelope(reply, body, &root);
}

void
bg_transport_failure(BgReply *reply, const char *reason, bool may_have_reached)
{
	memset(reply, 0, sizeof(*reply));
	reply->outcome = BG_OUTCOME_TRANSPORT;
	reply->may_have_reached = may_have_reached;
	copy_text(reply->message, sizeof(reply->message), reason);
}

/*
 * The journal's name for an outcome.  An outcome added to BgOutcome without
 * one here is "unknown", not a read past the table.
 */
const char *
bg_outcome_kind(BgOutcome outcome)
{
	static const char *const kinds[] = {
		[BG_OUTCOME_OK] = "ok",
		[BG_OUTCOME_API_ERROR] = "api_error",
		[BG_OUTCOME_BAD_REPLY] = "bad_reply",
		[BG_OUTCOME_TRANSPORT] = "no_reply",
		[BG_OUTCOME_WORKER] = "worker",
		[BG_OUTCOME_NOT_INSTALLED] = "not_installed",
		[BG_OUTCOME_NOT_RECORDED] = "not_recorded",
		[BG_OUTCOME_NO_CREDENTIALS] = "no_credentials",
		[BG_OUTCOME_PAUSED] = "paused",
		[BG_OUTCOME_INVOICE_BUSY] = "invoice_busy",
		[BG_OUTCOME_KEY_USED] = "key_used",
		[BG_OUTCOME_INVALID_ROW] = "invalid_row",
		[BG_OUTCOME_UNTRUSTED] = "untrusted",
	};

	if ((unsigned) outcome >= sizeof(kinds) / sizeof(kinds[0]) ||
		kinds[outcome] == NULL)
		return "unknown";
	return kinds[outcome];
}

char *
bg_reply_error_json(const BgReply *reply, const char *sqlstate)
{
	json_t	   *obj;
	char	   *text;

	/*
	 * Not json_object(): inside a PostgreSQL backend that name resolves to
	 * the server's own SQL function json_object(), which crashes if called.
	 */
	obj = json_pack("{}");

	if (obj == NULL)
		return NULL;
	json_object_set_new(obj, "kind", json_string(bg_outcome_kind(reply->outcome)));
	json_object_set_new(obj, "sqlstate", json_string(sqlstate));
	if (reply->status[0])
		json_object_set_new(obj, "status", json_string(reply->status));
	json_object_set_new(obj, "message", json_string(reply->message));
	if (reply->field[0])
		json_object_set_new(obj, "field", json_string(reply->field));
	if (reply->retry_after > 0)
		json_object_set_new(obj, "retry_after", json_integer(reply->retry_after));
	json_object_set_new(obj, "may_have_reached_billogram",
						json_boolean(reply->may_have_reached));
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	return text;
}
