--
-- Money moves only for roles a DBA granted: every route to a payment tried
-- as a role without grants (42501, nothing queued, nothing sent), the
-- granted routes, and who the journal names for each.
--
\set VERBOSITY default
CREATE ROLE regress_bg_nogrant;
CREATE ROLE regress_bg_owner;            -- holds the trigger grant
CREATE ROLE regress_bg_inserter;         -- may only INSERT into the owner's table
CREATE ROLE regress_bg_payer;            -- may pay and queue
CREATE SCHEMA regress_open;
GRANT USAGE, CREATE ON SCHEMA regress_open TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_payment_trigger() TO regress_bg_owner;
GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric, text) TO regress_bg_payer;
GRANT EXECUTE ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric, text) TO regress_bg_payer;

-- PUBLIC holds no capability
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'billogram'
 ORDER BY 1;
-- nor may it read any of its tables or views
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_may_read
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'billogram'
 WHERE c.relkind IN ('r', 'v')
 ORDER BY 1;
-- every object is in schema billogram, a superuser's in which PUBLIC may
-- not create; every SECURITY DEFINER function pins its search_path and
-- first checks that nothing in or on the extension is another's
SELECT n.nspname, r.rolsuper AS owner_is_superuser,
       has_schema_privilege('public', n.oid, 'CREATE') AS public_may_create,
       has_schema_privilege('public', n.oid, 'USAGE') AS public_may_use
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  JOIN pg_roles r ON r.oid = n.nspowner
 WHERE e.extname = 'billogram';
SELECT p.proname, p.pronamespace::regnamespace AS schema, p.proconfig,
       p.prosrc ~ '^\s*(BEGIN\s+PERFORM|DECLARE.*?BEGIN\s+PERFORM|SELECT) billogram\.billogram_assert_trusted\(\);' AS checks_first
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'billogram'
 WHERE p.prosecdef
 ORDER BY 1;

SET ROLE regress_bg_nogrant;
-- 1. a temporary table of its own (PUBLIC holds TEMP on the database)
CREATE TEMP TABLE t_temp (bid text, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON t_temp FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('bid', 'amt');
\echo :LAST_ERROR_SQLSTATE
-- 2. a table in a schema it may create in
CREATE TABLE regress_open.t_own (bid text, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON regress_open.t_own FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('bid', 'amt');
\echo :LAST_ERROR_SQLSTATE
-- 3. a view of its own, with an INSTEAD OF trigger
CREATE VIEW regress_open.v_own AS SELECT * FROM regress_open.t_own;
CREATE TRIGGER pay INSTEAD OF INSERT ON regress_open.v_own FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('bid', 'amt');
\echo :LAST_ERROR_SQLSTATE
-- 4. calling the functions directly
SELECT billogram_payment_trigger();
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('rtnogrant1', 'amount', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('rtnogrant1', 'amount', 1);
\echo :LAST_ERROR_SQLSTATE
-- 5. as a column default of its own table (checked at INSERT)
CREATE TABLE regress_open.t_default (bid text,
    req bigint DEFAULT billogram_enqueue_credit_payment('rtnogrant1', 'amount', 1));
INSERT INTO regress_open.t_default (bid) VALUES ('x');
\echo :LAST_ERROR_SQLSTATE
-- 6. through a SECURITY DEFINER function of its own
CREATE FUNCTION regress_open.pay_for_me() RETURNS bigint
LANGUAGE sql SECURITY DEFINER
AS $$ SELECT billogram_enqueue_credit_payment('rtnogrant1', 'amount', 1) $$;
SELECT regress_open.pay_for_me();
\echo :LAST_ERROR_SQLSTATE
-- 7. writing the journal itself
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body)
VALUES ('enqueue', 'rtnogrant1', 'amount', 1, '{"mode":"amount","amount":1}');
\echo :LAST_ERROR_SQLSTATE
-- 8. settling a row itself (the worker's verdict: a row made done), or
-- reading the payments in doubt
SELECT billogram_settle(1, '{"remaining_sum": 0, "events": []}', NULL, 60);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM billogram_in_doubt;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- 9. a trigger created while the grant was held, fired after it was revoked
SET ROLE regress_bg_owner;
CREATE TABLE regress_open.payouts (bid text PRIMARY KEY, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON regress_open.payouts FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('bid', 'amt');
GRANT INSERT, SELECT ON regress_open.payouts TO regress_bg_inserter;
INSERT INTO regress_open.payouts VALUES ('rtowner1', 1.25);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION billogram_payment_trigger() FROM regress_bg_owner;
SET ROLE regress_bg_owner;
INSERT INTO regress_open.payouts VALUES ('rtrevoked1', 1);
\echo :LAST_ERROR_SQLSTATE
-- ... and by COPY
COPY regress_open.payouts FROM stdin;
rtrevoked2	1
\.
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- ... and by a role that may insert into the table
SET ROLE regress_bg_inserter;
INSERT INTO regress_open.payouts VALUES ('rtrevoked3', 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- 10. a table given to an owner without the grant stops queuing too
GRANT EXECUTE ON FUNCTION billogram_payment_trigger() TO regress_bg_owner;
ALTER TABLE regress_open.payouts OWNER TO regress_bg_nogrant;
INSERT INTO regress_open.payouts VALUES ('rtgiven1', 1);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE regress_open.payouts OWNER TO regress_bg_owner;

-- 11. a role without grants inserting through a view of its own over the
-- owner's table: the view's owner needs INSERT there
SET ROLE regress_bg_nogrant;
CREATE VIEW regress_open.v_payouts AS SELECT * FROM regress_open.payouts;
INSERT INTO regress_open.v_payouts VALUES ('rtview1', 1);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- 12. writing the extension's tables directly, with every privilege on
-- them that a role below superuser can hold: pg_write_all_data, explicit
-- grants (TRUNCATE and COPY included).  The guard refuses each (42501).
CREATE ROLE regress_bg_writer IN ROLE pg_write_all_data, pg_read_all_data;
GRANT ALL ON billogram_requests, billogram_keys, billogram_ledger,
    billogram_events, billogram_instance TO regress_bg_writer;
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body, state, finished_at)
VALUES ('enqueue', 'rtwritten0', 'amount', 5, '{"mode":"amount","amount":5}', 'done', now());
SET ROLE regress_bg_writer;
-- a pending row naming another role, 1 in the column and 900 in the body
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body, created_by)
VALUES ('enqueue', 'rtwritten1', 'amount', 1, '{"mode":"amount","amount":900}', 'regress_bg_payer');
\echo :LAST_ERROR_SQLSTATE
COPY billogram_requests (origin, billogram_id, mode, amount, request_body) FROM stdin;
enqueue	rtwritten2	amount	1	{"mode":"amount","amount":1}
\.
\echo :LAST_ERROR_SQLSTATE
-- a done row made pending again, to pay twice
UPDATE billogram_requests SET state = 'pending' WHERE billogram_id = 'rtwritten0';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM billogram_requests WHERE billogram_id = 'rtwritten0';
\echo :LAST_ERROR_SQLSTATE
TRUNCATE billogram_requests;
\echo :LAST_ERROR_SQLSTATE
-- the tables that decide whether a payment was made
DELETE FROM billogram_keys;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM billogram_ledger;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO billogram_events (event_uuid, billogram_id, event, received_by)
VALUES ('rtevent1', 'rtwritten0', '{}', 'regress_bg_writer');
\echo :LAST_ERROR_SQLSTATE
-- a new instance id would let a restored journal's rows pay again
UPDATE billogram_instance SET id = gen_random_uuid();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT billogram_id, state FROM billogram_requests WHERE billogram_id LIKE 'rtwritten%';
DELETE FROM billogram_requests WHERE billogram_id = 'rtwritten0';
REVOKE ALL ON billogram_requests, billogram_keys, billogram_ledger,
    billogram_events, billogram_instance FROM regress_bg_writer;
DROP ROLE regress_bg_writer;

-- 13. rows only a superuser could still write by hand are checked again
-- when the worker claims them: an id that is not letters and digits (".."
-- would make the path /api/v2/command/credit-payment), a body that is not
-- that of the row's mode and amount.  Neither is sent; each fails with
-- the reason.
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
                                made_in_system, made_in_database, made_in_instance)
SELECT f.origin, f.billogram_id, f.mode, f.amount, f.request_body,
       (SELECT system_identifier FROM pg_control_system()),
       (SELECT oid FROM pg_database WHERE datname = current_database()),
       (SELECT id FROM billogram_instance)
  FROM (VALUES ('enqueue', '..', 'amount', 1, '{"mode":"amount","amount":1}'),
               ('enqueue', 'rtforged1', 'amount', 1, '{"mode":"amount","amount":900}'),
               ('enqueue', 'rtforged2', 'amount', -3, '{"mode":"amount","amount":-3}'))
       AS f(origin, billogram_id, mode, amount, request_body);
SELECT wait_for_queue();
SELECT billogram_id, state, error->>'kind' AS kind, error->>'message' AS why
  FROM billogram_requests WHERE billogram_id IN ('..', 'rtforged1', 'rtforged2') ORDER BY id;
SELECT count(*) AS forged_sent FROM mock_requests('') r
 WHERE r->>'id' IN ('..', 'rtforged1', 'rtforged2') OR r->>'path' NOT LIKE '%/billogram/%';

-- nothing of the above reached the journal or Billogram
SELECT count(*) AS refused_queued FROM billogram_requests
 WHERE billogram_id IN ('rtnogrant1', 'rtrevoked1', 'rtrevoked2', 'rtrevoked3', 'rtgiven1', 'rtview1');

-- The granted routes.  A role with only INSERT on the owner's table fires
-- the trigger and is named as the payment's creator; COPY fires it as well.
SET ROLE regress_bg_inserter;
INSERT INTO regress_open.payouts VALUES ('rtinserter1', 1.50);
COPY regress_open.payouts FROM stdin;
rtcopy1	1.75
\.
RESET ROLE;

-- a granted payer, synchronously and queued, directly and from inside a
-- SECURITY DEFINER function of the payer's, called by another role
SET ROLE regress_bg_payer;
SET application_name = 'regress payer';
SELECT inv->>'id' AS paid FROM billogram_credit_payment('rtsync1', 'amount', 2) AS inv;
SELECT billogram_enqueue_credit_payment('rtenqueue1', 'amount', 3) > 0 AS queued;
CREATE FUNCTION regress_open.payer_pays(bid text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS $$ SELECT billogram.billogram_enqueue_credit_payment(bid, 'amount', 4) $$;
GRANT EXECUTE ON FUNCTION regress_open.payer_pays(text) TO regress_bg_inserter;
RESET application_name;
RESET ROLE;
SET ROLE regress_bg_inserter;
SELECT regress_open.payer_pays('rtdefiner1') > 0 AS queued;
RESET ROLE;
SELECT wait_for_queue();

-- who the journal names: created_by is the role that called or inserted,
-- effective_role the one in effect (the definer inside SECURITY DEFINER)
SELECT billogram_id, origin, state, created_by, effective_role,
       login_role = session_user AS login_is_session,
       database_name = current_database() AS database_ok,
       backend_pid = pg_backend_pid() AS pid_ok, application_name
  FROM billogram_requests
 WHERE billogram_id IN ('rtowner1', 'rtinserter1', 'rtcopy1', 'rtsync1', 'rtenqueue1', 'rtdefiner1')
 ORDER BY id;
-- each sent once; none of the refused ones
SELECT r->>'id' AS id, count(*) AS times_sent FROM mock_requests('') r
 WHERE r->>'method' = 'POST' AND r->>'id' LIKE 'rt%'
 GROUP BY 1 ORDER BY 1;

DROP TABLE pg_temp.t_temp;
DROP SCHEMA regress_open CASCADE;
REVOKE ALL ON FUNCTION billogram_payment_trigger() FROM regress_bg_owner;
REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric, text) FROM regress_bg_payer;
REVOKE ALL ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric, text) FROM regress_bg_payer;
DROP ROLE regress_bg_nogrant, regress_bg_owner, regress_bg_inserter, regress_bg_payer;
