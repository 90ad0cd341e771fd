--
-- Queued payments: billogram_enqueue_credit_payment(), the trigger, the
-- journal, resolve, status and purge.
--
\set VERBOSITY default

-- enqueue validates like the synchronous function: nothing queued on error
SELECT count(*) AS journal_rows_before FROM billogram_requests \gset
SELECT billogram_enqueue_credit_payment('q1', 'amount', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('q/1', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('q1', 'amount', 1.005);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :journal_rows_before AS nothing_queued FROM billogram_requests;

-- a queued payment is sent only when its transaction commits
BEGIN;
SELECT billogram_enqueue_credit_payment('qrollback1', 'amount', 5) > 0 AS queued;
ROLLBACK;
BEGIN;
SELECT billogram_enqueue_credit_payment('qcommit1', 'amount', 12.34) > 0 AS queued;
SELECT state FROM billogram_requests WHERE billogram_id = 'qcommit1';
COMMIT;
SELECT wait_for_queue();
SELECT origin, mode, amount, state, attempts, http_status,
       response->'remaining_sum' AS remaining, error, finished_at >= created_at AS finished
  FROM billogram_requests WHERE billogram_id IN ('qcommit1', 'qrollback1');
SELECT mock_request_count('qrollback1') AS rolled_back_sent, mock_request_count('qcommit1') AS committed_sent;

-- the trigger: misuse is a clear error
CREATE TABLE payouts (
    payout_id   serial PRIMARY KEY,
    invoice     text NOT NULL,
    "Amount Due" numeric(12, 2),
    note        text
);
CREATE TRIGGER wrong_timing BEFORE INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER wrong_timing ON payouts;
CREATE TRIGGER per_statement AFTER INSERT ON payouts FOR EACH STATEMENT
    EXECUTE FUNCTION billogram_payment_trigger('invoice');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER per_statement ON payouts;
CREATE TRIGGER on_update AFTER UPDATE ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
UPDATE payouts SET note = 'x';
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER on_update ON payouts;
TRUNCATE payouts;
CREATE TRIGGER no_args AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger();
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER no_args ON payouts;
CREATE TRIGGER four_args AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', '"Amount Due"', 'note', 'note');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER four_args ON payouts;
CREATE TRIGGER unknown_column AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount_due');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER unknown_column ON payouts;
SELECT billogram_payment_trigger();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS misuse_queued FROM billogram_requests WHERE billogram_id = 'qmisuse1';

-- the real thing; the quoted column name is taken as an identifier
CREATE TRIGGER register_payout AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', '"Amount Due"');

-- a bad row fails the INSERT with 22023 and queues nothing
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qbad1', 0);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO payouts (invoice, "Amount Due") VALUES ('q bad', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS bad_rows_queued FROM billogram_requests WHERE billogram_id IN ('qbad1', 'q bad');

-- a NULL amount is an error, never a payout of the remaining sum: the whole
-- INSERT fails and nothing of it is queued
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qnull1', 3), ('qnull2', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS null_amount_queued FROM billogram_requests WHERE billogram_id IN ('qnull1', 'qnull2');

BEGIN;
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qtrig1', 100.10);
ROLLBACK;
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qtrig1', 100.10),
    ('nfqueue1', 5), ('e500queue1', 5), ('e400queue1', 5);

-- mode 'remaining' only when chosen: no amount column, or a mode column
CREATE TABLE settlements (invoice text PRIMARY KEY);
CREATE TRIGGER settle AFTER INSERT ON settlements FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice');
INSERT INTO settlements VALUES ('qtrig2');
CREATE TABLE mixed_payouts (invoice text PRIMARY KEY, amt numeric, how text);
CREATE TRIGGER mixed AFTER INSERT ON mixed_payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt', 'how');
INSERT INTO mixed_payouts VALUES ('qmode1', NULL, 'remaining'), ('qmode2', 2.50, 'amount');
INSERT INTO mixed_payouts VALUES ('qmode3', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO mixed_payouts VALUES ('qmode4', NULL, 'amount');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO mixed_payouts VALUES ('qmode5', 1, 'remaining');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO mixed_payouts VALUES ('qmode6', 1, 'everything');
\echo :LAST_ERROR_SQLSTATE
SELECT wait_for_queue();
SELECT billogram_id, mode, amount, state, response->'remaining_sum' AS remaining
  FROM billogram_requests WHERE billogram_id LIKE 'qmode%' ORDER BY billogram_id;
DROP TABLE settlements, mixed_payouts;
SELECT billogram_id, origin, mode, amount, state, attempts, http_status,
       response->'remaining_sum' AS remaining, source_table, source_key,
       error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM billogram_requests WHERE origin = 'trigger' AND source_table LIKE 'public.%' ORDER BY id;

-- by default the journal keeps a summary of the invoice, without the
-- customer's personal data, with every event of the invoice
SELECT response->>'id' AS id, response->'remaining_sum' AS remaining, response->>'state' AS state,
       response ? 'customer' AS has_customer, response ? 'attachment_content' AS has_pdf,
       (SELECT jsonb_agg(e - 'created_at' - 'event_uuid') FROM jsonb_array_elements(response->'events') e) AS events,
       (SELECT bool_and(e ? 'created_at' AND e ? 'event_uuid') FROM jsonb_array_elements(response->'events') e) AS events_dated
  FROM billogram_requests WHERE billogram_id = 'qtrig1';

-- in_doubt: the worker fetched the invoice afterwards for the operator
SELECT billogram_id, invoice_snapshot->>'id' AS snapshot_of,
       invoice_snapshot->'remaining_sum' AS snapshot_remaining
  FROM billogram_requests WHERE billogram_id = 'e500queue1';

-- each sent exactly once; nothing from the rolled-back insert was sent twice
SELECT r->>'id' AS id, count(*) AS times_sent FROM mock_requests('') r
 WHERE r->>'method' = 'POST' AND r->>'id' IN ('qtrig1', 'qtrig2', 'nfqueue1', 'e500queue1', 'e400queue1')
 GROUP BY 1 ORDER BY 1;

-- synchronous calls of the earlier tests are in the journal too
SELECT state, count(*) > 0 AS has_rows FROM billogram_requests
 WHERE origin = 'sync' GROUP BY state ORDER BY state;

-- status
SELECT state, requests > 0 AS has_requests, oldest_pending_age IS NULL AS no_pending_age,
       last_error->>'sqlstate' IS NOT NULL AS has_error
  FROM billogram_queue_status WHERE state IN ('done', 'failed', 'in_doubt') ORDER BY state;

-- an operator's decisions
SELECT id AS doubt_id FROM billogram_requests WHERE billogram_id = 'e500queue1' \gset
SELECT id AS done_id FROM billogram_requests WHERE billogram_id = 'qtrig1' \gset
\set VERBOSITY sqlstate
SELECT billogram_resolve(:done_id, 'mark_failed');
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_resolve(:doubt_id, 'cancel');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_resolve(-1, 'mark_done');
\echo :LAST_ERROR_SQLSTATE
SELECT (billogram_resolve(:doubt_id, 'mark_done')).state;
SELECT state, resolution LIKE 'mark_done by % (was in_doubt)' AS resolution_recorded
  FROM billogram_requests WHERE id = :doubt_id;

-- resend a failed request: it goes back to the queue, its invoice is read
-- again, and it is sent again
SELECT id AS failed_id FROM billogram_requests WHERE billogram_id = 'e400queue1' \gset
SELECT (billogram_resolve(:failed_id, 'resend')).state;
SELECT wait_for_queue();
SELECT state, attempts, mock_request_count('e400queue1') AS times_sent
  FROM billogram_requests WHERE id = :failed_id;
-- a row failed because its invoice does not exist (the reading before its
-- first payment got 404) was never sent, and a resend does not send it
SELECT id AS nf_id FROM billogram_requests WHERE billogram_id = 'nfqueue1' \gset
SELECT (billogram_resolve(:nf_id, 'resend')).state;
SELECT wait_for_queue();
SELECT state, attempts, mock_request_count('nfqueue1') AS times_sent
  FROM billogram_requests WHERE id = :nf_id;

-- purge removes every finished row, done and failed, and keeps what still
-- matters: an unresolved in_doubt row
SELECT billogram_enqueue_credit_payment('e500queue2', 'amount', 1) > 0 AS queued;
SELECT wait_for_queue();
SELECT state AS unresolved_state FROM billogram_requests WHERE billogram_id = 'e500queue2';
SELECT count(*) AS unfinished_before FROM billogram_requests WHERE state NOT IN ('done', 'failed') \gset
SELECT count(*) > 0 AS has_failed, count(*) FILTER (WHERE state = 'done') > 0 AS has_done
  FROM billogram_requests WHERE state IN ('done', 'failed');
SELECT billogram_purge('1 hour') AS purged_old;
SELECT billogram_purge('0 seconds') > 0 AS purged_finished;
SELECT count(*) AS finished_left FROM billogram_requests WHERE state IN ('done', 'failed');
SELECT count(*) = :unfinished_before AS unfinished_kept FROM billogram_requests
 WHERE state NOT IN ('done', 'failed');
SELECT state FROM billogram_requests WHERE billogram_id = 'e500queue2';

-- privileges: a clerk who may only insert payouts fires the trigger, and
-- can do nothing else with billogram
CREATE ROLE regress_bg_clerk2;
GRANT INSERT ON payouts TO regress_bg_clerk2;
GRANT USAGE ON SEQUENCE payouts_payout_id_seq TO regress_bg_clerk2;
SET ROLE regress_bg_clerk2;
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qclerk1', 1.50);
SELECT count(*) FROM billogram_requests;
\echo :LAST_ERROR_SQLSTATE
UPDATE billogram_requests SET state = 'done';
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM billogram_queue_status;
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('qclerk2', 'amount', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_resolve(1, 'mark_done');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_purge('0 seconds');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT wait_for_queue();
-- the journal names the clerk (SET ROLE counts) and where the insert came from
SELECT origin, state, created_by, effective_role, login_role = session_user AS login_role_is_session,
       database_name = current_database() AS database_ok, backend_pid = pg_backend_pid() AS pid_ok,
       application_name
  FROM billogram_requests WHERE billogram_id = 'qclerk1';
DROP TABLE payouts;
DROP ROLE regress_bg_clerk2;

-- odd but legal column names (quotes, semicolons, spaces, a comment marker)
-- are identifiers, not SQL: the payment is queued from the right columns
CREATE TABLE odd_payouts ("in""v; id" text PRIMARY KEY, "a;mt --" numeric, note text);
CREATE TRIGGER odd AFTER INSERT ON odd_payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('"in""v; id"', '"a;mt --"');
INSERT INTO odd_payouts VALUES ('qodd1', 7.50, 'x'), ('qodd2', 2.25, 'y');
SELECT wait_for_queue();
SELECT billogram_id, mode, amount, state, source_table, source_key
  FROM billogram_requests WHERE billogram_id LIKE 'qodd%' ORDER BY billogram_id;
-- the same names unquoted, or another column that does not exist: clear errors
CREATE TRIGGER odd_unquoted AFTER INSERT ON odd_payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('in"v; id');
INSERT INTO odd_payouts VALUES ('qodd3', 1, 'z');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER odd_unquoted ON odd_payouts;
CREATE TRIGGER odd_missing AFTER INSERT ON odd_payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('"in""v; id"', '"a;mt"');
INSERT INTO odd_payouts VALUES ('qodd4', 1, 'z');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS queued_by_misuse FROM billogram_requests
 WHERE billogram_id IN ('qodd3', 'qodd4');
DROP TABLE odd_payouts;

-- the summary keeps no personal data; of each event its type, time, uuid
-- and amount; members that are missing or null are left out; amounts are
-- copied as written (2.50 stays 2.50)
SELECT billogram_invoice_summary(
  '{"id": "x1", "state": "Paid", "remaining_sum": 0, "currency": null, "customer": {"name": "Anna", "email": "a@example.com"},
    "events": [{"type": "Old", "created_at": "2026-06-01T11:50:00Z", "data": {"amount": 1}},
               {"type": "Near", "created_at": "2026-06-01 11:59:00", "event_uuid": "u2", "data": {"amount": 2.50, "full_status": "x"}},
               {"type": "Odd", "created_at": "yesterday", "data": null},
               "not an event"]}');
SELECT billogram_invoice_summary('{"id": "x2", "events": "not a list"}');
SELECT billogram_invoice_summary('[1, 2]');
\echo :LAST_ERROR_SQLSTATE

-- the journal's enumerated columns refuse any other value, from a superuser
-- too (23514), and an amount goes with mode 'amount' only (terse: the
-- failing row's detail holds the time)
\set VERBOSITY terse
INSERT INTO billogram_requests (origin, billogram_id, mode, request_body)
VALUES ('bogus', 'qdom1', 'remaining', '{"mode":"remaining"}');
INSERT INTO billogram_requests (origin, billogram_id, mode, request_body)
VALUES ('enqueue', 'qdom2', 'everything', '{"mode":"everything"}');
INSERT INTO billogram_requests (origin, billogram_id, mode, request_body, state)
VALUES ('enqueue', 'qdom3', 'remaining', '{"mode":"remaining"}', 'sent');
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body)
VALUES ('enqueue', 'qdom4', 'remaining', 5, '{"mode":"remaining"}');
\echo :LAST_ERROR_SQLSTATE
UPDATE billogram_requests SET state = 'lost' WHERE id = (SELECT min(id) FROM billogram_requests);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO billogram_keys (kind, key, request_id) VALUES ('row', 'x', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS written FROM billogram_requests WHERE billogram_id LIKE 'qdom%';
\set VERBOSITY default
