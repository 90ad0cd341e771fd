/*
 * billogram 0.1: register Billogram credit payments from SQL.
 *
 * The HTTP requests themselves are made by the extension's background
 * worker, which exists only when billogram is listed in
 * shared_preload_libraries.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION billogram" to load this file. \quit

/*
 * billogram_credit_payment(id, mode, amount)
 *
 * Registers a payment on the stand-alone credit invoice `id` and returns the
 * updated invoice (the reply's "data") as jsonb.
 *   mode 'remaining': pays out the whole remaining amount; amount must be NULL.
 *   mode 'amount':    pays out `amount`, which must be positive, finite and
 *                     have at most two decimals.
 * Invalid arguments raise SQLSTATE 22023 and nothing is sent.  Failures
 * raise BG000 (no reply), BG001 (unusable reply), BG002 (worker lost the
 * request) or BG followed by the HTTP status of an error reply (BG404...).
 *
 * The payment is made when the function runs and is not undone if the
 * calling transaction rolls back.  VOLATILE and PARALLEL UNSAFE: every call
 * moves money.  Not STRICT, so that NULL arguments get a clear error.
 *
 * Privileges: EXECUTE is revoked from PUBLIC; grant it to the roles that
 * may register payments:
 *     GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric) TO finance;
 */
CREATE FUNCTION billogram_credit_payment(id text, mode text, amount numeric DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric) FROM PUBLIC;

COMMENT ON FUNCTION billogram_credit_payment(text, text, numeric) IS
'Registers a payment on a Billogram credit invoice through the billogram worker; returns the updated invoice';
