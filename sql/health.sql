--
-- billogram_health: the worker's own answer to "is it healthy?", readable
-- by monitoring roles (pg_monitor) and nobody else without a grant.
--
\set VERBOSITY default

-- a request Billogram asks to retry (503) counts as retried, and pauses
-- sending: the view says until when
SELECT billogram_enqueue_credit_payment('e503health', 'amount', 1) > 0 AS queued;
CREATE TEMP TABLE seen (paused boolean);
DO $$
DECLARE
	saw_pause boolean := false;
BEGIN
	FOR i IN 1 .. 300 LOOP
		saw_pause := saw_pause OR (SELECT paused_until > clock_timestamp() FROM billogram_health);
		EXIT WHEN saw_pause AND
			(SELECT attempts >= 2 FROM billogram_requests WHERE billogram_id = 'e503health');
		PERFORM pg_sleep(0.05);
	END LOOP;
	INSERT INTO seen VALUES (saw_pause);
END
$$;
SELECT paused AS paused_after_503 FROM seen;

-- after the earlier tests' payments, refusals and doubts (errors go on in
-- the background, the retried 503 and the readings of in_doubt invoices, so
-- the last one may be later than this statement's start)
SELECT h.pid = a.pid AS is_the_worker, h.started_at <= now() AS started,
       h.in_flight >= 0 AS in_flight_known, h.connections >= 1 AS keeps_connections,
       h.done > 0 AS has_done, h.failed > 0 AS has_failed, h.in_doubt > 0 AS has_in_doubt,
       h.retried > 0 AS has_retried, h.transfers >= h.done + h.failed AS transfers_counted,
       h.latency_p50_ms > 0 AND h.latency_p99_ms >= h.latency_p50_ms AS latencies,
       h.last_error IS NOT NULL AND h.last_error_at <= clock_timestamp() AS has_last_error
  FROM billogram_health h, pg_stat_activity a
 WHERE a.backend_type = 'billogram worker';

-- the view's and the function's privileges
CREATE ROLE regress_bg_watcher;
CREATE ROLE regress_bg_agent;
GRANT pg_monitor TO regress_bg_agent;
SET ROLE regress_bg_watcher;
SELECT count(*) FROM billogram_health;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM billogram_worker_status();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_bg_agent;
SELECT count(*) AS rows_for_monitoring FROM billogram_health WHERE pid IS NOT NULL;
-- the last error it reads names the journal row and the kind of failure,
-- never an invoice id, an amount or Billogram's text (issue 20)
CREATE TEMP TABLE agent_saw AS SELECT last_error FROM billogram_health;
RESET ROLE;
SELECT last_error ~ ('^(request [0-9]+: [a-z_]+(, HTTP [0-9]{3})?'
                     '|request [0-9]+: its (outcome|invoice read) is not recorded yet, SQLSTATE [0-9A-Z]{5}'
                     '|worker error, SQLSTATE [0-9A-Z]{5} \(the server log has its message\))$') AS only_row_and_kind,
       NOT EXISTS (SELECT 1 FROM billogram_requests r
                    WHERE length(r.billogram_id) >= 6 AND strpos(a.last_error, r.billogram_id) > 0)
           AS no_invoice_id
  FROM agent_saw a;
DROP TABLE agent_saw;
DROP ROLE regress_bg_watcher, regress_bg_agent;
