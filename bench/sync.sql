-- pgbench script: one synchronous credit payment per transaction
SELECT billogram_credit_payment('2kAEEjE', 'amount', 250) IS NOT NULL;
