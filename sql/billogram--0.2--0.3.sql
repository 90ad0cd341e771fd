/*
 * billogram 0.2 -> 0.3
 *
 * Never twice, never lost: a ledger of what Billogram showed the worker per
 * invoice, a baseline fixed on each row when it is claimed, one payment per
 * source row and per idempotency key, rows restored from a dump recognised
 * by an instance identity that is never dumped.  billogram--0.3.sql
 * documents every object; the upgraded schema is the same as a fresh 0.3
 * one (tests/t/010_upgrade.pl compares them).
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION billogram UPDATE TO '0.3'" to load this file. \quit

/*
 * Its own schema (issue 20).  0.2 was installed where CREATE EXTENSION put
 * it, in practice public, which the database owner controls: that owner
 * could rename it and put a table or function of their own in its place,
 * which the worker and the SECURITY DEFINER functions, running as a
 * superuser, then used; DROP SCHEMA public CASCADE dropped the journal.
 * The update moves every object into schema billogram: made here when it
 * is missing (owned by the superuser running the update, and not a member
 * of the extension, as CREATE EXTENSION makes it), refused when it exists
 * and a non-superuser owns it or may create in it.  Until then nothing in
 * any schema is looked up but pg_catalog.
 */
SET search_path = pg_catalog, pg_temp;
DO $$
BEGIN
    IF pg_catalog.to_regnamespace('billogram') IS NULL THEN
        CREATE SCHEMA billogram;
        ALTER EXTENSION billogram DROP SCHEMA billogram;
    END IF;
END
$$;
/*
 * The schema must be the extension's alone.  CREATE EXTENSION uses a
 * schema billogram that exists already; whoever owns it, or may create
 * objects in it, could put a table, function or operator there that the
 * extension's functions and its worker, running as a superuser, would use
 * in place of their own.  So the schema must belong to a superuser, no
 * role but superusers may create in it (PUBLIC included: a grant made by
 * ALTER DEFAULT PRIVILEGES ... ON SCHEMAS counts, since it applies to the
 * schema CREATE EXTENSION makes), and nothing in it may belong to a
 * non-superuser.  Otherwise nothing is created: 42501, naming who.
 * Until the check has passed, nothing in the schema is looked up: a
 * function or operator there matching an argument's type more closely
 * than pg_catalog's would be chosen over it even with pg_catalog first.
 * billogram--0.3.sql runs the same check.
 */
DO $$
DECLARE
    nsp oid := pg_catalog.to_regnamespace('billogram');
    why text;
BEGIN
    SELECT format('it is owned by %s, who is not a superuser', quote_ident(r.rolname))
      INTO why
      FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
     WHERE n.oid = nsp AND NOT r.rolsuper;
    IF why IS NULL THEN
        SELECT format('%s may create objects in it',
                      string_agg(CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, ', '))
          INTO why
          FROM pg_namespace n, aclexplode(n.nspacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND NOT coalesce(r.rolsuper, false)
        HAVING count(*) > 0;
    END IF;
    IF why IS NULL THEN
        SELECT format('%s in it belong to roles that are not superusers', string_agg(o.what, ', '))
          INTO why
          FROM (SELECT format('%s (%s)', c.relname, pg_get_userbyid(c.relowner)) AS what, c.relowner AS owner
                  FROM pg_class c WHERE c.relnamespace = nsp
                UNION ALL
                SELECT format('%s (%s)', p.oid::regprocedure, pg_get_userbyid(p.proowner)), p.proowner
                  FROM pg_proc p WHERE p.pronamespace = nsp
                UNION ALL
                SELECT format('type %s (%s)', t.typname, pg_get_userbyid(t.typowner)), t.typowner
                  FROM pg_type t WHERE t.typnamespace = nsp
                UNION ALL
                SELECT format('operator %s (%s)', o.oid::regoperator, pg_get_userbyid(o.oprowner)), o.oprowner
                  FROM pg_operator o WHERE o.oprnamespace = nsp) o
          JOIN pg_roles r ON r.oid = o.owner
         WHERE NOT r.rolsuper
        HAVING count(*) > 0;
    END IF;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'schema billogram cannot hold the billogram extension: %', why
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The extension''s functions and its worker run as a superuser and use the objects in this schema: whoever owns it or may create in it could put their own there.',
                  HINT = 'As a superuser: ALTER SCHEMA billogram OWNER TO a superuser, REVOKE CREATE ON SCHEMA billogram FROM every role that is not one (and from PUBLIC; and ALTER DEFAULT PRIVILEGES ... REVOKE CREATE ON SCHEMAS if that is where the grant came from), and drop what others made in it; or drop the schema, and CREATE EXTENSION billogram makes its own.';
    END IF;
END
$$;

/*
 * The move: ALTER EXTENSION ... SET SCHEMA moves every member, and the
 * extension itself, as PostgreSQL does for a relocatable extension; 0.3 is
 * not relocatable (the control file), so it is marked so for this one
 * statement.  Grants, dependencies and the rows go along unchanged.  (0.2
 * installed into schema billogram by its administrator stays where it is.)
 */
DO $$
BEGIN
    IF (SELECT extnamespace FROM pg_extension WHERE extname = 'billogram')
       <> 'billogram'::regnamespace THEN
        UPDATE pg_extension SET extrelocatable = true WHERE extname = 'billogram';
        ALTER EXTENSION billogram SET SCHEMA billogram;
        UPDATE pg_extension SET extrelocatable = false WHERE extname = 'billogram';
    END IF;
END
$$;
SET search_path = billogram, pg_temp;

/*
 * billogram_assert_trusted()
 *
 * Internal: raises 42501 while anything of the extension is not what a
 * superuser made: schema billogram not a superuser's or open to others'
 * CREATE, an object of the extension owned by a non-superuser, or a
 * trigger, rule or row-level policy on one of its tables (the extension
 * makes none, so any there was added, and would run as a superuser inside
 * the functions below and inside the worker).  The first statement of
 * every SECURITY DEFINER function below; the worker runs the same check
 * before each batch, and the queuing functions before they insert as the
 * journal's owner.  The answer is kept until the catalogs it read change.
 * Privileges: EXECUTE revoked from PUBLIC; the SECURITY DEFINER functions
 * call it as its owner.
 */
CREATE FUNCTION billogram_assert_trusted()
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_assert_trusted'
LANGUAGE C STABLE;

REVOKE ALL ON FUNCTION billogram_assert_trusted() FROM PUBLIC;

-- the new columns, in the order billogram--0.3.sql lists them
ALTER TABLE billogram_requests
    ADD COLUMN made_in_instance uuid,
    ADD COLUMN idempotency_key  text,
    ADD COLUMN baseline         jsonb,
    ADD COLUMN event_uuids      text[],
    ADD COLUMN verify_reason    text;

/*
 * The objects made again by this update, whose grants are given back at the
 * end: billogram_health and its function (billogram_health gains refusal,
 * so its function's result changes), and the two views over the columns
 * whose type changes just below (a view keeps its columns' types).  Only
 * grants made before this transaction: an update from 0.1 made some of them
 * just now, with only what default privileges gave them.
 */
DO $$
BEGIN
    PERFORM set_config('billogram_upgrade.remade_grants', coalesce(string_agg(
        format('GRANT %s ON %s TO %s%s', a.privilege_type, o.what,
               CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
               CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), '; '), ''), true)
      FROM (SELECT 'TABLE billogram.' || quote_ident(c.relname) AS what, c.relacl AS acl,
                   c.relowner AS owner, 'pg_class'::regclass AS catalog, c.oid
              FROM pg_class c
             WHERE c.oid IN ('billogram.billogram_health'::regclass,
                             'billogram.billogram_queue_status'::regclass,
                             'billogram.billogram_in_doubt'::regclass)
            UNION ALL
            SELECT 'FUNCTION billogram.billogram_worker_status()', p.proacl, p.proowner,
                   'pg_proc'::regclass, p.oid
              FROM pg_proc p WHERE p.oid = 'billogram.billogram_worker_status()'::regprocedure) o,
           aclexplode(o.acl) a
     WHERE a.grantee <> o.owner
       AND EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = o.catalog AND d.objid = o.oid AND d.deptype = 'e'
                      AND age(d.xmin) > 0);
END
$$;

/*
 * The enumerated columns take their values from domains (see
 * billogram--0.3.sql) instead of CHECK constraints.  The two views over
 * them are dropped first and made again below: billogram_queue_status
 * here, billogram_in_doubt with its new definition.
 */
DROP VIEW billogram_queue_status;
DROP VIEW billogram_in_doubt;

CREATE DOMAIN billogram_origin AS text CHECK (VALUE IN ('sync', 'enqueue', 'trigger'));
CREATE DOMAIN billogram_mode AS text CHECK (VALUE IN ('remaining', 'amount'));
CREATE DOMAIN billogram_state AS text
    CHECK (VALUE IN ('pending', 'sending', 'done', 'failed', 'in_doubt', 'held'));
CREATE DOMAIN billogram_key_kind AS text CHECK (VALUE IN ('source', 'call'));

ALTER TABLE billogram_requests
    DROP CONSTRAINT billogram_requests_origin_check,
    DROP CONSTRAINT billogram_requests_mode_check,
    DROP CONSTRAINT billogram_requests_state_check,
    ALTER COLUMN origin TYPE billogram_origin,
    ALTER COLUMN mode TYPE billogram_mode,
    ALTER COLUMN state TYPE billogram_state;

CREATE VIEW billogram_queue_status AS
SELECT state,
       count(*) AS requests,
       CASE WHEN state = 'pending' THEN now() - min(created_at) END AS oldest_pending_age,
       (array_agg(error ORDER BY coalesce(finished_at, sent_at) DESC NULLS LAST)
            FILTER (WHERE error IS NOT NULL))[1] AS last_error,
       CASE WHEN state = 'held' THEN min(held_at) END AS held_since
  FROM billogram_requests
 GROUP BY state;

REVOKE ALL ON billogram_queue_status FROM PUBLIC;

/*
 * billogram_instance: who this installation is.  One row, made by CREATE
 * EXTENSION (and by the update to 0.3) with a random id, and never dumped:
 * pg_dump leaves its contents out, so a restore, even into the same
 * database, gets an id of its own, and the rows it brings back, made under
 * another id, are held rather than sent (see made_in_instance).  A
 * physical standby has its primary's row, so a promoted standby goes on
 * with the queue it inherited (after the checks described at
 * billogram_requests).  timeline is the WAL timeline the worker last saw:
 * a different one means a promotion or a point-in-time recovery happened.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_instance (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    timeline    bigint,
    one_row     boolean NOT NULL DEFAULT true UNIQUE CHECK (one_row)
);
INSERT INTO billogram_instance DEFAULT VALUES;
REVOKE ALL ON billogram_instance FROM PUBLIC;

/*
 * billogram_keys: every key that has paid, kept for ever (billogram_purge
 * leaves it): a source row of a payments table ('source': the root table
 * of its partition tree and its primary key) or a caller's idempotency key
 * ('call'), and the journal row it made.  A second payment with the same
 * key is not made.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_keys (
    kind        billogram_key_kind NOT NULL,
    key         text NOT NULL,
    request_id  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
REVOKE ALL ON billogram_keys FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_keys', '');

/*
 * billogram_ledger: what Billogram showed the worker of each invoice, one
 * row per invoice: the remaining sum as last seen, and every event uuid
 * ever seen on it, with the journal row (if any) whose payment made it.
 * Written in the same transaction as the outcome or reading that showed
 * it, whatever billogram.journal_reply keeps, and never purged.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_ledger (
    billogram_id   text PRIMARY KEY,
    remaining_sum  numeric,
    events         jsonb NOT NULL DEFAULT '{}',
    seen_at        timestamptz NOT NULL,
    seen_by        bigint
);
REVOKE ALL ON billogram_ledger FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_ledger', '');

-- what the ledger knows of each invoice, as a baseline (see
-- billogram--0.3.sql)
CREATE VIEW billogram_ledger_baselines AS
SELECT l.billogram_id,
       jsonb_build_object('remaining_sum', l.remaining_sum,
                          'events', coalesce((SELECT jsonb_agg(k ORDER BY k)
                                                FROM jsonb_object_keys(l.events) k), '[]')) AS baseline
  FROM billogram_ledger l;

REVOKE ALL ON billogram_ledger_baselines FROM PUBLIC;

-- ==== the instance identity and source rows (routes 5, 6, 9, 11) ====

/*
 * Rows the update inherits.  Which of them this installation may send is
 * decided once, here, and never by guessing later:
 *   - rows 0.2 recorded as made in this cluster and this database
 *     (made_in_system, made_in_database) are this installation's: they get
 *     its identity, and pending ones are sent as before, so updating a
 *     production database in place does not stop its queue;
 *   - every other pending row (made in another cluster or database, or
 *     journaled by 0.1, which recorded no origin: see billogram--0.1--0.2.sql)
 *     may be a copy's, and a copy must not send what it inherited: it
 *     becomes 'held', with the reason in resolution, until an operator
 *     calls billogram_release_held() (or billogram_fail_held()).  A WARNING
 *     says how many (a NOTICE would not be seen: ALTER EXTENSION runs its
 *     scripts with client_min_messages at warning).
 * What the update cannot tell apart: a database restored with pg_restore
 * --clean into the same database while at 0.2 looks like the original; at
 * 0.3 such a restore gets an identity of its own and is held (see
 * billogram_instance).
 */
UPDATE billogram_requests
   SET made_in_instance = (SELECT id FROM billogram_instance)
 WHERE made_in_system = (SELECT system_identifier FROM pg_control_system())
   AND made_in_database = (SELECT oid FROM pg_database WHERE datname = current_database());

DO $$
DECLARE
    n bigint;
BEGIN
    UPDATE billogram_requests
       SET state = 'held',
           held_at = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('held by the update to 0.3 at %s: inherited, not recorded as made in this database (made in system %s database %s)',
                                         now(), coalesce(made_in_system::text, 'unknown'),
                                         coalesce(made_in_database::text, 'unknown')))
     WHERE state = 'pending' AND made_in_instance IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE WARNING 'billogram: % pending payment(s) inherited from billogram 0.1 or from another database or cluster are held, not sent', n
            USING DETAIL = 'The update cannot tell whether they were made here or came with a copy that may have sent them already.',
                  HINT = 'Check them (SELECT * FROM billogram_requests WHERE state = ''held''), then SELECT billogram_release_held(); to send them, or billogram_fail_held() to drop them.';
    END IF;
END
$$;

-- a released row becomes this installation's (made_in_instance)
CREATE OR REPLACE FUNCTION billogram_release_held(request_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    UPDATE billogram.billogram_requests
       SET state = 'pending',
           next_attempt_at = now(),
           pending_since = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('released by %s at %s (held since %s, made in system %s database %s instance %s)',
                                         billogram.billogram_caller(), now(), held_at, made_in_system, made_in_database,
                                         coalesce(made_in_instance::text, 'unknown'))),
           made_in_system = (SELECT system_identifier FROM pg_control_system()),
           made_in_database = (SELECT oid FROM pg_database WHERE datname = current_database()),
           made_in_instance = (SELECT id FROM billogram.billogram_instance),
           held_at = NULL,
           verify_reason = CASE WHEN EXISTS (SELECT 1 FROM billogram.billogram_ledger l
                                              WHERE l.billogram_id = billogram_requests.billogram_id)
                                THEN NULL ELSE 'first_payment' END
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM billogram.billogram_wake_worker_at_commit();
    END IF;
    RETURN n;
END
$$;


-- ==== idempotency keys and what the caller is told (route 10) ====

/*
 * billogram_credit_payment and billogram_enqueue_credit_payment take an
 * optional idempotency_key (see billogram--0.3.sql).  A new argument with
 * a default cannot be added in place: each function is dropped and made
 * again, and every grant of EXECUTE on the old one is given again on the
 * new one, as it was (with its grant option), so no role that could pay
 * loses it and none gains it.
 */
-- the grants, as GRANT statements run once the new functions exist
DO $$
BEGIN
    PERFORM pg_catalog.set_config('billogram_upgrade.grants', coalesce(pg_catalog.string_agg(
        pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s',
                          CASE p.proname
                              WHEN 'billogram_credit_payment'
                              THEN 'billogram_credit_payment(text, text, numeric, text)'
                              ELSE 'billogram_enqueue_credit_payment(text, text, numeric, text)' END,
                          CASE a.grantee WHEN 0 THEN 'PUBLIC'
                              ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END,
                          CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),
        '; '), ''), true)
      FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
     WHERE p.oid IN ('billogram_credit_payment(text, text, numeric)'::regprocedure,
                     'billogram_enqueue_credit_payment(text, text, numeric)'::regprocedure)
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
       -- made before this transaction: an object an update from 0.1 made
       -- just now has only what default privileges gave it (see the sweep
       -- at the end)
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                      AND d.deptype = 'e' AND pg_catalog.age(d.xmin) > 0);
END
$$;

DROP FUNCTION billogram_credit_payment(text, text, numeric);
DROP FUNCTION billogram_enqueue_credit_payment(text, text, numeric);

CREATE FUNCTION billogram_credit_payment(id text, mode text, amount numeric DEFAULT NULL,
                                         idempotency_key text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric, text) FROM PUBLIC;

COMMENT ON FUNCTION billogram_credit_payment(text, text, numeric, text) IS
'Registers a payment on a Billogram credit invoice through the billogram worker; returns the updated invoice';

CREATE FUNCTION billogram_enqueue_credit_payment(id text, mode text, amount numeric DEFAULT NULL,
                                                 idempotency_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'billogram_enqueue_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric, text) FROM PUBLIC;

-- (their grants are made again at the end, after the sweep of privileges)

-- ==== the ledger, baselines and verdicts (routes 1-4, 7, 8) ====

-- the claim's index leaves out rows waiting for their reading (see
-- billogram--0.3.sql)
DROP INDEX billogram_requests_pending_idx;
CREATE INDEX billogram_requests_pending_idx
    ON billogram_requests (next_attempt_at, id)
    WHERE state = 'pending' AND verify_reason IS NULL;

-- pending rows whose invoice is to be read before they are sent
CREATE INDEX billogram_requests_verify_idx ON billogram_requests (next_attempt_at, id)
    WHERE state = 'pending' AND verify_reason IS NOT NULL;

-- an invoice's expected rows, declared (see billogram--0.3.sql)
ALTER TABLE billogram_requests ALTER COLUMN billogram_id SET (n_distinct = -0.5);

-- billogram_announce: a row's state on the billogram_requests channel, in
-- one place (see billogram--0.3.sql)
CREATE FUNCTION billogram_announce(request_id bigint, state text)
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_announce'
LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION billogram_announce(bigint, text) FROM PUBLIC;

-- the ledger's functions (see billogram--0.3.sql)
CREATE FUNCTION billogram_ledger_record(invoice_ids text[], invoices jsonb[], request_ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- one row per invoice: ON CONFLICT may not touch a row twice, and a
    -- batch can show an invoice more than once (calls on it from several
    -- sessions).  The last remaining sum shown counts; every event joins.
    INSERT INTO billogram.billogram_ledger AS l
           (billogram_id, remaining_sum, events, seen_at, seen_by)
    SELECT s.invoice_id,
           (array_agg(CASE WHEN jsonb_typeof(s.invoice -> 'remaining_sum') = 'number'
                           THEN (s.invoice ->> 'remaining_sum')::numeric END
                      ORDER BY s.n DESC))[1],
           coalesce(jsonb_object_agg(e ->> 'event_uuid', coalesce(e -> 'amount', 'null'))
                    FILTER (WHERE e IS NOT NULL), '{}'),
           clock_timestamp(),
           (array_agg(s.request_id ORDER BY s.n DESC))[1]
      FROM unnest(invoice_ids, invoices, request_ids)
           WITH ORDINALITY AS s(invoice_id, invoice, request_id, n)
      LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(s.invoice -> 'events')
                                             WHEN 'array' THEN s.invoice -> 'events'
                                             ELSE '[]' END) e
             ON jsonb_typeof(e -> 'event_uuid') = 'string'
     WHERE s.invoice IS NOT NULL
     GROUP BY s.invoice_id
    ON CONFLICT (billogram_id) DO UPDATE
       SET remaining_sum = EXCLUDED.remaining_sum,
           events = l.events || EXCLUDED.events,
           seen_at = EXCLUDED.seen_at,
           seen_by = EXCLUDED.seen_by;
END
$$;

REVOKE ALL ON FUNCTION billogram_ledger_record(text[], jsonb[], bigint[]) FROM PUBLIC;

CREATE FUNCTION billogram_read_recorded(invoice_ids text[], invoices jsonb[], failures jsonb[],
                                        retry_secs integer, claim_max integer, here_system bigint,
                                        here_database oid, here_instance uuid)
RETURNS TABLE (claimed_id bigint, claimed_invoice text, claimed_mode text,
               claimed_amount numeric, claimed_body text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    -- the rows waiting for a reading: ids, invoices, verify_reasons
    waiting bigint[];
    waiting_on text[];
    waiting_why text[];
    -- those of them the claim's rule would take
    claimable bigint[];
    ids text[];
    shown jsonb[];
    why jsonb[];
    -- what the ledger knew of each invoice read, before this reading
    knowns jsonb[];
    r record;
BEGIN
    -- the rows waiting for these readings, locked an invoice at a time in
    -- the order of their ids, in one statement.  Found through the
    -- invoice's index alone, by equality, filtered after: a condition on
    -- state lets a plan made when few rows were pending (statistics of a
    -- quiet journal) walk every pending row of a drain, and the generic
    -- plan of one scan for all the invoices (= ANY) read the whole journal.
    -- Each invoice's scan (the LATERAL subquery) gets the plan a statement
    -- per invoice in a loop would get, in one statement for them all.
    -- Those the claim's rule would take (INVOICE_FREE_SQL in
    -- src/statements.c) are told from the rows in hand: made here, the
    -- invoice's first pending row, and no row of the invoice sending or
    -- being settled (the row itself, pending, is neither).  A join back to
    -- the journal for that test was planned as a walk of its primary key
    -- (ORDER BY id LIMIT), the whole journal on every call
    SELECT array_agg(x.id ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.invoice_id ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.verify_reason ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.id) FILTER (WHERE x.waits AND x.made_here
                                   AND x.id = x.first_pending AND x.busy = 0)
      INTO waiting, waiting_on, waiting_why, claimable
      FROM (SELECT d.invoice_id, q.id, q.verify_reason, q.waits, q.made_here,
                   min(q.id) FILTER (WHERE q.state = 'pending') OVER invoice AS first_pending,
                   count(*) FILTER (WHERE q.state = 'sending' OR q.settle_at IS NOT NULL)
                       OVER invoice AS busy
              FROM (SELECT DISTINCT i FROM unnest(invoice_ids) i ORDER BY 1) AS d(invoice_id)
             CROSS JOIN LATERAL (SELECT id, verify_reason, state, settle_at,
                                        state = 'pending' AND verify_reason IS NOT NULL AS waits,
                                        made_in_system = here_system
                                        AND made_in_database = here_database
                                        AND made_in_instance = here_instance AS made_here
                                   FROM billogram.billogram_requests
                                  WHERE billogram_id = d.invoice_id
                                  ORDER BY id
                                  FOR UPDATE) q
            WINDOW invoice AS (PARTITION BY d.invoice_id)) x;

    IF waiting IS NOT NULL THEN
        -- the reading that decides for each invoice: its last that
        -- succeeded, else its last; and what the ledger knew of it before,
        -- kept here because the reading joins the ledger before the rows
        -- that go are claimed
        SELECT array_agg(d.invoice_id), array_agg(d.invoice), array_agg(d.failure),
               array_agg((SELECT v.baseline FROM billogram.billogram_ledger_baselines v
                           WHERE v.billogram_id = d.invoice_id))
          INTO ids, shown, why, knowns
          FROM (SELECT DISTINCT ON (u.invoice_id) u.invoice_id, u.invoice, u.failure
                  FROM unnest(invoice_ids, invoices, failures)
                       WITH ORDINALITY AS u(invoice_id, invoice, failure, n)
                 ORDER BY u.invoice_id, u.invoice IS NOT NULL DESC, u.n DESC) d;

        -- an invoice that could not be read: nothing of its rows was
        -- sent; they wait, with the reason, and fail once the invoice is
        -- known not to exist or retry_for is up
        FOR r IN UPDATE billogram.billogram_requests q
                    SET state = CASE WHEN f.failure ->> 'sqlstate' = 'BG404'
                                       OR q.pending_since <= now() - make_interval(secs => retry_secs)
                                     THEN 'failed' ELSE 'pending' END,
                        finished_at = CASE WHEN f.failure ->> 'sqlstate' = 'BG404'
                                             OR q.pending_since <= now() - make_interval(secs => retry_secs)
                                           THEN clock_timestamp() END,
                        next_attempt_at = now() + make_interval(secs => greatest(
                            coalesce((f.failure ->> 'retry_after')::integer, 0),
                            least(300, 1 + extract(epoch FROM now() - q.pending_since) / 4))),
                        error = f.failure || jsonb_build_object(
                            'message', 'the invoice could not be read before sending: ' || (f.failure ->> 'message'),
                            'may_have_reached_billogram', false)
                   FROM unnest(waiting, waiting_on) AS w(id, invoice_id)
                   JOIN unnest(ids, shown, why) AS f(invoice_id, invoice, failure) USING (invoice_id)
                  WHERE q.id = w.id AND f.invoice IS NULL
                  RETURNING q.id, q.state
        LOOP
            PERFORM billogram.billogram_announce(r.id, r.state);
        END LOOP;
    END IF;

    -- the readings join the ledger, which the baselines of the rows
    -- claimed below are read from
    PERFORM billogram.billogram_ledger_record(invoice_ids, invoices, NULL);

    IF waiting IS NOT NULL THEN
        -- an invoice read: the payments on it the ledger did not know
        -- (any payment made for a row shows as one) decide for each row.
        -- A first payment has never left: whatever the invoice shows is
        -- not its doing, and is now the baseline it is sent on.  A resend
        -- or a takeover goes only if the invoice shows nothing new and the
        -- same remaining sum; otherwise a resend is in_doubt, ambiguous,
        -- and a takeover held.  The rows that go are due at once, and
        -- those the worker may send now are claimed (claim, see above).
        FOR r IN
            WITH seen AS (
                SELECT s.invoice_id, s.invoice, s.known, x.unknown,
                       x.unknown IS NULL
                       AND jsonb_typeof(s.invoice -> 'remaining_sum') = 'number'
                       AND (s.known IS NULL
                            OR (s.invoice ->> 'remaining_sum')::numeric
                               = (s.known ->> 'remaining_sum')::numeric) AS unchanged
                  FROM unnest(ids, shown, knowns) AS s(invoice_id, invoice, known)
                 CROSS JOIN LATERAL (
                       SELECT jsonb_agg(e) AS unknown
                         FROM jsonb_array_elements(CASE jsonb_typeof(s.invoice -> 'events')
                                                   WHEN 'array' THEN s.invoice -> 'events'
                                                   ELSE '[]' END) e
                        WHERE (s.known IS NULL OR NOT (s.known -> 'events' ? (e ->> 'event_uuid')))
                          AND jsonb_typeof(e -> 'amount') = 'number') x
                 WHERE s.invoice IS NOT NULL),
            verdict AS (
                SELECT w.id, w.reason, seen.*,
                       CASE WHEN seen.unchanged OR w.reason = 'first_payment' THEN 'goes'
                            WHEN w.reason = 'resend' THEN 'in_doubt'
                            ELSE 'held' END AS becomes
                  FROM unnest(waiting, waiting_on, waiting_why) AS w(id, invoice_id, reason)
                  JOIN seen ON seen.invoice_id = w.invoice_id),
            -- of the rows that go, those the claim's rule takes (claimable,
            -- as they stood when locked: a row behind one that this call
            -- fails, holds or makes in_doubt is left to the claim), at most
            -- claim_max, oldest first
            claim AS (
                SELECT v.id
                  FROM verdict v
                 WHERE v.becomes = 'goes' AND v.id = ANY (claimable)
                 ORDER BY v.id
                 LIMIT greatest(claim_max, 0))
            UPDATE billogram.billogram_requests q
               SET state = CASE WHEN c.id IS NOT NULL THEN 'sending'
                                WHEN v.becomes = 'goes' THEN q.state ELSE v.becomes END,
                   verify_reason = NULL,
                   next_attempt_at = CASE v.becomes WHEN 'goes' THEN now() ELSE q.next_attempt_at END,
                   attempts = q.attempts + CASE WHEN c.id IS NOT NULL THEN 1 ELSE 0 END,
                   sent_at = CASE WHEN c.id IS NOT NULL THEN now() ELSE q.sent_at END,
                   baseline = CASE WHEN c.id IS NOT NULL
                       THEN (SELECT b.baseline FROM billogram.billogram_ledger_baselines b
                              WHERE b.billogram_id = q.billogram_id)
                       ELSE q.baseline END,
                   resolution = CASE WHEN v.becomes <> 'goes' OR v.reason = 'first_payment'
                       THEN q.resolution
                       ELSE concat_ws(E'\n', q.resolution,
                           format('verified (%s) by the billogram worker at %s: the invoice shows no payment the ledger did not know',
                                  v.reason, now())) END,
                   finished_at = CASE v.becomes WHEN 'in_doubt' THEN clock_timestamp() ELSE q.finished_at END,
                   settle_at = CASE v.becomes WHEN 'in_doubt' THEN NULL ELSE q.settle_at END,
                   evidence = CASE v.becomes WHEN 'in_doubt' THEN jsonb_build_object(
                       'verdict', 'ambiguous', 'checked_at', now(),
                       'why', 'the resend was not made: the invoice changed since the payment was found not applied',
                       'remaining_before', v.known -> 'remaining_sum',
                       'remaining_after', v.invoice -> 'remaining_sum',
                       'new_events', coalesce(v.unknown, '[]')) ELSE q.evidence END,
                   held_at = CASE v.becomes WHEN 'held' THEN clock_timestamp() ELSE q.held_at END,
                   error = CASE v.becomes WHEN 'held' THEN jsonb_build_object('kind', 'takeover',
                       'message', 'pending when this server took over, and the invoice shows payments this server did not know of: the server before it may have sent it',
                       'new_events', coalesce(v.unknown, '[]'),
                       'may_have_reached_billogram', true) ELSE q.error END
              FROM verdict v
              LEFT JOIN claim c ON c.id = v.id
             WHERE q.id = v.id
            RETURNING q.id, q.state, v.becomes, q.billogram_id, q.mode, q.amount, q.request_body
        LOOP
            IF r.state = 'sending' THEN
                claimed_id := r.id;
                claimed_invoice := r.billogram_id;
                claimed_mode := r.mode;
                claimed_amount := r.amount;
                claimed_body := r.request_body;
                RETURN NEXT;
            ELSIF r.becomes <> 'goes' THEN
                PERFORM billogram.billogram_announce(r.id, r.state);
            END IF;
        END LOOP;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION billogram_read_recorded(text[], jsonb[], jsonb[], integer, integer, bigint, oid, uuid)
    FROM PUBLIC;

-- settlement from the row's own baseline, never from clocks; final
-- verdicts stay final; resend only after a fresh reading

CREATE OR REPLACE FUNCTION billogram_settle(request_id bigint, invoice jsonb, failure jsonb, settle_secs integer)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r billogram.billogram_requests;
    settle_time interval := make_interval(secs => settle_secs);
    seen jsonb;
    attributed text[];
    weighed jsonb;
    verdict text;
BEGIN
    SELECT * INTO r FROM billogram.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND OR r.state <> 'in_doubt' OR r.settle_at IS NULL THEN
        RETURN NULL;
    END IF;

    IF invoice IS NOT NULL THEN
        PERFORM billogram.billogram_ledger_record(ARRAY[r.billogram_id], ARRAY[invoice], NULL);
        -- the invoice's events, and those only a callback told of
        seen := CASE jsonb_typeof(invoice -> 'events') WHEN 'array' THEN invoice -> 'events' ELSE '[]' END;
        seen := jsonb_set(invoice, '{events}', seen || coalesce((
            SELECT jsonb_agg(jsonb_build_object('event_uuid', x.event_uuid, 'type', x.type,
                                                'created_at', x.created_at, 'amount', x.amount)
                             ORDER BY x.received_at)
              FROM billogram.billogram_events x
             WHERE x.billogram_id = r.billogram_id
               AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(seen) g
                                WHERE g ->> 'event_uuid' = x.event_uuid)), '[]'));
    END IF;
    SELECT array_agg(u) INTO attributed
      FROM billogram.billogram_requests b, unnest(b.event_uuids) u
     WHERE b.billogram_id = r.billogram_id AND b.id <> r.id;

    -- settle_time counts from when the request ended (its outcome was
    -- recorded: a timeout, a cut reply; or the worker was found stopped),
    -- not from when it left: Billogram may apply a request as late as the
    -- worker waited for it, and billogram.timeout may be the longer; a row
    -- without sent_at (0.1 recorded none) has waited long enough
    weighed := billogram.billogram_weigh(r.mode, r.amount, r.baseline, seen, attributed,
                                           coalesce(now() >= greatest(r.sent_at, r.finished_at) + settle_time, true));
    verdict := weighed ->> 'verdict';
    weighed := weighed || jsonb_build_object('checked_at', now(), 'sent_at', r.sent_at,
                                             'failure', failure);

    UPDATE billogram.billogram_requests
       SET state = CASE WHEN verdict = 'applied' THEN 'done' ELSE 'in_doubt' END,
           evidence = weighed,
           event_uuids = CASE WHEN verdict = 'applied'
                              THEN ARRAY[weighed ->> 'applied_event'] ELSE event_uuids END,
           settle_at = CASE WHEN verdict <> 'checking' THEN NULL
                            WHEN invoice IS NULL THEN now() + least(settle_time, interval '10 seconds')
                            ELSE greatest(r.sent_at, r.finished_at) + settle_time END,
           resolution = CASE WHEN verdict = 'applied' THEN
                            concat_ws(E'\n', resolution,
                                      format('reconciled by the billogram worker at %s: the invoice shows one new payment of %s (event %s)',
                                             now(),
                                             (SELECT f ->> 'amount' FROM jsonb_array_elements(weighed -> 'new_events') f
                                               WHERE f ->> 'event_uuid' = weighed ->> 'applied_event'),
                                             weighed ->> 'applied_event'))
                        ELSE resolution END
     WHERE id = request_id;
    IF verdict = 'applied' THEN
        PERFORM billogram.billogram_announce(request_id, 'done');
    END IF;
    RETURN verdict;
END
$$;

CREATE OR REPLACE FUNCTION billogram_resolve(request_id bigint, action text)
RETURNS billogram_requests
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r billogram.billogram_requests;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    IF action IS NULL OR action NOT IN ('resend', 'mark_done', 'mark_failed') THEN
        RAISE EXCEPTION 'invalid action "%"', action
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''resend'', ''mark_done'' or ''mark_failed''.';
    END IF;

    SELECT * INTO r FROM billogram.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billogram request % does not exist', request_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF r.state NOT IN ('in_doubt', 'failed') THEN
        RAISE EXCEPTION 'billogram request % is %, only in_doubt and failed requests can be resolved',
                        request_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF action = 'resend' AND r.state = 'in_doubt'
       AND (r.evidence ->> 'verdict' IS DISTINCT FROM 'not_applied' OR r.settle_at IS NOT NULL) THEN
        RAISE EXCEPTION 'billogram request % cannot be resent: its verdict is %',
                        request_id, coalesce(r.evidence ->> 'verdict', 'checking')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only a payment the evidence shows not applied is sent again.',
                  HINT = 'Check the invoice at Billogram, then mark_done or mark_failed; queue a new payment if one is still owed.';
    END IF;

    UPDATE billogram.billogram_requests
       SET state = CASE action WHEN 'resend' THEN 'pending'
                               WHEN 'mark_done' THEN 'done'
                               ELSE 'failed' END,
           next_attempt_at = CASE WHEN action = 'resend' THEN now() ELSE next_attempt_at END,
           pending_since = CASE WHEN action = 'resend' THEN now() ELSE pending_since END,
           finished_at = CASE WHEN action = 'resend' THEN NULL ELSE now() END,
           settle_at = NULL,
           verify_reason = CASE WHEN action = 'resend' THEN 'resend' END,
           evidence = CASE WHEN action = 'resend' THEN NULL ELSE evidence END,
           resolution = concat_ws(E'\n', resolution,
                                  format('%s by %s at %s (was %s)', action, billogram.billogram_caller(), now(), r.state))
     WHERE id = request_id
    RETURNING * INTO r;

    -- the worker sends a resent row, and stops holding back the invoice's
    -- next payments for a row it was still checking
    PERFORM billogram.billogram_wake_worker_at_commit();
    PERFORM billogram.billogram_announce(r.id, r.state);
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION billogram_record_callback("timestamp" text, signature text, body text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cb jsonb;
    ev jsonb;
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    -- $1, $2, $3: timestamp, signature, body (timestamp is also a type name)
    IF NOT billogram.billogram_verify_callback($1, $2, $3) THEN
        RAISE EXCEPTION 'billogram callback refused: bad signature or stale timestamp'
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'Nothing was recorded.',
                  HINT = 'Pass the Billogram-Request-Timestamp and Billogram-Signature headers and the body exactly as received; check the key in billogram.callback_sign_key_file.';
    END IF;
    cb := $3::jsonb;
    IF cb ->> 'callback_type' IS DISTINCT FROM 'BillogramEvent' THEN
        RETURN 'ignored';
    END IF;
    ev := cb -> 'event';
    IF jsonb_typeof(ev) IS DISTINCT FROM 'object' OR ev ->> 'event_uuid' IS NULL THEN
        RAISE EXCEPTION 'billogram callback has no event with an event_uuid'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billogram.billogram_events
           (event_uuid, billogram_id, type, created_at, amount, event, callback_id, received_by)
    VALUES (ev ->> 'event_uuid',
            coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id'),
            ev ->> 'type', ev ->> 'created_at',
            CASE WHEN jsonb_typeof(ev -> 'data' -> 'amount') = 'number'
                 THEN (ev -> 'data' ->> 'amount')::numeric END,
            ev, cb ->> 'callback_id', billogram.billogram_caller())
    ON CONFLICT (event_uuid) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 1 THEN
        -- new evidence: the worker reads the invoice again for its rows
        -- still being checked; a final verdict stays final
        UPDATE billogram.billogram_requests
           SET settle_at = now()
         WHERE billogram_id = coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id')
           AND state = 'in_doubt' AND settle_at IS NOT NULL;
        IF FOUND THEN
            PERFORM billogram.billogram_wake_worker_at_commit();
        END IF;
    END IF;
    RETURN CASE WHEN n = 1 THEN 'recorded' ELSE 'duplicate' END;
END
$$;

CREATE VIEW billogram_in_doubt AS
SELECT r.id, r.billogram_id, r.mode, r.amount, r.sent_at,
       r.error ->> 'message' AS reason,
       coalesce(r.evidence ->> 'verdict', 'checking') AS verdict,
       (r.evidence ->> 'remaining_before')::numeric AS remaining_before,
       (r.evidence ->> 'remaining_after')::numeric AS remaining_after,
       (SELECT array_agg((f ->> 'amount')::numeric)
          FROM jsonb_array_elements(r.evidence -> 'new_events') f
         WHERE jsonb_typeof(f -> 'amount') = 'number') AS new_payments,
       (r.evidence ->> 'checked_at')::timestamptz AS checked_at,
       r.settle_at AS next_check_at,
       CASE coalesce(r.evidence ->> 'verdict', 'checking')
           WHEN 'checking' THEN
               format('being checked: the invoice is read again at %s', r.settle_at)
           WHEN 'not_applied' THEN
               format('not registered: no new payment on the invoice and its remaining sum unchanged %s after sending; billogram_resolve(%s, ''resend'') sends it again once a fresh reading shows the invoice unchanged',
                      date_trunc('second', (r.evidence ->> 'checked_at')::timestamptz - r.sent_at), r.id)
           WHEN 'unchecked' THEN
               format('the invoice could not be read (%s); check it at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      r.evidence -> 'failure' ->> 'message', r.id, r.id)
           WHEN 'inherited' THEN
               format('not checked: %s; nothing here reads its invoice: check it at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      r.evidence ->> 'why', r.id, r.id)
           ELSE
               format('ambiguous: %s; check the invoice at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      coalesce(r.evidence ->> 'why', 'the invoice does not show exactly this payment'), r.id, r.id)
       END AS advice
  FROM billogram_requests r
 WHERE r.state = 'in_doubt';

REVOKE ALL ON billogram_in_doubt FROM PUBLIC;

/*
 * Rows 0.2 left pending are sent on 0.3's terms: the ledger is empty, so
 * each invoice is read before its next payment goes (first_payment).  Rows
 * in_doubt and still being checked have no baseline: they are read once
 * more, and their verdict is 'ambiguous' unless the invoice cannot be read
 * (0.2's clock-based comparison is gone), for an operator to decide.
 */
UPDATE billogram_requests SET verify_reason = 'first_payment'
 WHERE state = 'pending' AND verify_reason IS NULL;

/*
 * Rows in_doubt that nothing reads again (settle_at NULL) and that have no
 * verdict: left by 0.1, or caught sending in a copy by 0.2.  They get the
 * verdict 'inherited', whose advice in billogram_in_doubt names the calls
 * to make, instead of a reading that is never due.
 */
UPDATE billogram_requests
   SET evidence = coalesce(evidence, '{}') || jsonb_build_object('verdict', 'inherited',
           'why', 'it was left in_doubt by an earlier version of billogram, which kept no record of the invoice before it was sent')
 WHERE state = 'in_doubt' AND settle_at IS NULL AND evidence ->> 'verdict' IS NULL;

-- billogram_weigh: the pure verdict function (see billogram--0.3.sql)
CREATE FUNCTION billogram_weigh(mode text, amount numeric, baseline jsonb, invoice jsonb,
                                attributed text[], settle_time_passed boolean)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    before numeric;
    after numeric;
    expected numeric;
    fresh jsonb;
    n_paid bigint;
    paid numeric;
    paid_uuid text;
    verdict text;
    why text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('amount', 'remaining')
       OR (mode = 'amount') <> (amount IS NOT NULL) OR settle_time_passed IS NULL THEN
        RAISE EXCEPTION 'billogram_weigh: mode % with amount % and settle_time_passed % make no request',
                        coalesce(quote_literal(mode), 'NULL'), coalesce(amount::text, 'NULL'),
                        coalesce(settle_time_passed::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'mode is ''amount'' with an amount or ''remaining'' with NULL; settle_time_passed is true or false.';
    END IF;
    IF jsonb_typeof(baseline -> 'remaining_sum') = 'number' THEN
        before := (baseline ->> 'remaining_sum')::numeric;
    END IF;
    IF jsonb_typeof(invoice -> 'remaining_sum') = 'number' THEN
        after := (invoice ->> 'remaining_sum')::numeric;
    END IF;

    IF invoice IS NULL THEN
        verdict := CASE WHEN settle_time_passed THEN 'unchecked' ELSE 'checking' END;
        why := CASE WHEN settle_time_passed
                    THEN 'The invoice could not be read until billogram.settle_time after the request ended, so nothing shows whether the payment arrived.'
                    ELSE 'The invoice could not be read yet; it is read again.' END;
    ELSIF baseline IS NULL THEN
        verdict := 'ambiguous';
        why := 'The extension had no record of the invoice before the request, so no event can be told to be new.';
    ELSIF before IS NULL OR jsonb_typeof(baseline -> 'events') IS DISTINCT FROM 'array' THEN
        verdict := 'ambiguous';
        why := 'The record of the invoice before the request has no remaining sum or no list of events to compare with.';
    ELSIF after IS NULL THEN
        verdict := 'ambiguous';
        why := 'The invoice as read after the request has no numeric remaining sum.';
    ELSIF jsonb_typeof(coalesce(invoice -> 'events', '[]')) <> 'array'
          OR EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(invoice -> 'events', '[]')) e
                      WHERE jsonb_typeof(e -> 'event_uuid') IS DISTINCT FROM 'string'
                         OR (e ? 'amount' AND jsonb_typeof(e -> 'amount') NOT IN ('number', 'null'))) THEN
        verdict := 'ambiguous';
        why := 'The invoice lists an event without an event_uuid, or with an amount that is not a number, so its events cannot be told apart.';
    END IF;
    IF verdict IS NOT NULL THEN
        RETURN jsonb_build_object('verdict', verdict, 'why', why,
                                  'remaining_before', before, 'remaining_after', after,
                                  'new_events', '[]'::jsonb, 'applied_event', NULL);
    END IF;

    -- the events neither known before the claim nor another row's
    SELECT coalesce(jsonb_agg(jsonb_build_object('event_uuid', e -> 'event_uuid',
                                                 'type', e -> 'type',
                                                 'created_at', e -> 'created_at',
                                                 'amount', e -> 'amount') ORDER BY n), '[]')
      INTO fresh
      FROM jsonb_array_elements(coalesce(invoice -> 'events', '[]')) WITH ORDINALITY AS x(e, n)
     WHERE NOT (baseline -> 'events') ? (e ->> 'event_uuid')
       AND array_position(attributed, e ->> 'event_uuid') IS NULL;
    SELECT count(*), max(abs((f ->> 'amount')::numeric)), max(f ->> 'event_uuid')
      INTO n_paid, paid, paid_uuid
      FROM jsonb_array_elements(fresh) f
     WHERE jsonb_typeof(f -> 'amount') = 'number';
    expected := CASE mode WHEN 'amount' THEN amount ELSE abs(before) END;

    IF n_paid = 1 AND paid = expected AND expected > 0
       AND abs(after - before) = expected AND (mode = 'amount' OR after = 0) THEN
        verdict := 'applied';
        why := format('The invoice shows exactly one new payment, of %s, and its remaining sum moved from %s to %s.',
                      paid, before, after);
    ELSIF n_paid = 0 AND after = before THEN
        verdict := CASE WHEN settle_time_passed THEN 'not_applied' ELSE 'checking' END;
        why := CASE WHEN settle_time_passed
                    THEN format('The invoice shows no new payment and its remaining sum is still %s after billogram.settle_time, so the payment did not arrive.', after)
                    ELSE format('The invoice shows no new payment yet and its remaining sum is still %s; it is read again.', after) END;
    ELSE
        verdict := 'ambiguous';
        why := CASE
            WHEN n_paid > 1 THEN
                format('The invoice shows %s new payments, so which one is this request''s cannot be told.', n_paid)
            WHEN n_paid = 0 THEN
                format('The remaining sum moved from %s to %s without a new payment on the invoice.', before, after)
            WHEN paid <> expected OR expected = 0 THEN
                format('The invoice shows one new payment, of %s, where %s was expected.', paid, expected)
            WHEN abs(after - before) <> expected THEN
                format('The invoice shows one new payment of %s, but its remaining sum moved from %s to %s.', paid, before, after)
            ELSE
                format('The invoice shows one new payment of %s, but its remaining sum is %s, not 0, after paying the whole remaining sum.', paid, after)
        END;
    END IF;
    RETURN jsonb_build_object('verdict', verdict, 'why', why,
                              'remaining_before', before, 'remaining_after', after,
                              'new_events', fresh,
                              'applied_event', CASE WHEN verdict = 'applied' THEN paid_uuid END);
END
$$;

-- (EXECUTE for PUBLIC is granted at the end of this script)

/*
 * The functions 0.2 had that named the journal by 0.2's schema, and that
 * the SECURITY DEFINER ones now check what they trust first (see
 * billogram--0.3.sql); those made again above are the same text.
 */
CREATE OR REPLACE FUNCTION billogram_fail_held(request_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    UPDATE billogram.billogram_requests
       SET state = 'failed',
           finished_at = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('mark_failed by %s at %s (held since %s, made in system %s database %s)',
                                         billogram.billogram_caller(), now(), held_at, made_in_system, made_in_database))
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION billogram_purge(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT billogram.billogram_assert_trusted();
    WITH gone AS (
        DELETE FROM billogram.billogram_requests
         WHERE state IN ('done', 'failed') AND finished_at < now() - older_than
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

DROP VIEW billogram_health;
DROP FUNCTION billogram_worker_status();

CREATE FUNCTION billogram_worker_status(
    OUT pid integer, OUT started_at timestamptz,
    OUT in_flight integer, OUT connections integer,
    OUT done bigint, OUT failed bigint, OUT in_doubt bigint, OUT retried bigint,
    OUT transfers bigint, OUT latency_p50_ms float8, OUT latency_p99_ms float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT paused_until timestamptz,
    OUT refusal text)
RETURNS record
AS 'MODULE_PATHNAME', 'billogram_worker_status'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_worker_status() FROM PUBLIC;

CREATE VIEW billogram_health AS SELECT * FROM billogram_worker_status();

REVOKE ALL ON billogram_health FROM PUBLIC;

/*
 * billogram_metrics, new: counters that only grow, for dashboards
 * (billogram--0.3.sql documents each metric).
 * Privileges: PUBLIC has none; pg_monitor may read the view and run its
 * function (granted at the end of this script).
 */
CREATE FUNCTION billogram_metric_values(
    OUT metric text, OUT kind text, OUT outcome text, OUT class text,
    OUT verdict text, OUT le text, OUT value float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'billogram_metric_values'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_metric_values() FROM PUBLIC;

CREATE VIEW billogram_metrics AS SELECT * FROM billogram_metric_values();

REVOKE ALL ON billogram_metrics FROM PUBLIC;

/*
 * billogram_journal_guard(): the extension's tables are written by its own
 * code only.
 *
 * A statement trigger before INSERT, UPDATE, DELETE and TRUNCATE on each of
 * the tables refuses (42501) every role below superuser, whatever it was
 * granted: pg_write_all_data, an explicit INSERT or UPDATE, a default
 * privilege.  A row of billogram_requests is a payment the worker sends,
 * and billogram_keys, billogram_ledger and billogram_events decide whether
 * one was made, so a direct write could pay, pay twice or pay as someone
 * else.  The extension's own writes pass: the worker runs as a superuser,
 * the SECURITY DEFINER functions as their owner, and the queueing functions
 * insert as the journal's owner, all of them superusers.  COPY FROM and a
 * data-only restore fire the same triggers, so a restore of the journal is
 * made by a superuser, as CREATE EXTENSION is.  What the worker sends is
 * checked again when it claims a row (an id of letters and digits, a body
 * made from the row's mode and amount), in case a superuser wrote it.
 * Privileges: EXECUTE revoked from PUBLIC; the triggers fire whatever EXECUTE
 * says, and without it nobody can attach the function elsewhere.
 */
CREATE FUNCTION billogram_journal_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'billogram_journal_guard'
LANGUAGE C;

REVOKE ALL ON FUNCTION billogram_journal_guard() FROM PUBLIC;

CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_requests
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_keys
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_events
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_instance
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();

/*
 * Privileges, whatever default privileges say.  ALTER DEFAULT PRIVILEGES
 * of the role running this script (for all schemas, or IN SCHEMA
 * billogram) adds its grants to every object made here, and the REVOKEs
 * above take PUBLIC's only.  So every grant on an object this script made,
 * to any role but its owner, is revoked here; the grants this file
 * documents are made after.  "Made by this script": the object became a
 * member of the extension in this transaction (its pg_depend row is of
 * this transaction: age 0), which is every member when the extension is
 * created and the new ones when it is updated, so the grants a DBA made on
 * objects that already existed stay.  billogram--0.3.sql ends the same
 * way.
 */
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT m.kind, m.name,
               CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
          FROM (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
                       format('%I.%I', 'billogram', c.relname) AS name, c.relowner AS owner,
                       coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                                     c.relowner)) AS acl
                  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
                   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
                   AND d.deptype = 'e' AND age(d.xmin) = 0
                UNION ALL
                SELECT 'FUNCTION', p.oid::regprocedure::text, p.proowner,
                       coalesce(p.proacl, acldefault('f', p.proowner))
                  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                 WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
                   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
                   AND d.deptype = 'e' AND age(d.xmin) = 0) m,
               aclexplode(m.acl) a
         WHERE a.grantee <> m.owner
    LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s CASCADE', g.kind, g.name, g.grantee);
    END LOOP;
END
$$;

/*
 * What is granted: USAGE on the schema to PUBLIC, which lets a role use
 * what it was granted in it and nothing more (each capability stays one
 * grant, on its object: see "Who may move money" above); EXECUTE on the
 * two pure functions to PUBLIC; the health and metrics views to pg_monitor.
 */
GRANT USAGE ON SCHEMA billogram TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_weigh(text, numeric, jsonb, jsonb, text[], boolean) TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_invoice_summary(jsonb) TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_worker_status() TO pg_monitor;
GRANT SELECT ON billogram_health TO pg_monitor;
GRANT EXECUTE ON FUNCTION billogram_metric_values() TO pg_monitor;
GRANT SELECT ON billogram_metrics TO pg_monitor;

/*
 * The grants the objects made again had before the update, given back.
 *
 * Then the initial privileges (pg_init_privs): what the extension's scripts
 * grant, which pg_dump leaves out of a dump because CREATE EXTENSION makes
 * them again.  A GRANT or REVOKE run by an update script records there the
 * object's whole ACL, the DBA's grants included: those given back here, and
 * those 0.1--0.2's REVOKEs on objects of 0.1 swept in (billogram_purge's).
 * A dump would leave those grants out and a restore lose them.  So the
 * regrants leave the initial privileges as they were, and every grantee the
 * extension never grants to is taken out of them: the scripts grant only
 * to an object's owner (its own entry: grantee and grantor the same role),
 * PUBLIC and pg_monitor.
 */
DO $$
DECLARE
    grants text := concat_ws('; ', nullif(current_setting('billogram_upgrade.grants'), ''),
                             nullif(current_setting('billogram_upgrade.remade_grants'), ''));
    initial pg_init_privs[];
    ext oid := (SELECT oid FROM pg_extension WHERE extname = 'billogram');
BEGIN
    -- the extension's initial privileges before the regrants
    SELECT array_agg(i) INTO initial
      FROM pg_init_privs i
     WHERE i.privtype = 'e'
       AND EXISTS (SELECT 1 FROM pg_depend d
                    WHERE (d.classid, d.objid, d.refobjid, d.deptype) = (i.classoid, i.objoid, ext, 'e'));
    IF grants <> '' THEN
        EXECUTE grants;
    END IF;
    -- what the regrants added goes; what was there comes back, with only
    -- the grantees the extension grants to
    DELETE FROM pg_init_privs i
     WHERE i.privtype = 'e'
       AND EXISTS (SELECT 1 FROM pg_depend d
                    WHERE (d.classid, d.objid, d.refobjid, d.deptype) = (i.classoid, i.objoid, ext, 'e'))
       AND NOT EXISTS (SELECT 1 FROM unnest(initial) s
                        WHERE (s.objoid, s.classoid, s.objsubid) = (i.objoid, i.classoid, i.objsubid));
    UPDATE pg_init_privs i
       SET initprivs = (SELECT coalesce(array_agg(a.item ORDER BY a.n), '{}')
                          FROM unnest(s.initprivs) WITH ORDINALITY a(item, n),
                               LATERAL (SELECT e.grantee, e.grantor FROM aclexplode(ARRAY[a.item]) e LIMIT 1) e
                         WHERE e.grantee IN (e.grantor, 0, 'pg_monitor'::regrole))
      FROM unnest(initial) s
     WHERE (s.objoid, s.classoid, s.objsubid) = (i.objoid, i.classoid, i.objsubid);
END
$$;
