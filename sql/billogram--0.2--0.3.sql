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

-- ==== the ledger, baselines and verdicts (routes 1-4, 7, 8) ====

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
                    THEN 'The invoice could not be read until billogram.settle_time after sending, so nothing shows whether the payment arrived.'
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

GRANT EXECUTE ON FUNCTION billogram_weigh(text, numeric, jsonb, jsonb, text[], boolean) TO PUBLIC;
