/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The billogram background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_WORKER_H
#define BILLOGRAM_WORKER_H

#include "postmaster/bgworker.h"

extern void bg_describe_worker(BackgroundWorker *worker, const char *function,
							   const char *name);
extern void bg_register_worker(void);

extern PGDLLEXPORT void billogram_worker_main(Datum main_arg);

#endif							/* BILLOGRAM_WORKER_H */
