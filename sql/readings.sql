--
-- billogram_read_recorded: what a batch of readings before sending decides,
-- each row by its own invoice's reading, in one call as the worker makes it.
-- Inside a transaction that is rolled back: the worker never sees these rows.
--
\set VERBOSITY default
BEGIN;

-- what the ledger knew of the invoices being resent or taken over
INSERT INTO billogram_ledger (billogram_id, remaining_sum, events, seen_at)
VALUES ('rrResendSame', -1000.00, '{"e1": 100.00}', now()),
       ('rrResendNew', -1000.00, '{"e1": 100.00}', now()),
       ('rrTakeover', -1000.00, '{}', now());

-- rows waiting for a reading of their invoice; rrTwo has two, and one more
-- row that waits for nothing (it is not pending)
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
                                state, verify_reason, finished_at)
VALUES ('enqueue', 'rrFirst', 'amount', 1, '{}', 'pending', 'first_payment', NULL),
       ('enqueue', 'rrGone', 'amount', 2, '{}', 'pending', 'first_payment', NULL),
       ('enqueue', 'rrLater', 'amount', 3, '{}', 'pending', 'first_payment', NULL),
       ('enqueue', 'rrResendSame', 'amount', 4, '{}', 'pending', 'resend', NULL),
       ('enqueue', 'rrResendNew', 'amount', 5, '{}', 'pending', 'resend', NULL),
       ('enqueue', 'rrTakeover', 'amount', 6, '{}', 'pending', 'promotion', NULL),
       ('enqueue', 'rrTwice', 'amount', 7, '{}', 'pending', 'first_payment', NULL),
       ('enqueue', 'rrTwo', 'amount', 8, '{}', 'done', NULL, now()),
       ('enqueue', 'rrTwo', 'amount', 9, '{}', 'pending', 'first_payment', NULL),
       ('enqueue', 'rrTwo', 'amount', 10, '{}', 'pending', 'first_payment', NULL);

-- one batch: a reading of each, rrTwice first failed, then read, and rrTwo
-- read twice, its second reading showing one more event; nothing claimed
-- (claim_max 0)
SELECT * FROM billogram_read_recorded(
    ARRAY['rrFirst', 'rrGone', 'rrLater', 'rrResendSame', 'rrResendNew',
          'rrTakeover', 'rrTwice', 'rrTwo', 'rrTwice', 'rrTwo'],
    ARRAY['{"remaining_sum": -500.00, "events": [{"event_uuid": "f1", "amount": 50.00}]}',
          NULL,
          NULL,
          '{"remaining_sum": -1000.00, "events": [{"event_uuid": "e1", "amount": 100.00}]}',
          '{"remaining_sum": -1000.00, "events": [{"event_uuid": "e1", "amount": 100.00}, {"event_uuid": "e2", "amount": 5.00}]}',
          '{"remaining_sum": -900.00, "events": []}',
          NULL,
          '{"remaining_sum": -70.00, "events": [{"event_uuid": "t1", "amount": 1.00}]}',
          '{"remaining_sum": -300.00, "events": []}',
          '{"remaining_sum": -60.00, "events": [{"event_uuid": "t1", "amount": 1.00}, {"event_uuid": "t2", "amount": 2.00}]}'
         ]::jsonb[],
    ARRAY[NULL,
          '{"sqlstate": "BG404", "message": "Billogram says the invoice does not exist", "status": 404}',
          '{"sqlstate": "BG503", "message": "Billogram is unavailable", "status": 503, "retry_after": 30}',
          NULL, NULL, NULL,
          '{"sqlstate": "BG503", "message": "Billogram is unavailable", "status": 503}',
          NULL, NULL, NULL]::jsonb[],
    3600, 0, NULL, NULL, NULL);

-- each row's verdict: rrFirst, rrResendSame, rrTwice and both of rrTwo go
-- (pending, verify_reason cleared, due now); rrGone fails at once (404);
-- rrLater waits for Retry-After; rrResendNew is in_doubt, ambiguous, with
-- the payment nobody accounted for; rrTakeover is held
SELECT billogram_id, amount, state, verify_reason,
       state = 'pending' AND verify_reason IS NULL AND next_attempt_at <= now() AS goes_now,
       finished_at IS NOT NULL AS finished,
       held_at IS NOT NULL AS held,
       next_attempt_at >= now() + interval '30 s' AS after_retry_after,
       error ->> 'message' AS error,
       error -> 'may_have_reached_billogram' AS may_have_reached,
       evidence ->> 'verdict' AS verdict,
       evidence -> 'new_events' AS new_events,
       resolution LIKE 'verified (resend) by the billogram worker at %' AS verified
  FROM billogram_requests WHERE billogram_id LIKE 'rr%' ORDER BY id;

-- the ledger: every invoice read joins it (not those that could not be
-- read); an invoice read twice has the last remaining sum and every event
SELECT billogram_id, remaining_sum, events
  FROM billogram_ledger WHERE billogram_id LIKE 'rr%' ORDER BY billogram_id;

-- the claim with the reading: of the rows that go, up to claim_max made
-- here (bg_here_args()) and at the head of their invoice's queue become
-- 'sending', their baseline the ledger's view with this reading in it, and
-- are returned.  rcKnown's invoice the ledger knew (k1); rcPair has two
-- rows, the second behind the first; rcElsewhere was made by another
-- installation; rcBehind waits behind a row sending; rcLast would be a
-- third claim, over claim_max (2)
CREATE TEMP TABLE here AS
SELECT (SELECT system_identifier FROM pg_control_system()) AS system,
       (SELECT oid FROM pg_database WHERE datname = current_database()) AS database,
       (SELECT id FROM billogram_instance) AS instance;
INSERT INTO billogram_ledger (billogram_id, remaining_sum, events, seen_at)
VALUES ('rcKnown', -100.00, '{"k1": 10.00}', now());
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
                                state, verify_reason, finished_at, made_in_system,
                                made_in_database, made_in_instance)
SELECT 'enqueue', v.invoice, 'amount', v.amount, '{}', v.state, v.reason, NULL,
       here.system, here.database,
       CASE WHEN v.invoice = 'rcElsewhere' THEN gen_random_uuid() ELSE here.instance END
  FROM here,
       (VALUES ('rcKnown', 11, 'pending', 'first_payment'),
               ('rcPair', 12, 'pending', 'first_payment'),
               ('rcPair', 13, 'pending', 'first_payment'),
               ('rcElsewhere', 14, 'pending', 'first_payment'),
               ('rcBehind', 15, 'sending', NULL),
               ('rcBehind', 16, 'pending', 'first_payment'),
               ('rcLast', 17, 'pending', 'first_payment')) AS v(invoice, amount, state, reason)
 ORDER BY v.amount;
SELECT claimed_invoice, claimed_mode, claimed_amount, claimed_body
  FROM here,
       billogram_read_recorded(
           ARRAY['rcKnown', 'rcPair', 'rcElsewhere', 'rcBehind', 'rcLast'],
           ARRAY['{"remaining_sum": -90.00, "events": [{"event_uuid": "k1", "amount": 10.00}, {"event_uuid": "k0", "amount": 5.00}]}',
                 '{"remaining_sum": -20.00, "events": []}',
                 '{"remaining_sum": -30.00, "events": []}',
                 '{"remaining_sum": -40.00, "events": []}',
                 '{"remaining_sum": -50.00, "events": []}']::jsonb[],
           ARRAY[NULL, NULL, NULL, NULL, NULL]::jsonb[],
           3600, 2, here.system, here.database, here.instance)
 ORDER BY claimed_id;
SELECT billogram_id, amount, state, verify_reason, attempts,
       sent_at IS NOT NULL AS sent, baseline,
       state = 'pending' AND next_attempt_at <= now() AS goes_now
  FROM billogram_requests WHERE billogram_id LIKE 'rc%' ORDER BY id;

ROLLBACK;

-- nobody but the worker records readings
CREATE ROLE regress_bg_reader;
SET ROLE regress_bg_reader;
SELECT billogram_read_recorded(ARRAY['rrFirst'], ARRAY[NULL]::jsonb[], ARRAY[NULL]::jsonb[], 60,
                               1, NULL, NULL, NULL);
RESET ROLE;
DROP ROLE regress_bg_reader;
