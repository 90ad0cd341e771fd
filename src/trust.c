/*-------------------------------------------------------------------------
 *
 * trust.c
 *	  What the extension trusts: only what a superuser made.
 *
 * The worker runs as the bootstrap superuser, the SECURITY DEFINER
 * functions as the extension's owner, and the queuing functions insert as
 * the journal's owner.  Whatever runs inside them runs with a superuser's
 * rights, so before any of them touches the journal this file checks that
 * nothing a non-superuser made can run there:
 *
 *	- the extension's schema belongs to a superuser, and neither PUBLIC nor
 *	  any role that is not a superuser holds CREATE on it, so that no name
 *	  the extension uses can be taken by another's object;
 *	- every member of the extension (pg_depend, deptype 'e') belongs to a
 *	  superuser: a function given to another role could be replaced by it;
 *	- no trigger, rule or row-level policy is on any of its tables, but
 *	  the extension's own write guard (a trigger calling its member
 *	  function billogram_journal_guard(), without a WHEN condition).
 *
 * The last rule is the strict one on purpose: the extension makes no other,
 * so whatever else is there was added afterwards, and a trigger runs its function
 * inside the worker's transaction as a superuser whoever owns that
 * function.  Judging such objects by their function's owner would leave
 * the functions those call, their search_path and so on to judge too;
 * refusing them all is simple and leaves nothing to judge.  (A superuser
 * who wants to watch the journal can read it, or its WAL.)
 *
 * The answer is kept until something it rests on may have changed: the
 * extension's catalog row (ALTER EXTENSION), a schema, function, type or
 * role (syscache invalidations), or one of the extension's tables
 * (relcache invalidation: CREATE TRIGGER, CREATE RULE, CREATE POLICY and
 * ALTER TABLE ... OWNER all send one).  A new check costs a scan of the
 * extension's pg_depend entries, a few dozen catalog cache lookups.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_rewrite.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "trust.h"

/*
 * The kept answer: complete once a check ran to its end, and up to date
 * while no invalidation came since that check began.
 */
static struct
{
	bool		complete;
	bool		checking;		/* any table's invalidation counts */
	uint64		invalidations;	/* counted by the callbacks */
	uint64		checked_at;		/* invalidations when the check began */
	Oid			extension;
	TransactionId extension_xmin;	/* its pg_extension row's version */
	char	   *refusal;		/* NULL when trusted; TopMemoryContext */
	Oid		   *tables;			/* the member tables, TopMemoryContext */
	int			ntables;
}			trust;

static bool
is_member_table(Oid relid)
{
	int			i;

	for (i = 0; i < trust.ntables; i++)
		if (trust.tables[i] == relid)
			return true;
	return false;
}

static void
forget_on_syscache(Datum arg, int cacheid, uint32 hashvalue)
{
	trust.invalidations++;
}

static void
forget_on_relcache(Datum arg, Oid relid)
{
	if (trust.checking || !OidIsValid(relid) || is_member_table(relid))
		trust.invalidations++;
}

static void
register_callbacks(void)
{
	static bool registered = false;

	if (registered)
		return;
	CacheRegisterSyscacheCallback(NAMESPACEOID, forget_on_syscache, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, forget_on_syscache, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, forget_on_syscache, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, forget_on_syscache, (Datum) 0);
	CacheRegisterRelcacheCallback(forget_on_relcache, (Datum) 0);
	registered = true;
}

/*
 * An object as messages name it, schema-qualified whatever the search_path
 * of the process that asks: "trigger watch on billogram.billogram_requests".
 */
static char *
object_name(const ObjectAddress *object)
{
	return psprintf("%s %s", getObjectTypeDescription(object, false),
					getObjectIdentity(object, false));
}

static char *
role_name(Oid roleid)
{
	char	   *name = GetUserNameFromId(roleid, true);

	return name ? name : psprintf("role %u", roleid);
}

/* Why the schema is not the extension's alone, or NULL. */
static char *
schema_refusal(Oid nspid)
{
	HeapTuple	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	Form_pg_namespace nsp;
	char	   *why = NULL;
	Datum		acldatum;
	bool		isnull;

	if (!HeapTupleIsValid(tuple))
		return pstrdup("the extension's schema is gone");
	nsp = (Form_pg_namespace) GETSTRUCT(tuple);
	if (!superuser_arg(nsp->nspowner))
		why = psprintf("schema %s belongs to %s, who is not a superuser",
					   quote_identifier(NameStr(nsp->nspname)),
					   role_name(nsp->nspowner));
	acldatum = SysCacheGetAttr(NAMESPACEOID, tuple, Anum_pg_namespace_nspacl,
							   &isnull);
	if (why == NULL && !isnull)
	{
		Datum	   *items;
		int			n;
		int			i;
		int16		typlen;
		bool		typbyval;
		char		typalign;

		/* deconstructed: the array macros do not compile with -Wextra */
		get_typlenbyvalalign(ACLITEMOID, &typlen, &typbyval, &typalign);
		deconstruct_array(DatumGetArrayTypeP(acldatum), ACLITEMOID,
						  typlen, typbyval, typalign, &items, NULL, &n);
		for (i = 0; i < n && why == NULL; i++)
		{
			AclItem    *item = (AclItem *) DatumGetPointer(items[i]);
			Oid			grantee = item->ai_grantee;

			if ((ACLITEM_GET_PRIVS(*item) & ACL_CREATE) == 0)
				continue;
			if (grantee == ACL_ID_PUBLIC || !superuser_arg(grantee))
				why = psprintf("%s may create objects in schema %s",
							   grantee == ACL_ID_PUBLIC ? "PUBLIC" : role_name(grantee),
							   quote_identifier(NameStr(nsp->nspname)));
		}
	}
	ReleaseSysCache(tuple);
	return why;
}

/*
 * Whether a trigger is the extension's write guard: its function a member
 * of the extension, and no WHEN condition, which would be code of its own.
 */
static bool
is_own_guard(HeapTuple tuple, TupleDesc desc, Oid extoid)
{
	Form_pg_trigger trigger = (Form_pg_trigger) GETSTRUCT(tuple);
	bool		isnull;

	(void) heap_getattr(tuple, Anum_pg_trigger_tgqual, desc, &isnull);
	return isnull &&
		getExtensionOfObject(ProcedureRelationId, trigger->tgfoid) == extoid;
}

/*
 * The first row of catalog catid (through index indid) whose first key
 * column is relid: a trigger, rule or policy on a table, or InvalidOid.
 * The extension's own write guard is not counted.
 */
static Oid
first_on_table(Oid catid, Oid indid, AttrNumber keycol, AttrNumber oidcol,
			   Oid relid, Oid extoid)
{
	Relation	rel = table_open(catid, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			found = InvalidOid;

	ScanKeyInit(&key, keycol, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, indid, true, NULL, 1, &key);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;

		if (catid == TriggerRelationId &&
			is_own_guard(tuple, RelationGetDescr(rel), extoid))
			continue;
		found = DatumGetObjectId(heap_getattr(tuple, oidcol,
											  RelationGetDescr(rel), &isnull));
		break;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* Why the table relid carries code the extension did not put there. */
static char *
table_refusal(Oid relid, Oid extoid)
{
	static const struct
	{
		Oid			catalog;
		Oid			index;
		AttrNumber	key;
		AttrNumber	oid;
	}			kinds[] = {
		{TriggerRelationId, TriggerRelidNameIndexId,
		Anum_pg_trigger_tgrelid, Anum_pg_trigger_oid},
		{RewriteRelationId, RewriteRelRulenameIndexId,
		Anum_pg_rewrite_ev_class, Anum_pg_rewrite_oid},
		{PolicyRelationId, PolicyPolrelidPolnameIndexId,
		Anum_pg_policy_polrelid, Anum_pg_policy_oid},
	};
	size_t		i;

	for (i = 0; i < lengthof(kinds); i++)
	{
		ObjectAddress object;

		object.classId = kinds[i].catalog;
		object.objectId = first_on_table(kinds[i].catalog, kinds[i].index,
										 kinds[i].key, kinds[i].oid, relid,
										 extoid);
		object.objectSubId = 0;
		if (OidIsValid(object.objectId))
			return psprintf("%s was not made by the extension",
							object_name(&object));
	}
	return NULL;
}

/* The owner of a member of the extension; InvalidOid for other kinds. */
static Oid
member_owner(Oid classid, Oid objid, char *relkind)
{
	int			cacheid;
	HeapTuple	tuple;
	Oid			owner = InvalidOid;

	*relkind = '\0';
	if (classid == RelationRelationId)
		cacheid = RELOID;
	else if (classid == ProcedureRelationId)
		cacheid = PROCOID;
	else if (classid == TypeRelationId)
		cacheid = TYPEOID;
	else
		return InvalidOid;
	tuple = SearchSysCache1(cacheid, ObjectIdGetDatum(objid));
	if (!HeapTupleIsValid(tuple))
		return InvalidOid;
	if (cacheid == RELOID)
	{
		owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
		*relkind = ((Form_pg_class) GETSTRUCT(tuple))->relkind;
	}
	else if (cacheid == PROCOID)
		owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	else
		owner = ((Form_pg_type) GETSTRUCT(tuple))->typowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * Why a member of the extension cannot be trusted, or NULL; the member
 * tables are collected into *tables as they are met.
 */
static char *
members_refusal(Oid extoid, List **tables)
{
	Relation	rel = table_open(DependRelationId, AccessShareLock);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *why = NULL;

	ScanKeyInit(&key[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(ExtensionRelationId));
	ScanKeyInit(&key[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, DependReferenceIndexId, true, NULL, 2, key);
	while (why == NULL && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tuple);
		ObjectAddress object;
		Oid			owner;
		char		relkind;

		if (dep->deptype != DEPENDENCY_EXTENSION)
			continue;
		owner = member_owner(dep->classid, dep->objid, &relkind);
		object.classId = dep->classid;
		object.objectId = dep->objid;
		object.objectSubId = 0;
		if (OidIsValid(owner) && !superuser_arg(owner))
			why = psprintf("%s belongs to %s, who is not a superuser",
						   object_name(&object), role_name(owner));
		else if (relkind == RELKIND_RELATION ||
				 relkind == RELKIND_PARTITIONED_TABLE)
		{
			*tables = lappend_oid(*tables, dep->objid);
			why = table_refusal(dep->objid, extoid);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return why;
}

/* Check everything again, and keep the answer. */
static void
check_again(Oid extoid, TransactionId ext_xmin, Oid nspid)
{
	List	   *tables = NIL;
	char	   *why;
	ListCell   *lc;
	int			i = 0;

	/* an invalidation while checking makes the next call check again */
	trust.complete = false;
	trust.checking = true;
	trust.checked_at = trust.invalidations;
	trust.extension = extoid;
	trust.extension_xmin = ext_xmin;
	if (trust.refusal)
		pfree(trust.refusal);
	trust.refusal = NULL;
	trust.ntables = 0;

	why = schema_refusal(nspid);
	if (why == NULL)
		why = members_refusal(extoid, &tables);
	if (why != NULL)
		trust.refusal = MemoryContextStrdup(TopMemoryContext, why);

	if (trust.tables)
		pfree(trust.tables);
	trust.tables = MemoryContextAlloc(TopMemoryContext,
									  sizeof(Oid) * Max(list_length(tables), 1));
	foreach(lc, tables)
		trust.tables[i++] = lfirst_oid(lc);
	trust.ntables = i;
	trust.checking = false;
	trust.complete = true;
}

/* See trust.h. */
const char *
bg_trust_refusal(Oid extoid, TransactionId ext_xmin, Oid nspid)
{
	register_callbacks();
	if (!trust.complete || trust.invalidations != trust.checked_at ||
		trust.extension != extoid ||
		!TransactionIdEquals(trust.extension_xmin, ext_xmin))
		check_again(extoid, ext_xmin, nspid);
	return trust.refusal;
}

/* See trust.h. */
bool
bg_trust_is_member_table(Oid relid)
{
	return trust.complete && trust.refusal == NULL && is_member_table(relid);
}
