/*-------------------------------------------------------------------------
 *
 * credentials.h
 *	  The secrets, the API password and the callback sign key: each read
 *	  from a private file, never from a setting's value.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_CREDENTIALS_H
#define BILLOGRAM_CREDENTIALS_H

/* A shorter secret is refused: it is easy to guess. */
#define BG_SECRET_MIN_LEN		12

/*
 * The password requests are sent with: the content of
 * billogram.api_password_file as the worker last read it, or "" when the
 * file is not set or could not be used.  Never NULL.
 */
extern const char *bg_api_password_in_use(void);

/* Worker: (re)read billogram.api_password_file, at start and on reload. */
extern void bg_load_password_file(void);

/*
 * The callback sign key from billogram.callback_sign_key_file, read now,
 * palloc'd; ERROR (55000) when the file is not set or cannot be used.
 * Hand it back to bg_forget_secret() when done.
 */
extern char *bg_read_callback_sign_key(void);

/* Overwrite and free a secret. */
extern void bg_forget_secret(char *secret);

#endif							/* BILLOGRAM_CREDENTIALS_H */
