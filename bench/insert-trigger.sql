-- pgbench script: one payment row into a table whose trigger queues it for the worker
\set r random(1, 1000000000)
INSERT INTO payments (billogram_id, amount) VALUES ('p' || :client_id || 'x' || :r, 1.00);
