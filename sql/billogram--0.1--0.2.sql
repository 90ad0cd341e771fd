/*
 * billogram 0.1 -> 0.2
 *
 * Closes the routes by which a role without a grant could queue a payment,
 * holds rows that came with a dump or copy from another cluster,
 * records who caused each payment, stops a NULL trigger amount from paying
 * out the remaining sum, keeps customers' personal data out of the
 * journal by default, and adds billogram_get_invoice() to read an invoice.
 * billogram--0.2.sql documents every object; the
 * upgraded schema is the same as a fresh 0.2 one (a test compares them).
 * CHANGELOG.md says what this changes for existing triggers and rows.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION billogram UPDATE TO '0.2'" to load this file. \quit

-- who caused each payment; NULL in rows journaled by 0.1
ALTER TABLE billogram_requests
    ADD COLUMN effective_role   name,
    ADD COLUMN login_role       name,
    ADD COLUMN database_name    name,
    ADD COLUMN backend_pid      integer,
    ADD COLUMN application_name text,
    ADD COLUMN made_in_system   bigint,
    ADD COLUMN made_in_database oid,
    ADD COLUMN held_at          timestamptz,
    ADD COLUMN pending_since    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN evidence         jsonb,
    ADD COLUMN settle_at        timestamptz;

-- one payment in flight per invoice, in order; the evidence on an invoice
CREATE INDEX billogram_requests_invoice_idx ON billogram_requests (billogram_id, id);
-- in_doubt rows whose invoice is to be read again
CREATE INDEX billogram_requests_settle_idx ON billogram_requests (settle_at)
    WHERE settle_at IS NOT NULL;

-- where each row was made: 0.1 did not record it, and the update cannot
-- tell a production database from a copy restored elsewhere (a staging
-- server restored from production's dump, then updated), so the rows 0.1
-- journaled are not counted as made here: made_in_system and
-- made_in_database stay NULL, which counts as elsewhere, and a pending one
-- is held, not sent, until billogram_release_held().  (Until 0.3 this
-- stamped every inherited row as this server's, so a copy sent what it
-- inherited; databases already at 0.2 keep what it did then.)

-- a new state, 'held', for rows that came from another cluster or database
ALTER TABLE billogram_requests
    DROP CONSTRAINT billogram_requests_state_check,
    ADD CONSTRAINT billogram_requests_state_check
        CHECK (state IN ('pending', 'sending', 'done', 'failed', 'in_doubt', 'held'));

-- the queuing functions run as their caller; the C code inserts as the
-- journal's owner
ALTER FUNCTION billogram_enqueue_credit_payment(text, text, numeric)
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION billogram_payment_trigger()
    SECURITY INVOKER RESET search_path;

-- a trigger needs a grant: at CREATE TRIGGER for its creator, and at every
-- row for the table's owner
REVOKE ALL ON FUNCTION billogram_payment_trigger() FROM PUBLIC;

-- the invoice as it is now: a GET, not journaled, a grant of its own
/*
 * billogram_get_invoice(id) RETURNS jsonb
 *
 * The invoice `id` as Billogram has it now: a GET of /billogram/{id}, made
 * by the worker like a payment, returning the reply's "data" as jsonb, with
 * amounts exact.  The id is checked as billogram_credit_payment() checks
 * it (22023, and nothing sent); failures raise the same SQLSTATEs (BG000,
 * BG001, BG002, BG followed by the HTTP status: BG404 for an unknown
 * invoice), and billogram.timeout, cancel and statement_timeout apply as
 * to a payment.  A GET changes nothing at Billogram: it is not journaled in
 * billogram_requests, and whatever fails can simply be tried again.
 * VOLATILE: every call asks Billogram anew.  Not STRICT, so that a NULL id
 * gets a clear error.
 *
 * Privileges: EXECUTE is revoked from PUBLIC, and is a grant of its own,
 * neither implied by nor implying billogram_credit_payment(): it moves no
 * money, but the invoice carries the customer's name, addresses and
 * identity number.
 *     GRANT EXECUTE ON FUNCTION billogram_get_invoice(text) TO support;
 */
CREATE FUNCTION billogram_get_invoice(id text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_get_invoice'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_get_invoice(text) FROM PUBLIC;

COMMENT ON FUNCTION billogram_get_invoice(text) IS
'Returns a Billogram invoice as it is now, read through the billogram worker; changes nothing at Billogram';

-- internal: who is deciding, for the operators' functions below (the role
-- that called, SET ROLE counted, and the login role if it differs), which
-- SQL cannot see inside a SECURITY DEFINER function.  No privilege for
-- PUBLIC; the SECURITY DEFINER functions call it as its owner.
CREATE FUNCTION billogram_caller()
RETURNS text
AS 'MODULE_PATHNAME', 'billogram_caller'
LANGUAGE C STABLE;

REVOKE ALL ON FUNCTION billogram_caller() FROM PUBLIC;

-- SECURITY DEFINER functions: search_path pg_catalog only, journal named by
-- schema
CREATE OR REPLACE FUNCTION billogram_resolve(request_id bigint, action text)
RETURNS billogram_requests
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r @extschema@.billogram_requests;
BEGIN
    IF action IS NULL OR action NOT IN ('resend', 'mark_done', 'mark_failed') THEN
        RAISE EXCEPTION 'invalid action "%"', action
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''resend'', ''mark_done'' or ''mark_failed''.';
    END IF;

    SELECT * INTO r FROM @extschema@.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billogram request % does not exist', request_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF r.state NOT IN ('in_doubt', 'failed') THEN
        RAISE EXCEPTION 'billogram request % is %, only in_doubt and failed requests can be resolved',
                        request_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    UPDATE @extschema@.billogram_requests
       SET state = CASE action WHEN 'resend' THEN 'pending'
                               WHEN 'mark_done' THEN 'done'
                               ELSE 'failed' END,
           next_attempt_at = CASE WHEN action = 'resend' THEN now() ELSE next_attempt_at END,
           pending_since = CASE WHEN action = 'resend' THEN now() ELSE pending_since END,
           finished_at = CASE WHEN action = 'resend' THEN NULL ELSE now() END,
           settle_at = NULL,
           resolution = concat_ws(E'\n', resolution,
                                  format('%s by %s at %s (was %s)', action, @extschema@.billogram_caller(), now(), r.state))
     WHERE id = request_id
    RETURNING * INTO r;

    -- the worker sends a resent row, and stops holding back the invoice's
    -- next payments for a row it was still checking
    PERFORM @extschema@.billogram_wake_worker_at_commit();
    IF action <> 'resend' THEN
        PERFORM pg_notify('billogram_requests',
                          json_build_object('id', r.id, 'state', r.state)::text);
    END IF;
    RETURN r;
END
$$;

/*
 * billogram_settle(request_id, invoice, failure, settle_secs) RETURNS text
 *
 * Internal: the worker's weighing of the evidence on an in_doubt row, each
 * time it has read the invoice again (invoice: its summary, see
 * billogram_invoice_summary) or failed to (failure: why).  It compares the
 * invoice with what the journal knew of it before the request was sent:
 * the latest invoice an earlier row of the same invoice recorded before
 * this row's sent_at (a reply, a snapshot or evidence).  The new events are
 * those that invoice did not have, joined by those Billogram's callbacks
 * reported (billogram_events); when the journal knew nothing of the
 * invoice, the events created from a minute before sent_at on (a minute
 * for the two clocks to differ).  Event types are not looked at: which type
 * a credit payment makes is not documented; an event with data.amount is a
 * payment.  The verdict, kept in evidence with what it rests on:
 *   applied      exactly one new payment, of the amount sent (mode amount)
 *                or of the whole remaining sum, leaving 0 (mode remaining),
 *                and the remaining sum moved by exactly that much: the row
 *                becomes done, its resolution says 'reconciled';
 *   checking     no new payment and the remaining sum unchanged, less than
 *                billogram.settle_time after sending: read again then;
 *   not_applied  the same, after billogram.settle_time: the row stays
 *                in_doubt, billogram_resolve(id, 'resend') sends it again;
 *   ambiguous    anything else (two payments, another amount, a sum that
 *                moved without an event, an unreadable event time): the row
 *                stays in_doubt for a person;
 *   unchecked    the invoice could not be read until billogram.settle_time
 *                after sending: stays in_doubt.
 * It never sends anything and never marks a row failed.  Returns the
 * verdict, NULL when the row is no longer waiting for one (resolved or
 * purged meanwhile).  settle_at is when the worker reads the invoice next;
 * NULL once the verdict is final.
 * Privileges: EXECUTE revoked from PUBLIC; only the worker calls it.
 */
CREATE FUNCTION billogram_settle(request_id bigint, invoice jsonb, failure jsonb, settle_secs integer)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r @extschema@.billogram_requests;
    settle_time interval := make_interval(secs => settle_secs);
    before jsonb;
    before_id bigint;
    before_events jsonb;
    events jsonb;
    fresh jsonb := '[]';
    e jsonb;
    is_new boolean;
    unreadable boolean := false;
    n_paid bigint;
    paid numeric;
    rem_before numeric;
    rem_after numeric;
    expected numeric;
    verdict text;
    weighed jsonb;
BEGIN
    SELECT * INTO r FROM @extschema@.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND OR r.state <> 'in_doubt' OR r.settle_at IS NULL THEN
        RETURN NULL;
    END IF;

    IF invoice IS NULL THEN
        verdict := CASE WHEN now() < r.sent_at + settle_time THEN 'checking' ELSE 'unchecked' END;
        weighed := jsonb_build_object('verdict', verdict, 'checked_at', now(),
                                       'sent_at', r.sent_at, 'failure', failure);
    ELSE
        -- the latest invoice the journal had seen before this was sent
        SELECT c.id, c.inv INTO before_id, before
          FROM (SELECT b.id, b.response AS inv, b.finished_at AS seen_at
                  FROM @extschema@.billogram_requests b
                 WHERE b.billogram_id = r.billogram_id AND b.id <> r.id
                UNION ALL
                SELECT b.id, b.invoice_snapshot, b.snapshot_at
                  FROM @extschema@.billogram_requests b
                 WHERE b.billogram_id = r.billogram_id AND b.id <> r.id
                UNION ALL
                SELECT b.id, b.evidence -> 'after', (b.evidence ->> 'checked_at')::timestamptz
                  FROM @extschema@.billogram_requests b
                 WHERE b.billogram_id = r.billogram_id AND b.id <> r.id) c
         WHERE c.seen_at < r.sent_at
           AND jsonb_typeof(c.inv -> 'remaining_sum') = 'number'
           AND jsonb_typeof(c.inv -> 'events') = 'array'
         ORDER BY c.seen_at DESC
         LIMIT 1;
        before_events := before -> 'events';

        -- the invoice's events, and those only a callback told of
        events := CASE jsonb_typeof(invoice -> 'events') WHEN 'array' THEN invoice -> 'events' ELSE '[]' END;
        events := events || coalesce((
            SELECT jsonb_agg(jsonb_build_object('event_uuid', x.event_uuid, 'type', x.type,
                                                'created_at', x.created_at, 'amount', x.amount)
                             ORDER BY x.received_at)
              FROM @extschema@.billogram_events x
             WHERE x.billogram_id = r.billogram_id
               AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(events) g
                                WHERE g ->> 'event_uuid' = x.event_uuid)), '[]');

        FOR e IN SELECT value FROM jsonb_array_elements(events) LOOP
            IF before IS NOT NULL THEN
                is_new := NOT EXISTS (SELECT 1 FROM jsonb_array_elements(before_events) b
                                       WHERE coalesce(b ->> 'event_uuid', b::text)
                                             = coalesce(e ->> 'event_uuid', e::text));
            ELSE
                BEGIN
                    is_new := (e ->> 'created_at')::timestamptz >= r.sent_at - interval '1 minute';
                EXCEPTION WHEN data_exception THEN
                    is_new := NULL;
                END;
                IF is_new IS NULL THEN
                    unreadable := true;
                    is_new := true;
                END IF;
            END IF;
            IF is_new THEN
                fresh := fresh || jsonb_build_array(jsonb_build_object(
                    'event_uuid', e -> 'event_uuid', 'type', e -> 'type',
                    'created_at', e -> 'created_at',
                    'amount', coalesce(e -> 'amount', e -> 'data' -> 'amount')));
            END IF;
        END LOOP;

        SELECT count(*), max(abs((f ->> 'amount')::numeric)) INTO n_paid, paid
          FROM jsonb_array_elements(fresh) f
         WHERE jsonb_typeof(f -> 'amount') = 'number';
        IF jsonb_typeof(invoice -> 'remaining_sum') = 'number' THEN
            rem_after := (invoice ->> 'remaining_sum')::numeric;
        END IF;
        rem_before := (before ->> 'remaining_sum')::numeric;
        expected := CASE r.mode WHEN 'amount' THEN r.amount ELSE abs(rem_before) END;

        IF unreadable OR rem_after IS NULL THEN
            verdict := 'ambiguous';
        ELSIF n_paid = 1 AND paid = coalesce(expected, paid)
              AND (rem_before IS NULL OR abs(rem_after - rem_before) = paid)
              AND (r.mode = 'amount' OR rem_after = 0) THEN
            verdict := 'applied';
        ELSIF n_paid = 0 AND rem_after = coalesce(rem_before, rem_after) THEN
            verdict := CASE WHEN now() < r.sent_at + settle_time THEN 'checking' ELSE 'not_applied' END;
        ELSE
            verdict := 'ambiguous';
        END IF;

        weighed := jsonb_build_object(
            'verdict', verdict, 'checked_at', now(), 'sent_at', r.sent_at,
            'before_request_id', before_id,
            'remaining_before', before -> 'remaining_sum',
            'remaining_after', invoice -> 'remaining_sum',
            'new_events', fresh,
            -- what a later row of this invoice compares with
            'after', jsonb_build_object(
                'remaining_sum', invoice -> 'remaining_sum',
                'events', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                        'event_uuid', g -> 'event_uuid',
                                        'amount', coalesce(g -> 'amount', g -> 'data' -> 'amount')))
                                      FROM jsonb_array_elements(events) g), '[]')));
    END IF;

    UPDATE @extschema@.billogram_requests
       SET state = CASE WHEN verdict = 'applied' THEN 'done' ELSE 'in_doubt' END,
           evidence = weighed,
           settle_at = CASE WHEN verdict <> 'checking' THEN NULL
                            WHEN invoice IS NULL THEN now() + least(settle_time, interval '10 seconds')
                            ELSE r.sent_at + settle_time END,
           resolution = CASE WHEN verdict = 'applied' THEN
                            concat_ws(E'\n', resolution,
                                      format('reconciled by the billogram worker at %s: the invoice shows one new payment of %s (event %s)',
                                             now(), paid,
                                             (SELECT f ->> 'event_uuid' FROM jsonb_array_elements(fresh) f
                                               WHERE jsonb_typeof(f -> 'amount') = 'number')))
                        ELSE resolution END
     WHERE id = request_id;
    IF verdict = 'applied' THEN
        PERFORM pg_notify('billogram_requests',
                          json_build_object('id', request_id, 'state', 'done')::text);
    END IF;
    RETURN verdict;
END
$$;

REVOKE ALL ON FUNCTION billogram_settle(bigint, jsonb, jsonb, integer) FROM PUBLIC;

-- purge: every finished row, on the strength of the EXECUTE grant alone
-- (CREATE OR REPLACE keeps the grants a DBA gave)
CREATE OR REPLACE FUNCTION billogram_purge(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM @extschema@.billogram_requests
         WHERE state IN ('done', 'failed') AND finished_at < now() - older_than
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

REVOKE ALL ON FUNCTION billogram_purge(interval) FROM PUBLIC;

/*
 * billogram_invoice_summary(invoice) RETURNS jsonb
 *
 * What the journal keeps of an invoice under billogram.journal_reply =
 * 'summary': its id, number, state, currency, sums and updated_at, and of
 * each of its events the type, time, uuid and amount (data.amount).  Names,
 * addresses, e-mail, identity numbers and the PDF are left out.  Members
 * that are missing or JSON null are left out too; a member written twice
 * counts by its first occurrence.  It is the worker's own code (C, reading
 * the text of the reply without building a tree), so what it journals and
 * what this returns are the same by construction.  Also usable to shrink
 * rows journaled in full:
 *     UPDATE billogram_requests SET response = billogram_invoice_summary(response);
 * Privileges: EXECUTE for PUBLIC: it reads nothing but its argument.
 */
CREATE FUNCTION billogram_invoice_summary(invoice jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_invoice_summary'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- rows that came from elsewhere: released or failed by an operator
CREATE FUNCTION billogram_release_held(request_id bigint DEFAULT NULL)
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
                                  format('released by %s at %s (held since %s, made in system %s database %s)',
                                         @extschema@.billogram_caller(), now(), held_at, made_in_system, made_in_database)),
           made_in_system = (SELECT system_identifier FROM pg_control_system()),
           made_in_database = (SELECT oid FROM pg_database WHERE datname = current_database()),
           held_at = NULL
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM @extschema@.billogram_wake_worker_at_commit();
    END IF;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION billogram_release_held(bigint) FROM PUBLIC;

CREATE FUNCTION billogram_fail_held(request_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE @extschema@.billogram_requests
       SET state = 'failed',
           finished_at = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('mark_failed by %s at %s (held since %s, made in system %s database %s)',
                                         @extschema@.billogram_caller(), now(), held_at, made_in_system, made_in_database))
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION billogram_fail_held(bigint) FROM PUBLIC;

-- the status view says since when rows are held
CREATE OR REPLACE VIEW billogram_queue_status AS
SELECT state,
       count(*) AS requests,
       CASE WHEN state = 'pending' THEN now() - min(created_at) END AS oldest_pending_age,
       (array_agg(error ORDER BY coalesce(finished_at, sent_at) DESC NULLS LAST)
            FILTER (WHERE error IS NOT NULL))[1] AS last_error,
       CASE WHEN state = 'held' THEN min(held_at) END AS held_since
  FROM billogram_requests
 GROUP BY state;

/*
 * billogram_in_doubt: the payments whose outcome is unknown, one row each,
 * with what the evidence says (see billogram_settle) and what to do:
 *   verdict       checking, not_applied, ambiguous or unchecked;
 *   new_payments  the amounts of the payments the invoice gained since the
 *                 request was sent;
 *   advice        the verdict in a sentence, with the call that acts on it.
 * Privileges: like billogram_requests, no access for PUBLIC.
 */
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
               format('not registered: no new payment on the invoice and its remaining sum unchanged %s after sending; billogram_resolve(%s, ''resend'') sends it again',
                      date_trunc('second', (r.evidence ->> 'checked_at')::timestamptz - r.sent_at), r.id)
           WHEN 'unchecked' THEN
               format('the invoice could not be read (%s); check it at Billogram, then billogram_resolve(%s, ...)',
                      r.evidence -> 'failure' ->> 'message', r.id)
           ELSE
               format('ambiguous: the invoice does not show exactly this payment; check it at Billogram, then billogram_resolve(%s, ''mark_done'', ''mark_failed'' or ''resend'')',
                      r.id)
       END AS advice
  FROM billogram_requests r
 WHERE r.state = 'in_doubt';

REVOKE ALL ON billogram_in_doubt FROM PUBLIC;

-- the worker's health, for monitoring
/*
 * billogram_health: is the worker healthy?  One row: the worker's pid and
 * start time (NULL while none runs), transfers in flight and connections
 * open to the API, what became of the requests since it started (done,
 * failed, in_doubt, retried: back to pending to be tried again), transfers
 * finished, the p50 and p99 of the last 1024 transfers' times in ms, the
 * last error with its time, and paused_until: while Billogram has asked to
 * wait (429, 503), when sending may start again (then one request probes).  The counters start with each worker.
 * What to alert on is in the README.
 * Privileges: PUBLIC has none; pg_monitor, the role monitoring agents are
 * given, may read it.  Nothing in it moves money or shows personal data.
 */
CREATE FUNCTION billogram_worker_status(
    OUT pid integer, OUT started_at timestamptz,
    OUT in_flight integer, OUT connections integer,
    OUT done bigint, OUT failed bigint, OUT in_doubt bigint, OUT retried bigint,
    OUT transfers bigint, OUT latency_p50_ms float8, OUT latency_p99_ms float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT paused_until timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'billogram_worker_status'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_worker_status() TO pg_monitor;

CREATE VIEW billogram_health AS SELECT * FROM billogram_worker_status();

REVOKE ALL ON billogram_health FROM PUBLIC;
GRANT SELECT ON billogram_health TO pg_monitor;

-- Billogram's callbacks
/*
 * Billogram's callbacks, verified and recorded from SQL.
 *
 * An application or a PostgREST endpoint that receives Billogram's POST
 * hands the Billogram-Request-Timestamp header, the Billogram-Signature
 * header and the raw body, as received, to billogram_record_callback(),
 * and answers Billogram {"status": "OK"} only if it returned.
 *
 * billogram_verify_callback(timestamp, signature, body) RETURNS boolean
 *   true when signature is HMAC-SHA256(billogram.callback_sign_key,
 *   timestamp || ':' || body), in hex or base64 (Billogram does not say
 *   which), compared in constant time, and timestamp is within
 *   billogram.callback_max_age (5 minutes) of now.  Errors with 55000 when
 *   no sign key is set.
 *   Privileges: EXECUTE revoked from PUBLIC.
 *
 * billogram_events: one row per event Billogram told us of, keyed on its
 * event_uuid, so a callback Billogram repeats (it retries until answered)
 * is recorded once.  Only the event is kept, not the invoice the callback
 * carries with it, which holds the customer's personal data.
 *   Privileges: no access for PUBLIC; written by billogram_record_callback.
 *
 * billogram_record_callback(timestamp, signature, body) RETURNS text
 *   Verifies the callback (28000 when the signature or the timestamp is
 *   refused, nothing recorded), then records a BillogramEvent callback's
 *   event: 'recorded', or 'duplicate' for an event_uuid already there.
 *   Other callback types are accepted and not recorded: 'ignored'.
 *   Privileges: EXECUTE revoked from PUBLIC; grant it to the role the
 *   receiving endpoint connects as.  SECURITY DEFINER, search_path pinned.
 */
CREATE FUNCTION billogram_verify_callback("timestamp" text, signature text, body text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'billogram_verify_callback'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_verify_callback(text, text, text) FROM PUBLIC;

CREATE TABLE billogram_events (
    event_uuid    text PRIMARY KEY,
    billogram_id  text,
    type          text,
    created_at    text,
    amount        numeric,
    event         jsonb NOT NULL,
    callback_id   text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    received_by   text NOT NULL
);

CREATE INDEX billogram_events_billogram_idx ON billogram_events (billogram_id, received_at);

COMMENT ON TABLE billogram_events IS
'Events Billogram reported through signed callbacks, once each';

REVOKE ALL ON billogram_events FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_events', '');

CREATE FUNCTION billogram_record_callback("timestamp" text, signature text, body text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cb jsonb;
    ev jsonb;
    n bigint;
BEGIN
    -- $1, $2, $3: timestamp, signature, body (timestamp is also a type name)
    IF NOT @extschema@.billogram_verify_callback($1, $2, $3) THEN
        RAISE EXCEPTION 'billogram callback refused: bad signature or stale timestamp'
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'Nothing was recorded.',
                  HINT = 'Pass the Billogram-Request-Timestamp and Billogram-Signature headers and the body exactly as received; check billogram.callback_sign_key.';
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
    INSERT INTO @extschema@.billogram_events
           (event_uuid, billogram_id, type, created_at, amount, event, callback_id, received_by)
    VALUES (ev ->> 'event_uuid',
            coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id'),
            ev ->> 'type', ev ->> 'created_at',
            CASE WHEN jsonb_typeof(ev -> 'data' -> 'amount') = 'number'
                 THEN (ev -> 'data' ->> 'amount')::numeric END,
            ev, cb ->> 'callback_id', @extschema@.billogram_caller())
    ON CONFLICT (event_uuid) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 1 THEN
        -- new evidence: the worker reads the invoice's in_doubt rows again
        UPDATE @extschema@.billogram_requests
           SET settle_at = now()
         WHERE billogram_id = coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id')
           AND state = 'in_doubt';
        IF FOUND THEN
            PERFORM @extschema@.billogram_wake_worker_at_commit();
        END IF;
    END IF;
    RETURN CASE WHEN n = 1 THEN 'recorded' ELSE 'duplicate' END;
END
$$;

REVOKE ALL ON FUNCTION billogram_record_callback(text, text, text) FROM PUBLIC;
