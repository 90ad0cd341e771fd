/*-------------------------------------------------------------------------
 *
 * source_row.c
 *	  What billogram_payment_trigger() reads from the row it fires for: the
 *	  root of the row's partition tree, the row's primary key there, and its
 *	  amount.
 *
 * One payment per source row, ever: an UPDATE that moves a row to another
 * partition fires AFTER INSERT on the new partition, and a data-only
 * restore COPYs the rows in again.  Neither is a new payment, so a payment
 * is keyed by the row's identity, which survives both: the root table of
 * its partition tree (a plain table is its own root) and its primary key
 * there.  The key's values are written as text under fixed settings, so
 * the same row gives the same key in every session.
 *
 * Amounts are read by cast, never through a type's text output, which
 * depends on session settings (a float4 of 150 printed with
 * extra_float_digits = -14 reads as 200).  Only numeric and the integer
 * types can be read exactly; every other type is refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "source_row.h"

void
bg_source_open(BgSourceTable *source, Relation rel)
{
	source->rel = rel;
	source->root = rel;
	if (rel->rd_rel->relispartition)
	{
		List	   *ancestors = get_partition_ancestors(RelationGetRelid(rel));

		/* the last ancestor is the top of the tree */
		source->root = table_open(llast_oid(ancestors), AccessShareLock);
		list_free(ancestors);
	}
	source->root_name =
		quote_qualified_identifier(get_namespace_name(RelationGetNamespace(source->root)),
								   RelationGetRelationName(source->root));
}

void
bg_source_close(BgSourceTable *source)
{
	/* the lock is kept to the end of the transaction, like the row's */
	if (source->root != source->rel)
		table_close(source->root, NoLock);
	source->root = NULL;
}

/*
 * The columns of the root's primary key, in key order.  A root with none,
 * or with one that may not be unique when the trigger reads it, is refused:
 *
 * - a DEFERRABLE key is checked when the transaction commits, not when an
 *   AFTER ROW trigger fires.  Two rows may hold the same key meanwhile; the
 *   second row's payment would be taken for a repeat of the first's
 *   (billogram_keys) and never made, even though the transaction may give
 *   that row another key before it commits;
 * - a partitioned root's key that is not valid (added with ALTER TABLE
 *   ONLY, some partition's index not attached to it yet) is not enforced
 *   in every partition: the same loss.
 *
 * Read from pg_index rather than through RelationGetPrimaryKeyIndex(),
 * whose answer differs by major: up to 17 it leaves out a deferrable or
 * invalid key; from 18 on it takes a deferrable_ok argument, and returns a
 * partitioned table's key even when it is not valid, which
 * RelationGetPrimaryKeyIndex(rel, false) would therefore accept.  The
 * index's own flags give the one rule above on every major, and let the
 * error say which condition failed.
 */
static List *
root_key_columns(const BgSourceTable *source)
{
	List	   *indexes = RelationGetIndexList(source->root);
	List	   *columns = NIL;
	bool		found = false;
	bool		deferrable = false;
	bool		valid = true;
	ListCell   *lc;

	foreach(lc, indexes)
	{
		HeapTuple	tuple = SearchSysCache1(INDEXRELID,
											ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;
		int			i;

		if (!HeapTupleIsValid(tuple))
			continue;
		index = (Form_pg_index) GETSTRUCT(tuple);
		if (index->indisprimary)
		{
			found = true;
			deferrable = !index->indimmediate;
			valid = index->indisvalid;
			for (i = 0; i < index->indnkeyatts; i++)
				columns = lappend_int(columns, index->indkey.values[i]);
		}
		ReleaseSysCache(tuple);
		if (found)
			break;
	}
	list_free(indexes);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram_payment_trigger: table %s has no primary key",
						source->root_name),
				 errdetail("Nothing was queued: each payment is keyed by the row's primary key, so that a row inserted again (moved to another partition, restored by COPY) is never paid twice."),
				 errhint("Add a primary key to %s.", source->root_name)));
	if (deferrable)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram_payment_trigger: the primary key of table %s is deferrable",
						source->root_name),
				 errdetail("Nothing was queued: each payment is keyed by the row's primary key, and a deferrable key may be held by two rows until the transaction commits, so that one row's payment would be taken for the other's."),
				 errhint("Recreate the primary key of %s without DEFERRABLE.",
						 source->root_name)));
	if (!valid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billogram_payment_trigger: the primary key of table %s is not valid",
						source->root_name),
				 errdetail("Nothing was queued: each payment is keyed by the row's primary key, which is not enforced in a partition whose index is not attached to it."),
				 errhint("Attach each partition's primary key index to that of %s (ALTER INDEX ... ATTACH PARTITION).",
						 source->root_name)));
	return columns;
}

/* Types whose text output no session setting changes. */
static bool
output_is_stable(Oid type)
{
	Oid			base = getBaseType(type);

	switch (base)
	{
		case BOOLOID:
		case CHAROID:
		case NAMEOID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case NUMERICOID:
		case TEXTOID:
		case BPCHAROID:
		case VARCHAROID:
		case UUIDOID:
			return true;
		default:
			return type_is_enum(base);
	}
}

/*
 * The settings that change the text of dates, times, intervals, floats,
 * bytea and money, fixed while a key with such a column is written.
 */
static int
pin_output_settings(void)
{
	static const char *const pinned[][2] = {
		{"DateStyle", "ISO, YMD"},
		{"IntervalStyle", "postgres"},
		{"TimeZone", "UTC"},
		{"extra_float_digits", "1"},
		{"bytea_output", "hex"},
		{"lc_monetary", "C"},
	};
	int			nestlevel = NewGUCNestLevel();
	size_t		i;

	for (i = 0; i < lengthof(pinned); i++)
		(void) set_config_option(pinned[i][0], pinned[i][1],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

static void
append_key_value(StringInfo buf, Relation rel, HeapTuple tuple, int attnum)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	bool		isnull;
	Datum		value = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);
	Oid			typoutput;
	bool		varlena;

	escape_json(buf, NameStr(att->attname));
	appendStringInfoChar(buf, ':');
	if (isnull)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	getTypeOutputInfo(att->atttypid, &typoutput, &varlena);
	escape_json(buf, OidOutputFunctionCall(typoutput, value));
}

char *
bg_source_key_json(const BgSourceTable *source, HeapTuple tuple)
{
	List	   *root_columns = root_key_columns(source);
	List	   *columns = NIL;
	bool		stable = true;
	int			nestlevel = -1;
	StringInfoData buf;
	ListCell   *lc;

	/* the root's key columns, found by name in the partition fired on */
	foreach(lc, root_columns)
	{
		AttrNumber	attnum = (AttrNumber) lfirst_int(lc);

		if (source->root != source->rel)
			attnum = get_attnum(RelationGetRelid(source->rel),
								get_attname(RelationGetRelid(source->root), attnum, false));
		if (attnum == InvalidAttrNumber)
			elog(ERROR, "billogram: primary key column of %s missing in partition %s",
				 source->root_name, RelationGetRelationName(source->rel));
		columns = lappend_int(columns, attnum);
		if (!output_is_stable(TupleDescAttr(RelationGetDescr(source->rel), attnum - 1)->atttypid))
			stable = false;
	}

	if (!stable)
		nestlevel = pin_output_settings();
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	foreach(lc, columns)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&buf, ',');
		append_key_value(&buf, source->rel, tuple, (AttrNumber) lfirst_int(lc));
	}
	appendStringInfoChar(&buf, '}');
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
	return buf.data;
}

Numeric
bg_source_amount(Relation rel, HeapTuple tuple, int attnum)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	Oid			base = getBaseType(att->atttypid);
	PGFunction	to_numeric = NULL;
	bool		isnull;
	Datum		value;

	switch (base)
	{
		case NUMERICOID:
			break;
		case INT2OID:
			to_numeric = int2_numeric;
			break;
		case INT4OID:
			to_numeric = int4_numeric;
			break;
		case INT8OID:
			to_numeric = int8_numeric;
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("billogram_payment_trigger: amount column \"%s\" of table \"%s\" is of type %s",
							NameStr(att->attname), RelationGetRelationName(rel),
							format_type_be(att->atttypid)),
					 errdetail("Nothing was queued: amounts are read exactly, from numeric or integer columns only; %s.",
							   (base == FLOAT4OID || base == FLOAT8OID) ?
							   "a float holds most amounts in cents only approximately, and how it prints depends on extra_float_digits" :
							   "this type is not an exact number"),
					 errhint("Make the column numeric, e.g. ALTER TABLE %s ALTER COLUMN %s TYPE numeric(12, 2).",
							 quote_identifier(RelationGetRelationName(rel)),
							 quote_identifier(NameStr(att->attname)))));
	}

	value = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);
	if (isnull)
		return NULL;
	if (to_numeric == NULL)
		return DatumGetNumeric(value);
	return DatumGetNumeric(DirectFunctionCall1(to_numeric, value));
}
