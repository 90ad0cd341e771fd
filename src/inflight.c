/*-------------------------------------------------------------------------
 *
 * inflight.c
 *	  Which invoices have a payment in flight, or one being settled, so
 *	  that the worker sends one payment per invoice at a time.
 *
 * Why one at a time: Billogram has no idempotency key, so a payment whose
 * outcome is unknown is settled by comparing the invoice before and after
 * it (journal.c, billogram_settle in SQL).  That comparison is only
 * unambiguous if nothing else of ours moved the invoice meanwhile, and two
 * 'remaining' payments sent together would race for the same sum.
 *
 * Queued rows are held back by the claim itself, from the journal's states
 * (journal.c).  This table serves the synchronous calls, which are taken
 * from the channel before anything is journaled: a call on a busy invoice
 * stays in the channel, in order, until the invoice is free or the call's
 * time is up.  The worker keeps it: payments count in when they leave and
 * out when their job is freed; the invoices being settled are read from
 * the journal (settle_at set) whenever that may have changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "inflight.h"
#include "request.h"

typedef struct BgInvoiceEntry
{
	char		billogram_id[BG_ID_MAXLEN + 1]; /* hash key */
	int			payments;		/* payments in flight */
	bool		unsettled;		/* a row is being settled */
} BgInvoiceEntry;

static HTAB *invoices = NULL;

void
bg_inflight_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = BG_ID_MAXLEN + 1;
	ctl.entrysize = sizeof(BgInvoiceEntry);
	invoices = hash_create("billogram invoices in flight", 64, &ctl,
						   HASH_ELEM | HASH_STRINGS);
}

/* HASH_STRINGS: keys are compared and copied as C strings */
static BgInvoiceEntry *
entry_for(const char *billogram_id, bool create)
{
	bool		found;
	BgInvoiceEntry *entry = hash_search(invoices, billogram_id,
										create ? HASH_ENTER : HASH_FIND,
										&found);

	if (entry != NULL && !found)
	{
		entry->payments = 0;
		entry->unsettled = false;
	}
	return entry;
}

/* Forget an invoice that nothing holds any more. */
static void
forget_if_free(BgInvoiceEntry *entry)
{
	if (entry->payments <= 0 && !entry->unsettled)
		hash_search(invoices, entry->billogram_id, HASH_REMOVE, NULL);
}

void
bg_inflight_add(const char *billogram_id)
{
	BgInvoiceEntry *entry = entry_for(billogram_id, true);

	entry->payments++;
}

void
bg_inflight_remove(const char *billogram_id)
{
	BgInvoiceEntry *entry = entry_for(billogram_id, false);

	if (entry == NULL)
		return;
	entry->payments--;
	forget_if_free(entry);
}

void
bg_inflight_mark_unsettled(const char *billogram_id)
{
	BgInvoiceEntry *entry = entry_for(billogram_id, true);

	entry->unsettled = true;
}

void
bg_inflight_set_unsettled(List *billogram_ids)
{
	HASH_SEQ_STATUS seq;
	BgInvoiceEntry *entry;
	ListCell   *lc;

	hash_seq_init(&seq, invoices);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		entry->unsettled = false;
		/* removing the entry just returned is allowed during a scan */
		forget_if_free(entry);
	}
	foreach(lc, billogram_ids)
		bg_inflight_mark_unsettled((const char *) lfirst(lc));
}

bool
bg_inflight_busy(const char *billogram_id)
{
	return entry_for(billogram_id, false) != NULL;
}

/* The invoices bg_inflight_busy() is true of, as C strings. */
List *
bg_inflight_busy_ids(void)
{
	HASH_SEQ_STATUS seq;
	BgInvoiceEntry *entry;
	List	   *ids = NIL;

	hash_seq_init(&seq, invoices);
	while ((entry = hash_seq_search(&seq)) != NULL)
		ids = lappend(ids, pstrdup(entry->billogram_id));
	return ids;
}

/*
 * Invoices the ledger knows.  A synchronous payment has its baseline fixed
 * from the ledger as it is journaled (STMT_INSERT_SYNC): on an invoice the
 * ledger knows nothing of, the worker reads the invoice first, and the
 * call waits in the channel meanwhile, as on a busy invoice.  The ledger
 * never forgets an invoice, so neither does this cache, until it is full:
 * then it starts again, and the invoices are looked up anew.
 */
typedef struct BgKnownEntry
{
	char		billogram_id[BG_ID_MAXLEN + 1]; /* hash key */
	bool		known;			/* in the ledger */
	bool		wanted;			/* a call waits for it: look it up or read it */
	bool		unreadable;		/* no journal to read it into: calls go, to
								 * be refused */
	TimestampTz failed_at;		/* the last reading failed then (0: none) */
	BgReply    *failure;		/* and so, in cache_cxt; NULL if none */
} BgKnownEntry;

#define BG_KNOWN_MAX	100000

static HTAB *known_invoices = NULL;

/*
 * The entries a call waits for, so that a batch finds them without scanning
 * a cache of up to BG_KNOWN_MAX invoices (each batch looks; the scan cost
 * more than the statements once the cache held tens of thousands).  An
 * entry is on the list at most once, while its wanted flag is set; one
 * found known meanwhile stays on it with the flag cleared, and is skipped.
 * n_wanted counts the entries whose flag is set.
 */
static List *wanted_entries = NIL;
static int	n_wanted = 0;

/*
 * What lives and dies with the cache besides its entries: the list above,
 * and the replies of failed readings, kept apart from the entries because a
 * reply is over a kilobyte, and in the entry it made a full cache 137 MB of
 * the worker's memory for what only a failed reading needs.
 */
static MemoryContext cache_cxt = NULL;

static BgKnownEntry *
known_entry(const char *billogram_id, bool create)
{
	bool		found;
	BgKnownEntry *entry;

	if (known_invoices == NULL ||
		(create && hash_get_num_entries(known_invoices) >= BG_KNOWN_MAX))
	{
		HASHCTL		ctl;

		if (known_invoices != NULL)
			hash_destroy(known_invoices);
		if (cache_cxt == NULL)
			cache_cxt = AllocSetContextCreate(TopMemoryContext,
											  "billogram known invoices",
											  ALLOCSET_SMALL_SIZES);
		MemoryContextReset(cache_cxt);
		wanted_entries = NIL;
		ctl.keysize = BG_ID_MAXLEN + 1;
		ctl.entrysize = sizeof(BgKnownEntry);
		known_invoices = hash_create("billogram invoices in the ledger", 1024,
									 &ctl, HASH_ELEM | HASH_STRINGS);
		n_wanted = 0;
	}
	entry = hash_search(known_invoices, billogram_id,
						create ? HASH_ENTER : HASH_FIND, &found);
	if (entry != NULL && !found)
	{
		entry->known = false;
		entry->wanted = false;
		entry->unreadable = false;
		entry->failed_at = 0;
		entry->failure = NULL;
	}
	return entry;
}

bool
bg_inflight_known(const char *billogram_id)
{
	BgKnownEntry *entry = known_entry(billogram_id, false);

	return entry != NULL && entry->known;
}

void
bg_inflight_note_known(const char *billogram_id)
{
	BgKnownEntry *entry = known_entry(billogram_id, true);

	entry->known = true;
	entry->failed_at = 0;
	if (entry->failure != NULL)
		pfree(entry->failure);
	entry->failure = NULL;
	if (entry->wanted)
		n_wanted--;
	entry->wanted = false;
}

void
bg_inflight_want(const char *billogram_id)
{
	BgKnownEntry *entry = known_entry(billogram_id, true);

	if (!entry->known && !entry->wanted)
	{
		MemoryContext old = MemoryContextSwitchTo(cache_cxt);

		wanted_entries = lappend(wanted_entries, entry);
		MemoryContextSwitchTo(old);
		entry->wanted = true;
		n_wanted++;
	}
}

bool
bg_inflight_any_wanted(void)
{
	return n_wanted > 0;
}

/* Forget every wanted entry: the list, the flags and the count. */
static void
clear_wanted(void)
{
	list_free(wanted_entries);
	wanted_entries = NIL;
	n_wanted = 0;
}

List *
bg_inflight_take_wanted(void)
{
	ListCell   *lc;
	List	   *ids = NIL;

	foreach(lc, wanted_entries)
	{
		BgKnownEntry *entry = (BgKnownEntry *) lfirst(lc);

		if (!entry->wanted)
			continue;
		entry->wanted = false;
		ids = lappend(ids, pstrdup(entry->billogram_id));
	}
	clear_wanted();
	return ids;
}

void
bg_inflight_read_failed(const char *billogram_id, const BgReply *reply)
{
	BgKnownEntry *entry = known_entry(billogram_id, true);

	entry->failed_at = GetCurrentTimestamp();
	if (entry->failure == NULL)
		entry->failure = MemoryContextAlloc(cache_cxt, sizeof(BgReply));
	*entry->failure = *reply;
}

const BgReply *
bg_inflight_recent_failure(const char *billogram_id)
{
	BgKnownEntry *entry = known_entry(billogram_id, false);

	if (entry == NULL || entry->failed_at == 0 ||
		TimestampDifferenceExceeds(entry->failed_at, GetCurrentTimestamp(),
								   BG_READ_FAILURE_MS))
		return NULL;
	return entry->failure;
}

/*
 * The worker found no journal to record readings in (no extension, or one
 * at another version): the calls that wait for their invoice to be read
 * may go on, to be refused with the reason (55000).  Until it finds one
 * again: bg_inflight_journal_ready().
 */
void
bg_inflight_journal_missing(void)
{
	ListCell   *lc;

	foreach(lc, wanted_entries)
	{
		BgKnownEntry *entry = (BgKnownEntry *) lfirst(lc);

		if (entry->wanted)
			entry->unreadable = true;
		entry->wanted = false;
	}
	clear_wanted();
}

void
bg_inflight_journal_ready(void)
{
	HASH_SEQ_STATUS seq;
	BgKnownEntry *entry;

	if (known_invoices == NULL)
		return;
	hash_seq_init(&seq, known_invoices);
	while ((entry = hash_seq_search(&seq)) != NULL)
		entry->unreadable = false;
}

bool
bg_inflight_unreadable(const char *billogram_id)
{
	BgKnownEntry *entry = known_entry(billogram_id, false);

	return entry != NULL && entry->unreadable;
}
