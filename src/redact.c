/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeping billogram.api_password out of the server log.
 *
 * PostgreSQL itself logs "parameter ... changed to <value>" when a reload
 * changes a setting, whatever the setting's flags, and a logged statement
 * can quote the password too.  An emit_log_hook, installed in every process
 * that loads the library (the postmaster included, through
 * shared_preload_libraries), masks the password wherever a message would
 * carry it, before the message reaches the log or the client.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "credentials.h"
#include "guc.h"
#include "redact.h"


static emit_log_hook_type prev_emit_log_hook = NULL;

/* Copy of text with every occurrence of secret masked; NULL if none. */
static char *
masked(const char *text, const char *secret)
{
	StringInfoData buf;
	size_t		len = strlen(secret);
	const char *hit;

	if (text == NULL || (hit = strstr(text, secret)) == NULL)
		return NULL;

	initStringInfo(&buf);
	while (hit != NULL)
	{
		appendBinaryStringInfo(&buf, text, hit - text);
		appendStringInfoString(&buf, BG_PASSWORD_MASK);
		text = hit + len;
		hit = strstr(text, secret);
	}
	appendStringInfoString(&buf, text);
	return buf.data;
}

static void
mask_field(char **field, const char *secret)
{
	char	   *m = masked(*field, secret);

	if (m)
		*field = m;
}

/* Mask one secret wherever a message could carry it. */
static void
mask_secret(ErrorData *edata, const char *secret)
{
	/*
	 * Only a secret of the minimum length is looked for: that is the only
	 * kind in use (shorter ones are refused), and a short string would be
	 * found inside ordinary words.
	 */
	if (secret == NULL || strlen(secret) < BG_PASSWORD_MIN_LEN)
		return;
	mask_field(&edata->message, secret);
	mask_field(&edata->detail, secret);
	mask_field(&edata->detail_log, secret);
	mask_field(&edata->hint, secret);
	mask_field(&edata->context, secret);
	mask_field(&edata->internalquery, secret);
	if (debug_query_string && strstr(debug_query_string, secret))
		edata->hide_stmt = true;
}

/* The reload message carries the new value: never show it. */
static void
hide_reloaded_value(ErrorData *edata, const char *setting)
{
	char	   *quoted = psprintf("\"%s\"", setting);

	if (edata->message_id &&
		strcmp(edata->message_id, "parameter \"%s\" changed to \"%s\"") == 0 &&
		edata->message && strstr(edata->message, quoted))
		edata->message = psprintf("parameter %s changed", quoted);
	pfree(quoted);
}

static void
redact_secrets(ErrorData *edata)
{
	hide_reloaded_value(edata, "billogram.api_password");
	hide_reloaded_value(edata, "billogram.callback_sign_key");
	mask_secret(edata, bg_api_password_in_use());
	mask_secret(edata, bg_callback_sign_key);

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
bg_install_log_redaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_secrets;
}
