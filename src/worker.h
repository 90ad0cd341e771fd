/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The billogram background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_WORKER_H
#define BILLOGRAM_WORKER_H

extern void bg_register_worker(void);

extern PGDLLEXPORT void billogram_worker_main(Datum main_arg);

#endif							/* BILLOGRAM_WORKER_H */
