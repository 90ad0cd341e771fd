/*-------------------------------------------------------------------------
 *
 * schema.h
 *	  The version of the extension's SQL objects this library is written
 *	  for.
 *
 * A header of its own, so that what only needs to name the version (the
 * reports of a journal not installed) does not include the journal's.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_SCHEMA_H
#define BILLOGRAM_SCHEMA_H

/*
 * The journal's schema version this library's statements are written for:
 * in a database whose extension is at another version the queue is not
 * served and nothing is journaled, until ALTER EXTENSION billogram UPDATE.
 */
#define BG_SCHEMA_VERSION	"0.3"

#endif							/* BILLOGRAM_SCHEMA_H */
