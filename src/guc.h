/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  The billogram.* settings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_GUC_H
#define BILLOGRAM_GUC_H

extern char *bg_api_url;
extern char *bg_api_user;
extern char *bg_ca_file;
extern char *bg_database;
extern int	bg_timeout_ms;
extern int	bg_max_connections;
extern int	bg_max_response_kb;
extern int	bg_retry_for_s;
extern bool bg_allow_insecure_http;
extern char *bg_api_password_file;
extern char *bg_callback_sign_key_file;
extern int	bg_callback_max_age_s;
extern int	bg_settle_time_s;

/*
 * How the refusal of a removed secret setting (billogram.api_password,
 * billogram.callback_sign_key) goes on after the setting's name; redact.c
 * recognises the message by it.
 */
#define BG_REMOVED_SECRET_MSG	" is no longer a setting"

/* billogram.journal_reply: what the journal keeps of an invoice */
typedef enum BgJournalReply
{
	BG_JOURNAL_REPLY_SUMMARY,	/* id, state, sums, currency, recent events */
	BG_JOURNAL_REPLY_FULL,		/* the whole invoice, personal data included */
	BG_JOURNAL_REPLY_NONE
} BgJournalReply;

extern int	bg_journal_reply;
extern const char *bg_journal_reply_name(void);

extern void bg_define_settings(bool preloading);

#endif							/* BILLOGRAM_GUC_H */
