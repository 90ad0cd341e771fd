--
-- billogram_weigh: the verdict on an in_doubt payment, from evidence given
-- as arguments alone.  One table of cases, each with the verdict (and, when
-- applied, the event) it must give; ok is false on any mismatch.  Run as a
-- role holding no grant: the function reads nothing but its arguments.
--
\set VERBOSITY default
CREATE ROLE regress_bg_weigher;
SET ROLE regress_bg_weigher;

WITH cases (n, name, mode, amount, baseline, invoice, attributed, passed, expected, event) AS (VALUES
  -- the invoice could not be read
  (1, 'unreadable before settle time', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}'::jsonb,
      NULL::jsonb, NULL::text[], false, 'checking', NULL),
  (2, 'unreadable after settle time', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      NULL, NULL, true, 'unchecked', NULL),
  (3, 'unreadable, no baseline, before settle time', 'remaining', NULL, NULL,
      NULL, NULL, false, 'checking', NULL),
  (4, 'unreadable, no baseline, after settle time', 'remaining', NULL, NULL,
      NULL, NULL, true, 'unchecked', NULL),
  -- amount mode
  (10, 'amount: applied', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"type": "Payment", "created_at": "2026-06-01T12:00:00.123Z", "event_uuid": "u1", "amount": 250.00}]}',
      NULL, false, 'applied', 'u1'),
  (11, 'amount: nothing yet', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -1000.00, "events": []}', NULL, false, 'checking', NULL),
  (12, 'amount: nothing after settle time', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -1000.00, "events": []}', NULL, true, 'not_applied', NULL),
  (13, 'amount: a new event that is no payment, sum unchanged', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -1000.00, "events": [{"type": "Reminder", "event_uuid": "r1"}]}', NULL, true, 'not_applied', NULL),
  (14, 'amount: ordinary invoice, positive sums', 'amount', 250, '{"remaining_sum": 1000.00, "events": []}',
      '{"remaining_sum": 750.00, "events": [{"type": "Payment", "event_uuid": "u1", "amount": 250.00}]}',
      NULL, false, 'applied', 'u1'),
  (15, 'amount: 250 and 250.00 are the same amount', 'amount', 250, '{"remaining_sum": -1000, "events": []}',
      '{"remaining_sum": -750.0, "events": [{"event_uuid": "u1", "amount": 250.000}]}',
      NULL, false, 'applied', 'u1'),
  (16, 'amount: exact, 0.30000000000000004 is not 0.3', 'amount', 0.3, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -999.69999999999999996, "events": [{"event_uuid": "u1", "amount": 0.30000000000000004}]}',
      NULL, false, 'ambiguous', NULL),
  -- remaining mode
  (20, 'remaining: applied, leaves 0', 'remaining', NULL, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": 0.00, "events": [{"type": "Payment", "event_uuid": "u1", "amount": 1000.00}]}',
      NULL, false, 'applied', 'u1'),
  (21, 'remaining: nothing after settle time', 'remaining', NULL, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -1000.00, "events": []}', NULL, true, 'not_applied', NULL),
  (22, 'remaining: a payment of part of the sum', 'remaining', NULL, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -400.00, "events": [{"event_uuid": "u1", "amount": 600.00}]}', NULL, false, 'ambiguous', NULL),
  (23, 'remaining: the whole sum paid, but not 0 left', 'remaining', NULL, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -2000.00, "events": [{"event_uuid": "u1", "amount": 1000.00}]}', NULL, false, 'ambiguous', NULL),
  (24, 'remaining: nothing was left to pay', 'remaining', NULL, '{"remaining_sum": 0.00, "events": []}',
      '{"remaining_sum": 0.00, "events": []}', NULL, true, 'not_applied', NULL),
  -- anything else is ambiguous
  (30, 'someone else paid another amount', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -900.00, "events": [{"event_uuid": "x1", "amount": 100.00}]}', NULL, true, 'ambiguous', NULL),
  (31, 'two payments: ours and someone else''s', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -650.00, "events": [{"event_uuid": "u1", "amount": 250.00}, {"event_uuid": "x1", "amount": 100.00}]}',
      NULL, false, 'ambiguous', NULL),
  (32, 'two payments of our amount', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -500.00, "events": [{"event_uuid": "u1", "amount": 250.00}, {"event_uuid": "u2", "amount": 250.00}]}',
      NULL, false, 'ambiguous', NULL),
  (33, 'the sum moved without an event', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": []}', NULL, true, 'ambiguous', NULL),
  (34, 'a payment event that moved nothing', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -1000.00, "events": [{"event_uuid": "u1", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (35, 'our payment, the sum moved by another amount', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -700.00, "events": [{"event_uuid": "u1", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (36, 'remaining_sum of the invoice not a number', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": "-750.00", "events": [{"event_uuid": "u1", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (37, 'remaining_sum of the invoice missing', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"events": []}', NULL, true, 'ambiguous', NULL),
  (38, 'remaining_sum of the baseline not a number', 'amount', 250, '{"remaining_sum": null, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (39, 'baseline without its events', 'amount', 250, '{"remaining_sum": -1000.00}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (40, 'an event without an event_uuid', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"type": "Payment", "amount": 250.00}]}', NULL, false, 'ambiguous', NULL),
  (41, 'an event whose amount is text', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "amount": "250.00"}]}', NULL, false, 'ambiguous', NULL),
  (42, 'the invoice''s events not a list', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": {"u1": 250.00}}', NULL, false, 'ambiguous', NULL),
  -- route 1: clock skew; created_at is never read
  (50, 'route 1: event created hours before sending', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "2026-06-01T04:00:00Z", "amount": 250.00}]}',
      NULL, true, 'applied', 'u1'),
  (51, 'route 1: event created hours after sending', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "2026-06-01T20:00:00Z", "amount": 250.00}]}',
      NULL, true, 'applied', 'u1'),
  (52, 'route 1: an offset-less event time', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "2026-06-01 12:00:00", "amount": 250.00}]}',
      NULL, true, 'applied', 'u1'),
  (53, 'route 1: an event time that is no time', 'amount', 250, '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "yesterday-ish", "amount": 250.00}]}',
      NULL, true, 'applied', 'u1'),
  (54, 'route 1: old events with skewed times, nothing new', 'amount', 250,
      '{"remaining_sum": -750.00, "events": ["p1"]}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "p1", "created_at": "2026-06-01T23:59:00", "amount": 250.00}]}',
      NULL, true, 'not_applied', NULL),
  (55, 'route 1: first payment, no baseline, applied before a 500', 'amount', 250, NULL,
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "2026-06-01T11:58:00Z", "amount": 250.00}]}',
      NULL, true, 'ambiguous', NULL),
  (56, 'route 1: first payment, no baseline, event time in the future', 'amount', 250, NULL,
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "created_at": "2099-01-01T00:00:00Z", "amount": 250.00}]}',
      NULL, false, 'ambiguous', NULL),
  -- route 2: the previous payment's event is not this row's
  (60, 'route 2a: previous payment in the baseline, this one not applied', 'amount', 250,
      '{"remaining_sum": -750.00, "events": ["p1"]}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "p1", "amount": 250.00}]}',
      NULL, true, 'not_applied', NULL),
  (61, 'route 2a: previous payment in the baseline, this one applied', 'amount', 250,
      '{"remaining_sum": -750.00, "events": ["p1"]}',
      '{"remaining_sum": -500.00, "events": [{"event_uuid": "p1", "amount": 250.00}, {"event_uuid": "u1", "amount": 250.00}]}',
      NULL, false, 'applied', 'u1'),
  (62, 'route 2a: previous payment attributed, this one applied', 'amount', 250,
      '{"remaining_sum": -750.00, "events": []}',
      '{"remaining_sum": -500.00, "events": [{"event_uuid": "p1", "amount": 250.00}, {"event_uuid": "u1", "amount": 250.00}]}',
      '{p1}', false, 'applied', 'u1'),
  (63, 'route 2a: previous payment attributed, stale sum', 'amount', 250,
      '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "p1", "amount": 250.00}]}',
      '{p1}', true, 'ambiguous', NULL),
  (64, 'route 2b/2c: no baseline (journal_reply none, purged), nothing seen', 'amount', 250, NULL,
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "p1", "amount": 250.00}]}',
      NULL, true, 'ambiguous', NULL),
  (65, 'route 2b/2c: no baseline, previous payment attributed', 'amount', 250, NULL,
      '{"remaining_sum": -750.00, "events": [{"event_uuid": "p1", "amount": 250.00}]}',
      '{p1}', true, 'ambiguous', NULL),
  -- route 3: an event attributed to another row is no evidence for this one
  (70, 'route 3: the next row''s payment of the same amount', 'amount', 300,
      '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -700.00, "events": [{"event_uuid": "b1", "amount": 300.00}]}',
      '{b1}', true, 'ambiguous', NULL),
  (71, 'route 3: the same, not attributed, would be applied', 'amount', 300,
      '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -700.00, "events": [{"event_uuid": "b1", "amount": 300.00}]}',
      NULL, true, 'applied', 'b1'),
  (72, 'route 3: a NULL among the attributed hides nothing', 'amount', 300,
      '{"remaining_sum": -1000.00, "events": []}',
      '{"remaining_sum": -700.00, "events": [{"event_uuid": "b1", "amount": 300.00}]}',
      '{NULL,a9}', true, 'applied', 'b1'),
  (73, 'route 3: a callback''s event appended, attributed to another row', 'amount', 300,
      '{"remaining_sum": -700.00, "events": ["b1"]}',
      '{"remaining_sum": -400.00, "events": [{"event_uuid": "b1", "amount": 300.00}, {"event_uuid": "c2", "type": "Payment", "created_at": "2026-06-01T12:00:00Z", "amount": 300.00}]}',
      '{c2}', true, 'ambiguous', NULL)
)
SELECT n, name, expected, v ->> 'verdict' AS actual, v ->> 'applied_event' AS event,
       v ->> 'verdict' IS NOT DISTINCT FROM expected
       AND v ->> 'applied_event' IS NOT DISTINCT FROM event
       AND length(v ->> 'why') > 20 AS ok
  FROM cases,
       LATERAL billogram_weigh(mode, amount, baseline, invoice, attributed, passed) v
 ORDER BY n;

-- the whole output of three cases: what settle writes into evidence
SELECT jsonb_pretty(billogram_weigh('amount', 250, '{"remaining_sum": -750.00, "events": ["p1"]}',
       '{"remaining_sum": -500.00, "events": [{"type": "Payment", "created_at": "2026-06-01T12:00:00.123Z", "event_uuid": "p1", "amount": 250.00}, {"type": "Payment", "created_at": "2026-06-01T12:01:00.000Z", "event_uuid": "u1", "amount": 250.00}, {"type": "Reminder", "event_uuid": "r1"}]}',
       NULL, false)) AS applied;
SELECT jsonb_pretty(billogram_weigh('remaining', NULL, NULL,
       '{"remaining_sum": 0.00, "events": [{"event_uuid": "u1", "amount": 1000.00}]}',
       NULL, true)) AS no_baseline;
SELECT jsonb_pretty(billogram_weigh('amount', 250, '{"remaining_sum": -1000.00, "events": []}',
       NULL, NULL, true)) AS unreadable;

-- arguments that make no request: 22023, before anything is weighed
SELECT billogram_weigh('refund', 250, NULL, NULL, NULL, true);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_weigh('amount', NULL, NULL, NULL, NULL, true);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_weigh('remaining', 250, NULL, NULL, NULL, true);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_weigh('amount', 250, NULL, NULL, NULL, NULL);
\echo :LAST_ERROR_SQLSTATE

-- this role holds no grant on the journal, the ledger or anything else of
-- the extension: a function that read any of them would have failed above
SELECT count(*) >= 4 AS tables_and_views,
       count(*) FILTER (WHERE has_table_privilege(c.oid, 'SELECT')) AS readable
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'billogram'
 WHERE c.relkind IN ('r', 'v');
RESET ROLE;
DROP ROLE regress_bg_weigher;

-- nor does it scan a table: no user table was scanned by this
-- transaction's calls (the first call, outside it, compiled the function)
SELECT billogram_weigh('amount', 1, NULL, NULL, NULL, false) ->> 'verdict' AS warm;
BEGIN;
SELECT billogram_weigh('amount', 250, '{"remaining_sum": -1000.00, "events": []}',
                       '{"remaining_sum": -750.00, "events": [{"event_uuid": "u1", "amount": 250.00}]}',
                       '{p1}', g % 2 = 0) ->> 'verdict' AS verdict, count(*)
  FROM generate_series(1, 100) g GROUP BY 1;
SELECT count(*) AS tables_scanned
  FROM pg_stat_xact_user_tables
 WHERE seq_scan + coalesce(idx_scan, 0) > 0;
COMMIT;

-- IMMUTABLE, PARALLEL SAFE, search_path pinned, EXECUTE for PUBLIC
SELECT p.provolatile, p.proparallel, p.prosecdef, p.proconfig,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
  FROM pg_proc p WHERE p.proname = 'billogram_weigh';
