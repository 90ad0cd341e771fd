--
-- Privileges: EXECUTE is granted explicitly; the password is in no setting,
-- so nobody reads it through SQL, monitoring roles and superusers included.
-- (routes.sql tries every route to a payment.)
--
\set VERBOSITY default
CREATE ROLE regress_bg_clerk LOGIN;
CREATE ROLE regress_bg_finance LOGIN;
GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric, text) TO regress_bg_finance;

SELECT has_function_privilege('public', 'billogram_credit_payment(text, text, numeric, text)', 'EXECUTE') AS public_can_execute;

SET ROLE regress_bg_clerk;
SELECT billogram_credit_payment('privs1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
-- the password file's path is not readable (the refusal is PostgreSQL's own,
-- worded differently from 16 on: only its SQLSTATE is compared), and the
-- removed setting holds nothing and takes nothing: the message names the
-- file setting
\set VERBOSITY sqlstate
SHOW billogram.api_password_file;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SHOW billogram.api_password;
SET billogram.api_password = 'demo-secret-8f3a';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS password_rows FROM pg_settings WHERE name = 'billogram.api_password';
SELECT count(*) AS rows_with_password FROM pg_settings WHERE setting LIKE '%demo-secret%';
-- and settings are not changed by ordinary roles
SET billogram.api_url = 'https://evil.example/api';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SET ROLE regress_bg_finance;
SELECT inv->>'id' AS id FROM billogram_credit_payment('privs1', 'amount', 10) AS inv;
SET billogram.timeout = 5000;
SHOW billogram.timeout;
RESET ROLE;

-- only the granted call reached Billogram
SELECT mock_request_count('privs1') AS sent;

-- idempotency keys tell a role without grants nothing: its calls are
-- refused before any key is looked up, whether the key was used (for
-- another role's payment) or not, and it cannot read the keys
SET ROLE regress_bg_finance;
SELECT inv->>'id' AS id FROM billogram_credit_payment('privs3', 'amount', 10, 'privs-key-1') AS inv;
RESET ROLE;
SET ROLE regress_bg_clerk;
SELECT billogram_credit_payment('privs3', 'amount', 10, 'privs-key-1');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('privs3', 'amount', 10, 'privs-key-unused');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('privs3', 'amount', 10, 'privs-key-1');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM billogram_keys;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT mock_request_count('privs3') AS sent;

-- reading an invoice is a grant of its own: paying does not imply it, nor
-- it paying
CREATE ROLE regress_bg_reader LOGIN;
GRANT EXECUTE ON FUNCTION billogram_get_invoice(text) TO regress_bg_reader;
SELECT has_function_privilege('public', 'billogram_get_invoice(text)', 'EXECUTE') AS public_can_read;
SET ROLE regress_bg_clerk;
SELECT billogram_get_invoice('privs2');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_bg_finance;
SELECT billogram_get_invoice('privs2');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_bg_reader;
SELECT billogram_credit_payment('privs2', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT inv->>'id' AS id, inv->'remaining_sum' AS remaining FROM billogram_get_invoice('privs2') AS inv;
RESET ROLE;
-- what reached Billogram: the reader's GET, nothing else
SELECT r->>'method' AS method, r->>'path' AS path FROM mock_requests('privs2') AS r;

-- a monitoring role may read superuser-only settings (pg_read_all_settings
-- is part of pg_monitor): it reads the password file's path, not what the
-- file holds
CREATE ROLE regress_bg_monitor;
GRANT pg_monitor TO regress_bg_monitor;
SET ROLE regress_bg_monitor;
SELECT count(*) AS rows_with_password FROM pg_settings
 WHERE setting LIKE '%demo-secret%' OR reset_val LIKE '%demo-secret%' OR boot_val LIKE '%demo-secret%';
SELECT name, setting <> '' AS names_a_file FROM pg_settings WHERE name = 'billogram.api_password_file';
RESET ROLE;
DROP ROLE regress_bg_monitor;

-- nor can a superuser put the password in a setting: refused, and the
-- message does not quote it
ALTER SYSTEM SET billogram.api_password = 'demo-secret-8f3a';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS rows_with_password FROM pg_file_settings WHERE setting LIKE '%demo-secret%';

DROP ROLE regress_bg_clerk;
REVOKE ALL ON FUNCTION billogram_get_invoice(text) FROM regress_bg_reader;
DROP ROLE regress_bg_reader;
REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric, text) FROM regress_bg_finance;
DROP ROLE regress_bg_finance;
