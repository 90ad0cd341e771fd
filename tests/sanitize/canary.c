/*
 * canary.c: a deliberately faulty module for the sanitizer run.
 *
 * tests/t/008_sanitizer.pl loads it into a server started exactly as the
 * suite starts its servers and checks that each fault is reported and kills
 * the backend.  If that stopped happening, a clean sanitizer run would prove
 * nothing, so the canary keeps the run honest.  Built with the extension's
 * sanitizer flags; never installed.
 */
#include "postgres.h"

#include "fmgr.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(canary_heap_overflow);
PG_FUNCTION_INFO_V1(canary_int_overflow);

/* Read one byte past a malloc'd buffer: AddressSanitizer must stop this. */
Datum
canary_heap_overflow(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	volatile char *buf = malloc(n);
	char		c;

	memset((char *) buf, 'x', n);
	c = buf[n];
	free((char *) buf);
	PG_RETURN_INT32(c);
}

/* Signed overflow: UndefinedBehaviorSanitizer must stop this. */
Datum
canary_int_overflow(PG_FUNCTION_ARGS)
{
	volatile int32 a = PG_GETARG_INT32(0);

	PG_RETURN_INT32(a + 1);
}
