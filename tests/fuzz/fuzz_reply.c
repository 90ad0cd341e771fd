/*
 * libFuzzer harness for bg_classify_reply(): the function that turns an
 * HTTP status and a body from the network into an outcome.
 *
 * The first two bytes of the input choose the HTTP status (100..699), the
 * rest is the body.  Besides the sanitizers' own checks, the harness asserts
 * the invariants the rest of the extension relies on: an OK outcome only for
 * status 200, every text field NUL-terminated within its buffer, and a
 * 4xx never reported as possibly registered.  An OK outcome's data span
 * must lie within the body and be a valid object on its own, whose invoice
 * summary can be built.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/invoice.h"
#include "../../src/json_span.h"
#include "../../src/reply.h"

static void
check_terminated(const char *field, size_t size)
{
	assert(memchr(field, '\0', size) != NULL);
}

/* The data span of an OK reply: what callers read without parsing again. */
static void
check_data(const BgReply *reply, const char *body, size_t len)
{
	BgJsonSpan	data;
	char	   *summary;

	if (reply->outcome != BG_OUTCOME_OK)
	{
		assert(reply->data_offset == 0 && reply->data_len == 0);
		return;
	}
	assert(reply->data_offset < len && reply->data_len <= len - reply->data_offset);
	assert(bg_json_validate(body + reply->data_offset, reply->data_len, 64,
							&data, NULL, 0));
	assert(data.type == BG_JSON_OBJECT && data.len == reply->data_len);
	summary = bg_invoice_summary(body + reply->data_offset, reply->data_len);
	assert(summary != NULL);
	free(summary);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	BgReply		reply;
	long		status;
	char	   *json;

	if (size < 2)
		return 0;
	status = 100 + ((data[0] << 8 | data[1]) % 600);
	bg_classify_reply(&reply, status, (const char *) data + 2, size - 2);

	assert(reply.outcome == BG_OUTCOME_OK ||
		   reply.outcome == BG_OUTCOME_API_ERROR ||
		   reply.outcome == BG_OUTCOME_BAD_REPLY);
	assert(reply.outcome != BG_OUTCOME_OK || status == 200);
	assert(reply.http_status == status);
	if (status >= 400 && status < 500)
		assert(reply.outcome == BG_OUTCOME_API_ERROR && !reply.may_have_reached);
	check_terminated(reply.status, sizeof(reply.status));
	check_terminated(reply.message, sizeof(reply.message));
	check_terminated(reply.field, sizeof(reply.field));
	check_terminated(reply.field_name, sizeof(reply.field_name));
	check_data(&reply, (const char *) data + 2, size - 2);

	/* the journal's error column is built from any reply */
	json = bg_reply_error_json(&reply, "BG001");
	free(json);
	return 0;
}
