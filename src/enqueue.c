/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  Queued credit payments: billogram_enqueue_credit_payment(), and the
 *	  insert of a pending row that it and the trigger (trigger.c) share.
 *
 * Both only insert a 'pending' row into billogram_requests inside the
 * caller's transaction: a payment exists, and will be sent, if and only if
 * that transaction commits.  At commit the worker is woken through its latch,
 * so the happy path has no polling delay.
 *
 * Who may queue: the functions are SECURITY INVOKER, so that the journal
 * records the caller's own roles; only the insert itself runs as the
 * journal's owner, with a pinned search_path.  EXECUTE on
 * billogram_enqueue_credit_payment() is checked by the executor; the
 * trigger checks its own (trigger.c).
 *
 * A payment queued with an idempotency key records the key in
 * billogram_keys in the same transaction; a key used before queues nothing
 * and returns the request that used it (22023 when that was another
 * payment).  A source row's key (the trigger's) works the same way, once
 * per row, ever.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "channel.h"
#include "enqueue.h"
#include "guc.h"
#include "journal.h"
#include "report.h"
#include "request.h"

PG_FUNCTION_INFO_V1(billogram_enqueue_credit_payment);
PG_FUNCTION_INFO_V1(billogram_wake_worker_at_commit);

static bool wake_at_commit = false;

/* A copy in the memory of the caller of SPI_connect(), for after SPI_finish() */
static char *
copy_out_of_spi(const char *s)
{
	char	   *copy = SPI_palloc(strlen(s) + 1);

	strcpy(copy, s);
	return copy;
}
static bool xact_callback_registered = false;

static void
wake_worker_on_commit(XactEvent event, void *arg)
{
	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		bg_channel_wake_queue();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

static void
request_wake_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_worker_on_commit, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * Only the worker's own database has its queue served: a payment queued in
 * any other would wait forever, so it is refused.
 */
static void
check_queue_is_served(void)
{
	static bool checked = false;
	char	   *here;

	if (checked)
		return;
	if (bg_database == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram is not loaded through shared_preload_libraries"),
				 errdetail("Nothing was queued: without the worker it would never be sent."),
				 errhint("Add billogram to shared_preload_libraries in postgresql.conf and restart the server.")));
	here = get_database_name(MyDatabaseId);
	if (here == NULL || strcmp(here, bg_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("payments can only be queued in database \"%s\"", bg_database),
				 errdetail("The billogram worker sends the queue of billogram.database only; a payment queued here would never be sent."),
				 errhint("Queue payments in database \"%s\", or call billogram_credit_payment() here.", bg_database)));
	checked = true;
}

/*
 * The journal as this backend may write to it; raises a clear error when
 * the extension is missing here or not at the version this library speaks.
 */
static const BgJournal *
journal_for_queuing(void)
{
	static BgJournal journal;	/* bg_journal_lookup() keeps it per command */

	check_queue_is_served();
	switch (bg_journal_lookup(&journal))
	{
		case BG_JOURNAL_MISSING:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the billogram extension is not installed in this database")));
			break;
		case BG_JOURNAL_WRONG_VERSION:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the billogram extension in this database is at version %s, the server's library needs %s",
							journal.version, BG_SCHEMA_VERSION),
					 errdetail("Nothing was queued."),
					 errhint("Run ALTER EXTENSION billogram UPDATE.")));
			break;
		case BG_JOURNAL_UNTRUSTED:
			bg_report_untrusted(journal.refusal, "Nothing was queued.");
			break;
		case BG_JOURNAL_READY:
			break;
	}
	return &journal;
}

/*
 * Insert the pending row, and record its idempotency key if it has one;
 * returns its id.  A key used before inserts nothing: the request that
 * used it is returned as a negative id, after a NOTICE, or 22023 is raised
 * when that was another payment.  Two transactions queuing with one key at
 * once: the second waits for the first, and if that commits, fails with
 * 40001 and queues nothing (its retry finds the first request).
 */
static int64
insert_or_find(const BgJournal *journal, const BgCreditPayment *payment,
			   const char *origin, const char *source_table,
			   const char *source_key)
{
	BgKeyUse	use;
	int64		id;

	if (payment->idempotency_key[0] != '\0' &&
		bg_journal_find_key(journal, payment, &use))
	{
		if (use.state[0] != '\0' && !use.same_payment)
			bg_report_key_mismatch(payment->idempotency_key, use.request_id);
		ereport(NOTICE,
				(errmsg("idempotency key \"%s\" was used by request %lld: nothing was queued",
						payment->idempotency_key, (long long) use.request_id)));
		return -use.request_id;
	}
	id = bg_journal_insert(journal, payment, origin, source_table, source_key);
	if (payment->idempotency_key[0] != '\0' &&
		!bg_journal_claim_key(journal, payment, id, &use))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("idempotency key \"%s\" was used by request %lld, committed while this one was being queued",
						payment->idempotency_key, (long long) use.request_id),
				 errdetail("Nothing was queued."),
				 errhint("Retry the transaction: the key's request is then returned.")));
	return id;
}

/*
 * Insert one pending row as the journal's owner; returns its id, or 0 when
 * its source key has paid before (*earlier: the row it made); a call's
 * idempotency key used before returns the request that used it (see
 * insert_or_find()).  With no payment, only notes the source key as taken
 * (a row moved to another partition).  Callers
 * hold no privilege on the journal, so that the only rows they can add are
 * validated payments with their own names on them.  While the owner's
 * identity is borrowed, search_path is pinned and the operation is
 * security-restricted, as PostgreSQL does for maintenance commands run as a
 * table's owner: nothing the caller defined can be reached from here.  An
 * error restores both at transaction or subtransaction abort.
 *
 * The statement itself is journal.c's, planned once per backend: a trigger
 * may insert thousands of rows.
 */
int64
bg_enqueue_pending(const BgCreditPayment *payment, const char *origin,
			   const char *source_table, const char *source_key,
			   const char *key, int64 *earlier)
{
	const BgJournal *journal = journal_for_queuing();
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	int64		id;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(journal->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	SPI_connect();
	if (payment == NULL)
		id = bg_journal_note_key(journal, "source", key);
	else if (key != NULL)
		id = bg_journal_insert_keyed(journal, payment, origin, source_table,
									 source_key, "source", key, earlier);
	else
		id = insert_or_find(journal, payment, origin, source_table, source_key);
	SPI_finish();

	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

	if (id > 0 && payment != NULL)
		request_wake_at_commit();
	return id > 0 ? id : -id;
}

/*
 * What payment's idempotency key was used for, looked up by a backend in
 * billogram.database, as the journal's owner like an insert: false when it
 * was never used, or when this is another database (only the worker can
 * look there).  The first, cheap look of a synchronous call with a key.
 */
bool
bg_find_key_here(const BgCreditPayment *payment, BgKeyUse *use)
{
	static BgJournal journal;
	char	   *here = get_database_name(MyDatabaseId);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		found;

	if (bg_database == NULL || here == NULL || strcmp(here, bg_database) != 0 ||
		bg_journal_lookup(&journal) != BG_JOURNAL_READY)
		return false;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(journal.owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	found = bg_journal_find_key(&journal, payment, use);
	/* what it found outlives SPI's memory */
	if (found)
	{
		use->response = use->response ? copy_out_of_spi(use->response) : NULL;
		use->message = use->message ? copy_out_of_spi(use->message) : NULL;
		use->status = use->status ? copy_out_of_spi(use->status) : NULL;
		use->field = use->field ? copy_out_of_spi(use->field) : NULL;
	}
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return found;
}

Datum
billogram_enqueue_credit_payment(PG_FUNCTION_ARGS)
{
	BgCreditPayment payment;

	bg_credit_payment_from_call(&payment, fcinfo);
	PG_RETURN_INT64(bg_enqueue_pending(&payment, "enqueue", NULL, NULL, NULL, NULL));
}

/* Used by billogram_resolve(): a row set back to pending is sent soon. */
Datum
billogram_wake_worker_at_commit(PG_FUNCTION_ARGS)
{
	request_wake_at_commit();
	PG_RETURN_VOID();
}
