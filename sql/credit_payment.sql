--
-- Registering credit payments: results, exact amounts, and the exact
-- requests Billogram receives.
--
-- The mock's invoices start with remaining_sum -1000.00.

-- mode amount returns the updated invoice, the reply's "data"
SELECT jsonb_typeof(inv) AS type, inv->>'id' AS id, inv->'remaining_sum' AS remaining,
       inv->>'state' AS state, inv ? 'status' AS has_envelope
  FROM billogram_credit_payment('2kAEEjE', 'amount', 250) AS inv;

-- amounts stay exact to the cent, in both directions
SELECT inv->'remaining_sum' AS remaining
  FROM billogram_credit_payment('2kAEEjE', 'amount', 0.01) AS inv;
SELECT inv->'remaining_sum' AS remaining
  FROM billogram_credit_payment('2kAEEjE', 'amount', 250.50) AS inv;

-- the DEFAULT NULL amount, and mode remaining pays out the rest
SELECT inv->'remaining_sum' AS remaining, inv->>'state' AS state
  FROM billogram_credit_payment('2kAEEjE', 'remaining') AS inv;

-- the whole invoice comes back, not just a few fields
SELECT inv->'customer'->>'name' AS customer, inv->>'currency' AS currency,
       jsonb_array_length(inv->'events') AS events
  FROM billogram_credit_payment('fullinvoice1', 'amount', 1) AS inv;

-- what Billogram received: method, path, headers and body bytes
SELECT r->>'method' AS method, r->>'path' AS path, r->>'body' AS body
  FROM mock_requests('2kAEEjE') AS r;
SELECT DISTINCT r->'headers'->>'content-type' AS content_type,
       r->'headers'->>'accept' AS accept,
       r->'headers'->>'authorization' =
         'Basic ' || encode(convert_to('demo-user:demo-secret-8f3a', 'UTF8'), 'base64')
         AS basic_auth
  FROM mock_requests('2kAEEjE') AS r;
-- every request so far names the extension, the control file's version
-- and libcurl's (a request without one would show as a second row)
SELECT DISTINCT regexp_replace(r->'headers'->>'user-agent', '/[0-9][0-9.]*', '/N', 'g') AS user_agent,
       r->'headers'->>'user-agent' LIKE
         'billogram/' || (SELECT default_version FROM pg_available_extensions
                          WHERE name = 'billogram') || ' (+libcurl/%)' AS this_version
  FROM mock_requests('') AS r;

-- large amounts go out as the numeric's own text, never through a double
SELECT billogram_credit_payment('bigamount1', 'amount', 1234567.89);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('bigamount1', 'amount', 999999999999999.99);
\echo :LAST_ERROR_SQLSTATE
SELECT r->>'body' AS body FROM mock_requests('bigamount1') AS r;

-- a reply too big to pass through shared memory inline still arrives whole
SELECT inv->>'id' AS id, length(inv->>'attachment_content') AS attachment_length
  FROM billogram_credit_payment('bigok1', 'amount', 10) AS inv;

-- billogram.timeout is per session
SET billogram.timeout = '2s';
SHOW billogram.timeout;
SELECT inv->>'id' AS id FROM billogram_credit_payment('slow300a', 'amount', 1) AS inv;
RESET billogram.timeout;
