/*-------------------------------------------------------------------------
 *
 * trust.h
 *	  What the extension trusts: only what a superuser made (trust.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BILLOGRAM_TRUST_H
#define BILLOGRAM_TRUST_H

/*
 * Why the extension extoid (whose pg_extension row has xmin ext_xmin) in
 * schema nspid cannot be trusted to run with a superuser's rights, naming
 * the object; NULL when it can.  Kept until an invalidation says that
 * something it rests on changed.  Catalog access only: in a transaction.
 */
extern const char *bg_trust_refusal(Oid extoid, TransactionId ext_xmin,
									Oid nspid);

/* Whether relid is a table of the extension found trusted just now. */
extern bool bg_trust_is_member_table(Oid relid);

#endif							/* BILLOGRAM_TRUST_H */
