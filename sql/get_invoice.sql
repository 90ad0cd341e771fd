--
-- billogram_get_invoice(): the invoice as Billogram has it now, by a GET the
-- worker makes; it pays nothing and is journaled nowhere.
--
-- The mock's invoices start with remaining_sum -1000.00.
\set VERBOSITY default

-- an invoice never paid: the reply's "data", not the envelope
SELECT jsonb_typeof(inv) AS type, inv->>'id' AS id, inv->'remaining_sum' AS remaining,
       inv->>'state' AS state, inv ? 'status' AS has_envelope
  FROM billogram_get_invoice('getinv1') AS inv;

-- after a payment the GET sees it, to the cent; reading twice changes nothing
SELECT inv->'remaining_sum' AS remaining
  FROM billogram_credit_payment('getinv1', 'amount', 250.50) AS inv;
SELECT inv->'remaining_sum' AS remaining, inv->>'state' AS state,
       inv->'events'->-1->>'type' AS last_event, inv->'events'->-1->'data'->'amount' AS paid
  FROM billogram_get_invoice('getinv1') AS inv;
SELECT inv->'remaining_sum' AS remaining
  FROM billogram_get_invoice('getinv1') AS inv;

-- the whole invoice comes back, the customer included
SELECT inv->'customer'->>'name' AS customer, inv->>'currency' AS currency
  FROM billogram_get_invoice('getinv1') AS inv;

-- what Billogram received: GETs of the invoice's path without a body, and
-- the one payment
SELECT r->>'method' AS method, r->>'path' AS path, r->>'body' AS body
  FROM mock_requests('getinv1') AS r;

-- the journal has the payment and nothing of the GETs
SELECT origin, mode, amount, state FROM billogram_requests
 WHERE billogram_id = 'getinv1' ORDER BY id;

-- bad ids: 22023, and nothing is sent
SELECT count(*) AS requests_before FROM mock_requests('') \gset
SELECT billogram_get_invoice(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice('');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice(repeat('a', 65));
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice('getbad1/../x');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice('getbad2?x=1');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice('getbad 3');
\echo :LAST_ERROR_SQLSTATE
SELECT billogram_get_invoice('getbad4åäö');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) - :requests_before AS requests_sent,
       count(*) FILTER (WHERE r->>'path' LIKE '%getbad%') AS getbad_requests
  FROM mock_requests('') AS r;

-- an unknown invoice: BG404, in words that claim no payment
SELECT billogram_get_invoice('nfget1');
\echo :LAST_ERROR_SQLSTATE

-- no reply within billogram.timeout: BG000, and a GET is safe to repeat
SET billogram.timeout = 300;
SELECT billogram_get_invoice('slow2000g');
\echo :LAST_ERROR_SQLSTATE
RESET billogram.timeout;

-- each failed GET was sent once, and none of them journaled a thing
SELECT r->>'id' AS id, r->>'method' AS method, count(*) AS times_sent
  FROM mock_requests('') AS r
 WHERE r->>'id' IN ('nfget1', 'slow2000g')
 GROUP BY 1, 2 ORDER BY 1;
SELECT count(*) AS journal_rows FROM billogram_requests
 WHERE billogram_id IN ('nfget1', 'slow2000g') OR billogram_id LIKE 'getbad%';
