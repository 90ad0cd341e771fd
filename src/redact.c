/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeping a refused secret's statement out of the server log.
 *
 * No secret is a setting's value any more (credentials.c), so there is
 * nothing to mask in log messages.  Masking the secrets in use, as 0.2 did,
 * was an oracle: any role could log a list of guesses and see which came
 * back masked.  What remains is not one: when a statement such as
 * ALTER SYSTEM SET billogram.api_password = '...' is refused (guc.c), its
 * ERROR would log the statement, which quotes the very secret someone just
 * tried to set, under log_min_error_statement, and its context quotes the
 * statement when a function ran it.  The hook hides the statement and drops
 * the context and internal query of that refusal, recognised by its message
 * alone and whatever the value: it reads no secret, and the statement is
 * one the client sent itself, so no one learns anything from it.  (log_statement logs
 * statements before they run; the README says never to type a secret in
 * SQL.)  The Authorization header needs nothing here: libcurl logs nothing
 * unless CURLOPT_VERBOSE is set, which the extension never does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/elog.h"

#include "guc.h"
#include "redact.h"


static emit_log_hook_type prev_emit_log_hook = NULL;

static void
hide_refused_secret_statement(ErrorData *edata)
{
	if (edata->message != NULL &&
		strncmp(edata->message, "billogram.", strlen("billogram.")) == 0 &&
		strstr(edata->message, BG_REMOVED_SECRET_MSG) != NULL)
	{
		edata->hide_stmt = true;
		edata->context = NULL;
		edata->internalquery = NULL;
		edata->internalpos = 0;
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
bg_install_log_redaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = hide_refused_secret_statement;
}
