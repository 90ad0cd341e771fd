/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Definitions of the billogram.* settings.
 *
 * The API's URL, user and CA file are PGC_SIGHUP: the worker, the only
 * process that uses them, picks them up on pg_reload_conf().  The secrets,
 * the API password and the callback sign key, are no setting's value: two
 * settings name the files that hold them (credentials.c), and the settings
 * that held them until 0.2 refuse any value (check_removed_secret()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"
#include "utils/memutils.h"

#include "guc.h"

char	   *bg_api_url = NULL;
char	   *bg_api_user = NULL;
char	   *bg_ca_file = NULL;
char	   *bg_database = NULL;
int			bg_timeout_ms = 30000;
int			bg_max_connections = 8;
int			bg_max_response_kb = 16 * 1024;
int			bg_retry_for_s = 6 * 3600;
bool		bg_allow_insecure_http = false;
char	   *bg_api_password_file = NULL;
char	   *bg_callback_sign_key_file = NULL;
int			bg_callback_max_age_s = 300;
int			bg_settle_time_s = 60;
int			bg_journal_reply = BG_JOURNAL_REPLY_SUMMARY;

/* the removed secret settings' storage: always empty, never read */
static char *removed_api_password = NULL;
static char *removed_callback_sign_key = NULL;

static const struct config_enum_entry journal_reply_options[] = {
	{"summary", BG_JOURNAL_REPLY_SUMMARY, false},
	{"full", BG_JOURNAL_REPLY_FULL, false},
	{"none", BG_JOURNAL_REPLY_NONE, false},
	{NULL, 0, false}
};

const char *
bg_journal_reply_name(void)
{
	return journal_reply_options[bg_journal_reply].name;
}

/*
 * billogram.api_password and billogram.callback_sign_key held the secrets
 * until 0.2.  They stay defined, so that a value still set anywhere
 * (postgresql.conf, ALTER SYSTEM, ALTER DATABASE or ROLE ... SET, SET) is
 * refused with a message naming the file setting to use instead, rather
 * than with the bare "invalid configuration parameter name" of a reserved
 * prefix.  Any value but the empty one is refused, so none is ever kept or
 * used.  A refusal is an ERROR in a statement (redact.c keeps the
 * statement, which quotes the secret, out of the log); in a configuration
 * file it is a WARNING at start and a LOG line on reload, the other
 * settings apply and the server goes on, and the worker, with no password
 * file, refuses to send.  The messages never quote the value.
 */
static bool
check_removed_secret(const char *value, const char *setting,
					 const char *file_setting, const char *what)
{
	if (value == NULL || value[0] == '\0')
		return true;
	GUC_check_errmsg("%s" BG_REMOVED_SECRET_MSG, setting);
	GUC_check_errdetail("The %s is read only from the file named by %s; the value given was not used.",
						what, file_setting);
	GUC_check_errhint("Write the %s to a file outside the data directory, owned by the server's user with mode 0600, "
					  "set %s to its path in postgresql.conf, remove %s from every configuration, then reload.",
					  what, file_setting, setting);
	return false;
}

static bool
check_api_password(char **newval, void **extra, GucSource source)
{
	return check_removed_secret(*newval, "billogram.api_password",
								"billogram.api_password_file", "API password");
}

static bool
check_callback_sign_key(char **newval, void **extra, GucSource source)
{
	return check_removed_secret(*newval, "billogram.callback_sign_key",
								"billogram.callback_sign_key_file", "callback sign key");
}

/*
 * Only https: credentials and money must not cross the network in clear.
 * http:// is accepted only while billogram.allow_insecure_http is on; the
 * worker checks again before each request, since the order in which a
 * reload applies the two settings is not defined.
 */
static bool
check_api_url(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && pg_strncasecmp(*newval, "https://", 8) == 0)
		return true;
	if (*newval != NULL && pg_strncasecmp(*newval, "http://", 7) == 0 &&
		bg_allow_insecure_http)
		return true;
	GUC_check_errdetail("The Billogram API URL must start with https://.");
	GUC_check_errhint("For local testing only, a superuser can allow http:// with billogram.allow_insecure_http.");
	return false;
}

void
bg_define_settings(bool preloading)
{
	/*
	 * A PGC_POSTMASTER setting can only be defined while the postmaster
	 * loads the library; a backend loading it later must not try.
	 */
	if (preloading)
		DefineCustomStringVariable("billogram.database",
								   "Database the billogram background worker connects to.",
								   NULL,
								   &bg_database,
								   "postgres",
								   PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);

	/* defined first: the URL's check reads it */
	DefineCustomBoolVariable("billogram.allow_insecure_http",
							 "Allows a plain http:// API URL, for local testing only.",
							 "Credentials and payments then cross the network unencrypted.",
							 &bg_allow_insecure_http,
							 false,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("billogram.api_url",
							   "Base URL of the Billogram API.",
							   "For example https://billogram.com/api/v2 for production.",
							   &bg_api_url,
							   "https://sandbox.billogram.com/api/v2",
							   PGC_SIGHUP, 0,
							   check_api_url, NULL, NULL);

	DefineCustomStringVariable("billogram.api_user",
							   "Billogram API user id, used for HTTP Basic authentication.",
							   NULL,
							   &bg_api_user,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("billogram.api_password_file",
							   "File holding the Billogram API password, read by the worker at start and on reload.",
							   "Owned by the server's user with mode 0600 (or by root, at most 0640), "
							   "else not used. The password is never a setting's value.",
							   &bg_api_password_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/*
	 * PGC_USERSET, so that its check runs, and names the file setting, for
	 * SET and ALTER ROLE ... SET too; it accepts nothing but "".
	 */
	DefineCustomStringVariable("billogram.api_password",
							   "Removed: the API password is read from billogram.api_password_file.",
							   "Any value but the empty one is refused.",
							   &removed_api_password,
							   "",
							   PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_api_password, NULL, NULL);

	DefineCustomEnumVariable("billogram.journal_reply",
							 "What billogram_requests keeps of the invoice a reply carries.",
							 "summary: the invoice's id, number, state, currency, sums and update time, and every event's type, time, uuid and amount; "
							 "full: the whole invoice, customers' personal data included; none: nothing.",
							 &bg_journal_reply,
							 BG_JOURNAL_REPLY_SUMMARY,
							 journal_reply_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("billogram.ca_file",
							   "CA certificates that verify the API's TLS certificate, instead of the system's.",
							   "Empty means the system's CA certificates.",
							   &bg_ca_file,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("billogram.timeout",
							"Time limit for one call to the Billogram API.",
							"From the call on: waiting for a free connection, connecting, "
							"sending and receiving the whole reply.",
							&bg_timeout_ms,
							30000, 1, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("billogram.max_connections",
							"Largest number of connections, and so of requests in flight, "
							"that the worker keeps to the API.",
							NULL,
							&bg_max_connections,
							8, 1, 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("billogram.max_response_size",
							"Largest reply body accepted from the API.",
							"A larger reply is refused as unusable (SQLSTATE BG001).",
							&bg_max_response_kb,
							16 * 1024, 64, (int) (MaxAllocSize / 1024) - 1,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("billogram.retry_for",
							"How long a queued payment that did not reach Billogram is tried again before it is marked failed.",
							"Counted from when it was queued (or resent, or released). Only requests that "
							"provably did not reach Billogram, or that Billogram asked to retry (429, 503), "
							"are tried again, with backoff from 1 s to 5 min.",
							&bg_retry_for_s,
							6 * 3600, 1, 30 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("billogram.settle_time",
							"How long after an in_doubt payment's request ended its invoice is watched before \"not applied\" is concluded.",
							"An invoice that shows no sign of the payment this long after the request ended "
							"(timed out, cut, or the worker found stopped) is "
							"taken as evidence that it did not arrive; the row stays in_doubt for an operator.",
							&bg_settle_time_s,
							60, 1, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("billogram.callback_sign_key_file",
							   "File holding the sign key of the Billogram account, which callbacks are signed with.",
							   "Read at each verification; owned by the server's user with mode 0600 "
							   "(or by root, at most 0640), else not used.",
							   &bg_callback_sign_key_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/* as billogram.api_password */
	DefineCustomStringVariable("billogram.callback_sign_key",
							   "Removed: the callback sign key is read from billogram.callback_sign_key_file.",
							   "Any value but the empty one is refused.",
							   &removed_callback_sign_key,
							   "",
							   PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   check_callback_sign_key, NULL, NULL);

	DefineCustomIntVariable("billogram.callback_max_age",
							"How far a callback's timestamp may be from now and still be accepted.",
							"Older (or later) callbacks are refused, so that a captured one cannot be replayed.",
							&bg_callback_max_age_s,
							300, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("billogram");
}
