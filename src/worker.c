/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The billogram background worker: the only process that talks to the
 *	  Billogram API.
 *
 * Registered by the postmaster when the library is preloaded, it takes the
 * requests that backends submit through the channel, runs up to
 * billogram.max_connections of them at once on the HTTP engine, and posts
 * each outcome back.  It does not run during recovery, so a hot standby
 * sends nothing.
 *
 * On SIGTERM it stops taking requests, lets the ones in flight finish (each
 * is bounded by its timeout) so their callers get a real answer, and exits;
 * whatever is still submitted is answered "not sent".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"

#include "channel.h"
#include "guc.h"
#include "http.h"
#include "report.h"
#include "worker.h"

/* Seconds before the postmaster restarts a worker that exited with error. */
#define BG_WORKER_RESTART_SECS	5

void
bg_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BG_WORKER_RESTART_SECS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "billogram");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "billogram_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "billogram worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "billogram worker");
	RegisterBackgroundWorker(&worker);
}

static void
start_submitted_requests(void)
{
	BgTakenRequest taken;

	while (bg_http_can_start() && bg_channel_take(&taken))
		bg_http_start_credit_payment(taken.slotno, &taken.payment,
									 taken.timeout_ms);
}

void
billogram_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bg_database, NULL, 0);
	pgstat_report_appname("billogram worker");

	bg_channel_attach_worker();
	bg_http_init(bg_channel_post_reply);
	ereport(LOG,
			(errmsg("billogram worker started, API at %s", bg_api_url)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bg_http_settings_changed();
		}

		if (ShutdownRequestPending)
		{
			if (bg_http_in_flight() == 0)
				break;
		}
		else
			start_submitted_requests();

		(void) bg_http_wait();
	}

	ereport(LOG, (errmsg("billogram worker shutting down")));
	/* exit code 1: the postmaster restarts us unless it is shutting down */
	proc_exit(1);
}
