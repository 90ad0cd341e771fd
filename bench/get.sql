-- pgbench script: one billogram_get_invoice() per transaction (step 2c).
-- The worker's cheapest round trip: the call handed to the worker, one GET,
-- the reply handed back and returned as jsonb, nothing journaled.  A first
-- payment does all of this (its reading is such a GET) and more.
\set n random(1, 1000000000)
SELECT billogram_get_invoice('g' || :client_id || 'n' || :n) IS NOT NULL;
