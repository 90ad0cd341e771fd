/*-------------------------------------------------------------------------
 *
 * settle.c
 *	  The journal's rows whose outcome is not known yet: recovery after a
 *	  restart, rows made elsewhere, the settling of in_doubt rows, the
 *	  readings of invoices before a payment, and when the journal next has
 *	  something due.
 *
 * A row left 'sending' by a worker that stopped becomes in_doubt
 * (bg_journal_recover); one that came from another cluster, database or
 * installation is held, or in_doubt and never read if it was caught
 * sending or still being settled there (bg_journal_hold_foreign).  The
 * worker reads the invoice of each in_doubt row that is due
 * (bg_journal_settle_due) and hands what it read to
 * billogram_settle() (bg_journal_settle), and reads an invoice before the
 * payment at the head of its queue where the ledger needs it
 * (bg_journal_reads_due, bg_journal_reads_recorded).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "journal_int.h"
#include "metrics.h"

/* A GET's invoice (or the error that stopped it) beside an in_doubt row. */
void
bg_journal_save_snapshot(int64 id, const BgReply *reply, const char *invoice)
{
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	values[0] = Int64GetDatum(id);
	bg_text_arg(values, nulls, 1, invoice);
	if (reply->outcome == BG_OUTCOME_OK)
		nulls[2] = 'n';
	else
		values[2] = CStringGetTextDatum(bg_error_json(reply));
	rc = SPI_execute_plan(bg_worker_plan(STMT_SNAPSHOT), values, nulls,
						  false, 0);
	bg_check_spi(rc, SPI_OK_UPDATE, "saving an invoice snapshot");
}

/*
 * A server that took over from another (a promoted standby, a point-in-time
 * recovery) is on a new WAL timeline.  Its pending rows may have been sent
 * by the server before it, in WAL this one never received (an asynchronous
 * standby lags): each is read before it goes (verify_reason 'promotion',
 * see billogram_read_recorded), and held for an operator unless the
 * invoice shows nothing the ledger did not know.  The timeline last seen
 * is kept in billogram_instance; the first look only records it.
 */
static void
check_takeover(void)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	char	   *sql;
	int			rc;
	bool		isnull;
	int64		marked;

	args[0] = Int64GetDatum((int64) GetWALInsertionTimeLine());
	sql = psprintf("WITH i AS (UPDATE %2$s.billogram_instance i SET timeline = $1 "
				   "  FROM (SELECT timeline AS old FROM %2$s.billogram_instance) o "
				   "  WHERE i.timeline IS DISTINCT FROM $1 RETURNING o.old), "
				   "u AS (UPDATE %1$s SET verify_reason = 'promotion' "
				   "  WHERE state = 'pending' AND EXISTS (SELECT 1 FROM i WHERE i.old IS NOT NULL) "
				   "  RETURNING 1) "
				   "SELECT count(*) FROM u",
				   bg_journal_opened()->name, bg_journal_opened()->schema);
	rc = SPI_execute_with_args(sql, 1, types, args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "looking for a change of timeline");
	marked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	if (marked > 0)
		ereport(LOG,
				(errmsg("billogram: this server took over on a new timeline; %lld pending request(s) are checked against their invoice before they are sent",
						(long long) marked),
				 errdetail("The server before it may have sent them in WAL this server never received."),
				 errhint("Those whose invoice shows anything the journal did not know are held: see billogram_queue_status and billogram_release_held().")));
}

/*
 * Rows left 'sending' by a worker of this installation that stopped may or
 * may not have reached Billogram; they become 'in_doubt', to be settled
 * from the evidence.  Only the rows this installation settles
 * (BG_SETTLED_HERE_SQL: made here, or by 0.1, which did not record where):
 * one caught 'sending' in a copy from elsewhere is bg_journal_hold_foreign's,
 * in_doubt as 'inherited' and never read.  Taking it here first settled it
 * from a reading, as if this installation had sent it, and a not_applied
 * verdict would have advised the copy to send it again (a dump restored
 * while the worker runs: found by tests/t/030_chaos.pl, tested by
 * 011_copies.pl).  Without an instance row nothing can be told to be
 * ours, and nothing is taken.
 */
void
bg_journal_recover(void)
{
	Oid			types[3] = {INT8OID, OIDOID, UUIDOID};
	Datum		args[3];
	char	   *sql;
	int			rc;

	check_takeover();
	if (!bg_here_args(args))
		return;
	sql = psprintf("WITH u AS (UPDATE %s SET state = 'in_doubt', finished_at = clock_timestamp(), "
				   "settle_at = now(), "
				   "error = jsonb_build_object('kind', 'worker', 'sqlstate', 'BG002', "
				   "'message', 'the worker stopped while the request was being sent', "
				   "'may_have_reached_billogram', true) "
				   "WHERE state = 'sending' AND " BG_SETTLED_HERE_SQL " "
				   "RETURNING id, billogram_id, mode, amount, request_body) "
				   "SELECT u.*, %s.billogram_announce(u.id, 'in_doubt') FROM u",
				   bg_journal_opened()->name, bg_journal_opened()->schema);
	rc = SPI_execute_with_args(sql, 3, types, args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "recovering requests left in state sending");
	bg_metrics_in_doubt((int64) SPI_processed);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("billogram: %llu request(s) found in state sending after a restart are now in_doubt",
						(unsigned long long) SPI_processed),
				 errhint("The worker reads their invoices to settle them; billogram_in_doubt shows what it finds.")));
}

/*
 * Rows that came from elsewhere, with a restored dump or a copy made by
 * another cluster or database, are never sent on their own: the server
 * that made them may have sent them since.  Pending ones become 'held'
 * until an operator releases them (billogram_release_held()).  One caught
 * in 'sending', or in_doubt while the server that made it was still
 * reading its invoice to settle it (settle_at set), becomes in_doubt with
 * the verdict 'inherited': nothing here knew its invoice before it was
 * sent, and a verdict weighed here, not_applied above all, would advise
 * this copy's operator on a payment that is another server's; so nothing
 * reads it, and billogram_in_doubt names the calls that resolve it.  The
 * claim and bg_journal_settle_due() skip them anyway (rows restored after
 * the last look wait for the next, unread); this puts them where the
 * status view and the operator see them, and says so in the log.  Returns
 * how many became in_doubt: their invoices are no longer being settled.
 */
int64
bg_journal_hold_foreign(void)
{
	Datum		args[3];
	int64		held;
	int64		doubted;
	bool		isnull;
	int			rc;

	if (!bg_here_args(args))
		return 0;
	rc = SPI_execute_plan(bg_worker_plan(STMT_HOLD), args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "holding requests made elsewhere");
	held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	doubted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	bg_metrics_in_doubt(doubted);
	if (held + doubted > 0)
		ereport(WARNING,
				(errmsg("billogram: %lld request(s) made in another cluster or database are held, not sent",
						(long long) (held + doubted)),
				 errdetail("%lld pending request(s) are now held, %lld found in state sending or still being checked there are now in_doubt, not checked here. "
						   "They came with a restored dump (into this database too: the extension made anew has an identity of its own), a copy of the data, or an upgrade that inherited them: "
						   "the server that made them may have sent them already.",
						   (long long) held, (long long) doubted),
				 errhint("Check that the server they came from is stopped or has not sent them, then call billogram_release_held() or billogram_fail_held(); billogram_in_doubt names the call for each one in_doubt.")));
	return doubted;
}

/*
 * Take up to max_rows in_doubt rows this installation settles whose
 * invoice is due to be read again, putting their next reading off by
 * hold_secs meanwhile.
 */
List *
bg_journal_settle_due(int max_rows, int hold_secs)
{
	List	   *due = NIL;
	Datum		args[5];
	int			rc;
	uint64		i;

	if (max_rows <= 0 || !bg_here_args(args))
		return NIL;
	args[3] = Int32GetDatum(max_rows);
	args[4] = Int32GetDatum(hold_secs);
	rc = SPI_execute_plan(bg_worker_plan(STMT_SETTLE_DUE), args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_UPDATE_RETURNING, "taking in_doubt rows to settle");
	for (i = 0; i < SPI_processed; i++)
		due = lappend(due, bg_queued_from_row(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc));
	return due;
}

/*
 * Weigh what the GET of an in_doubt row's invoice returned (billogram_settle
 * in SQL): the invoice's summary (the reply's bg_journal_summary_text()),
 * whatever billogram.journal_reply keeps, since the evidence is read from
 * its sums and events; or, without one, why the GET failed.  Returns
 * whether the row is settled for now (no further reading due).
 */
bool
bg_journal_settle(int64 id, const BgReply *reply, const char *summary)
{
	Datum		args[4];
	char		nulls[4] = {' ', 'n', 'n', ' '};
	bool		isnull;
	Datum		verdict;
	int			rc;

	args[0] = Int64GetDatum(id);
	if (summary != NULL)
		bg_text_arg(args, nulls, 1, summary);
	else
	{
		args[2] = CStringGetTextDatum(bg_error_json(reply));
		nulls[2] = ' ';
	}
	args[3] = Int32GetDatum(bg_settle_time_s);
	rc = SPI_execute_plan(bg_worker_plan(STMT_SETTLE), args, nulls, false, 1);
	bg_check_spi(rc, SPI_OK_SELECT, "settling an in_doubt request");
	verdict = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return true;
	bg_metrics_settled(TextDatumGetCString(verdict));
	return strcmp(TextDatumGetCString(verdict), "checking") != 0;
}

/* Invoices (a List of C strings) as a text[] argument. */
static Datum
invoices_arg(List *ids)
{
	Datum	   *elems;
	ListCell   *lc;
	int			n = 0;

	if (ids == NIL)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	elems = palloc(list_length(ids) * sizeof(Datum));
	foreach(lc, ids)
		elems[n++] = CStringGetTextDatum((const char *) lfirst(lc));
	return PointerGetDatum(bg_text_array(elems, NULL, n));
}

/*
 * Up to max_rows invoices to read before their next payment goes (see
 * STMT_READS_DUE), none of busy (the invoices a request is in flight on).
 */
List *
bg_journal_reads_due(int max_rows, List *busy)
{
	List	   *due = NIL;
	Datum		args[5];
	int			rc;
	uint64		i;

	if (max_rows <= 0 || !bg_here_args(&args[2]))
		return NIL;
	args[0] = Int32GetDatum(max_rows);
	args[1] = invoices_arg(busy);
	rc = SPI_execute_plan(bg_worker_plan(STMT_READS_DUE), args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "taking invoices to read before sending");
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		due = lappend(due, id);
	}
	return due;
}

/*
 * What readings of invoices showed (see billogram_read_recorded in SQL), n
 * of them in one statement: each invoice joins the ledger and its payments
 * may go, or the reading's failure is recorded on the rows waiting for it.
 * known[i] says whether the ledger now knows invoice i.  Up to claim_max of
 * the payments that go are claimed with it and returned, as
 * bg_journal_claim() returns its rows.
 */
List *
bg_journal_reads_recorded(BgRead *reads, int n, int claim_max)
{
	Datum	   *ids = palloc(n * sizeof(Datum));
	Datum	   *summaries = palloc(n * sizeof(Datum));
	bool	   *summary_nulls = palloc(n * sizeof(bool));
	Datum	   *failures = palloc(n * sizeof(Datum));
	bool	   *failure_nulls = palloc(n * sizeof(bool));
	Datum		args[8];
	char		nulls[8];
	List	   *claimed = NIL;
	int			rc;
	int			i;
	uint64		r;

	if (n == 0)
		return NIL;
	for (i = 0; i < n; i++)
	{
		char	   *summary = bg_journal_summary_text(reads[i].reply, reads[i].body);

		ids[i] = CStringGetTextDatum(reads[i].billogram_id);
		summary_nulls[i] = (summary == NULL);
		summaries[i] = summary ? CStringGetTextDatum(summary) : (Datum) 0;
		failure_nulls[i] = (summary != NULL);
		failures[i] = summary ? (Datum) 0 :
			CStringGetTextDatum(bg_error_json(reads[i].reply));
		reads[i].known = (summary != NULL);
	}
	args[0] = PointerGetDatum(bg_text_array(ids, NULL, n));
	args[1] = PointerGetDatum(bg_text_array(summaries, summary_nulls, n));
	args[2] = PointerGetDatum(bg_text_array(failures, failure_nulls, n));
	args[3] = Int32GetDatum(bg_retry_for_s);
	memset(nulls, ' ', sizeof(nulls));
	if (!bg_here_args(&args[5]))
	{
		/* nothing made here can be told apart yet: claim none */
		claim_max = 0;
		nulls[5] = nulls[6] = nulls[7] = 'n';
	}
	args[4] = Int32GetDatum(claim_max);
	rc = SPI_execute_plan(bg_worker_plan(STMT_READ_RECORDED), args, nulls,
						  false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "recording invoice readings");
	for (r = 0; r < SPI_processed; r++)
		claimed = lappend(claimed, bg_queued_from_row(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc));
	return claimed;
}

/* Those of the invoices ids (a List of C strings) the ledger knows. */
List *
bg_journal_ledger_known(List *ids)
{
	List	   *known = NIL;
	Datum		args[1];
	int			rc;
	uint64		i;

	if (ids == NIL)
		return NIL;
	args[0] = invoices_arg(ids);
	rc = SPI_execute_plan(bg_worker_plan(STMT_LEDGER_KNOWN), args, NULL, true, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "looking invoices up in the ledger");
	for (i = 0; i < SPI_processed; i++)
		known = lappend(known, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	return known;
}

/* The invoices on which a row is being settled: no payment goes out on them. */
List *
bg_journal_unsettled(void)
{
	List	   *ids = NIL;
	int			rc;
	uint64		i;

	rc = SPI_execute_plan(bg_worker_plan(STMT_UNSETTLED), NULL, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "looking for invoices being settled");
	for (i = 0; i < SPI_processed; i++)
		ids = lappend(ids, SPI_getvalue(SPI_tuptable->vals[i],
										SPI_tuptable->tupdesc, 1));
	return ids;
}

/*
 * When the journal next has something due: the earliest pending row's
 * next attempt, or the earliest reading of an in_doubt row still being
 * checked (settle_at), so that a row being checked is read at its time;
 * at the latest, a sweep.  Read with a snapshot that sees this batch's own
 * writes: the rows it just claimed and the verdicts it just wrote.  The
 * readings of busy's invoices, in flight, are left out.
 */
TimestampTz
bg_journal_next_due(List *busy)
{
	TimestampTz sweep = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													BG_SWEEP_MS);
	Datum		args[4];
	bool		isnull;
	Datum		due;
	int			rc;

	if (!bg_here_args(args))
		return sweep;
	args[3] = invoices_arg(busy);
	rc = SPI_execute_plan(bg_worker_plan(STMT_NEXT_DUE), args, NULL, false, 1);
	bg_check_spi(rc, SPI_OK_SELECT, "looking for due payments");
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || DatumGetTimestampTz(due) > sweep)
		return sweep;
	return DatumGetTimestampTz(due);
}
