--
-- No reply at all: BG000, saying whether the request may have reached
-- Billogram; and such a request is never sent twice.
--
\set VERBOSITY default

-- the server reads the request and closes the connection
SELECT billogram_credit_payment('drop1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- the server dies in the middle of its reply
SELECT billogram_credit_payment('cut1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- the invoice is read before its first payment: a slow reading outlasts
-- the call's billogram.timeout, and the payment is not sent (55006)
SET billogram.timeout = 300;
SELECT billogram_credit_payment('slow2000t', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
-- the reading goes on and joins the ledger; then the reply to the payment
-- itself does not come within billogram.timeout
SELECT pg_sleep(2.5);
SELECT billogram_credit_payment('slow2000t', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
RESET billogram.timeout;

-- A connection that served a payment is kept alive for the next one.  When
-- the server then closes that connection without replying, curl would
-- normally resend the request on a new connection; for a payment that could
-- pay twice, so the call fails instead and the request is sent only once.
SELECT inv->>'id' AS id FROM billogram_credit_payment('keepalive1', 'amount', 1) AS inv;
SELECT billogram_credit_payment('drop2', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

SELECT r->>'id' AS id, count(*) AS times_sent
  FROM mock_requests('') AS r
 WHERE r->>'method' = 'POST' AND r->>'id' IN ('drop1', 'drop2', 'cut1', 'slow2000t')
 GROUP BY 1 ORDER BY 1;

-- a server that accepts the request and then sends nothing
SET billogram.timeout = 500;
SELECT billogram_credit_payment('silent1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
-- a server that trickles its reply one byte a second
SELECT billogram_credit_payment('trickle1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
RESET billogram.timeout;
SELECT r->>'id' AS id, count(*) AS times_sent
  FROM mock_requests('') AS r
 WHERE r->>'method' = 'POST' AND r->>'id' IN ('silent1', 'trickle1')
 GROUP BY 1 ORDER BY 1;
