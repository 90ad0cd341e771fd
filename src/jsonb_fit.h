/*-------------------------------------------------------------------------
 *
 * jsonb_fit.h
 *	  Whether Billogram's JSON text can become jsonb in this database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_JSONB_FIT_H
#define BILLOGRAM_JSONB_FIT_H

#include <stddef.h>

/*
 * NULL when the valid UTF-8 JSON text utf8[0..len) can be converted to the
 * database's encoding and parsed as jsonb; otherwise, palloc'd, what in it
 * cannot ("the escape \u0000", "a character LATIN1 cannot hold").  Raises
 * no error, so that a caller whose payment went through can say so first.
 */
extern char *bg_jsonb_obstacle(const char *utf8, size_t len);

#endif							/* BILLOGRAM_JSONB_FIT_H */
