--
-- Billogram's callbacks: the HMAC-SHA256 signature (hex or base64, in
-- constant time), stale timestamps, replays recorded once, privileges.
-- pgcrypto computes the expected signatures independently.
--
\set VERBOSITY default
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- no sign key yet: a clear error
SELECT billogram_verify_callback('1', 'x', '{}');
\echo :LAST_ERROR_SQLSTATE

-- the key is never a setting's value: refused, naming the file setting
ALTER SYSTEM SET billogram.callback_sign_key = 'regress-sign-key-0123456789';
\echo :LAST_ERROR_SQLSTATE

-- it is read from a file only the server's user can read, named by
-- billogram.callback_sign_key_file (COPY TO a file would make it readable by
-- all, which the extension refuses: the shell writes it with umask 077)
SELECT current_setting('data_directory') || '/regress_sign_key' AS key_file \gset
SELECT format('umask 077 && cat > %s', :'key_file') AS write_key \gset
COPY (SELECT 'regress-sign-key-0123456789') TO PROGRAM :'write_key';
ALTER SYSTEM SET billogram.callback_sign_key_file = :'key_file';
SELECT pg_reload_conf();
DO $$
BEGIN
	FOR i IN 1 .. 100 LOOP
		EXIT WHEN current_setting('billogram.callback_sign_key_file') <> '';
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
SELECT current_setting('billogram.callback_sign_key') AS old_setting_holds;

CREATE TEMP TABLE cb AS
SELECT ts, body,
       encode(hmac(ts || ':' || body, 'regress-sign-key-0123456789', 'sha256'), 'hex') AS hex,
       encode(hmac(ts || ':' || body, 'regress-sign-key-0123456789', 'sha256'), 'base64') AS b64
  FROM (SELECT extract(epoch FROM clock_timestamp())::numeric(20, 6)::text AS ts,
               '{"callback_id": "cb1", "callback_type": "BillogramEvent", "custom": null,
                 "billogram": {"id": "cbInv1", "customer": {"name": "Anna"}},
                 "event": {"type": "Payment", "created_at": "2026-06-01 12:00:00",
                           "event_uuid": "6f1f6c0e-0000-4000-8000-000000000001",
                           "billogram_id": "cbInv1", "data": {"amount": 250.00, "remaining_sum": 0}}}' AS body) s;

-- good signatures, hex (either case) or base64 (with or without padding)
SELECT billogram_verify_callback(ts, hex, body) AS hex_ok,
       billogram_verify_callback(ts, upper(hex), body) AS upper_hex_ok,
       billogram_verify_callback(ts, b64, body) AS base64_ok,
       billogram_verify_callback(ts, rtrim(b64, '='), body) AS unpadded_ok
  FROM cb;
-- bad: another key, a changed body, a changed timestamp, garbage
SELECT billogram_verify_callback(ts, encode(hmac(ts || ':' || body, 'another-key-0123456789', 'sha256'), 'hex'), body) AS other_key,
       billogram_verify_callback(ts, hex, body || ' ') AS body_changed,
       billogram_verify_callback(ts || '1', hex, body) AS timestamp_changed,
       billogram_verify_callback(ts, 'not a signature', body) AS garbage,
       billogram_verify_callback(ts, '', body) AS empty,
       billogram_verify_callback(ts, NULL, body) AS null_signature
  FROM cb;
-- stale: correctly signed, ten minutes old (the limit is five)
SELECT billogram_verify_callback(old, encode(hmac(old || ':' || body, 'regress-sign-key-0123456789', 'sha256'), 'hex'), body) AS stale,
       billogram_verify_callback(future, encode(hmac(future || ':' || body, 'regress-sign-key-0123456789', 'sha256'), 'hex'), body) AS future
  FROM (SELECT body, (ts::numeric - 600)::text AS old, (ts::numeric + 600)::text AS future FROM cb) s;

-- recording: once, whatever the replays; only the event is kept
SELECT billogram_record_callback(ts, hex, body) AS first FROM cb;
SELECT billogram_record_callback(ts, b64, body) AS replayed FROM cb;
SELECT event_uuid, billogram_id, type, amount, callback_id, event ? 'data' AS has_data,
       received_by = current_user AS received_by_me
  FROM billogram_events;
SELECT count(*) AS rows_with_personal_data FROM billogram_events e WHERE e::text LIKE '%Anna%';
-- a bad signature records nothing
SELECT billogram_record_callback(ts, hex, replace(body, 'cb1', 'cb2')) FROM cb;
\echo :LAST_ERROR_SQLSTATE
-- other callback types are accepted and not recorded
SELECT billogram_record_callback(ts, encode(hmac(ts || ':' || b, 'regress-sign-key-0123456789', 'sha256'), 'hex'), b) AS other_type
  FROM (SELECT ts, '{"callback_id": "cb3", "callback_type": "RecipientUpdated"}' AS b FROM cb) s;
SELECT count(*) AS events FROM billogram_events;

-- privileges: nothing for PUBLIC
CREATE ROLE regress_bg_endpoint;
SET ROLE regress_bg_endpoint;
SELECT billogram_verify_callback('1', 'x', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_record_callback('1', 'x', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM billogram_events;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_bg_endpoint;

ALTER SYSTEM RESET billogram.callback_sign_key_file;
SELECT pg_reload_conf();
DROP EXTENSION pgcrypto;
