/*
 * Unit tests of src/json_span.c and src/invoice.c: every rule the validator
 * enforces, member lookup with escaped and repeated keys, copying with cuts
 * at character boundaries, and the invoice summary on the mock's example
 * invoice and on edge cases.
 *
 * Usage: json_span_test tests/mock/example-response.json
 * Prints each failure, then "N passed, M failed" last; exits 1 on failure.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/invoice.h"
#include "../../src/json_span.h"

static int	passed;
static int	failed;

static void check(bool ok, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static void
check(bool ok, const char *fmt,...)
{
	va_list		ap;

	if (ok)
	{
		passed++;
		return;
	}
	failed++;
	fputs("FAIL: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

/* A printable rendering of test input for messages (bytes as \xNN). */
static const char *
show(const char *text, size_t len)
{
	static char buf[4][200];
	static int	which;
	char	   *out = buf[which++ % 4];
	size_t		n = 0;

	for (size_t i = 0; i < len && n < sizeof(buf[0]) - 8; i++)
	{
		unsigned char c = text[i];

		if (c >= 0x20 && c < 0x7F)
			out[n++] = c;
		else
			n += sprintf(out + n, "\\x%02x", c);
	}
	if (n >= sizeof(buf[0]) - 8)
		n += sprintf(out + n, "...");
	out[n] = '\0';
	return out;
}

static void
accepts_n(const char *text, size_t len, BgJsonType type)
{
	BgJsonSpan	root;
	char		why[200];
	bool		ok = bg_json_validate(text, len, 64, &root, why, sizeof(why));

	check(ok, "valid JSON refused: %s (%s)", show(text, len), why);
	if (ok)
		check(root.type == type, "wrong type %d for %s", (int) root.type,
			  show(text, len));
}

static void
accepts(const char *text, BgJsonType type)
{
	accepts_n(text, strlen(text), type);
}

/*
 * text[0..len) must be refused with a reason containing reason and naming
 * byte offset at.
 */
static void
refuses_n(const char *text, size_t len, const char *reason, size_t at)
{
	BgJsonSpan	root;
	char		why[200];
	char		where[40];

	snprintf(where, sizeof(where), "at byte %zu", at);
	if (bg_json_validate(text, len, 64, &root, why, sizeof(why)))
	{
		check(false, "invalid JSON accepted: %s", show(text, len));
		return;
	}
	check(strstr(why, reason) != NULL && strstr(why, where) != NULL,
		  "%s: reason \"%s\", want \"%s\" %s", show(text, len), why, reason, where);
}

static void
refuses(const char *text, const char *reason, size_t at)
{
	refuses_n(text, strlen(text), reason, at);
}

static void
test_valid(void)
{
	BgJsonSpan	root;

	accepts("{}", BG_JSON_OBJECT);
	accepts("[]", BG_JSON_ARRAY);
	accepts(" \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n", BG_JSON_OBJECT);
	accepts("\"\"", BG_JSON_STRING);
	accepts("true", BG_JSON_TRUE);
	accepts("false", BG_JSON_FALSE);
	accepts("null", BG_JSON_NULL);
	accepts("0", BG_JSON_NUMBER);
	accepts("-0", BG_JSON_NUMBER);
	accepts("-750.00", BG_JSON_NUMBER);
	accepts("1E+2", BG_JSON_NUMBER);
	accepts("1e-2", BG_JSON_NUMBER);
	/* sizes are not limited: numbers stay text (jansson refuses 1e999) */
	accepts("1e999", BG_JSON_NUMBER);
	accepts("123456789012345678901234567890.000000000000000000001", BG_JSON_NUMBER);
	accepts("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e5 \\uD834\\uDD1E\"", BG_JSON_STRING);
	accepts("\"\x7f\"", BG_JSON_STRING);
	accepts("\"\xc3\xa5\xe2\x82\xac\xf0\x9d\x84\x9e\xf4\x8f\xbf\xbf\"", BG_JSON_STRING);
	accepts("{\"a\":1,\"a\":2}", BG_JSON_OBJECT);	/* duplicates: the reader's business */

	/* the root span leaves out the whitespace around the value */
	if (bg_json_validate("  [1] ", 6, 64, &root, NULL, 0))
		check(root.len == 3 && memcmp(root.start, "[1]", 3) == 0,
			  "root span of \"  [1] \" is \"%s\"", show(root.start, root.len));
	else
		check(false, "\"  [1] \" refused");
}

static void
test_syntax(void)
{
	refuses("", "no JSON value", 0);
	refuses(" \n ", "no JSON value", 3);
	refuses("{", "unexpected end of input", 1);
	refuses("{\"a\"}", "':' expected", 4);
	refuses("{\"a\":}", "a value expected", 5);
	refuses("{\"a\":1,}", "a string key expected", 7);
	refuses("{a:1}", "a string key expected", 1);
	refuses("[1,]", "a value expected", 3);
	refuses("[1 2]", "',' or ']' expected", 3);
	refuses("[1}", "',' or ']' expected", 2);
	refuses("{\"a\":1]", "',' or '}' expected", 6);
	refuses("tru", "true expected", 0);
	refuses("nul", "null expected", 0);
	refuses("True", "unexpected 'T'", 0);
	refuses("'a'", "unexpected '''", 0);
	refuses("\"abc", "unterminated string", 0);
	refuses("[\"abc\\", "unterminated string", 1);
}

static void
test_trailing(void)
{
	refuses("{} {}", "end of text expected", 3);
	refuses("1 2", "end of text expected", 2);
	refuses("truex", "unexpected 'x'", 4);
	refuses("01", "unexpected '1'", 1);
	/* a NUL after the value is not whitespace (jansson drops some) */
	refuses_n("[1\0]", 4, "unexpected byte 0x00", 2);
	refuses_n("{}\0", 3, "unexpected byte 0x00", 2);
}

static void
test_numbers(void)
{
	refuses("-", "a digit must follow '-'", 1);
	refuses("-a", "a digit must follow '-'", 1);
	refuses("+1", "unexpected '+'", 0);
	refuses(".5", "unexpected '.'", 0);
	refuses("1.", "a digit must follow '.'", 2);
	refuses("1.e5", "a digit must follow '.'", 2);
	refuses("1e", "a digit must follow an exponent", 2);
	refuses("1e+", "a digit must follow an exponent", 3);
	refuses("-01", "unexpected '1'", 2);
	refuses("0x10", "unexpected 'x'", 1);
	refuses("NaN", "unexpected 'N'", 0);
	refuses("-Infinity", "a digit must follow '-'", 1);
}

static void
test_depth(void)
{
	static char deep[200001];
	BgJsonSpan	root;
	char		why[200];

	check(bg_json_validate("[[[1]]]", 7, 3, &root, why, sizeof(why)),
		  "3 levels refused at max_depth 3: %s", why);
	check(!bg_json_validate("[[[[1]]]]", 9, 3, &root, why, sizeof(why)) &&
		  strstr(why, "nested deeper than 3 levels at byte 3") != NULL,
		  "4 levels at max_depth 3: \"%s\"", why);
	check(!bg_json_validate("{\"a\":{\"b\":[]}}", 14, 2, &root, why, sizeof(why)) &&
		  strstr(why, "nested deeper than 2 levels at byte 10") != NULL,
		  "objects count as levels too: \"%s\"", why);
	check(!bg_json_validate("[]", 2, 0, &root, why, sizeof(why)) &&
		  bg_json_validate("1", 1, 0, &root, why, sizeof(why)),
		  "max_depth 0 allows only scalars");

	/* 100000 levels: refused without recursion, at any max_depth */
	memset(deep, '[', 100000);
	memset(deep + 100000, ']', 100000);
	check(!bg_json_validate(deep, 200000, 64, &root, why, sizeof(why)) &&
		  strstr(why, "nested deeper than 64 levels at byte 64") != NULL,
		  "100000 levels at max_depth 64: \"%s\"", why);
	check(!bg_json_validate(deep, 200000, 1000000, &root, why, sizeof(why)) &&
		  strstr(why, "nested deeper than 4096 levels at byte 4096") != NULL,
		  "max_depth above BG_JSON_DEPTH_LIMIT counts as the limit: \"%s\"", why);

	/* exactly at the limit: the bit stack's last word is used */
	memset(deep, '[', BG_JSON_DEPTH_LIMIT);
	memset(deep + BG_JSON_DEPTH_LIMIT, ']', BG_JSON_DEPTH_LIMIT);
	check(bg_json_validate(deep, 2 * BG_JSON_DEPTH_LIMIT, BG_JSON_DEPTH_LIMIT,
						   &root, why, sizeof(why)) &&
		  root.len == 2 * BG_JSON_DEPTH_LIMIT,
		  "%d levels refused at max_depth %d: %s", BG_JSON_DEPTH_LIMIT,
		  BG_JSON_DEPTH_LIMIT, why);
}

static void
test_utf8(void)
{
	refuses("\"\x80\"", "invalid UTF-8 byte 0x80", 1);
	refuses("\"\xc3", "truncated UTF-8 character", 1);
	refuses("\"\xc3\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xc3x\"", "invalid UTF-8 sequence", 1);
	/* overlong forms of '/' */
	refuses("\"\xc0\xaf\"", "invalid UTF-8 byte 0xc0", 1);
	refuses("\"\xc1\xbf\"", "invalid UTF-8 byte 0xc1", 1);
	refuses("\"\xe0\x80\xaf\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xe0\x9f\xbf\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xf0\x80\x80\xaf\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xf0\x8f\xbf\xbf\"", "invalid UTF-8 sequence", 1);
	/* surrogates encoded in UTF-8 */
	refuses("\"\xed\xa0\x80\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xed\xbf\xbf\"", "invalid UTF-8 sequence", 1);
	/* above U+10FFFF */
	refuses("\"\xf4\x90\x80\x80\"", "invalid UTF-8 sequence", 1);
	refuses("\"\xf5\x80\x80\x80\"", "invalid UTF-8 byte 0xf5", 1);
	refuses("\"\xff\xfe\"", "invalid UTF-8 byte 0xff", 1);
	refuses("\"\xe2\x82\"", "invalid UTF-8 sequence", 1);
	refuses("[\"ok\",\"\xe2\x82\xac\xe2\x82\"]", "invalid UTF-8 sequence", 10);
	/* outside strings no byte above 0x7F is JSON */
	refuses("\xc3\xa5", "unexpected byte 0xc3", 0);
	refuses("[1,\xef\xbb\xbf]", "unexpected byte 0xef", 3);
}

static void
test_strings(void)
{
	refuses("\"a\tb\"", "control character 0x09 in a string", 2);
	refuses("\"a\nb\"", "control character 0x0a in a string", 2);
	refuses_n("\"a\0b\"", 5, "control character 0x00 in a string", 2);
	refuses("\"\x1f\"", "control character 0x1f in a string", 1);
	refuses("\"\\x41\"", "invalid escape \\x", 1);
	refuses("\"\\a\"", "invalid escape \\a", 1);
	refuses("\"\\U00e5\"", "invalid escape \\U", 1);
	refuses("\"\\u00e\"", "\\u not followed by four hex digits", 1);
	refuses("\"\\u00eg\"", "\\u not followed by four hex digits", 1);
	refuses("\"\\u", "\\u not followed by four hex digits", 1);
	refuses("\"\\u0000\"", "\\u0000 is not allowed", 1);
	refuses("{\"a\\u0000\":1}", "\\u0000 is not allowed", 3);
	refuses("\"\\ud800\"", "high surrogate \\uD800 not followed by a low one", 1);
	refuses("\"\\uDBFFx\"", "high surrogate \\uDBFF not followed by a low one", 1);
	refuses("\"\\ud800\\u0041\"", "high surrogate \\uD800 not followed by a low one", 1);
	refuses("\"\\ud800\\ud800\"", "high surrogate \\uD800 not followed by a low one", 1);
	refuses("\"\\ud800\\n\"", "high surrogate \\uD800 not followed by a low one", 1);
	refuses("\"\\udc00\"", "low surrogate \\uDC00 without a high one before it", 1);
	refuses("\"\\udc00\\ud800\"", "low surrogate \\uDC00 without a high one before it", 1);
	refuses("\"x\\uDFFF\"", "low surrogate \\uDFFF without a high one before it", 2);
}

/* The member key of object text, with count, is value text. */
static void
member_is(const char *text, const char *key, const char *value, int count)
{
	BgJsonSpan	root;
	BgJsonSpan	found;
	int			n = -1;
	bool		present;

	if (!bg_json_validate(text, strlen(text), 64, &root, NULL, 0))
	{
		check(false, "test object refused: %s", text);
		return;
	}
	present = bg_json_member(&root, key, &found, &n);
	if (value == NULL)
		check(!present && n == 0, "%s: \"%s\" found (count %d)", text, key, n);
	else
		check(present && n == count && found.len == strlen(value) &&
			  memcmp(found.start, value, found.len) == 0,
			  "%s: \"%s\" is %s count %d, want %s count %d", text, key,
			  present ? show(found.start, found.len) : "absent", n, value, count);
}

static void
test_members(void)
{
	BgJsonSpan	root;
	BgJsonSpan	key;
	BgJsonSpan	value;
	BgJsonIter	it;
	const char *text = " { \"a\" : [ 1 , { \"b\" : \"}\" } ] ,\"c\":\"x\\\"]\" , \"d\" : null } ";
	const char *keys[] = {"a", "c", "d"};
	const char *values[] = {"[ 1 , { \"b\" : \"}\" } ]", "\"x\\\"]\"", "null"};
	const char *elements[] = {"1", "{}", "\"s\"", "true", "[[]]", "-1e5"};
	int			i = 0;

	member_is("{\"status\":\"OK\"}", "status", "\"OK\"", 1);
	member_is("{\"st\\u0061tus\":\"OK\"}", "status", "\"OK\"", 1);
	member_is("{\"status\":1,\"st\\u0061tus\":2}", "status", "1", 2);
	member_is("{\"a\":1,\"status\":2,\"b\":{\"status\":3},\"status\":4}", "status", "2", 2);
	member_is("{\"statu\":1,\"statuss\":2,\"Status\":3}", "status", NULL, 0);
	member_is("{\"\\u00e5r\":1}", "\xc3\xa5r", "1", 1);
	member_is("{\"\\ud834\\udd1e\":1}", "\xf0\x9d\x84\x9e", "1", 1);
	member_is("{\"a\\/b\":true}", "a/b", "true", 1);
	member_is("{\"a\\nb\":1}", "a\nb", "1", 1);
	member_is("{}", "a", NULL, 0);
	member_is("{\"\":5}", "", "5", 1);

	/* not an object: nothing */
	if (bg_json_validate("[\"a\",1]", 7, 64, &root, NULL, 0))
		check(!bg_json_member(&root, "a", &value, NULL), "an array has no members");

	/* iteration over whitespace, nesting and brackets inside strings */
	if (!bg_json_validate(text, strlen(text), 64, &root, NULL, 0))
	{
		check(false, "iteration test object refused");
		return;
	}
	bg_json_iter_init(&it, &root);
	while (bg_json_next_member(&it, &key, &value) && i < 3)
	{
		check(bg_json_string_equals(&key, keys[i]) &&
			  value.len == strlen(values[i]) &&
			  memcmp(value.start, values[i], value.len) == 0,
			  "member %d is %s: %s", i, show(key.start, key.len),
			  show(value.start, value.len));
		i++;
	}
	check(i == 3 && !bg_json_next_member(&it, &key, &value),
		  "%d members iterated, want 3", i);

	text = "[1,{},\"s\" , true,[[]],-1e5]";
	if (!bg_json_validate(text, strlen(text), 64, &root, NULL, 0))
	{
		check(false, "iteration test array refused");
		return;
	}
	i = 0;
	bg_json_iter_init(&it, &root);
	while (bg_json_next_element(&it, &value) && i < 6)
	{
		check(value.len == strlen(elements[i]) &&
			  memcmp(value.start, elements[i], value.len) == 0,
			  "element %d is %s", i, show(value.start, value.len));
		i++;
	}
	check(i == 6, "%d elements iterated, want 6", i);
	check(!bg_json_next_member(&it, &key, &value), "an exhausted iteration stays so");
}

/* Copying string text into dstlen bytes gives want. */
static void
copies(const char *text, size_t dstlen, const char *want)
{
	BgJsonSpan	s;
	char		buf[80];		/* room for the guard byte at buf[dstlen] */
	size_t		n;

	memset(buf, 'X', sizeof(buf));
	if (!bg_json_validate(text, strlen(text), 64, &s, NULL, 0))
	{
		check(false, "copy test string refused: %s", text);
		return;
	}
	n = bg_json_string_copy(&s, buf, dstlen);
	check(n == strlen(want) && strcmp(buf, want) == 0 && buf[dstlen] == 'X',
		  "%s into %zu bytes: \"%s\" (%zu), want \"%s\"", text, dstlen,
		  show(buf, n), n, show(want, strlen(want)));
}

static void
test_strings_read(void)
{
	BgJsonSpan	s;
	char		buf[8];

	copies("\"status\"", 64, "status");
	copies("\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"", 64, "a\"b\\c/d\n\t\r\b\f");
	copies("\"\\u00e5\\u20AC\\ud834\\udd1e\"", 64, "\xc3\xa5\xe2\x82\xac\xf0\x9d\x84\x9e");
	/* cut at character boundaries, raw and escaped alike */
	copies("\"a\xc3\xa5\xc3\xa4\"", 3, "a");
	copies("\"a\xc3\xa5\xc3\xa4\"", 4, "a\xc3\xa5");
	copies("\"a\xc3\xa5\xc3\xa4\"", 5, "a\xc3\xa5");
	copies("\"a\xc3\xa5\xc3\xa4\"", 6, "a\xc3\xa5\xc3\xa4");
	copies("\"a\\u00e5\\u00e4\"", 3, "a");
	copies("\"a\\u00e5\\u00e4\"", 4, "a\xc3\xa5");
	copies("\"\xe2\x82\xac\"", 3, "");
	copies("\"\\u20ac\\u20ac\"", 6, "\xe2\x82\xac");
	copies("\"x\xf0\x9d\x84\x9e\"", 5, "x");
	copies("\"x\\ud834\\udd1e\"", 5, "x");
	copies("\"x\\ud834\\udd1e\"", 6, "x\xf0\x9d\x84\x9e");
	copies("\"abc\"", 1, "");
	copies("\"\"", 64, "");

	/* a span that is not a string copies as "" and equals nothing */
	if (bg_json_validate("123", 3, 64, &s, NULL, 0))
	{
		check(bg_json_string_copy(&s, buf, sizeof(buf)) == 0 && buf[0] == '\0',
			  "a number copies as a string");
		check(!bg_json_string_equals(&s, "123"), "a number equals a string");
	}
	check(bg_json_string_copy(&s, buf, 0) == 0, "copy into 0 bytes");

	if (bg_json_validate("\"O\\u004b\"", 9, 64, &s, NULL, 0))
	{
		check(bg_json_string_equals(&s, "OK"), "\"O\\u004b\" is not OK");
		check(!bg_json_string_equals(&s, "O"), "\"O\\u004b\" equals a prefix");
		check(!bg_json_string_equals(&s, "OKK"), "\"O\\u004b\" equals a longer");
	}
}

/* bg_invoice_summary(text) is want (NULL: refused). */
static void
summary_is(const char *text, const char *want)
{
	char	   *got = bg_invoice_summary(text, strlen(text));

	if (want == NULL)
		check(got == NULL, "summary of %s: %s, want refused", show(text, strlen(text)),
			  got ? got : "");
	else
		check(got != NULL && strcmp(got, want) == 0,
			  "summary of %s:\n  got  %s\n  want %s", show(text, strlen(text)),
			  got ? got : "(refused)", want);
	free(got);
}

/*
 * The summary of tests/mock/example-response.json's data, checked by hand
 * against that file: the kept members in the summary's order, detailed_sums
 * whole, and the one event with its data.amount.  Nothing of the customer.
 */
static const char example_summary[] =
"{\"id\":\"2kAEEjE\",\"invoice_no\":1,\"state\":\"string\",\"currency\":\"SEK\","
"\"total_sum\":1,\"remaining_sum\":1,\"rounding_value\":1,"
"\"detailed_sums\":{\"credited_sum\":1,\"net_sum\":1,\"gross_sum\":1,"
"\"invoice_fee_vat\":1,\"paid_sum\":1,\"interest_fee\":1,\"vat_sum\":1,"
"\"reminder_fee\":1,\"invoice_fee\":1,\"rounding\":1,"
"\"regional_sweden\":{\"rotavdrag_sum\":1},\"collector_paid_sum\":1,"
"\"remaining_sum\":1},\"updated_at\":\"2026-04-29T11:19:15.647Z\","
"\"events\":[{\"type\":\"AutogiroFailed\",\"created_at\":\"string\","
"\"event_uuid\":\"123e4567-e89b-12d3-a456-426614174000\",\"amount\":1}]}";

static void
test_summary_example(const char *path)
{
	static char body[1 << 20];
	FILE	   *f = fopen(path, "rb");
	size_t		len;
	BgJsonSpan	root;
	BgJsonSpan	data;
	char	   *got;

	if (f == NULL)
	{
		check(false, "cannot open %s", path);
		return;
	}
	len = fread(body, 1, sizeof(body), f);
	fclose(f);
	if (!bg_json_validate(body, len, 64, &root, NULL, 0) ||
		!bg_json_member(&root, "data", &data, NULL))
	{
		check(false, "%s: no valid reply with data", path);
		return;
	}
	got = bg_invoice_summary(data.start, data.len);
	check(got != NULL && strcmp(got, example_summary) == 0,
		  "summary of the example:\n  got  %s\n  want %s", got ? got : "(refused)",
		  example_summary);
	check(got != NULL && strstr(got, "@") == NULL && strstr(got, "customer") == NULL,
		  "the summary holds customer data");
	free(got);
}

static void
test_summary_edges(void)
{
	summary_is("{}", "{\"events\":[]}");
	summary_is("{\"id\":\"a\"}", "{\"id\":\"a\",\"events\":[]}");
	summary_is("{\"id\":\"a\",\"events\":null}", "{\"id\":\"a\",\"events\":[]}");
	summary_is("{\"id\":\"a\",\"events\":{\"type\":\"x\"}}", "{\"id\":\"a\",\"events\":[]}");
	summary_is("{\"events\":[]}", "{\"events\":[]}");
	/* null members are left out, in the invoice and in events */
	summary_is("{\"id\":null,\"state\":\"Paid\",\"currency\":null}",
			   "{\"state\":\"Paid\",\"events\":[]}");
	summary_is("{\"events\":[{\"type\":null,\"created_at\":\"t\",\"data\":{\"amount\":null}}]}",
			   "{\"events\":[{\"created_at\":\"t\"}]}");
	/* events that are not objects are skipped; data that is not one has no amount */
	summary_is("{\"events\":[1,null,\"Payment\",[],{},{\"type\":\"Payment\",\"data\":[1]},"
			   "{\"type\":\"Payment\",\"data\":{\"amount\":-250.00,\"x\":1},\"billogram_id\":\"b\"}]}",
			   "{\"events\":[{},{\"type\":\"Payment\"},{\"type\":\"Payment\",\"amount\":-250.00}]}");
	/* amounts stay exactly as written, whatever their size */
	summary_is("{\"total_sum\":-1000.00,\"remaining_sum\":1e999,"
			   "\"rounding_value\":0.000000000000000000000001}",
			   "{\"total_sum\":-1000.00,\"remaining_sum\":1e999,"
			   "\"rounding_value\":0.000000000000000000000001,\"events\":[]}");
	/* whatever the order in the invoice, the summary's order */
	summary_is("{\"updated_at\":\"u\",\"name\":\"Anna\",\"id\":\"i\",\"events\":[],\"state\":\"s\"}",
			   "{\"id\":\"i\",\"state\":\"s\",\"updated_at\":\"u\",\"events\":[]}");
	/* first occurrence; escaped keys are the keys they spell */
	summary_is("{\"id\":\"first\",\"id\":\"second\",\"\\u0073tate\":\"s\"}",
			   "{\"id\":\"first\",\"state\":\"s\",\"events\":[]}");
	/* whitespace between tokens goes, whitespace in strings stays */
	summary_is(" {\n  \"detailed_sums\" : { \"a\" : [ 1 , 2 ] , \"b c\" : \" x \" } ,\n"
			   "  \"events\" : [ { \"type\" : \"P\" , \"data\" : { \"amount\" : 5 } } ]\n}\n",
			   "{\"detailed_sums\":{\"a\":[1,2],\"b c\":\" x \"},"
			   "\"events\":[{\"type\":\"P\",\"amount\":5}]}");
	/* escapes are kept as written */
	summary_is("{\"state\":\"a\\\"b\\u00e5\"}", "{\"state\":\"a\\\"b\\u00e5\",\"events\":[]}");
	/* not a valid object: refused */
	summary_is("[]", NULL);
	summary_is("\"id\"", NULL);
	summary_is("{\"id\":1", NULL);
	summary_is("{\"id\":\"\\u0000\"}", NULL);
	summary_is("", NULL);
}

int
main(int argc, char **argv)
{
	if (argc != 2)
	{
		fprintf(stderr, "usage: %s tests/mock/example-response.json\n", argv[0]);
		return 2;
	}
	test_valid();
	test_syntax();
	test_trailing();
	test_numbers();
	test_depth();
	test_utf8();
	test_strings();
	test_members();
	test_strings_read();
	test_summary_example(argv[1]);
	test_summary_edges();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
