--
-- Rows that came from another cluster or database (a restored dump, a
-- copy) are never sent on their own: pending ones are held, one found in
-- sending becomes in_doubt; an operator releases or fails held rows.
-- (tests/t/011_copies.pl restores a real dump into a second cluster.)
--
\set VERBOSITY default

-- rows as a dump from another cluster brings them: another system
-- identifier; and one with this cluster's but another database's OID
INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body, state,
                                created_by, made_in_system, made_in_database)
VALUES ('enqueue', 'cpHeld1', 'amount', 1, '{"mode":"amount","amount":1}', 'pending', 'prod', 42, 16384),
       ('enqueue', 'cpHeld2', 'amount', 2, '{"mode":"amount","amount":2}', 'pending', 'prod', 42, 16384),
       ('enqueue', 'cpHeld3', 'amount', 3, '{"mode":"amount","amount":3}', 'pending', 'prod',
        (SELECT system_identifier FROM pg_control_system()), 1),
       ('enqueue', 'cpSending1', 'amount', 4, '{"mode":"amount","amount":4}', 'sending', 'prod', 42, 16384);

-- the worker holds them at its next sweep (every 10 s)
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN NOT EXISTS (SELECT 1 FROM billogram_requests
		                       WHERE billogram_id LIKE 'cp%' AND state IN ('pending', 'sending'));
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT billogram_id, state, held_at IS NOT NULL AS held_at_set, error->>'message' AS message
  FROM billogram_requests WHERE billogram_id LIKE 'cp%' ORDER BY id;
SELECT requests, held_since IS NOT NULL AS has_held_since
  FROM billogram_queue_status WHERE state = 'held';
SELECT count(*) AS sent_while_held FROM mock_requests('') r
 WHERE r->>'method' = 'POST' AND r->>'id' LIKE 'cp%';

-- only granted roles decide
CREATE ROLE regress_bg_nobody;
CREATE ROLE regress_bg_operator;
GRANT EXECUTE ON FUNCTION billogram_release_held(bigint), billogram_fail_held(bigint) TO regress_bg_operator;
SET ROLE regress_bg_nobody;
SELECT billogram_release_held();
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_fail_held();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- release one: it becomes this server's and is sent, once
SELECT id AS held1 FROM billogram_requests WHERE billogram_id = 'cpHeld1' \gset
SET ROLE regress_bg_operator;
SELECT billogram_release_held(:held1) AS released;
SELECT billogram_release_held(:held1) AS released_again;
RESET ROLE;
SELECT wait_for_queue();
SELECT billogram_id, state, made_in_system = (SELECT system_identifier FROM pg_control_system()) AS made_here,
       resolution LIKE 'released by regress_bg_operator (login %) at % (held since %, made in system 42 database 16384 instance unknown)' AS recorded
  FROM billogram_requests WHERE id = :held1;
-- fail the rest: never sent
SET ROLE regress_bg_operator;
SELECT billogram_fail_held() AS failed;
RESET ROLE;
SELECT billogram_id, state, resolution LIKE 'mark_failed by regress_bg_operator (login %) at %' AS recorded
  FROM billogram_requests WHERE billogram_id LIKE 'cpHeld%' ORDER BY id;
SELECT r->>'id' AS id, count(*) AS times_sent FROM mock_requests('') r
 WHERE r->>'method' = 'POST' AND r->>'id' LIKE 'cp%'
 GROUP BY 1 ORDER BY 1;
-- purge leaves an unresolved in_doubt row alone, as ever
SELECT billogram_purge('0 seconds') >= 0 AS purged;
SELECT billogram_id, state FROM billogram_requests WHERE billogram_id = 'cpSending1';

REVOKE ALL ON FUNCTION billogram_release_held(bigint), billogram_fail_held(bigint) FROM regress_bg_operator;
DROP ROLE regress_bg_nobody, regress_bg_operator;
