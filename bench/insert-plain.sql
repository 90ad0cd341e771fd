-- pgbench script: one payment row into a table without the trigger
\set r random(1, 1000000000)
INSERT INTO payments_plain (billogram_id, amount) VALUES ('p' || :client_id || 'x' || :r, 1.00);
