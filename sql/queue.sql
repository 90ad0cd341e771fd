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
CREATE TRIGGER three_args AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', '"Amount Due"', 'note');
INSERT INTO payouts (invoice) VALUES ('qmisuse1');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER three_args ON payouts;
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

BEGIN;
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qtrig1', 100.10), ('qtrig2', NULL);
ROLLBACK;
INSERT INTO payouts (invoice, "Amount Due") VALUES ('qtrig1', 100.10), ('qtrig2', NULL),
    ('nfqueue1', 5), ('e500queue1', 5), ('e400queue1', 5);
SELECT wait_for_queue();
SELECT billogram_id, origin, mode, amount, state, attempts, http_status,
       response->'remaining_sum' AS remaining, source_table, source_key,
       error->>'sqlstate' AS sqlstate, error->>'message' AS message
  FROM billogram_requests WHERE origin = 'trigger' ORDER BY id;

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

-- resend a failed request: it goes back to the queue and is sent again
SELECT id AS failed_id FROM billogram_requests WHERE billogram_id = 'nfqueue1' \gset
SELECT (billogram_resolve(:failed_id, 'resend')).state;
SELECT wait_for_queue();
SELECT state, attempts, mock_request_count('nfqueue1') AS times_sent
  FROM billogram_requests WHERE id = :failed_id;

-- purge removes finished done rows only
SELECT count(*) AS not_done_before FROM billogram_requests WHERE state <> 'done' \gset
SELECT billogram_purge('1 hour') AS purged_old;
SELECT billogram_purge('0 seconds') > 0 AS purged_done;
SELECT count(*) AS done_left FROM billogram_requests WHERE state = 'done';
SELECT count(*) = :not_done_before AS others_kept FROM billogram_requests WHERE state <> 'done';

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
SELECT origin, state, created_by = session_user AS created_by_session_user
  FROM billogram_requests WHERE billogram_id = 'qclerk1';
DROP TABLE payouts;
DROP ROLE regress_bg_clerk2;

-- odd but legal column names (quotes, semicolons, spaces, a comment marker)
-- are identifiers, not SQL: the payment is queued from the right columns
CREATE TABLE odd_payouts ("in""v; id" text PRIMARY KEY, "a;mt --" numeric, note text);
CREATE TRIGGER odd AFTER INSERT ON odd_payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('"in""v; id"', '"a;mt --"');
INSERT INTO odd_payouts VALUES ('qodd1', 7.50, 'x'), ('qodd2', NULL, 'y');
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
