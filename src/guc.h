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
extern char *bg_api_password;
extern char *bg_ca_file;
extern char *bg_database;
extern int	bg_timeout_ms;
extern int	bg_max_connections;
extern int	bg_max_response_kb;
extern int	bg_max_attempts;
extern bool bg_allow_insecure_http;

extern void bg_define_settings(bool preloading);

#endif							/* BILLOGRAM_GUC_H */
