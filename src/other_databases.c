/*-------------------------------------------------------------------------
 *
 * other_databases.c
 *	  At the worker's start, a look at every other database for payments
 *	  that no worker will send.
 *
 * The worker serves the journal of billogram.database alone.  When that
 * setting changes, or the extension is created in a second database,
 * payments queued in another database stay pending for good, and nothing
 * said so.  A background worker connects to one database for its whole
 * life, so the worker starts one short-lived "billogram database check"
 * per other database, one after the other; each finds the extension's
 * journal there from the catalogs, counts its pending rows and warns in the
 * server log if there are any.
 *
 * The check runs as the bootstrap superuser: it reads the journal table the
 * extension's own catalog entry names, with search_path limited to
 * pg_catalog, and runs nothing a database user could have created
 * (a SELECT fires no trigger; row security does not apply to superusers).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "guc.h"
#include "journal.h"
#include "other_databases.h"
#include "worker.h"

PGDLLEXPORT void billogram_database_check_main(Datum main_arg);

/* The databases a check may connect to, other than the worker's own. */
static List *
other_databases(void)
{
	List	   *oids = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (db->oid != MyDatabaseId && db->datallowconn && !db->datistemplate)
			oids = lappend_oid(oids, db->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return oids;
}

/* Start the check of one database and wait for it to end. */
static void
check_one(Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	bg_describe_worker(&worker, "billogram_database_check_main",
					   "billogram database check");
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(LOG,
				(errmsg("billogram: could not look for pending payments in other databases"),
				 errhint("Raise max_worker_processes.")));
		return;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_STARTED)
		(void) WaitForBackgroundWorkerShutdown(handle);
	pfree(handle);
}

void
bg_check_other_databases(void)
{
	ListCell   *lc;

	foreach(lc, other_databases())
		check_one(lfirst_oid(lc));
}

/* Count the pending rows of this database's journal, if it has one. */
static int64
pending_rows(BgJournal *journal)
{
	bool		isnull;
	Datum		count;
	int			rc;

	if (bg_journal_lookup(journal) != BG_JOURNAL_READY)
		return 0;
	rc = SPI_execute(psprintf("SELECT count(*) FROM %s WHERE state = 'pending'",
							  journal->name), true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "billogram: counting pending payments failed: %s",
			 SPI_result_code_string(rc));
	count = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(count);
}

void
billogram_database_check_main(Datum main_arg)
{
	BgJournal	journal;
	int64		pending;

	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
	pgstat_report_appname("billogram database check");
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pending = pending_rows(&journal);
	if (pending > 0)
		ereport(WARNING,
				(errmsg("billogram: database \"%s\" holds %lld pending payments that no worker sends",
						get_database_name(MyDatabaseId), (long long) pending),
				 errdetail("The billogram worker serves database \"%s\" (billogram.database) only.",
						   bg_database),
				 errhint("Set billogram.database to \"%s\" until they are sent, or resolve them there.",
						 get_database_name(MyDatabaseId))));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	proc_exit(0);
}
