/*-------------------------------------------------------------------------
 *
 * source_row.h
 *	  What billogram_payment_trigger() reads from the row it fires for: the
 *	  table that owns the row (the root of its partition tree), the row's
 *	  key there, its amount, read by cast, and whether an UPDATE is only
 *	  moving it to another partition (source_row.c, row_moves.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_SOURCE_ROW_H
#define BILLOGRAM_SOURCE_ROW_H

#include "access/htup.h"
#include "utils/numeric.h"
#include "utils/relcache.h"

/*
 * The table a payment comes from: a plain table is its own root; a
 * partition's root is the top of its partition tree, whose primary key is
 * the row's identity whichever partition holds it.
 */
typedef struct BgSourceTable
{
	Relation	rel;			/* the table the trigger fires on */
	Relation	root;			/* its root; == rel for a plain table */
	char	   *root_name;		/* the root, schema-qualified and quoted */
} BgSourceTable;

extern void bg_source_open(BgSourceTable *source, Relation rel);
extern void bg_source_close(BgSourceTable *source);

/*
 * The row's primary key in the root, as a JSON object of the key columns'
 * canonical text, in the key's column order.  A root without a primary
 * key is refused (nothing can tell its rows apart), and so is one whose
 * key is deferrable or not valid (two rows may hold it when this runs).
 */
extern char *bg_source_key_json(const BgSourceTable *source, HeapTuple tuple);

/*
 * The amount in column attnum as a numeric, converted from numeric or an
 * integer type by cast; any other type (float, money, text...) is refused
 * with 42804 whatever the row holds.  NULL when the value is NULL.
 */
extern Numeric bg_source_amount(Relation rel, HeapTuple tuple, int attnum);

/*
 * row_moves.c: whether the AFTER INSERT firing on partition rel is the
 * insert half of an UPDATE that moved the row there (a row already queued
 * when it was first inserted), and the executor hook that knows.
 */
extern void bg_row_moves_install_hook(void);
extern bool bg_row_is_moving(Relation rel);

#endif							/* BILLOGRAM_SOURCE_ROW_H */
