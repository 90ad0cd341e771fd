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
 * This file deliberately uses only libc and jansson.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "reply.h"

/* Nesting deeper than this is not an invoice; refuse before recursing. */
#define BG_MAX_JSON_DEPTH	64

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
 * jansson's parser recurses once per nesting level, so a body made of
 * thousands of brackets is refused by a linear scan first.
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

/* Parse body as JSON, or return NULL with a reason in why. */
static json_t *
parse_body(const char *body, size_t len, char *why, size_t whylen)
{
	json_error_t err;
	json_t	   *root;

	if (len == 0)
	{
		copy_text(why, whylen, "the body is empty");
		return NULL;
	}
	if (nesting_too_deep(body, len))
	{
		snprintf(why, whylen, "the JSON is nested deeper than %d levels",
				 BG_MAX_JSON_DEPTH);
		return NULL;
	}

	/*
	 * Integers are read as reals only so that a large one cannot fail the
	 * parse; the values themselves are taken from PostgreSQL's parser.
	 */
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
					  &err);
	if (root == NULL)
		snprintf(why, whylen, "the body is not valid JSON: %s", err.text);
	return root;
}

static void
fill_error_details(BgReply *reply, json_t *root)
{
	json_t	   *status = json_object_get(root, "status");
	json_t	   *data = json_object_get(root, "data");
	json_t	   *message = json_object_get(data, "message");
	json_t	   *field = json_object_get(data, "field");
	json_t	   *field_path = json_object_get(data, "field_path");

	if (json_is_string(status))
		copy_text(reply->status, sizeof(reply->status), json_string_value(status));
	if (json_is_string(message))
		copy_text(reply->message, sizeof(reply->message), json_string_value(message));
	if (json_is_string(field))
	{
		copy_text(reply->field, sizeof(reply->field), json_string_value(field));
		copy_text(reply->field_name, sizeof(reply->field_name),
				  json_string_value(field));
	}
	if (json_is_array(field_path) && json_array_size(field_path) > 0)
	{
		char	   *path = json_dumps(field_path, JSON_COMPACT);

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
}

bool
bg_reply_asks_to_wait(const BgReply *reply)
{
	return reply->outcome == BG_OUTCOME_API_ERROR &&
		(reply->http_status == 429 || reply->http_status == 503);
}

static void
classify_error_reply(BgReply *reply, long http_status,
					 const char *body, size_t len)
{
	char		why[BG_REPLY_TEXT_LEN];
	json_t	   *root;

	reply->outcome = BG_OUTCOME_API_ERROR;

	/*
	 * A 4xx is a refusal and 503 means "not now": neither acted on the
	 * request.  Any other status (500, 502, 504, anything unexpected) may
	 * come after Billogram registered the payment.
	 */
	reply->may_have_reached = !((http_status >= 400 && http_status < 500) ||
								http_status == 503);

	root = parse_body(body, len, why, sizeof(why));
	if (root && json_is_object(root))
		fill_error_details(reply, root);
	if (root)
		json_decref(root);
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

void
bg_classify_reply(BgReply *reply, long http_status, const char *body, size_t len)
{
	char		why[BG_REPLY_TEXT_LEN];
	json_t	   *root;
	json_t	   *status;

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

	root = parse_body(body, len, why, sizeof(why));
	if (root == NULL)
	{
		bad_reply(reply, why);
		return;
	}

	status = json_object_get(root, "status");
	if (!json_is_object(root))
		bad_reply(reply, "the body is not a JSON object");
	else if (!json_is_string(status))
		bad_reply(reply, "the body has no \"status\" string");
	else if (strcmp(json_string_value(status), "OK") != 0)
	{
		/* an error envelope inside a 200: report it, but as unusable */
		char		whole[BG_REPLY_STATUS_LEN + BG_REPLY_TEXT_LEN + 32];

		fill_error_details(reply, root);
		/* built whole, then cut at a character boundary by bad_reply() */
		snprintf(whole, sizeof(whole), "HTTP 200 with status \"%s\": %s",
				 reply->status, reply->message);
		bad_reply(reply, whole);
	}
	else if (!json_is_object(json_object_get(root, "data")))
		bad_reply(reply, "the body's \"data\" is missing or not an object");
	else
	{
		reply->outcome = BG_OUTCOME_OK;
		reply->may_have_reached = true;
		copy_text(reply->status, sizeof(reply->status), "OK");
	}
	json_decref(root);
}

void
bg_transport_failure(BgReply *reply, const char *reason, bool may_have_reached)
{
	memset(reply, 0, sizeof(*reply));
	reply->outcome = BG_OUTCOME_TRANSPORT;
	reply->may_have_reached = may_have_reached;
	copy_text(reply->message, sizeof(reply->message), reason);
}

char *
bg_reply_error_json(const BgReply *reply, const char *sqlstate)
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
	};
	json_t	   *obj;
	char	   *text;

	/*
	 * Not json_object(): inside a PostgreSQL backend that name resolves to
	 * the server's own SQL function json_object(), which crashes if called.
	 */
	obj = json_pack("{}");

	if (obj == NULL)
		return NULL;
	json_object_set_new(obj, "kind", json_string(kinds[reply->outcome]));
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
