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

-- the new columns, in the order billogram--0.3.sql lists them
ALTER TABLE billogram_requests
    ADD COLUMN made_in_instance uuid,
    ADD COLUMN idempotency_key  text,
    ADD COLUMN baseline         jsonb,
    ADD COLUMN event_uuids      text[],
    ADD COLUMN verify_reason    text;

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
    kind        text NOT NULL CHECK (kind IN ('source', 'call')),
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

-- ==== the instance identity and source rows (routes 5, 6, 9, 11) ====

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
       AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;
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

DO $$
DECLARE
    grants text := pg_catalog.current_setting('billogram_upgrade.grants');
BEGIN
    IF grants <> '' THEN
        EXECUTE grants;
    END IF;
END
$$;

-- ==== the ledger, baselines and verdicts (routes 1-4, 7, 8) ====
