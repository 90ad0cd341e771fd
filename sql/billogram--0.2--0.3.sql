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
    UPDATE @extschema@.billogram_requests
       SET state = 'pending',
           next_attempt_at = now(),
           pending_since = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('released by %s at %s (held since %s, made in system %s database %s instance %s)',
                                         @extschema@.billogram_caller(), now(), held_at, made_in_system, made_in_database,
                                         coalesce(made_in_instance::text, 'unknown'))),
           made_in_system = (SELECT system_identifier FROM pg_control_system()),
           made_in_database = (SELECT oid FROM pg_database WHERE datname = current_database()),
           made_in_instance = (SELECT id FROM @extschema@.billogram_instance),
           held_at = NULL
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM @extschema@.billogram_wake_worker_at_commit();
    END IF;
    RETURN n;
END
$$;


-- ==== idempotency keys and what the caller is told (route 10) ====

-- ==== the ledger, baselines and verdicts (routes 1-4, 7, 8) ====
