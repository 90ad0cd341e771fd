-- pgbench script: one synchronous credit payment per transaction, each on an
-- invoice of its own: the worker sends one payment per invoice at a time,
-- so calls on one invoice from several sessions would wait for each other
\set n random(1, 1000000000)
SELECT billogram_credit_payment('b' || :client_id || 'n' || :n, 'amount', 250) IS NOT NULL;
