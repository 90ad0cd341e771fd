--
-- Bad input: SQLSTATE 22023, a clear message, and nothing sent.
--
\set VERBOSITY default
SELECT mock_request_count('badinput1') AS before;

-- mode
SELECT billogram_credit_payment('badinput1', 'refund', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'Amount', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', NULL, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', '', 10);
\echo :LAST_ERROR_SQLSTATE

-- mode amount: the amount must be a positive, finite amount of money
SELECT billogram_credit_payment('badinput1', 'amount');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 0.00);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', -5);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', -0.01);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', '-Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 10.001);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 10.0010);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 0.001);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 1e16);
\echo :LAST_ERROR_SQLSTATE

-- mode remaining takes no amount
SELECT billogram_credit_payment('badinput1', 'remaining', 10);
\echo :LAST_ERROR_SQLSTATE

-- nothing reached the API for any of these
SELECT mock_request_count('badinput1') AS after;

-- ids: 1 to 64 letters and digits
SELECT billogram_credit_payment(NULL, 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment(repeat('a', 65), 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('2kAE/../x', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('2kAEEjE?x=1', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('with space', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('åäö', 'remaining');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment(E'abc\ndef', 'remaining');
\echo :LAST_ERROR_SQLSTATE

-- idempotency key: 1 to 255 bytes of printable ASCII; NULL is no key
SELECT billogram_credit_payment('badinput1', 'amount', 1, '');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 1, repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 1, E'key\twith tab');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_credit_payment('badinput1', 'amount', 1, 'nyckel-åäö');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('badinput1', 'amount', 1, '');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_enqueue_credit_payment('badinput1', 'amount', 1, repeat('k', 256));
\echo :LAST_ERROR_SQLSTATE
-- a bad key is refused before anything else is looked at
SELECT billogram_credit_payment('badinput1', 'amount', 1, E'\x01');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS keys_recorded FROM billogram_keys WHERE kind = 'call';
SELECT count(*) AS rows_queued FROM billogram_requests WHERE billogram_id = 'badinput1';

-- of all requests the mock received so far, none came from this file
SELECT count(*) > 0 AS mock_has_requests,
       count(*) FILTER (WHERE r->>'id' IS NULL OR r->>'id' !~ '^[A-Za-z0-9]{1,64}$'
                           OR r->>'id' = 'badinput1') AS requests_with_bad_ids
  FROM mock_requests('') AS r;

-- zeros past the cents are no extra decimals: 10.000 is sent as 10.00
SELECT inv->'remaining_sum' AS remaining
  FROM billogram_credit_payment('zeros1', 'amount', 10.000) AS inv;
SELECT r->>'body' AS body FROM mock_requests('zeros1') AS r;

-- the longest valid id is accepted
SELECT inv->>'id' = repeat('a', 64) AS long_id_ok
  FROM billogram_credit_payment(repeat('a', 64), 'amount', 1) AS inv;

-- the longest valid key is accepted, and recorded with the row it paid
SELECT inv->>'id' AS id
  FROM billogram_credit_payment('longkey1', 'amount', 1, repeat('k', 255)) AS inv;
SELECT k.request_id = r.id AS key_names_its_row, r.idempotency_key = repeat('k', 255) AS row_has_key
  FROM billogram_keys k JOIN billogram_requests r ON r.id = k.request_id
 WHERE k.kind = 'call' AND k.key = repeat('k', 255);
