/*
 * swift_demangle_stub.c: lets Debian's postgres start with libasan preloaded.
 *
 * With libasan in LD_PRELOAD, the sanitizer runtime initializes lazily, in
 * the first malloc() it sees.  Under Debian's postgres that malloc happens in
 * a library constructor (libgpg-error's, reached through libldap and gnutls)
 * while glibc holds its gettext lock inside bindtextdomain().  Part of ASan's
 * start-up is a dlsym() probe for swift_demangle; the failed lookup makes
 * dlerror() translate its message, which takes the same lock again, and the
 * process hangs before main().
 *
 * Preloaded after libasan, this library makes the probe succeed, so nothing
 * is translated during ASan's start-up.  The sanitizer calls the function only
 * for Swift-mangled names; returning NULL means "not demangled".
 */
#include <stddef.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len,
						   char *out, size_t *out_len, unsigned int flags);

char *
swift_demangle(const char *mangled, size_t mangled_len,
			   char *out, size_t *out_len, unsigned int flags)
{
	return NULL;
}
