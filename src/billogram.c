/*-------------------------------------------------------------------------
 *
 * billogram.c
 *	  Module entry point: settings, shared memory and the worker.
 *
 * The settings exist in every process that loads the library, so that
 * SET billogram.timeout works anywhere.  Shared memory and the worker exist
 * only when the library is in shared_preload_libraries; without it the SQL
 * functions fail with a hint saying so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "channel.h"
#include "guc.h"
#include "metrics.h"
#include "redact.h"
#include "source_row.h"
#include "stats.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	bg_define_settings(process_shared_preload_libraries_in_progress);
	bg_install_log_redaction();
	bg_row_moves_install_hook();

	if (!process_shared_preload_libraries_in_progress)
		return;

	bg_channel_install_hooks();
	bg_stats_install_hooks();
	bg_metrics_install_hooks();
	bg_register_worker();
}
