/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The journal's queue: rows made (queued payments, synchronous calls,
 *	  idempotency keys), rows claimed to be sent, and the outcomes of what
 *	  was sent.
 *
 * Backends queue payments through bg_journal_insert() and its keyed form
 * (enqueue.c); the worker journals the synchronous calls of a batch in one
 * INSERT, claims due queued rows (bg_journal_claim) and records every
 * outcome of a batch in one UPDATE (bg_journal_record_outcomes).  A row is
 * 'sending', committed, before its request leaves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "journal_int.h"

/* The values of a new pending row, $1 to $15 of STMT_INSERT. */
static void
insert_args(Datum *values, char *nulls, const BgCreditPayment *payment,
			const char *origin, const char *source_table,
			const char *source_key)
{
	const BgCaller *caller = &payment->caller;
	int64		system;
	Oid			database;

	bg_text_arg(values, nulls, 0, origin);
	bg_text_arg(values, nulls, 1, payment->billogram_id);
	bg_text_arg(values, nulls, 2, payment->mode);
	bg_text_arg(values, nulls, 3, payment->amount);
	bg_text_arg(values, nulls, 4, payment->body);
	bg_text_arg(values, nulls, 5, source_table);
	bg_text_arg(values, nulls, 6, source_key);
	bg_text_arg(values, nulls, 7, NameStr(caller->role));
	bg_text_arg(values, nulls, 8, NameStr(caller->effective_role));
	bg_text_arg(values, nulls, 9, NameStr(caller->login_role));
	bg_text_arg(values, nulls, 10, NameStr(caller->database));
	values[11] = Int32GetDatum(caller->pid);
	nulls[11] = ' ';
	bg_text_arg(values, nulls, 12, caller->application_name);
	bg_journal_origin(&system, &database);
	values[13] = Int64GetDatum(system);
	values[14] = ObjectIdGetDatum(database);
	nulls[13] = nulls[14] = ' ';
}

/*
 * Insert one pending row and return its id: $1 to $15 as insert_args()
 * makes them, $16 the call's idempotency key (NULL if none).
 */
int64
bg_journal_insert(const BgJournal *j, const BgCreditPayment *payment,
				  const char *origin, const char *source_table,
				  const char *source_key)
{
	Datum		values[16];
	char		nulls[16];
	bool		isnull;
	int			rc;

	insert_args(values, nulls, payment, origin, source_table, source_key);
	bg_text_arg(values, nulls, 15, payment->idempotency_key);
	rc = SPI_execute_plan(bg_plan_for(j, STMT_INSERT), values, nulls, false, 1);
	bg_check_spi(rc, SPI_OK_INSERT_RETURNING, "queuing a credit payment");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The same, once per key, ever: returns the new row's id, or 0 when the
 * key has paid before, with *earlier set to the journal row it made.  Two
 * transactions taking the same key at once make one row: the second waits
 * for the first and inserts nothing if it commits.
 */
int64
bg_journal_insert_keyed(const BgJournal *j, const BgCreditPayment *payment,
						const char *origin, const char *source_table,
						const char *source_key, const char *key_kind,
						const char *key, int64 *earlier)
{
	Datum		values[17];
	char		nulls[17];
	bool		isnull;
	int			rc;

	insert_args(values, nulls, payment, origin, source_table, source_key);
	bg_text_arg(values, nulls, 15, key_kind);
	bg_text_arg(values, nulls, 16, key);
	rc = SPI_execute_plan(bg_plan_for(j, STMT_INSERT_KEYED), values, nulls, false, 1);
	bg_check_spi(rc, SPI_OK_INSERT_RETURNING, "queuing a keyed credit payment");
	*earlier = 0;
	if (SPI_processed == 1)
		return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));

	rc = SPI_execute_plan(bg_plan_for(j, STMT_KEY_OWNER), values + 15, nulls + 15,
						  false, 1);
	bg_check_spi(rc, SPI_OK_SELECT, "reading a payment key");
	if (SPI_processed == 1)
		*earlier = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	return 0;
}

/* Take a key without a payment (see STMT_NOTE_KEY); returns 0. */
int64
bg_journal_note_key(const BgJournal *j, const char *key_kind, const char *key)
{
	Datum		values[2];
	char		nulls[2];
	int			rc;

	bg_text_arg(values, nulls, 0, key_kind);
	bg_text_arg(values, nulls, 1, key);
	rc = SPI_execute_plan(bg_plan_for(j, STMT_NOTE_KEY), values, nulls, false, 0);
	bg_check_spi(rc, SPI_OK_INSERT, "noting a payment key");
	return 0;
}

void
bg_journal_insert_sync(const BgCreditPayment *const *payments, int n,
					   int64 *ids)
{
	enum
	{
		ID, MODE, AMOUNT, BODY, ROLE, EFFECTIVE, LOGIN, DATABASE, PID, APP,
		KEY, NCOLS
	};
	Datum	   *elems[NCOLS];
	bool	   *elem_nulls[NCOLS];
	Datum		args[13];
	int64		system;
	Oid			database;
	int			rc;
	int			col;
	int			i;
	uint64		r;

	if (n == 0)
		return;
	for (col = 0; col < NCOLS; col++)
	{
		elems[col] = palloc(n * sizeof(Datum));
		elem_nulls[col] = palloc0(n * sizeof(bool));
	}
	for (i = 0; i < n; i++)
	{
		const BgCreditPayment *p = payments[i];
		const BgCaller *c = &p->caller;

		bg_text_elem(elems[ID], elem_nulls[ID], i, p->billogram_id);
		bg_text_elem(elems[MODE], elem_nulls[MODE], i, p->mode);
		bg_text_elem(elems[AMOUNT], elem_nulls[AMOUNT], i, p->amount);
		bg_text_elem(elems[BODY], elem_nulls[BODY], i, p->body);
		bg_text_elem(elems[ROLE], elem_nulls[ROLE], i, NameStr(c->role));
		bg_text_elem(elems[EFFECTIVE], elem_nulls[EFFECTIVE], i, NameStr(c->effective_role));
		bg_text_elem(elems[LOGIN], elem_nulls[LOGIN], i, NameStr(c->login_role));
		bg_text_elem(elems[DATABASE], elem_nulls[DATABASE], i, NameStr(c->database));
		elems[PID][i] = Int32GetDatum(c->pid);
		bg_text_elem(elems[APP], elem_nulls[APP], i, c->application_name);
		bg_text_elem(elems[KEY], elem_nulls[KEY], i, p->idempotency_key);
		ids[i] = 0;
	}
	for (col = 0; col < APP + 1; col++)
		args[col] = PointerGetDatum(col == PID ?
									bg_int_array(elems[col], NULL, n, INT4OID) :
									bg_text_array(elems[col], elem_nulls[col], n));
	bg_journal_origin(&system, &database);
	args[10] = Int64GetDatum(system);
	args[11] = ObjectIdGetDatum(database);
	args[12] = PointerGetDatum(bg_text_array(elems[KEY], elem_nulls[KEY], n));

	rc = SPI_execute_plan(bg_worker_plan(STMT_INSERT_SYNC), args, NULL,
						  false, 0);
	bg_check_spi(rc, SPI_OK_INSERT_RETURNING, "journaling synchronous calls");
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		HeapTuple	tuple = SPI_tuptable->vals[r];
		int64		id = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
		int32		pid = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));

		for (i = 0; i < n; i++)
			if (payments[i]->caller.pid == pid && ids[i] == 0)
			{
				ids[i] = id;
				break;
			}
	}
	for (i = 0; i < n; i++)
		if (ids[i] == 0)
			elog(ERROR, "billogram: the journal row of the synchronous call of process %d is missing",
				 payments[i]->caller.pid);
}

/*
 * What payment's idempotency key was used for before; false if never.
 * SPI connected, as the journal's owner.
 */
bool
bg_journal_find_key(const BgJournal *j, const BgCreditPayment *payment,
					BgKeyUse *use)
{
	Datum		values[4];
	char		nulls[4];
	bool		isnull;
	char	   *text;
	int			rc;

	memset(use, 0, sizeof(*use));
	bg_text_arg(values, nulls, 0, payment->idempotency_key);
	bg_text_arg(values, nulls, 1, payment->billogram_id);
	bg_text_arg(values, nulls, 2, payment->mode);
	bg_text_arg(values, nulls, 3, payment->amount);
	rc = SPI_execute_plan(bg_plan_for(j, STMT_KEY_FIND), values, nulls, false, 1);
	bg_check_spi(rc, SPI_OK_SELECT, "looking up an idempotency key");
	if (SPI_processed == 0)
		return false;
	use->request_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	if ((text = bg_spi_text(2)) != NULL)
		strlcpy(use->state, text, sizeof(use->state));
	use->same_payment = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 3, &isnull)) && !isnull;
	use->response = bg_spi_text(4);
	if ((text = bg_spi_text(5)) != NULL)
		strlcpy(use->sqlstate, text, sizeof(use->sqlstate));
	use->message = bg_spi_text(6);
	use->status = bg_spi_text(7);
	use->field = bg_spi_text(8);
	return true;
}

/*
 * Record payment's idempotency key for request_id (0: the worker binds it
 * to its row later in the same transaction, bg_journal_bind_keys).  When
 * the key is taken, fills *use with what it was used for and returns
 * false.  A key recorded by a transaction still in progress is waited for.
 */
bool
bg_journal_claim_key(const BgJournal *j, const BgCreditPayment *payment,
					 int64 request_id, BgKeyUse *use)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			rc;

	values[0] = CStringGetTextDatum(payment->idempotency_key);
	values[1] = Int64GetDatum(request_id);
	rc = SPI_execute_plan(bg_plan_for(j, STMT_KEY_CLAIM), values, nulls, false, 1);
	bg_check_spi(rc, SPI_OK_INSERT_RETURNING, "recording an idempotency key");
	if (SPI_processed == 1)
		return true;
	if (!bg_journal_find_key(j, payment, use))
	{
		/* taken by a transaction this one's snapshot cannot see */
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("idempotency key \"%s\" was recorded by a concurrent transaction",
						payment->idempotency_key),
				 errdetail("Nothing was sent or queued."),
				 errhint("Retry the transaction: the key's first request is then found.")));
	}
	return false;
}

/* The keys of n journaled calls (those with one) get their rows, ids[]. */
void
bg_journal_bind_keys(const BgCreditPayment *const *payments,
					 const int64 *ids, int n)
{
	Datum	   *keys = palloc(n * sizeof(Datum));
	Datum	   *key_ids = palloc(n * sizeof(Datum));
	Datum		args[2];
	int			nkeys = 0;
	int			rc;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (payments[i]->idempotency_key[0] == '\0')
			continue;
		keys[nkeys] = CStringGetTextDatum(payments[i]->idempotency_key);
		key_ids[nkeys] = Int64GetDatum(ids[i]);
		nkeys++;
	}
	if (nkeys == 0)
		return;
	args[0] = PointerGetDatum(bg_text_array(keys, NULL, nkeys));
	args[1] = PointerGetDatum(bg_int_array(key_ids, NULL, nkeys, INT8OID));
	rc = SPI_execute_plan(bg_worker_plan(STMT_KEY_BIND), args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_UPDATE, "binding idempotency keys to their rows");
	if (SPI_processed != (uint64) nkeys)
		elog(ERROR, "billogram: %llu of %d idempotency keys bound to their rows",
			 (unsigned long long) SPI_processed, nkeys);
}

/*
 * Where the next claim starts in the pending index: just after the last row
 * claimed.  The index keeps an entry for every row version that was ever
 * pending, and while any transaction in the cluster holds back the xmin
 * horizon none of those entries can be dropped; a claim starting from the
 * beginning would step over every row already claimed, which made a drain
 * alongside one long transaction ten times slower.  A claim that comes up
 * short starts the next one from the beginning again, so rows whose key
 * sorts before the cursor (a transaction that committed late, an operator's
 * resend) wait at most one pass.
 */
static TimestampTz claim_after_at = DT_NOBEGIN;
static int64 claim_after_id = 0;

/*
 * Mark up to max_rows due rows 'sending' and return them.  SKIP LOCKED
 * keeps an operator's open transaction on one row from stalling the rest.
 */
List *
bg_journal_claim(int max_rows)
{
	List	   *claimed = NIL;
	Datum		args[6];
	int			rc;
	uint64		i;

	if (max_rows <= 0 || !bg_here_args(&args[3]))
		return NIL;
	args[0] = Int32GetDatum(max_rows);
	args[1] = TimestampTzGetDatum(claim_after_at);
	args[2] = Int64GetDatum(claim_after_id);
	rc = SPI_execute_plan(bg_worker_plan(STMT_CLAIM), args, NULL, false, 0);
	bg_check_spi(rc, SPI_OK_UPDATE_RETURNING, "claiming queued payments");

	if (SPI_processed < (uint64) max_rows)
	{
		claim_after_at = DT_NOBEGIN;
		claim_after_id = 0;
	}
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		BgQueuedRequest *q = bg_queued_from_row(tuple, SPI_tuptable->tupdesc);
		bool		isnull;
		TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tuple, SPI_tuptable->tupdesc,
														   6, &isnull));

		if (SPI_processed == (uint64) max_rows &&
			(at > claim_after_at || (at == claim_after_at && q->id > claim_after_id)))
		{
			claim_after_at = at;
			claim_after_id = q->id;
		}
		claimed = lappend(claimed, q);
	}
	return claimed;
}

/*
 * Where a finished request goes: 'done'; 'failed' when Billogram certainly
 * did not act; 'in_doubt' when it may have.  *retry is set when a queued
 * request may be tried again (bg_reply_worth_retrying()); the statement
 * then makes it pending again while billogram.retry_for allows.
 */
static BgJournalState
outcome_state(bool is_sync, const BgReply *reply, bool *retry)
{
	*retry = false;
	if (reply->outcome == BG_OUTCOME_OK)
		return BG_STATE_DONE;
	if (reply->may_have_reached)
		return BG_STATE_IN_DOUBT;
	*retry = !is_sync && bg_reply_worth_retrying(reply);
	return BG_STATE_FAILED;
}

static BgJournalState
state_from_name(const char *name)
{
	BgJournalState state;

	for (state = BG_STATE_PENDING; state <= BG_STATE_HELD; state++)
		if (strcmp(name, bg_journal_state_name(state)) == 0)
			return state;
	elog(ERROR, "billogram: unknown journal state \"%s\"", name);
	return BG_STATE_FAILED;		/* keep the compiler quiet */
}

/*
 * Record the outcomes of n finished requests in one statement, and set
 * each one's state (and whether its row still existed: an operator may
 * have purged it meanwhile).
 */
void
bg_journal_record_outcomes(BgFinished *finished, int n)
{
	Datum	   *ids = palloc(n * sizeof(Datum));
	Datum	   *states = palloc(n * sizeof(Datum));
	Datum	   *retries = palloc(n * sizeof(Datum));
	Datum	   *statuses = palloc(n * sizeof(Datum));
	bool	   *status_nulls = palloc(n * sizeof(bool));
	Datum	   *invoices = palloc(n * sizeof(Datum));
	bool	   *invoice_nulls = palloc(n * sizeof(bool));
	Datum	   *errors = palloc(n * sizeof(Datum));
	bool	   *error_nulls = palloc(n * sizeof(bool));
	Datum	   *retry_afters = palloc(n * sizeof(Datum));
	Datum	   *summaries = palloc(n * sizeof(Datum));
	bool	   *summary_nulls = palloc(n * sizeof(bool));
	Datum	   *keeps_summary = palloc(n * sizeof(Datum));
	Datum		args[10];
	int			rc;
	int			i;
	uint64		r;

	if (n == 0)
		return;
	for (i = 0; i < n; i++)
	{
		const BgReply *reply = finished[i].reply;
		bool		retry;

		finished[i].state = outcome_state(finished[i].is_sync, reply, &retry);
		finished[i].recorded = false;
		ids[i] = Int64GetDatum(finished[i].id);
		states[i] = CStringGetTextDatum(bg_journal_state_name(finished[i].state));
		retries[i] = BoolGetDatum(retry);
		statuses[i] = Int32GetDatum((int32) reply->http_status);
		status_nulls[i] = (reply->http_status == 0);
		/* a summary kept as the invoice is sent, and parsed, once */
		keeps_summary[i] = BoolGetDatum(finished[i].invoice != NULL &&
										finished[i].invoice == finished[i].summary);
		invoice_nulls[i] = (finished[i].invoice == NULL ||
							DatumGetBool(keeps_summary[i]));
		invoices[i] = invoice_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(finished[i].invoice);
		error_nulls[i] = (reply->outcome == BG_OUTCOME_OK);
		errors[i] = error_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(bg_error_json(reply));
		retry_afters[i] = Int32GetDatum((int32) reply->retry_after);
		summary_nulls[i] = (finished[i].summary == NULL);
		summaries[i] = summary_nulls[i] ? (Datum) 0 :
			CStringGetTextDatum(finished[i].summary);
	}
	args[0] = PointerGetDatum(bg_int_array(ids, NULL, n, INT8OID));
	args[1] = PointerGetDatum(bg_text_array(states, NULL, n));
	args[2] = PointerGetDatum(bg_int_array(retries, NULL, n, BOOLOID));
	args[3] = PointerGetDatum(bg_int_array(statuses, status_nulls, n, INT4OID));
	args[4] = PointerGetDatum(bg_text_array(invoices, invoice_nulls, n));
	args[5] = PointerGetDatum(bg_text_array(errors, error_nulls, n));
	args[6] = PointerGetDatum(bg_int_array(retry_afters, NULL, n, INT4OID));
	args[7] = Int32GetDatum(bg_retry_for_s);
	args[8] = PointerGetDatum(bg_text_array(summaries, summary_nulls, n));
	args[9] = PointerGetDatum(bg_int_array(keeps_summary, NULL, n, BOOLOID));

	rc = SPI_execute_plan(bg_worker_plan(STMT_RECORD_OUTCOMES), args, NULL,
						  false, 0);
	bg_check_spi(rc, SPI_OK_SELECT, "recording outcomes");

	/* batches are a few dozen rows at most: a linear match is enough */
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc,
													 1, &isnull));
		char	   *state = SPI_getvalue(tuple, SPI_tuptable->tupdesc, 2);

		for (i = 0; i < n; i++)
		{
			if (finished[i].id == id)
			{
				finished[i].state = state_from_name(state);
				finished[i].recorded = true;
				break;
			}
		}
	}
}
