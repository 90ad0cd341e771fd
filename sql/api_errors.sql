--
-- Error replies from the API: SQLSTATE BG + HTTP status, with Billogram's
-- status, message and field; unusable 200 replies: BG001.
--
\set VERBOSITY default

-- the documented error envelope
SELECT billogram_credit_payment('nf1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e400a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e401a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e403a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e504a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- a status this extension has never heard of keeps its code and text
SELECT billogram_credit_payment('e409a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- try again later: a 429 pauses all sending, so the next call, at once,
-- is refused unsent with the same SQLSTATE
SELECT billogram_credit_payment('e429a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e503a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS refused_call_sent FROM mock_requests('e503a');
SELECT wait_for_sending();
SELECT billogram_credit_payment('e503b', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT wait_for_sending();

-- server errors whose body is HTML or empty still give the right code
SELECT billogram_credit_payment('e500a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('e502a', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- Billogram's own checks: paying more than remains, paying a paid invoice
SELECT billogram_credit_payment('overpay1', 'amount', 1000.01);
\echo :LAST_ERROR_SQLSTATE
SELECT inv->'remaining_sum' AS remaining FROM billogram_credit_payment('overpay1', 'remaining') AS inv;
SELECT billogram_credit_payment('overpay1', 'remaining');
\echo :LAST_ERROR_SQLSTATE

-- a 200 that is not a valid {"status":"OK","data":{...}} envelope: BG001
SELECT billogram_credit_payment('trunc1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('notjson1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('empty1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('wrongtype1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('nodata1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('nostatus1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('okerr1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('created1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('deep1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('nul1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badutf1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- larger than billogram.max_response_size (16MB by default)
SHOW billogram.max_response_size;
SELECT billogram_credit_payment('huge20', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- a redirect is an answer, never followed: a 307 would re-send the payment
-- to the invoice the Location names (redirtarget)
SELECT billogram_credit_payment('redirect1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS requests_to_the_redirect_target
  FROM mock_requests('redirtarget');

-- a header line over libcurl's limit (1 MiB): the mock applied the payment,
-- the reply is unreadable, and the error says it may have been registered
SELECT billogram_credit_payment('bighdr1', 'amount', 10);
\echo :LAST_ERROR_SQLSTATE

-- each of these was sent exactly once: a failed call is never re-sent
SELECT r->>'id' AS id, count(*) AS times_sent
  FROM mock_requests('') AS r
 WHERE r->>'method' = 'POST' AND r->>'id' ~ '^(nf|e[0-9]|trunc|notjson|empty|wrongtype|nodata|nostatus|okerr|created|deep|nul|badutf|huge|redirect|bighdr)'
 GROUP BY 1 ORDER BY 1;
