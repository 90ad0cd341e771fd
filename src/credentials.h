/*-------------------------------------------------------------------------
 *
 * credentials.h
 *	  The API password: where it comes from and how it is kept out of sight.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_CREDENTIALS_H
#define BILLOGRAM_CREDENTIALS_H

/* Shorter passwords are refused; see check_api_password() in guc.c. */
#define BG_PASSWORD_MIN_LEN		12

/* What SHOW, current_setting() and the log show instead of the password. */
#define BG_PASSWORD_MASK		"********"

/*
 * The password requests are sent with: the content of
 * billogram.api_password_file when that is set (only the worker reads it),
 * else billogram.api_password.  Never NULL.
 */
extern const char *bg_api_password_in_use(void);

/* Worker: (re)read billogram.api_password_file, at start and on reload. */
extern void bg_load_password_file(void);

#endif							/* BILLOGRAM_CREDENTIALS_H */
