/*-------------------------------------------------------------------------
 *
 * credentials.h
 *	  The API password: where it comes from and how it is kept out of sight.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_CREDENTIALS_H
#define BILLOGRAM_CREDENTIALS_H

/*
 * The password requests are sent with: the content of
 * billogram.api_password_file when that is set (only the worker reads it),
 * else billogram.api_password.  Never NULL.
 */
extern const char *bg_api_password_in_use(void);

/* Worker: (re)read billogram.api_password_file, at start and on reload. */
extern void bg_load_password_file(void);

#endif							/* BILLOGRAM_CREDENTIALS_H */
