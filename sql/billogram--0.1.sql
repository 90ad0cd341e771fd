/*
 * billogram 0.1: register Billogram credit payments from SQL.
 *
 * The HTTP requests themselves are made by the extension's background
 * worker, which exists only when billogram is listed in
 * shared_preload_libraries.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION billogram" to load this file. \quit

/*
 * billogram_credit_payment(id, mode, amount)
 *
 * Registers a payment on the stand-alone credit invoice `id` and returns the
 * updated invoice (the reply's "data") as jsonb.
 *   mode 'remaining': pays out the whole remaining amount; amount must be NULL.
 *   mode 'amount':    pays out `amount`, which must be positive, finite and
 *                     have at most two decimals.
 * Invalid arguments raise SQLSTATE 22023 and nothing is sent.  Failures
 * raise BG000 (no reply), BG001 (unusable reply), BG002 (worker lost the
 * request) or BG followed by the HTTP status of an error reply (BG404...).
 *
 * The payment is made when the function runs and is not undone if the
 * calling transaction rolls back.  VOLATILE and PARALLEL UNSAFE: every call
 * moves money.  Not STRICT, so that NULL arguments get a clear error.
 *
 * Privileges: EXECUTE is revoked from PUBLIC; grant it to the roles that
 * may register payments:
 *     GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric) TO finance;
 */
CREATE FUNCTION billogram_credit_payment(id text, mode text, amount numeric DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric) FROM PUBLIC;

COMMENT ON FUNCTION billogram_credit_payment(text, text, numeric) IS
'Registers a payment on a Billogram credit invoice through the billogram worker; returns the updated invoice';

/*
 * The journal of credit-payment requests.
 *
 * One row per request, whatever its origin:
 *   'sync'    billogram_credit_payment(); the worker records the row in its
 *             own transaction before sending, so a payment that reached
 *             Billogram is on record even if the caller rolled back;
 *   'enqueue' billogram_enqueue_credit_payment();
 *   'trigger' billogram_payment_trigger(), with the source table and the
 *             source row's primary key.
 *
 * States: pending -> sending -> done | failed | in_doubt; a pending row
 * whose attempt provably did not reach Billogram (or was answered 429/503)
 * goes back to pending with a later next_attempt_at.  'sending' is
 * committed before the request leaves, so after a crash a row in 'sending'
 * becomes 'in_doubt' rather than being sent again.  in_doubt rows carry the
 * reason in error and, in invoice_snapshot, the invoice as a GET returned it
 * afterwards, for an operator to decide with billogram_resolve().
 *
 * Privileges: no access for PUBLIC; superusers, or roles granted access
 * explicitly, read it.  Writes go through the functions below.
 * Its rows are data: pg_dump dumps them (pg_extension_config_dump).
 */
CREATE TABLE billogram_requests (
    id               bigserial PRIMARY KEY,
    origin           text NOT NULL CHECK (origin IN ('sync', 'enqueue', 'trigger')),
    billogram_id     text NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('remaining', 'amount')),
    amount           numeric CHECK ((mode = 'amount') = (amount IS NOT NULL)),
    request_body     text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'done', 'failed', 'in_doubt')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       name NOT NULL DEFAULT session_user,
    sent_at          timestamptz,
    finished_at      timestamptz,
    http_status      integer,
    response         jsonb,
    error            jsonb,
    invoice_snapshot jsonb,
    snapshot_at      timestamptz,
    source_table     text,
    source_key       jsonb,
    resolution       text
);

COMMENT ON TABLE billogram_requests IS
'Journal and outbox of Billogram credit-payment requests';

-- the worker's claim: due pending rows, oldest first
CREATE INDEX billogram_requests_pending_idx
    ON billogram_requests (next_attempt_at, id) WHERE state = 'pending';
-- purge and status by state
CREATE INDEX billogram_requests_state_idx ON billogram_requests (state, finished_at);

/*
 * Every done row stores the invoice (several kB of JSON).  lz4 compresses
 * it several times faster than the default pglz, which profiling showed to
 * be the largest single cost of recording an outcome; used where the
 * server was built with it.
 */
DO $$
BEGIN
    IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_catalog.pg_settings
                     WHERE name = 'default_toast_compression') THEN
        ALTER TABLE billogram_requests
            ALTER COLUMN response SET COMPRESSION lz4,
            ALTER COLUMN invoice_snapshot SET COMPRESSION lz4;
    END IF;
END
$$;

REVOKE ALL ON billogram_requests FROM PUBLIC;
REVOKE ALL ON SEQUENCE billogram_requests_id_seq FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('billogram_requests', '');
SELECT pg_catalog.pg_extension_config_dump('billogram_requests_id_seq', '');

/*
 * billogram_enqueue_credit_payment(id, mode, amount) RETURNS bigint
 *
 * Queues a credit payment, validated exactly like billogram_credit_payment()
 * (22023 and nothing queued on bad input), and returns the request's id.
 * It is sent by the worker once, and only if, the calling transaction
 * commits.  SECURITY DEFINER so that granted roles need no privileges on
 * billogram_requests; search_path pinned.
 * Privileges: EXECUTE revoked from PUBLIC; grant it like the synchronous
 * function.
 */
CREATE FUNCTION billogram_enqueue_credit_payment(id text, mode text, amount numeric DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'billogram_enqueue_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric) FROM PUBLIC;

/*
 * billogram_payment_trigger(id_column [, amount_column])
 *
 * AFTER INSERT ... FOR EACH ROW trigger function.  Each inserted row queues
 * a credit payment on the invoice named by id_column, of the amount in
 * amount_column, or of the remaining sum when that argument is absent or
 * the row's amount is NULL.  Column names are read as SQL identifiers:
 * 'amount', or '"Amount Due"' for a quoted name.
 *
 *   CREATE TRIGGER register_payout AFTER INSERT ON payments FOR EACH ROW
 *       EXECUTE FUNCTION billogram_payment_trigger('billogram_id', 'amount');
 *
 * Privileges: EXECUTE stays with PUBLIC (a trigger function cannot be
 * called directly), so any role that may INSERT into the table fires it;
 * SECURITY DEFINER, so that role needs no access to billogram_requests.
 */
CREATE FUNCTION billogram_payment_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'billogram_payment_trigger'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- internal: wake the worker when the calling transaction commits
CREATE FUNCTION billogram_wake_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_wake_worker_at_commit'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_wake_worker_at_commit() FROM PUBLIC;

/*
 * billogram_resolve(request_id, action) RETURNS billogram_requests
 *
 * An operator's decision on an 'in_doubt' or 'failed' row, after checking
 * the invoice at Billogram:
 *   'resend'      send it again (back to pending, attempts kept);
 *   'mark_done'   the payment is registered at Billogram;
 *   'mark_failed' it is not, and will not be sent.
 * The decision, who took it and when are kept in the resolution column.
 * Privileges: EXECUTE revoked from PUBLIC; grant it to operators.
 */
CREATE FUNCTION billogram_resolve(request_id bigint, action text)
RETURNS billogram_requests
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    r billogram_requests;
BEGIN
    IF action IS NULL OR action NOT IN ('resend', 'mark_done', 'mark_failed') THEN
        RAISE EXCEPTION 'invalid action "%"', action
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''resend'', ''mark_done'' or ''mark_failed''.';
    END IF;

    SELECT * INTO r FROM billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billogram request % does not exist', request_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF r.state NOT IN ('in_doubt', 'failed') THEN
        RAISE EXCEPTION 'billogram request % is %, only in_doubt and failed requests can be resolved',
                        request_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    UPDATE billogram_requests
       SET state = CASE action WHEN 'resend' THEN 'pending'
                               WHEN 'mark_done' THEN 'done'
                               ELSE 'failed' END,
           next_attempt_at = CASE WHEN action = 'resend' THEN now() ELSE next_attempt_at END,
           finished_at = CASE WHEN action = 'resend' THEN NULL ELSE now() END,
           resolution = concat_ws(E'\n', resolution,
                                  format('%s by %s at %s (was %s)', action, session_user, now(), r.state))
     WHERE id = request_id
    RETURNING * INTO r;

    IF action = 'resend' THEN
        PERFORM billogram_wake_worker_at_commit();
    ELSE
        PERFORM pg_notify('billogram_requests',
                          json_build_object('id', r.id, 'state', r.state)::text);
    END IF;
    RETURN r;
END
$$;

REVOKE ALL ON FUNCTION billogram_resolve(bigint, text) FROM PUBLIC;

/*
 * billogram_queue_status: one row per state present, with the age of the
 * oldest pending row and the most recent error.
 * Privileges: like billogram_requests, no access for PUBLIC.
 */
CREATE VIEW billogram_queue_status AS
SELECT state,
       count(*) AS requests,
       CASE WHEN state = 'pending' THEN now() - min(created_at) END AS oldest_pending_age,
       (array_agg(error ORDER BY coalesce(finished_at, sent_at) DESC NULLS LAST)
            FILTER (WHERE error IS NOT NULL))[1] AS last_error
  FROM billogram_requests
 GROUP BY state;

REVOKE ALL ON billogram_queue_status FROM PUBLIC;

/*
 * billogram_purge(older_than) RETURNS bigint
 *
 * Deletes 'done' rows finished longer ago than older_than and returns how
 * many.  Rows in any other state are never purged.
 * Privileges: EXECUTE revoked from PUBLIC.
 */
CREATE FUNCTION billogram_purge(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM billogram_requests
         WHERE state = 'done' AND finished_at < now() - older_than
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

REVOKE ALL ON FUNCTION billogram_purge(interval) FROM PUBLIC;
