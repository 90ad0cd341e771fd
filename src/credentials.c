/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  The secrets: the Billogram API password, read from
 *	  billogram.api_password_file, and the callback sign key, read from
 *	  billogram.callback_sign_key_file.
 *
 * A secret is never a setting's value.  A value is read by superusers
 * (pg_file_settings, and pg_read_file() on postgresql.conf), setting it with
 * ALTER SYSTEM puts it in a statement's text, which pg_stat_activity,
 * pg_stat_statements and the log may show, and a copy of the data directory
 * carries postgresql.auto.conf along.  Masking such a value in the log made
 * things worse: any role could log a list of guesses and see which came back
 * masked.  So the settings that held the secrets are gone (guc.c refuses
 * them), and each secret is in a file, outside the data directory, that
 * only the server's OS user can read; a setting names the file.
 *
 * The password is read by the worker only, the one process that sends
 * requests, when it starts and on every reload.  The sign key is read by
 * the backend verifying a callback, at each verification: that is one small
 * read per callback, a new key applies at once, and no backend keeps a copy.
 *
 * A file must be private, by the rule PostgreSQL applies to its TLS key:
 * owned by the server's user with no access for group or others, or owned
 * by root and at most group-readable.  A file that breaks the rule, cannot
 * be read or holds a too-short secret is not used: without a password the
 * worker refuses calls before sending anything and keeps queued payments
 * waiting; without a sign key no callback is verified.  Nothing falls back
 * silently to another credential.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils/memutils.h"

#include "credentials.h"
#include "guc.h"

/* Larger files do not hold a secret. */
#define BG_SECRET_FILE_MAX		4096

/* The file's password; NULL when it could not be used or is not set. */
static char *file_password = NULL;

const char *
bg_api_password_in_use(void)
{
	return file_password ? file_password : "";
}

void
bg_forget_secret(char *secret)
{
	if (secret)
	{
		explicit_bzero(secret, strlen(secret));
		pfree(secret);
	}
}

static void
forget_file_password(void)
{
	bg_forget_secret(file_password);
	file_password = NULL;
}

/* NULL if the file's owner and mode keep it private, else why not. */
static const char *
file_not_private(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "it is not a regular file";
	if (st->st_uid == geteuid())
	{
		if (st->st_mode & (S_IRWXG | S_IRWXO))
			return "group or other users can access it (use chmod 600)";
		return NULL;
	}
	if (st->st_uid == 0)
	{
		if (st->st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))
			return "other users can access it, or its group can write it (use chmod 640)";
		return NULL;
	}
	return "it is owned neither by the server's user nor by root";
}

/*
 * Read the file's first line into a string palloc'd in the current memory
 * context; NULL with *why set when it cannot be used.
 */
static char *
read_secret(const char *path, const char **why)
{
	char		buf[BG_SECRET_FILE_MAX + 2];
	struct stat st;
	ssize_t		n = 0;
	size_t		len;
	int			fd;
	char	   *result;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		*why = strerror(errno);
		return NULL;
	}
	if (fstat(fd, &st) != 0)
		*why = strerror(errno);
	else if ((*why = file_not_private(&st)) == NULL)
	{
		n = read(fd, buf, BG_SECRET_FILE_MAX + 1);
		if (n < 0)
			*why = strerror(errno);
		else if (n > BG_SECRET_FILE_MAX)
			*why = "it is too large to hold a secret";
	}
	close(fd);
	if (*why)
		return NULL;

	/* the first line, without its line end or trailing blanks */
	buf[n] = '\0';
	len = strcspn(buf, "\r\n");
	while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	buf[len] = '\0';
	if (len < BG_SECRET_MIN_LEN)
	{
		explicit_bzero(buf, sizeof(buf));
		*why = psprintf("it holds fewer than %d characters", BG_SECRET_MIN_LEN);
		return NULL;
	}
	result = pstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return result;
}

void
bg_load_password_file(void)
{
	const char *why = NULL;
	char	   *password;
	MemoryContext old;

	forget_file_password();
	if (bg_api_password_file == NULL || bg_api_password_file[0] == '\0')
		return;

	/* kept until the next reload */
	old = MemoryContextSwitchTo(TopMemoryContext);
	password = read_secret(bg_api_password_file, &why);
	MemoryContextSwitchTo(old);
	file_password = password;
	if (password == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("billogram: the password file \"%s\" is not used: %s",
						bg_api_password_file, why),
				 errdetail("No request is sent until the file is fixed and the configuration reloaded: calls fail with SQLSTATE 55000 and queued payments wait.")));
}

char *
bg_read_callback_sign_key(void)
{
	const char *why = NULL;
	char	   *key;

	if (bg_callback_sign_key_file == NULL || bg_callback_sign_key_file[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram.callback_sign_key_file is not set"),
				 errhint("Write the sign key of the Billogram account to a file only the server's user can read, name it in billogram.callback_sign_key_file in postgresql.conf, then reload.")));
	key = read_secret(bg_callback_sign_key_file, &why);

	/*
	 * The path and the reason go to the log only: the caller need not be a
	 * superuser, and the setting is superuser-only.
	 */
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the file named by billogram.callback_sign_key_file could not be used"),
				 errdetail_log("The sign key file \"%s\" is not used: %s.",
							   bg_callback_sign_key_file, why),
				 errhint("The server log says why.")));
	return key;
}
