/*-------------------------------------------------------------------------
 *
 * row_moves.c
 *	  Recognising the INSERT half of an UPDATE that moves a row to another
 *	  partition, for billogram_payment_trigger().
 *
 * PostgreSQL carries out such an UPDATE as a DELETE from the old partition
 * and an INSERT into the new one, and fires AFTER INSERT triggers on the new
 * one; nothing in TriggerData tells it from a real INSERT.  The row's key
 * cannot tell either: a partitioned table's primary key must contain the
 * partition key, so a row that moves changes its primary key.
 *
 * What does tell: AFTER ROW triggers fire at the end of the statement that
 * queued them, inside its ExecutorFinish.  A hook there notes which tables
 * the statement UPDATEs and which it INSERTs into (or MERGEs into), from
 * its ModifyTable nodes, its own and its data-modifying CTEs'.  An AFTER
 * INSERT on a partition of a tree the statement only UPDATEs is a move.  A
 * statement that also inserts into that tree (a writable CTE) cannot be
 * told apart row by row: its rows are taken as inserts and keyed as usual.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/partition.h"
#include "executor/executor.h"
#include "nodes/plannodes.h"
#include "parser/parsetree.h"
#include "utils/rel.h"

#include "source_row.h"

/* What the statement whose AFTER triggers are firing modifies. */
typedef struct BgStatementTargets
{
	List	   *updated;		/* relids of tables it UPDATEs */
	List	   *inserted;		/* relids it INSERTs or MERGEs into */
} BgStatementTargets;

static ExecutorFinish_hook_type prev_executor_finish = NULL;
static BgStatementTargets *finishing = NULL;

static void
note_modify_table(Plan *plan, List *rtable, BgStatementTargets *targets)
{
	ModifyTable *mt;
	Index		rti;
	Oid			relid;

	if (plan == NULL || !IsA(plan, ModifyTable))
		return;
	mt = (ModifyTable *) plan;
	rti = mt->rootRelation ? mt->rootRelation : mt->nominalRelation;
	if (rti == 0)
		return;
	relid = rt_fetch(rti, rtable)->relid;
	if (mt->operation == CMD_UPDATE)
		targets->updated = lappend_oid(targets->updated, relid);
	else if (mt->operation == CMD_INSERT || mt->operation == CMD_MERGE)
		targets->inserted = lappend_oid(targets->inserted, relid);
}

static void
billogram_executor_finish(QueryDesc *queryDesc)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;
	BgStatementTargets targets = {NIL, NIL};
	BgStatementTargets *outer = finishing;
	ListCell   *lc;

	if (stmt->commandType == CMD_UPDATE || stmt->hasModifyingCTE)
	{
		note_modify_table(stmt->planTree, stmt->rtable, &targets);
		foreach(lc, stmt->subplans)
			note_modify_table((Plan *) lfirst(lc), stmt->rtable, &targets);
	}

	/* the global must not outlive this statement, even on error */
	finishing = &targets;
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		finishing = outer;
	}
	PG_END_TRY();
	list_free(targets.updated);
	list_free(targets.inserted);
}

void
bg_row_moves_install_hook(void)
{
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = billogram_executor_finish;
}

/* Whether relid is rel itself or one of the partitioned tables above it. */
static bool
covers(List *relids, Relation rel, List *ancestors)
{
	ListCell   *lc;

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (relid == RelationGetRelid(rel) || list_member_oid(ancestors, relid))
			return true;
	}
	return false;
}

bool
bg_row_is_moving(Relation rel)
{
	List	   *ancestors;
	bool		moving;

	if (finishing == NULL || finishing->updated == NIL ||
		!rel->rd_rel->relispartition)
		return false;
	ancestors = get_partition_ancestors(RelationGetRelid(rel));
	moving = covers(finishing->updated, rel, ancestors) &&
		!covers(finishing->inserted, rel, ancestors);
	list_free(ancestors);
	return moving;
}
