/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  The Billogram API password read from billogram.api_password_file.
 *
 * A password in postgresql.conf is safe from SQL (guc.c masks it), but
 * setting it with ALTER SYSTEM puts it in a statement's text, which
 * pg_stat_activity, pg_stat_statements and the log may show, and a copy of
 * the data directory carries it along.  A file outside the data directory,
 * readable only by the server's OS user, avoids both: it is named by a
 * setting, and only the worker, the one process that sends requests, reads
 * it, when it starts and on every reload.
 *
 * The file must be private, by the rule PostgreSQL applies to its TLS key:
 * owned by the server's user with no access for group or others, or owned
 * by root and at most group-readable.  A file that breaks the rule, cannot
 * be read or holds a too-short password is not used, with a WARNING: the
 * worker then has no password, refuses calls before sending anything and
 * keeps queued payments waiting, rather than falling back silently to
 * another credential.
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

/* Larger files are not password files. */
#define BG_PASSWORD_FILE_MAX	4096

/* The file's password; NULL when it could not be used or is not set. */
static char *file_password = NULL;

const char *
bg_api_password_in_use(void)
{
	if (bg_api_password_file && bg_api_password_file[0] != '\0')
		return file_password ? file_password : "";
	return bg_api_password ? bg_api_password : "";
}

static void
forget_file_password(void)
{
	if (file_password)
	{
		explicit_bzero(file_password, strlen(file_password));
		pfree(file_password);
		file_password = NULL;
	}
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
 * Read the file's first line into a palloc'd string; NULL with *why set
 * when it cannot be used.
 */
static char *
read_password(const char *path, const char **why)
{
	char		buf[BG_PASSWORD_FILE_MAX + 2];
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
		n = read(fd, buf, BG_PASSWORD_FILE_MAX + 1);
		if (n < 0)
			*why = strerror(errno);
		else if (n > BG_PASSWORD_FILE_MAX)
			*why = "it is too large to be a password file";
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
	if (len < BG_PASSWORD_MIN_LEN)
	{
		explicit_bzero(buf, sizeof(buf));
		*why = psprintf("it holds fewer than %d characters", BG_PASSWORD_MIN_LEN);
		return NULL;
	}
	result = MemoryContextStrdup(TopMemoryContext, buf);
	explicit_bzero(buf, sizeof(buf));
	return result;
}

void
bg_load_password_file(void)
{
	const char *why = NULL;
	char	   *password;

	if (bg_api_password_file == NULL || bg_api_password_file[0] == '\0')
	{
		forget_file_password();
		return;
	}
	password = read_password(bg_api_password_file, &why);
	forget_file_password();
	file_password = password;
	if (password == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("billogram: the password file \"%s\" is not used: %s",
						bg_api_password_file, why),
				 errdetail("No request is sent until the file is fixed and the configuration reloaded: calls fail with SQLSTATE 55000 and queued payments wait.")));
}
