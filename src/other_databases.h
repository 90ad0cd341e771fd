/*-------------------------------------------------------------------------
 *
 * other_databases.h
 *	  The worker's look at other databases for payments nobody sends.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_OTHER_DATABASES_H
#define BILLOGRAM_OTHER_DATABASES_H

/*
 * Start one short-lived background worker per other database, in turn,
 * each warning in the server log if its journal holds pending rows.  Called
 * by the worker once, at start.
 */
extern void bg_check_other_databases(void);

#endif							/* BILLOGRAM_OTHER_DATABASES_H */
