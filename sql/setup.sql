--
-- Set-up shared by the regression tests: the extension, and helpers that
-- read what the mock Billogram API received.
--
CREATE EXTENSION billogram;

-- The extension's objects are in schema billogram.  The tests name them
-- unqualified, as a role whose search_path holds the schema does (after
-- public, where the objects the tests make go: not "$user", which for the
-- superuser the tests run as, billogram, is the extension's schema); set
-- for the database, so that every later test's session has it.
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I SET search_path = public, billogram',
				   current_database());
END
$$;
SET search_path = public, billogram;

-- billogram.database is this database, which pg_regress created after the
-- server started: wait until the worker has (re)started and connected here.
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		PERFORM 1 FROM pg_stat_activity
		 WHERE backend_type = 'billogram worker' AND datname = current_database();
		EXIT WHEN FOUND;
		PERFORM pg_sleep(0.1);
		PERFORM pg_stat_clear_snapshot();
	END LOOP;
END
$$;
SELECT count(*) AS workers FROM pg_stat_activity
 WHERE backend_type = 'billogram worker' AND datname = current_database();

-- Every request the mock received for one invoice id, oldest first.
-- mock.ctl is set by tests/suite.sh to the mock's control command.
CREATE FUNCTION mock_requests(invoice text) RETURNS SETOF jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF to_regclass('pg_temp.mock_output') IS NULL THEN
		CREATE TEMP TABLE mock_output (line text);
	END IF;
	TRUNCATE mock_output;
	EXECUTE format('COPY mock_output FROM PROGRAM %L WITH (FORMAT csv, QUOTE E''\x01'', DELIMITER E''\x02'')',
				   current_setting('mock.ctl') || ' requests ' || invoice);
	RETURN QUERY SELECT jsonb_array_elements(string_agg(line, E'\n')::jsonb) FROM mock_output;
END
$$;

-- How many credit payments (POSTs) the mock received for an invoice; the
-- worker's GETs of in_doubt invoices are not payments.
CREATE FUNCTION mock_request_count(invoice text) RETURNS bigint
LANGUAGE sql AS $$ SELECT count(*) FROM mock_requests(invoice) r WHERE r->>'method' = 'POST' $$;

-- nothing has been sent yet
SELECT mock_request_count('2kAEEjE');

-- Wait (up to 30 s) until the worker may send again after a 429 or 503
-- paused it.
CREATE FUNCTION wait_for_sending() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		IF (SELECT paused_until IS NULL OR paused_until < clock_timestamp() FROM billogram_health) THEN
			RETURN 'sending';
		END IF;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RETURN 'still paused after 30 s';
END
$$;

-- Wait (up to 30 s) until the worker has finished every queued request.
CREATE FUNCTION wait_for_queue() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		-- and every in_doubt row has had its invoice read once
		IF NOT EXISTS (SELECT 1 FROM billogram_requests
						WHERE state IN ('pending', 'sending')
						   OR (state = 'in_doubt' AND settle_at IS NOT NULL AND evidence IS NULL)) THEN
			RETURN 'queue drained';
		END IF;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RETURN 'still busy after 30 s';
END
$$;
