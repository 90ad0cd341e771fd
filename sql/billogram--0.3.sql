/*
 * billogram 0.3: register Billogram credit payments from SQL.
 *
 * The HTTP requests themselves are made by the extension's background
 * worker, which exists only when billogram is listed in
 * shared_preload_libraries.
 *
 * Who may move money: nobody but the roles a DBA grants, one grant per
 * capability, each stated below:
 *   pay now           EXECUTE ON FUNCTION billogram_credit_payment
 *   queue a payment   EXECUTE ON FUNCTION billogram_enqueue_credit_payment
 *   queue by trigger  EXECUTE ON FUNCTION billogram_payment_trigger, held
 *                     by the owner of the table the trigger is on
 *   resolve, resend   EXECUTE ON FUNCTION billogram_resolve
 *   release or fail rows that came from elsewhere
 *                     EXECUTE ON FUNCTION billogram_release_held,
 *                     billogram_fail_held
 *   purge the journal EXECUTE ON FUNCTION billogram_purge
 *   watch the worker  SELECT ON billogram_health, billogram_metrics (granted
 *                     to pg_monitor)
 *   record callbacks  EXECUTE ON FUNCTION billogram_record_callback
 * Reading an invoice moves no money, but shows the customer's personal
 * data, so it is one explicit grant too:
 *   read an invoice   EXECUTE ON FUNCTION billogram_get_invoice
 * PUBLIC holds none of them.  The functions that queue run as their caller,
 * so that the journal names who asked; only their insert into the journal
 * runs as its owner.
 *
 * Everything is in schema billogram (the control file's "schema"), which
 * CREATE EXTENSION makes, owned by the superuser creating the extension,
 * and in which nobody else may create anything: this script refuses a
 * schema billogram that a non-superuser owns or may create in.  Every
 * function names the extension's objects as billogram.name and pins
 * search_path to pg_catalog, pg_temp, so no object a user created (in
 * public, which the database owner controls, or anywhere else) can stand
 * in for one of them or run with their rights.  The SECURITY DEFINER
 * functions, and the worker before each batch, refuse to run while any
 * object of the extension belongs to a non-superuser or its tables carry
 * a trigger, rule or policy (billogram_assert_trusted).  PUBLIC has USAGE
 * on the schema and nothing else in it but two pure functions
 * (billogram_weigh, billogram_invoice_summary); every object's privileges
 * are set at the end of this script, whatever ALTER DEFAULT PRIVILEGES
 * said.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION billogram" to load this file. \quit

/*
 * The schema must be the extension's alone.  CREATE EXTENSION uses a
 * schema billogram that exists already; whoever owns it, or may create
 * objects in it, could put a table, function or operator there that the
 * extension's functions and its worker, running as a superuser, would use
 * in place of their own.  So the schema must belong to a superuser, no
 * role but superusers may create in it (PUBLIC included: a grant made by
 * ALTER DEFAULT PRIVILEGES ... ON SCHEMAS counts, since it applies to the
 * schema CREATE EXTENSION makes), and nothing in it may belong to a
 * non-superuser.  Otherwise nothing is created: 42501, naming who.
 * Until the check has passed, nothing in the schema is looked up: a
 * function or operator there matching an argument's type more closely
 * than pg_catalog's would be chosen over it even with pg_catalog first.
 * billogram--0.2--0.3.sql runs the same check.
 */
SET search_path = pg_catalog, pg_temp;
DO $$
DECLARE
    nsp oid := pg_catalog.to_regnamespace('billogram');
    why text;
BEGIN
    SELECT format('it is owned by %s, who is not a superuser', quote_ident(r.rolname))
      INTO why
      FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
     WHERE n.oid = nsp AND NOT r.rolsuper;
    IF why IS NULL THEN
        SELECT format('%s may create objects in it',
                      string_agg(CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, ', '))
          INTO why
          FROM pg_namespace n, aclexplode(n.nspacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.oid = nsp AND a.privilege_type = 'CREATE' AND NOT coalesce(r.rolsuper, false)
        HAVING count(*) > 0;
    END IF;
    IF why IS NULL THEN
        SELECT format('%s in it belong to roles that are not superusers', string_agg(o.what, ', '))
          INTO why
          FROM (SELECT format('%s (%s)', c.relname, pg_get_userbyid(c.relowner)) AS what, c.relowner AS owner
                  FROM pg_class c WHERE c.relnamespace = nsp
                UNION ALL
                SELECT format('%s (%s)', p.oid::regprocedure, pg_get_userbyid(p.proowner)), p.proowner
                  FROM pg_proc p WHERE p.pronamespace = nsp
                UNION ALL
                SELECT format('type %s (%s)', t.typname, pg_get_userbyid(t.typowner)), t.typowner
                  FROM pg_type t WHERE t.typnamespace = nsp
                UNION ALL
                SELECT format('operator %s (%s)', o.oid::regoperator, pg_get_userbyid(o.oprowner)), o.oprowner
                  FROM pg_operator o WHERE o.oprnamespace = nsp) o
          JOIN pg_roles r ON r.oid = o.owner
         WHERE NOT r.rolsuper
        HAVING count(*) > 0;
    END IF;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'schema billogram cannot hold the billogram extension: %', why
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The extension''s functions and its worker run as a superuser and use the objects in this schema: whoever owns it or may create in it could put their own there.',
                  HINT = 'As a superuser: ALTER SCHEMA billogram OWNER TO a superuser, REVOKE CREATE ON SCHEMA billogram FROM every role that is not one (and from PUBLIC; and ALTER DEFAULT PRIVILEGES ... REVOKE CREATE ON SCHEMAS if that is where the grant came from), and drop what others made in it; or drop the schema, and CREATE EXTENSION billogram makes its own.';
    END IF;
END
$$;
-- the schema is the extension's alone: objects are created in it
SET search_path = billogram, pg_temp;

/*
 * billogram_credit_payment(id, mode, amount, idempotency_key)
 *
 * Registers a payment on the stand-alone credit invoice `id` and returns the
 * updated invoice (the reply's "data") as jsonb.
 *   mode 'remaining': pays out the whole remaining amount; amount must be NULL.
 *   mode 'amount':    pays out `amount`, which must be positive, finite and
 *                     have at most two decimals.
 * Invalid arguments raise SQLSTATE 22023 and nothing is sent.  Failures
 * raise BG000 (no reply), BG001 (unusable reply), BG002 (worker lost the
 * request) or BG followed by the HTTP status of an error reply (BG404...);
 * whenever the payment may have been registered, the DETAIL names its row
 * in billogram_requests.
 *
 * idempotency_key (optional, 1 to 255 bytes of printable ASCII, else
 * 22023): a key pays at most once, ever.  The worker records it in
 * billogram_keys in the transaction that journals the call, before the
 * request leaves.  A call with a key used before sends nothing and returns
 * what the journal recorded of the request that used it: its invoice
 * (what billogram.journal_reply kept of it, with a NOTICE), the error it
 * failed with (same SQLSTATE), BG004 while it is pending, being sent or in
 * doubt, BG005 when it is done or purged and no invoice was kept; 22023
 * when it was for another invoice, mode or amount.  Keys are one namespace
 * for every role and both functions that take them.
 *
 * The payment is made when the function runs and is not undone if the
 * calling transaction rolls back.  VOLATILE and PARALLEL UNSAFE: every call
 * moves money.  Not STRICT, so that NULL arguments get a clear error.
 *
 * Privileges: EXECUTE is revoked from PUBLIC; grant it to the roles that
 * may register payments:
 *     GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric, text) TO finance;
 */
CREATE FUNCTION billogram_credit_payment(id text, mode text, amount numeric DEFAULT NULL,
                                         idempotency_key text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric, text) FROM PUBLIC;

COMMENT ON FUNCTION billogram_credit_payment(text, text, numeric, text) IS
'Registers a payment on a Billogram credit invoice through the billogram worker; returns the updated invoice';

/*
 * billogram_get_invoice(id) RETURNS jsonb
 *
 * The invoice `id` as Billogram has it now: a GET of /billogram/{id}, made
 * by the worker like a payment, returning the reply's "data" as jsonb, with
 * amounts exact.  The id is checked as billogram_credit_payment() checks
 * it (22023, and nothing sent); failures raise the same SQLSTATEs (BG000,
 * BG001, BG002, BG followed by the HTTP status: BG404 for an unknown
 * invoice), and billogram.timeout, cancel and statement_timeout apply as
 * to a payment.  A GET changes nothing at Billogram: it is not journaled in
 * billogram_requests, and whatever fails can simply be tried again.
 * VOLATILE: every call asks Billogram anew.  Not STRICT, so that a NULL id
 * gets a clear error.
 *
 * Privileges: EXECUTE is revoked from PUBLIC, and is a grant of its own,
 * neither implied by nor implying billogram_credit_payment(): it moves no
 * money, but the invoice carries the customer's name, addresses and
 * identity number.
 *     GRANT EXECUTE ON FUNCTION billogram_get_invoice(text) TO support;
 */
CREATE FUNCTION billogram_get_invoice(id text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_get_invoice'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_get_invoice(text) FROM PUBLIC;

COMMENT ON FUNCTION billogram_get_invoice(text) IS
'Returns a Billogram invoice as it is now, read through the billogram worker; changes nothing at Billogram';

/*
 * The values a journal column may take, as domains rather than CHECK
 * constraints on the tables: the executor rebuilds a table's CHECK
 * constraints from their stored text for every statement that writes a row
 * (and the trigger writes one per statement), while a domain's check is
 * kept, planned, in the type cache.  A domain over text reads and compares
 * as text.
 *   billogram_origin   who made a journal row (see billogram_requests);
 *   billogram_mode     what a payment pays: 'remaining' or 'amount';
 *   billogram_state    where a journal row is (see billogram_requests);
 *   billogram_key_kind what a key of billogram_keys identifies.
 * Privileges: USAGE stays with PUBLIC, as for every type: it lets a role
 * name the type (a view of its own over billogram_queue_status needs it)
 * and grants nothing else.
 */
CREATE DOMAIN billogram_origin AS text CHECK (VALUE IN ('sync', 'enqueue', 'trigger'));
CREATE DOMAIN billogram_mode AS text CHECK (VALUE IN ('remaining', 'amount'));
CREATE DOMAIN billogram_state AS text
    CHECK (VALUE IN ('pending', 'sending', 'done', 'failed', 'in_doubt', 'held'));
CREATE DOMAIN billogram_key_kind AS text CHECK (VALUE IN ('source', 'call'));

/*
 * The journal of credit-payment requests.
 *
 * One row per request, whatever its origin:
 *   'sync'    billogram_credit_payment(); the worker records the row in its
 *             own transaction before sending, so a payment that reached
 *             Billogram is on record even if the caller rolled back;
 *   'enqueue' billogram_enqueue_credit_payment();
 *   'trigger' billogram_payment_trigger(), with the source table and the
 *             source row's primary key.
 *
 * States: pending -> sending -> done | failed | in_doubt, and held (below)
 * for rows made elsewhere; a pending row
 * whose attempt provably did not reach Billogram (or was answered 429/503)
 * goes back to pending with a later next_attempt_at.  'sending' is
 * committed before the request leaves, so after a crash a row in 'sending'
 * becomes 'in_doubt' rather than being sent again.  in_doubt rows carry the
 * reason in error and, in invoice_snapshot, the invoice as a GET returned it
 * afterwards, for an operator to decide with billogram_resolve().  Until
 * its verdict is final the worker reads the invoice again and weighs what
 * changed (billogram_settle below): evidence holds the verdict and what it
 * rests on, settle_at when the invoice is read next (NULL once final); a
 * payment the evidence shows applied becomes done, 'reconciled'.
 *
 * What the evidence rests on, all recorded by the extension itself:
 * baseline is what the ledger (billogram_ledger) knew of the invoice when
 * the row was claimed, {"remaining_sum", "events": [uuid, ...]}, NULL for
 * rows from before 0.3; event_uuids the events the row's payment made (the
 * new ones its successful reply showed, or the one a settlement found);
 * verify_reason, on a pending row, why its invoice is read before it is
 * sent ('first_payment', 'resend', 'promotion': see
 * billogram_read_recorded).
 *
 * One payment per invoice is in flight at a time, in the order the rows
 * were made: a row is not sent while an earlier row of its invoice is
 * pending, while any row of its invoice is sending, or while one is still
 * being checked (settle_at set).  A synchronous call waits, up to its
 * billogram.timeout, while a payment on its invoice is in flight or being
 * checked; it does not queue behind pending rows.
 *
 * Who caused each payment: created_by is the role that called or inserted
 * (SET ROLE counts, SECURITY DEFINER does not), effective_role the role in
 * effect at that moment (it differs inside a SECURITY DEFINER function),
 * login_role the session's authenticated role; database_name, backend_pid
 * and application_name say where the call came from (synchronous calls may
 * come from any database).  Rows from 0.1 have only created_by, which then
 * held session_user.
 *
 * What it keeps of an invoice (response, invoice_snapshot) follows the
 * superuser setting billogram.journal_reply: by default a summary without
 * personal data (see billogram_invoice_summary below); 'full' keeps the
 * whole invoice, names, addresses and identity numbers included; 'none'
 * keeps nothing.
 *
 * pending_since is when the row last became pending (queued, resent or
 * released): a request that provably did not reach Billogram, or that
 * Billogram asked to retry, is tried again while it has been pending for
 * less than billogram.retry_for, and only then marked failed.
 *
 * Where each row was made: made_in_system is the cluster's system
 * identifier (pg_control_system()), made_in_database the OID of the
 * database whose journal took it, and made_in_instance the installation
 * (billogram_instance, made by CREATE EXTENSION and never dumped).  The
 * worker sends only rows made where it runs, by its installation.  Rows
 * that arrive any other way, with a restored dump (into the same database
 * too: pg_restore --clean creates the extension anew, with a new
 * instance), pg_upgrade, a copy brought up as another cluster, or an update
 * from 0.1 (see billogram--0.2--0.3.sql), may have been sent already by the
 * server that made them: pending ones become 'held' (held_at says since
 * when) and wait for an operator's billogram_release_held() or
 * billogram_fail_held(); one found in 'sending', or in_doubt while that
 * server was still reading its invoice to settle it (settle_at set),
 * becomes 'in_doubt' with the verdict 'inherited' and is never read here:
 * the verdict was that server's to reach (what it had found, if anything,
 * is kept in evidence under 'original').  A promoted standby has its
 * primary's system identifier and instance and goes on with the queue it
 * inherited.  NULL (a row written by hand) counts as elsewhere, except
 * that a row 0.1 (which recorded no origin) left 'sending' is settled here.
 *
 * A trigger's row names the root of the source row's partition tree in
 * source_table and the row's primary key there in source_key; the pair is
 * also in billogram_keys, so that the row pays once, ever.
 *
 * Privileges: no access for PUBLIC; superusers, or roles granted access
 * explicitly, read it.  Writes go through the functions below: below
 * superuser, any other write is refused by billogram_journal_guard() (at
 * the end of this script), whatever was granted.
 * Its rows are data: pg_dump dumps them (pg_extension_config_dump).
 */
CREATE TABLE billogram_requests (
    id               bigserial PRIMARY KEY,
    origin           billogram_origin NOT NULL,
    billogram_id     text NOT NULL,
    mode             billogram_mode NOT NULL,
    amount           numeric CHECK ((mode = 'amount') = (amount IS NOT NULL)),
    request_body     text NOT NULL,
    state            billogram_state NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       name NOT NULL DEFAULT session_user,
    sent_at          timestamptz,
    finished_at      timestamptz,
    http_status      integer,
    response         jsonb,
    error            jsonb,
    invoice_snapshot jsonb,
    snapshot_at      timestamptz,
    source_table     text,
    source_key       jsonb,
    resolution       text,
    effective_role   name,
    login_role       name,
    database_name    name,
    backend_pid      integer,
    application_name text,
    made_in_system   bigint,
    made_in_database oid,
    held_at          timestamptz,
    pending_since    timestamptz NOT NULL DEFAULT now(),
    evidence         jsonb,
    settle_at        timestamptz,
    made_in_instance uuid,
    idempotency_key  text,
    baseline         jsonb,
    event_uuids      text[],
    verify_reason    text
);

COMMENT ON TABLE billogram_requests IS
'Journal and outbox of Billogram credit-payment requests';

-- the worker's claim: due pending rows ready to be sent, oldest first.  Rows
-- waiting for their invoice to be read are left out: the claim walks this
-- index in order, and 20,000 unread rows ahead of the first ready one made
-- every claim of a drain read all of them
CREATE INDEX billogram_requests_pending_idx
    ON billogram_requests (next_attempt_at, id)
    WHERE state = 'pending' AND verify_reason IS NULL;
-- purge and status by state
CREATE INDEX billogram_requests_state_idx ON billogram_requests (state, finished_at);
-- one payment in flight per invoice, in order; the evidence on an invoice
CREATE INDEX billogram_requests_invoice_idx ON billogram_requests (billogram_id, id);
-- How many rows the planner expects an invoice to have, declared rather
-- than estimated: ANALYZE counts the invoices of its sample, and a journal
-- of installments on a few invoices made that a handful.  The generic plans
-- that the worker keeps for its process, and those of the functions it
-- calls, then looked an invoice's rows up by walking the whole journal in
-- id order, for a new invoice too.  As many invoices as half the rows: an
-- invoice's rows are found through its index whatever the statistics
-- (tests/t/027_plans.pl, "few invoices").
ALTER TABLE billogram_requests ALTER COLUMN billogram_id SET (n_distinct = -0.5);
-- in_doubt rows whose invoice is to be read again
CREATE INDEX billogram_requests_settle_idx ON billogram_requests (settle_at)
    WHERE settle_at IS NOT NULL;
-- pending rows whose invoice is to be read before they are sent
CREATE INDEX billogram_requests_verify_idx ON billogram_requests (next_attempt_at, id)
    WHERE state = 'pending' AND verify_reason IS NOT NULL;

/*
 * Every done row stores the invoice (several kB of JSON).  lz4 compresses
 * it several times faster than the default pglz, which profiling showed to
 * be the largest single cost of recording an outcome; used where the
 * server was built with it.
 */
DO $$
BEGIN
    IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_catalog.pg_settings
                     WHERE name = 'default_toast_compression') THEN
        ALTER TABLE billogram_requests
            ALTER COLUMN response SET COMPRESSION lz4,
            ALTER COLUMN invoice_snapshot SET COMPRESSION lz4;
    END IF;
END
$$;

REVOKE ALL ON billogram_requests FROM PUBLIC;
REVOKE ALL ON SEQUENCE billogram_requests_id_seq FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('billogram_requests', '');
SELECT pg_catalog.pg_extension_config_dump('billogram_requests_id_seq', '');

/*
 * billogram_instance: who this installation is.  One row, made by CREATE
 * EXTENSION (and by the update to 0.3) with a random id, and never dumped:
 * pg_dump leaves its contents out, so a restore, even into the same
 * database, gets an id of its own, and the rows it brings back, made under
 * another id, are held rather than sent (see made_in_instance).  A
 * physical standby has its primary's row, so a promoted standby goes on
 * with the queue it inherited (after the checks described at
 * billogram_requests).  timeline is the WAL timeline the worker last saw:
 * a different one means a promotion or a point-in-time recovery happened.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_instance (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    timeline    bigint,
    one_row     boolean NOT NULL DEFAULT true UNIQUE CHECK (one_row)
);
INSERT INTO billogram_instance DEFAULT VALUES;
REVOKE ALL ON billogram_instance FROM PUBLIC;

/*
 * billogram_keys: every key that has paid, kept for ever (billogram_purge
 * leaves it): a source row of a payments table ('source': the root table
 * of its partition tree, schema-qualified, a space, and the row's primary
 * key there as a JSON object of its columns' text, written with DateStyle
 * ISO and TimeZone UTC) or a caller's idempotency key ('call'), and the
 * journal row it made.  A second payment with the same key is not made:
 * the trigger's row moved to another partition, or COPYed in again by a
 * data-only restore, queues nothing (a NOTICE names the earlier request).
 * The key is taken in the statement that inserts the journal row; two
 * transactions taking one key at once make one row.  Its rows are data:
 * pg_dump dumps them, so a restore keeps knowing what has paid.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_keys (
    kind        billogram_key_kind NOT NULL,
    key         text NOT NULL,
    request_id  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
REVOKE ALL ON billogram_keys FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_keys', '');

/*
 * billogram_ledger: what Billogram showed the worker of each invoice, one
 * row per invoice: the remaining sum as last seen, and every event uuid
 * ever seen on it, with the journal row (if any) whose payment made it.
 * Written in the same transaction as the outcome or reading that showed
 * it, whatever billogram.journal_reply keeps, and never purged.
 * Privileges: no access for PUBLIC.
 */
CREATE TABLE billogram_ledger (
    billogram_id   text PRIMARY KEY,
    remaining_sum  numeric,
    events         jsonb NOT NULL DEFAULT '{}',
    seen_at        timestamptz NOT NULL,
    seen_by        bigint
);
REVOKE ALL ON billogram_ledger FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_ledger', '');

/*
 * billogram_ledger_baselines: what the ledger knows of each invoice, in the
 * form billogram_weigh() takes as a baseline: {"remaining_sum": n,
 * "events": [uuid, ...]}; an invoice it knows nothing of has no row.  The
 * claim fixes it on a row as it marks it 'sending' (so do the synchronous
 * calls' INSERT): one payment per invoice is in flight, so what the ledger
 * holds then is exactly what Billogram had shown before this payment.  A
 * view, so that the statements that read it plan it in: as a function it
 * was a PL/pgSQL call per row, twice the cost of the same expression in
 * the statement.
 * Privileges: no access for PUBLIC.
 */
CREATE VIEW billogram_ledger_baselines AS
SELECT l.billogram_id,
       jsonb_build_object('remaining_sum', l.remaining_sum,
                          'events', coalesce((SELECT jsonb_agg(k ORDER BY k)
                                                FROM jsonb_object_keys(l.events) k), '[]')) AS baseline
  FROM billogram_ledger l;

REVOKE ALL ON billogram_ledger_baselines FROM PUBLIC;

/*
 * billogram_enqueue_credit_payment(id, mode, amount, idempotency_key) RETURNS bigint
 *
 * Queues a credit payment, validated exactly like billogram_credit_payment()
 * (22023 and nothing queued on bad input), and returns the request's id.
 * It is sent by the worker once, and only if, the calling transaction
 * commits.  Runs as its caller, whose roles the journal records; the row
 * itself is inserted as the journal's owner, so granted roles need no
 * privileges on billogram_requests.
 * idempotency_key: as for billogram_credit_payment(), recorded in
 * billogram_keys in the calling transaction.  A key used before (by either
 * function) queues nothing and returns the id of the request that used it,
 * with a NOTICE; 22023 when that was another payment.  A transaction that
 * queues with a key another transaction is committing at the same moment
 * waits for it, and fails with 40001 if it commits.
 * Privileges: EXECUTE revoked from PUBLIC; grant it like the synchronous
 * function.
 */
CREATE FUNCTION billogram_enqueue_credit_payment(id text, mode text, amount numeric DEFAULT NULL,
                                                 idempotency_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'billogram_enqueue_credit_payment'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric, text) FROM PUBLIC;

/*
 * billogram_payment_trigger(id_column [, amount_column [, mode_column]])
 *
 * AFTER INSERT ... FOR EACH ROW trigger function.  Each inserted row queues
 * a credit payment on the invoice named by id_column:
 *   one argument      mode 'remaining': the whole remaining sum;
 *   two arguments     mode 'amount', of amount_column; a NULL amount fails
 *                     the INSERT with 22023 and queues nothing (it is never
 *                     taken to mean "everything");
 *   three arguments   the mode in mode_column ('amount' or 'remaining'; NULL
 *                     fails with 22023), the amount in amount_column, NULL
 *                     for 'remaining'.
 * Column names are read as SQL identifiers: 'amount', or '"Amount Due"' for
 * a quoted name.  Any value that billogram_credit_payment() would refuse
 * fails the INSERT with 22023.  The amount column must be numeric or an
 * integer type, read by cast: a float, money or any other type fails every
 * INSERT with 42804 and queues nothing (a float's text depends on
 * extra_float_digits; PostgreSQL gives a trigger function no say at
 * CREATE TRIGGER, so this is checked when it fires).
 *
 * One payment per source row, ever: the row is identified by the root of
 * its partition tree (a plain table is its own root) and its primary key
 * there, recorded in billogram_keys.  A row inserted again, by an UPDATE
 * that moves it to another partition or a COPY of restored rows, queues
 * nothing, with a NOTICE naming the earlier request; the INSERT goes on.
 * A table (or partition tree) without a primary key is refused with 55000,
 * and so is one whose key is DEFERRABLE or, on a partitioned table, not
 * valid: two rows may hold such a key when the trigger fires.
 *
 *   CREATE TRIGGER register_payout AFTER INSERT ON payments FOR EACH ROW
 *       EXECUTE FUNCTION billogram_payment_trigger('billogram_id', 'amount');
 *
 * Privileges: EXECUTE revoked from PUBLIC.  CREATE TRIGGER requires it of
 * the role creating the trigger, and every row the trigger fires for
 * requires that the owner of the table, and of the root of its partition
 * tree, holds it then (42501 otherwise): PostgreSQL checks a trigger
 * function's EXECUTE only at CREATE TRIGGER, so the function checks again,
 * and a revoked grant or a table given to another owner stops its trigger
 * at once.  Any role that may INSERT into
 * the table (or COPY into it) fires the trigger and is recorded as the
 * payment's creator; it needs no grant of its own.
 *     GRANT EXECUTE ON FUNCTION billogram_payment_trigger() TO payments_owner;
 */
CREATE FUNCTION billogram_payment_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'billogram_payment_trigger'
LANGUAGE C;

REVOKE ALL ON FUNCTION billogram_payment_trigger() FROM PUBLIC;

/*
 * billogram_assert_trusted()
 *
 * Internal: raises 42501 while anything of the extension is not what a
 * superuser made: schema billogram not a superuser's or open to others'
 * CREATE, an object of the extension owned by a non-superuser, or a
 * trigger, rule or row-level policy on one of its tables (the extension
 * makes none, so any there was added, and would run as a superuser inside
 * the functions below and inside the worker).  The first statement of
 * every SECURITY DEFINER function below; the worker runs the same check
 * before each batch, and the queuing functions before they insert as the
 * journal's owner.  The answer is kept until the catalogs it read change.
 * Privileges: EXECUTE revoked from PUBLIC; the SECURITY DEFINER functions
 * call it as its owner.
 */
CREATE FUNCTION billogram_assert_trusted()
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_assert_trusted'
LANGUAGE C STABLE;

REVOKE ALL ON FUNCTION billogram_assert_trusted() FROM PUBLIC;

-- internal: wake the worker when the calling transaction commits; used by
-- billogram_resolve().  No privilege for PUBLIC.
CREATE FUNCTION billogram_wake_worker_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_wake_worker_at_commit'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_wake_worker_at_commit() FROM PUBLIC;

-- internal: who is deciding, for the operators' functions below (the role
-- that called, SET ROLE counted, and the login role if it differs), which
-- SQL cannot see inside a SECURITY DEFINER function.  No privilege for
-- PUBLIC; the SECURITY DEFINER functions call it as its owner.
CREATE FUNCTION billogram_caller()
RETURNS text
AS 'MODULE_PATHNAME', 'billogram_caller'
LANGUAGE C STABLE;

REVOKE ALL ON FUNCTION billogram_caller() FROM PUBLIC;

/*
 * billogram_announce(request_id, state)
 *
 * Internal: the one place a row's state is announced on the
 * billogram_requests channel (LISTEN billogram_requests), at commit, as
 * {"id": request_id, "state": state}.  Announced are the states a listener
 * waits for, done, failed, in_doubt and held; pending and sending are not,
 * so callers need not ask.  The worker's statements and the functions
 * below call it whenever they change a row's state.
 * Privileges: EXECUTE revoked from PUBLIC; the worker and the functions
 * below call it as the journal's owner.
 */
CREATE FUNCTION billogram_announce(request_id bigint, state text)
RETURNS void
AS 'MODULE_PATHNAME', 'billogram_announce'
LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION billogram_announce(bigint, text) FROM PUBLIC;

/*
 * billogram_resolve(request_id, action) RETURNS billogram_requests
 *
 * An operator's decision on an 'in_doubt' or 'failed' row, after checking
 * the invoice at Billogram:
 *   'resend'      send it again (back to pending, attempts kept), after the
 *                 worker has read the invoice once more and found nothing
 *                 on it the ledger did not know (see
 *                 billogram_read_recorded; otherwise the row comes back
 *                 in_doubt, ambiguous).  Refused (55000) for an in_doubt
 *                 row whose verdict is not 'not_applied': a payment that
 *                 may have been made is not sent again on anyone's word;
 *   'mark_done'   the payment is registered at Billogram;
 *   'mark_failed' it is not, and will not be sent.
 * The decision, who took it and when are kept in the resolution column.
 * Privileges: EXECUTE revoked from PUBLIC; grant it to operators.
 * SECURITY DEFINER, so operators need no privileges on the journal;
 * search_path is pg_catalog only and the journal is named by schema, so
 * nothing an operator defined runs with the definer's rights.
 */
CREATE FUNCTION billogram_resolve(request_id bigint, action text)
RETURNS billogram_requests
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r billogram.billogram_requests;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    IF action IS NULL OR action NOT IN ('resend', 'mark_done', 'mark_failed') THEN
        RAISE EXCEPTION 'invalid action "%"', action
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''resend'', ''mark_done'' or ''mark_failed''.';
    END IF;

    SELECT * INTO r FROM billogram.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billogram request % does not exist', request_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF r.state NOT IN ('in_doubt', 'failed') THEN
        RAISE EXCEPTION 'billogram request % is %, only in_doubt and failed requests can be resolved',
                        request_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF action = 'resend' AND r.state = 'in_doubt'
       AND (r.evidence ->> 'verdict' IS DISTINCT FROM 'not_applied' OR r.settle_at IS NOT NULL) THEN
        RAISE EXCEPTION 'billogram request % cannot be resent: its verdict is %',
                        request_id, coalesce(r.evidence ->> 'verdict', 'checking')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Only a payment the evidence shows not applied is sent again.',
                  HINT = 'Check the invoice at Billogram, then mark_done or mark_failed; queue a new payment if one is still owed.';
    END IF;

    UPDATE billogram.billogram_requests
       SET state = CASE action WHEN 'resend' THEN 'pending'
                               WHEN 'mark_done' THEN 'done'
                               ELSE 'failed' END,
           next_attempt_at = CASE WHEN action = 'resend' THEN now() ELSE next_attempt_at END,
           pending_since = CASE WHEN action = 'resend' THEN now() ELSE pending_since END,
           finished_at = CASE WHEN action = 'resend' THEN NULL ELSE now() END,
           settle_at = NULL,
           verify_reason = CASE WHEN action = 'resend' THEN 'resend' END,
           evidence = CASE WHEN action = 'resend' THEN NULL ELSE evidence END,
           resolution = concat_ws(E'\n', resolution,
                                  format('%s by %s at %s (was %s)', action, billogram.billogram_caller(), now(), r.state))
     WHERE id = request_id
    RETURNING * INTO r;

    -- the worker sends a resent row, and stops holding back the invoice's
    -- next payments for a row it was still checking
    PERFORM billogram.billogram_wake_worker_at_commit();
    PERFORM billogram.billogram_announce(r.id, r.state);
    RETURN r;
END
$$;

REVOKE ALL ON FUNCTION billogram_resolve(bigint, text) FROM PUBLIC;

/*
 * billogram_weigh(mode, amount, baseline, invoice, attributed,
 *                 settle_time_passed) RETURNS jsonb
 *
 * The verdict on one in_doubt payment, from evidence given as arguments
 * alone: billogram_settle() gathers it and writes what this returns.
 *   mode, amount        what the row asked to pay ('amount' with amount,
 *                       'remaining' with NULL);
 *   baseline            what the ledger knew of the invoice when the row
 *                       was claimed, {"remaining_sum": n, "events":
 *                       ["<uuid>", ...]}, or NULL when it knew nothing;
 *   invoice             the invoice as read after the request, as
 *                       billogram_invoice_summary() makes it, with the
 *                       events only callbacks reported appended; NULL when
 *                       it could not be read;
 *   attributed          event uuids already attributed to other rows of
 *                       the invoice (NULL: none), never evidence for this
 *                       one;
 *   settle_time_passed  whether billogram.settle_time has passed since the
 *                       request was sent.
 * The new events are the invoice's events whose uuid is neither in the
 * baseline nor attributed; a new payment is one with a numeric amount.
 * The verdict:
 *   applied      exactly one new payment, of the amount sent (mode
 *                amount) or of the baseline's whole remaining sum (mode
 *                remaining, leaving 0), and the remaining sum moved by
 *                exactly that much; applied_event is its uuid;
 *   checking     no new payment and the remaining sum unchanged, or the
 *                invoice unreadable, before settle time;
 *   not_applied  no new payment and the remaining sum unchanged, after
 *                settle time;
 *   unchecked    the invoice unreadable, after settle time;
 *   ambiguous    anything else: no baseline (no event can then be told to
 *                be new), a sum or event uuid missing, two payments,
 *                another amount, a sum that moved without an event or by
 *                another amount.
 * Returns {"verdict", "why" (a sentence for an operator),
 * "remaining_before", "remaining_after", "new_events" ([{event_uuid, type,
 * created_at, amount}]), "applied_event"}.  Event times are never read:
 * no verdict compares Billogram's clock with ours.  Amounts are compared
 * as numeric, exactly.  A mode, amount or settle_time_passed that makes no
 * sense raises 22023.
 * IMMUTABLE and PARALLEL SAFE: it reads nothing but its arguments, no
 * table, no setting, no clock.
 * Privileges: EXECUTE for PUBLIC: it reads nothing but its arguments and
 * moves nothing.
 */
CREATE FUNCTION billogram_weigh(mode text, amount numeric, baseline jsonb, invoice jsonb,
                                attributed text[], settle_time_passed boolean)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    before numeric;
    after numeric;
    expected numeric;
    fresh jsonb;
    n_paid bigint;
    paid numeric;
    paid_uuid text;
    verdict text;
    why text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('amount', 'remaining')
       OR (mode = 'amount') <> (amount IS NOT NULL) OR settle_time_passed IS NULL THEN
        RAISE EXCEPTION 'billogram_weigh: mode % with amount % and settle_time_passed % make no request',
                        coalesce(quote_literal(mode), 'NULL'), coalesce(amount::text, 'NULL'),
                        coalesce(settle_time_passed::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'mode is ''amount'' with an amount or ''remaining'' with NULL; settle_time_passed is true or false.';
    END IF;
    IF jsonb_typeof(baseline -> 'remaining_sum') = 'number' THEN
        before := (baseline ->> 'remaining_sum')::numeric;
    END IF;
    IF jsonb_typeof(invoice -> 'remaining_sum') = 'number' THEN
        after := (invoice ->> 'remaining_sum')::numeric;
    END IF;

    IF invoice IS NULL THEN
        verdict := CASE WHEN settle_time_passed THEN 'unchecked' ELSE 'checking' END;
        why := CASE WHEN settle_time_passed
                    THEN 'The invoice could not be read until billogram.settle_time after the request ended, so nothing shows whether the payment arrived.'
                    ELSE 'The invoice could not be read yet; it is read again.' END;
    ELSIF baseline IS NULL THEN
        verdict := 'ambiguous';
        why := 'The extension had no record of the invoice before the request, so no event can be told to be new.';
    ELSIF before IS NULL OR jsonb_typeof(baseline -> 'events') IS DISTINCT FROM 'array' THEN
        verdict := 'ambiguous';
        why := 'The record of the invoice before the request has no remaining sum or no list of events to compare with.';
    ELSIF after IS NULL THEN
        verdict := 'ambiguous';
        why := 'The invoice as read after the request has no numeric remaining sum.';
    ELSIF jsonb_typeof(coalesce(invoice -> 'events', '[]')) <> 'array'
          OR EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(invoice -> 'events', '[]')) e
                      WHERE jsonb_typeof(e -> 'event_uuid') IS DISTINCT FROM 'string'
                         OR (e ? 'amount' AND jsonb_typeof(e -> 'amount') NOT IN ('number', 'null'))) THEN
        verdict := 'ambiguous';
        why := 'The invoice lists an event without an event_uuid, or with an amount that is not a number, so its events cannot be told apart.';
    END IF;
    IF verdict IS NOT NULL THEN
        RETURN jsonb_build_object('verdict', verdict, 'why', why,
                                  'remaining_before', before, 'remaining_after', after,
                                  'new_events', '[]'::jsonb, 'applied_event', NULL);
    END IF;

    -- the events neither known before the claim nor another row's
    SELECT coalesce(jsonb_agg(jsonb_build_object('event_uuid', e -> 'event_uuid',
                                                 'type', e -> 'type',
                                                 'created_at', e -> 'created_at',
                                                 'amount', e -> 'amount') ORDER BY n), '[]')
      INTO fresh
      FROM jsonb_array_elements(coalesce(invoice -> 'events', '[]')) WITH ORDINALITY AS x(e, n)
     WHERE NOT (baseline -> 'events') ? (e ->> 'event_uuid')
       AND array_position(attributed, e ->> 'event_uuid') IS NULL;
    SELECT count(*), max(abs((f ->> 'amount')::numeric)), max(f ->> 'event_uuid')
      INTO n_paid, paid, paid_uuid
      FROM jsonb_array_elements(fresh) f
     WHERE jsonb_typeof(f -> 'amount') = 'number';
    expected := CASE mode WHEN 'amount' THEN amount ELSE abs(before) END;

    IF n_paid = 1 AND paid = expected AND expected > 0
       AND abs(after - before) = expected AND (mode = 'amount' OR after = 0) THEN
        verdict := 'applied';
        why := format('The invoice shows exactly one new payment, of %s, and its remaining sum moved from %s to %s.',
                      paid, before, after);
    ELSIF n_paid = 0 AND after = before THEN
        verdict := CASE WHEN settle_time_passed THEN 'not_applied' ELSE 'checking' END;
        why := CASE WHEN settle_time_passed
                    THEN format('The invoice shows no new payment and its remaining sum is still %s after billogram.settle_time, so the payment did not arrive.', after)
                    ELSE format('The invoice shows no new payment yet and its remaining sum is still %s; it is read again.', after) END;
    ELSE
        verdict := 'ambiguous';
        why := CASE
            WHEN n_paid > 1 THEN
                format('The invoice shows %s new payments, so which one is this request''s cannot be told.', n_paid)
            WHEN n_paid = 0 THEN
                format('The remaining sum moved from %s to %s without a new payment on the invoice.', before, after)
            WHEN paid <> expected OR expected = 0 THEN
                format('The invoice shows one new payment, of %s, where %s was expected.', paid, expected)
            WHEN abs(after - before) <> expected THEN
                format('The invoice shows one new payment of %s, but its remaining sum moved from %s to %s.', paid, before, after)
            ELSE
                format('The invoice shows one new payment of %s, but its remaining sum is %s, not 0, after paying the whole remaining sum.', paid, after)
        END;
    END IF;
    RETURN jsonb_build_object('verdict', verdict, 'why', why,
                              'remaining_before', before, 'remaining_after', after,
                              'new_events', fresh,
                              'applied_event', CASE WHEN verdict = 'applied' THEN paid_uuid END);
END
$$;

-- (EXECUTE for PUBLIC is granted at the end of this script)

/*
 * The ledger's functions, the worker's own: EXECUTE revoked from PUBLIC,
 * only the worker (the bootstrap superuser) calls them.  PL/pgSQL rather
 * than SQL: a SQL function with a SET clause is never inlined, and its
 * plan lasts one call site's transaction, so the worker parsed and planned
 * them again in every batch; PL/pgSQL keeps its plans for the session.
 * Those that take a batch's arrays use generic plans only, as the worker's
 * own statements do: a custom plan knows an array's length and so always
 * looked cheaper than the generic one, and every call planned its
 * statements again.
 *
 * billogram_ledger_record(invoice_ids, invoices, request_ids)
 *   Adds what replies or readings showed (invoices: their summaries, NULL
 *   for none; request_ids: the rows they answered, or NULL) to the ledger,
 *   in one statement for a whole batch: the remaining sum replaces the one
 *   known, the event uuids join those known (an event never leaves an
 *   invoice).
 */
CREATE FUNCTION billogram_ledger_record(invoice_ids text[], invoices jsonb[], request_ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- one row per invoice: ON CONFLICT may not touch a row twice, and a
    -- batch can show an invoice more than once (calls on it from several
    -- sessions).  The last remaining sum shown counts; every event joins.
    INSERT INTO billogram.billogram_ledger AS l
           (billogram_id, remaining_sum, events, seen_at, seen_by)
    SELECT s.invoice_id,
           (array_agg(CASE WHEN jsonb_typeof(s.invoice -> 'remaining_sum') = 'number'
                           THEN (s.invoice ->> 'remaining_sum')::numeric END
                      ORDER BY s.n DESC))[1],
           coalesce(jsonb_object_agg(e ->> 'event_uuid', coalesce(e -> 'amount', 'null'))
                    FILTER (WHERE e IS NOT NULL), '{}'),
           clock_timestamp(),
           (array_agg(s.request_id ORDER BY s.n DESC))[1]
      FROM unnest(invoice_ids, invoices, request_ids)
           WITH ORDINALITY AS s(invoice_id, invoice, request_id, n)
      LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(s.invoice -> 'events')
                                             WHEN 'array' THEN s.invoice -> 'events'
                                             ELSE '[]' END) e
             ON jsonb_typeof(e -> 'event_uuid') = 'string'
     WHERE s.invoice IS NOT NULL
     GROUP BY s.invoice_id
    ON CONFLICT (billogram_id) DO UPDATE
       SET remaining_sum = EXCLUDED.remaining_sum,
           events = l.events || EXCLUDED.events,
           seen_at = EXCLUDED.seen_at,
           seen_by = EXCLUDED.seen_by;
END
$$;

REVOKE ALL ON FUNCTION billogram_ledger_record(text[], jsonb[], bigint[]) FROM PUBLIC;

/*
 * billogram_read_recorded(invoice_ids, invoices, failures, retry_secs,
 *                         claim_max, here_system, here_database, here_instance)
 *   RETURNS TABLE (claimed_id, claimed_invoice, claimed_mode, claimed_amount,
 *                  claimed_body)
 *
 * Internal: what the worker's readings of invoices before sending decide,
 * a batch of them in one call (invoices[i] the summary read of
 * invoice_ids[i], or NULL and failures[i] why it could not be read; an
 * invoice read twice counts its last successful reading).
 * The worker reads an invoice before the payment at the head of its queue
 * when that row has a verify_reason:
 *   'first_payment'  the ledger knew nothing of the invoice when the row was
 *                queued: without a reading there would be no baseline to
 *                settle an unknown outcome by; the row goes once the
 *                reading is in the ledger;
 *   'resend'     an operator's billogram_resolve(id, 'resend') of a row
 *                found not applied: it goes only if the invoice still shows
 *                no payment the ledger did not know, and the same
 *                remaining sum; otherwise it becomes in_doubt, ambiguous,
 *                with the payments nobody accounted for;
 *   'promotion'  a row pending when this server took over from another
 *                (promotion, point-in-time recovery: the WAL timeline
 *                changed): the old server may have sent it, and this one
 *                may not have heard; it goes only if the invoice shows
 *                no payment the ledger did not know and (when the ledger
 *                knew the invoice) the same remaining sum; otherwise it is
 *                held for an operator, with the reason
 *                (billogram_release_held()).
 * The reading joins the ledger, and the rows it lets go are due at once.
 * Up to claim_max of them are claimed as they go, as the worker's claim
 * would take them (STMT_CLAIM in src/statements.c): made by this
 * installation (here_*: bg_here_args()), and at the head of their invoice's
 * queue as the journal stood when they were locked; each becomes
 * 'sending' with the ledger's view of its invoice, this reading included,
 * as its baseline, and is returned for the worker to send.  A row that
 * goes and is not claimed here stays pending for the claim.  Claiming here
 * saves a drain the claim's statement and every payment read first a
 * version of its row.
 * A reading that failed leaves the rows waiting for it pending, with the
 * reason in error, read again after at least Retry-After and a pause that
 * grows with the time they have waited (5 minutes at most), until
 * billogram.retry_for (retry_secs) has passed since they became pending;
 * then, or at once when Billogram says the invoice does not exist (404),
 * they fail: nothing of theirs was sent.  Every row that does not go is
 * announced: held, in_doubt, failed, or waiting again.  One call per batch,
 * each step one statement: called per invoice, a drain spent more in the
 * function's calls than in its work.
 * Privileges: EXECUTE revoked from PUBLIC; only the worker calls it.
 */
CREATE FUNCTION billogram_read_recorded(invoice_ids text[], invoices jsonb[], failures jsonb[],
                                        retry_secs integer, claim_max integer, here_system bigint,
                                        here_database oid, here_instance uuid)
RETURNS TABLE (claimed_id bigint, claimed_invoice text, claimed_mode text,
               claimed_amount numeric, claimed_body text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    -- the rows waiting for a reading: ids, invoices, verify_reasons
    waiting bigint[];
    waiting_on text[];
    waiting_why text[];
    -- those of them the claim's rule would take
    claimable bigint[];
    ids text[];
    shown jsonb[];
    why jsonb[];
    -- what the ledger knew of each invoice read, before this reading
    knowns jsonb[];
    r record;
BEGIN
    -- the rows waiting for these readings, locked an invoice at a time in
    -- the order of their ids, in one statement.  Found through the
    -- invoice's index alone, by equality, filtered after: a condition on
    -- state lets a plan made when few rows were pending (statistics of a
    -- quiet journal) walk every pending row of a drain, and the generic
    -- plan of one scan for all the invoices (= ANY) read the whole journal.
    -- Each invoice's scan (the LATERAL subquery) gets the plan a statement
    -- per invoice in a loop would get, in one statement for them all.
    -- Those the claim's rule would take (INVOICE_FREE_SQL in
    -- src/statements.c) are told from the rows in hand: made here, the
    -- invoice's first pending row, and no row of the invoice sending or
    -- being settled (the row itself, pending, is neither).  A join back to
    -- the journal for that test was planned as a walk of its primary key
    -- (ORDER BY id LIMIT), the whole journal on every call
    SELECT array_agg(x.id ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.invoice_id ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.verify_reason ORDER BY x.invoice_id, x.id) FILTER (WHERE x.waits),
           array_agg(x.id) FILTER (WHERE x.waits AND x.made_here
                                   AND x.id = x.first_pending AND x.busy = 0)
      INTO waiting, waiting_on, waiting_why, claimable
      FROM (SELECT d.invoice_id, q.id, q.verify_reason, q.waits, q.made_here,
                   min(q.id) FILTER (WHERE q.state = 'pending') OVER invoice AS first_pending,
                   count(*) FILTER (WHERE q.state = 'sending' OR q.settle_at IS NOT NULL)
                       OVER invoice AS busy
              FROM (SELECT DISTINCT i FROM unnest(invoice_ids) i ORDER BY 1) AS d(invoice_id)
             CROSS JOIN LATERAL (SELECT id, verify_reason, state, settle_at,
                                        state = 'pending' AND verify_reason IS NOT NULL AS waits,
                                        made_in_system = here_system
                                        AND made_in_database = here_database
                                        AND made_in_instance = here_instance AS made_here
                                   FROM billogram.billogram_requests
                                  WHERE billogram_id = d.invoice_id
                                  ORDER BY id
                                  FOR UPDATE) q
            WINDOW invoice AS (PARTITION BY d.invoice_id)) x;

    IF waiting IS NOT NULL THEN
        -- the reading that decides for each invoice: its last that
        -- succeeded, else its last; and what the ledger knew of it before,
        -- kept here because the reading joins the ledger before the rows
        -- that go are claimed
        SELECT array_agg(d.invoice_id), array_agg(d.invoice), array_agg(d.failure),
               array_agg((SELECT v.baseline FROM billogram.billogram_ledger_baselines v
                           WHERE v.billogram_id = d.invoice_id))
          INTO ids, shown, why, knowns
          FROM (SELECT DISTINCT ON (u.invoice_id) u.invoice_id, u.invoice, u.failure
                  FROM unnest(invoice_ids, invoices, failures)
                       WITH ORDINALITY AS u(invoice_id, invoice, failure, n)
                 ORDER BY u.invoice_id, u.invoice IS NOT NULL DESC, u.n DESC) d;

        -- an invoice that could not be read: nothing of its rows was
        -- sent; they wait, with the reason, and fail once the invoice is
        -- known not to exist or retry_for is up
        FOR r IN UPDATE billogram.billogram_requests q
                    SET state = CASE WHEN f.failure ->> 'sqlstate' = 'BG404'
                                       OR q.pending_since <= now() - make_interval(secs => retry_secs)
                                     THEN 'failed' ELSE 'pending' END,
                        finished_at = CASE WHEN f.failure ->> 'sqlstate' = 'BG404'
                                             OR q.pending_since <= now() - make_interval(secs => retry_secs)
                                           THEN clock_timestamp() END,
                        next_attempt_at = now() + make_interval(secs => greatest(
                            coalesce((f.failure ->> 'retry_after')::integer, 0),
                            least(300, 1 + extract(epoch FROM now() - q.pending_since) / 4))),
                        error = f.failure || jsonb_build_object(
                            'message', 'the invoice could not be read before sending: ' || (f.failure ->> 'message'),
                            'may_have_reached_billogram', false)
                   FROM unnest(waiting, waiting_on) AS w(id, invoice_id)
                   JOIN unnest(ids, shown, why) AS f(invoice_id, invoice, failure) USING (invoice_id)
                  WHERE q.id = w.id AND f.invoice IS NULL
                  RETURNING q.id, q.state
        LOOP
            PERFORM billogram.billogram_announce(r.id, r.state);
        END LOOP;
    END IF;

    -- the readings join the ledger, which the baselines of the rows
    -- claimed below are read from
    PERFORM billogram.billogram_ledger_record(invoice_ids, invoices, NULL);

    IF waiting IS NOT NULL THEN
        -- an invoice read: the payments on it the ledger did not know
        -- (any payment made for a row shows as one) decide for each row.
        -- A first payment has never left: whatever the invoice shows is
        -- not its doing, and is now the baseline it is sent on.  A resend
        -- or a takeover goes only if the invoice shows nothing new and the
        -- same remaining sum; otherwise a resend is in_doubt, ambiguous,
        -- and a takeover held.  The rows that go are due at once, and
        -- those the worker may send now are claimed (claim, see above).
        FOR r IN
            WITH seen AS (
                SELECT s.invoice_id, s.invoice, s.known, x.unknown,
                       x.unknown IS NULL
                       AND jsonb_typeof(s.invoice -> 'remaining_sum') = 'number'
                       AND (s.known IS NULL
                            OR (s.invoice ->> 'remaining_sum')::numeric
                               = (s.known ->> 'remaining_sum')::numeric) AS unchanged
                  FROM unnest(ids, shown, knowns) AS s(invoice_id, invoice, known)
                 CROSS JOIN LATERAL (
                       SELECT jsonb_agg(e) AS unknown
                         FROM jsonb_array_elements(CASE jsonb_typeof(s.invoice -> 'events')
                                                   WHEN 'array' THEN s.invoice -> 'events'
                                                   ELSE '[]' END) e
                        WHERE (s.known IS NULL OR NOT (s.known -> 'events' ? (e ->> 'event_uuid')))
                          AND jsonb_typeof(e -> 'amount') = 'number') x
                 WHERE s.invoice IS NOT NULL),
            verdict AS (
                SELECT w.id, w.reason, seen.*,
                       CASE WHEN seen.unchanged OR w.reason = 'first_payment' THEN 'goes'
                            WHEN w.reason = 'resend' THEN 'in_doubt'
                            ELSE 'held' END AS becomes
                  FROM unnest(waiting, waiting_on, waiting_why) AS w(id, invoice_id, reason)
                  JOIN seen ON seen.invoice_id = w.invoice_id),
            -- of the rows that go, those the claim's rule takes (claimable,
            -- as they stood when locked: a row behind one that this call
            -- fails, holds or makes in_doubt is left to the claim), at most
            -- claim_max, oldest first
            claim AS (
                SELECT v.id
                  FROM verdict v
                 WHERE v.becomes = 'goes' AND v.id = ANY (claimable)
                 ORDER BY v.id
                 LIMIT greatest(claim_max, 0))
            UPDATE billogram.billogram_requests q
               SET state = CASE WHEN c.id IS NOT NULL THEN 'sending'
                                WHEN v.becomes = 'goes' THEN q.state ELSE v.becomes END,
                   verify_reason = NULL,
                   next_attempt_at = CASE v.becomes WHEN 'goes' THEN now() ELSE q.next_attempt_at END,
                   attempts = q.attempts + CASE WHEN c.id IS NOT NULL THEN 1 ELSE 0 END,
                   sent_at = CASE WHEN c.id IS NOT NULL THEN now() ELSE q.sent_at END,
                   baseline = CASE WHEN c.id IS NOT NULL
                       THEN (SELECT b.baseline FROM billogram.billogram_ledger_baselines b
                              WHERE b.billogram_id = q.billogram_id)
                       ELSE q.baseline END,
                   resolution = CASE WHEN v.becomes <> 'goes' OR v.reason = 'first_payment'
                       THEN q.resolution
                       ELSE concat_ws(E'\n', q.resolution,
                           format('verified (%s) by the billogram worker at %s: the invoice shows no payment the ledger did not know',
                                  v.reason, now())) END,
                   finished_at = CASE v.becomes WHEN 'in_doubt' THEN clock_timestamp() ELSE q.finished_at END,
                   settle_at = CASE v.becomes WHEN 'in_doubt' THEN NULL ELSE q.settle_at END,
                   evidence = CASE v.becomes WHEN 'in_doubt' THEN jsonb_build_object(
                       'verdict', 'ambiguous', 'checked_at', now(),
                       'why', 'the resend was not made: the invoice changed since the payment was found not applied',
                       'remaining_before', v.known -> 'remaining_sum',
                       'remaining_after', v.invoice -> 'remaining_sum',
                       'new_events', coalesce(v.unknown, '[]')) ELSE q.evidence END,
                   held_at = CASE v.becomes WHEN 'held' THEN clock_timestamp() ELSE q.held_at END,
                   error = CASE v.becomes WHEN 'held' THEN jsonb_build_object('kind', 'takeover',
                       'message', 'pending when this server took over, and the invoice shows payments this server did not know of: the server before it may have sent it',
                       'new_events', coalesce(v.unknown, '[]'),
                       'may_have_reached_billogram', true) ELSE q.error END
              FROM verdict v
              LEFT JOIN claim c ON c.id = v.id
             WHERE q.id = v.id
            RETURNING q.id, q.state, v.becomes, q.billogram_id, q.mode, q.amount, q.request_body
        LOOP
            IF r.state = 'sending' THEN
                claimed_id := r.id;
                claimed_invoice := r.billogram_id;
                claimed_mode := r.mode;
                claimed_amount := r.amount;
                claimed_body := r.request_body;
                RETURN NEXT;
            ELSIF r.becomes <> 'goes' THEN
                PERFORM billogram.billogram_announce(r.id, r.state);
            END IF;
        END LOOP;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION billogram_read_recorded(text[], jsonb[], jsonb[], integer, integer, bigint, oid, uuid)
    FROM PUBLIC;

/*
 * billogram_settle(request_id, invoice, failure, settle_secs) RETURNS text
 *
 * Internal: the worker's weighing of the evidence on an in_doubt row, each
 * time it has read the invoice again (invoice: its summary, see
 * billogram_invoice_summary) or failed to (failure: why).  The weighing
 * itself is billogram_weigh()'s, from facts the extension recorded: the
 * row's baseline (what the ledger knew when it was claimed), the invoice
 * as read now with the events only Billogram's callbacks reported
 * (billogram_events) added, and the events already attributed to other
 * rows of the invoice, which never count for this one.  No clock of
 * Billogram's is read.  The reading joins the ledger.  The verdict, kept
 * in evidence with what it rests on:
 *   applied      the row becomes done, its resolution says 'reconciled',
 *                and the event is attributed to it (event_uuids);
 *   checking     read again billogram.settle_time after the request
 *                ended (finished_at, or sent_at if later; in 10 s at
 *                most when the invoice could not be read);
 *   not_applied, ambiguous, unchecked
 *                final: the row stays in_doubt for an operator, and
 *                nothing reads it again (settle_at NULL).
 * It never sends anything and never marks a row failed.  Returns the
 * verdict, NULL when the row is no longer waiting for one (resolved,
 * purged, or its verdict final).
 * Privileges: EXECUTE revoked from PUBLIC; only the worker calls it.
 */
CREATE FUNCTION billogram_settle(request_id bigint, invoice jsonb, failure jsonb, settle_secs integer)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r billogram.billogram_requests;
    settle_time interval := make_interval(secs => settle_secs);
    seen jsonb;
    attributed text[];
    weighed jsonb;
    verdict text;
BEGIN
    SELECT * INTO r FROM billogram.billogram_requests WHERE id = request_id FOR UPDATE;
    IF NOT FOUND OR r.state <> 'in_doubt' OR r.settle_at IS NULL THEN
        RETURN NULL;
    END IF;

    IF invoice IS NOT NULL THEN
        PERFORM billogram.billogram_ledger_record(ARRAY[r.billogram_id], ARRAY[invoice], NULL);
        -- the invoice's events, and those only a callback told of
        seen := CASE jsonb_typeof(invoice -> 'events') WHEN 'array' THEN invoice -> 'events' ELSE '[]' END;
        seen := jsonb_set(invoice, '{events}', seen || coalesce((
            SELECT jsonb_agg(jsonb_build_object('event_uuid', x.event_uuid, 'type', x.type,
                                                'created_at', x.created_at, 'amount', x.amount)
                             ORDER BY x.received_at)
              FROM billogram.billogram_events x
             WHERE x.billogram_id = r.billogram_id
               AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(seen) g
                                WHERE g ->> 'event_uuid' = x.event_uuid)), '[]'));
    END IF;
    SELECT array_agg(u) INTO attributed
      FROM billogram.billogram_requests b, unnest(b.event_uuids) u
     WHERE b.billogram_id = r.billogram_id AND b.id <> r.id;

    -- settle_time counts from when the request ended (its outcome was
    -- recorded: a timeout, a cut reply; or the worker was found stopped),
    -- not from when it left: Billogram may apply a request as late as the
    -- worker waited for it, and billogram.timeout may be the longer; a row
    -- without sent_at (0.1 recorded none) has waited long enough
    weighed := billogram.billogram_weigh(r.mode, r.amount, r.baseline, seen, attributed,
                                           coalesce(now() >= greatest(r.sent_at, r.finished_at) + settle_time, true));
    verdict := weighed ->> 'verdict';
    weighed := weighed || jsonb_build_object('checked_at', now(), 'sent_at', r.sent_at,
                                             'failure', failure);

    UPDATE billogram.billogram_requests
       SET state = CASE WHEN verdict = 'applied' THEN 'done' ELSE 'in_doubt' END,
           evidence = weighed,
           event_uuids = CASE WHEN verdict = 'applied'
                              THEN ARRAY[weighed ->> 'applied_event'] ELSE event_uuids END,
           settle_at = CASE WHEN verdict <> 'checking' THEN NULL
                            WHEN invoice IS NULL THEN now() + least(settle_time, interval '10 seconds')
                            ELSE greatest(r.sent_at, r.finished_at) + settle_time END,
           resolution = CASE WHEN verdict = 'applied' THEN
                            concat_ws(E'\n', resolution,
                                      format('reconciled by the billogram worker at %s: the invoice shows one new payment of %s (event %s)',
                                             now(),
                                             (SELECT f ->> 'amount' FROM jsonb_array_elements(weighed -> 'new_events') f
                                               WHERE f ->> 'event_uuid' = weighed ->> 'applied_event'),
                                             weighed ->> 'applied_event'))
                        ELSE resolution END
     WHERE id = request_id;
    IF verdict = 'applied' THEN
        PERFORM billogram.billogram_announce(request_id, 'done');
    END IF;
    RETURN verdict;
END
$$;

REVOKE ALL ON FUNCTION billogram_settle(bigint, jsonb, jsonb, integer) FROM PUBLIC;

/*
 * billogram_release_held(request_id DEFAULT NULL) RETURNS bigint
 * billogram_fail_held(request_id DEFAULT NULL) RETURNS bigint
 *
 * An operator's decision on 'held' rows (all of them, or the one given),
 * rows that came from another cluster, database or installation, or that
 * an update inherited (see the journal above).  Release only once the
 * server they came from is stopped, or has been checked not to have sent
 * them: each released row becomes this installation's (made_in_system,
 * made_in_database, made_in_instance), back in the queue, and is sent
 * (after a reading of its invoice when the ledger knows nothing of it, as
 * for any first payment; a row held at a takeover goes on the operator's
 * word).  Fail marks them failed instead, never to be sent.  Both return
 * how many rows they changed and record who decided, when, and where the
 * row was made, in resolution.
 * Privileges: EXECUTE revoked from PUBLIC; SECURITY DEFINER with
 * search_path pinned, as for billogram_resolve().
 */
CREATE FUNCTION billogram_release_held(request_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    UPDATE billogram.billogram_requests
       SET state = 'pending',
           next_attempt_at = now(),
           pending_since = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('released by %s at %s (held since %s, made in system %s database %s instance %s)',
                                         billogram.billogram_caller(), now(), held_at, made_in_system, made_in_database,
                                         coalesce(made_in_instance::text, 'unknown'))),
           made_in_system = (SELECT system_identifier FROM pg_control_system()),
           made_in_database = (SELECT oid FROM pg_database WHERE datname = current_database()),
           made_in_instance = (SELECT id FROM billogram.billogram_instance),
           held_at = NULL,
           verify_reason = CASE WHEN EXISTS (SELECT 1 FROM billogram.billogram_ledger l
                                              WHERE l.billogram_id = billogram_requests.billogram_id)
                                THEN NULL ELSE 'first_payment' END
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM billogram.billogram_wake_worker_at_commit();
    END IF;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION billogram_release_held(bigint) FROM PUBLIC;

CREATE FUNCTION billogram_fail_held(request_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    UPDATE billogram.billogram_requests
       SET state = 'failed',
           finished_at = now(),
           resolution = concat_ws(E'\n', resolution,
                                  format('mark_failed by %s at %s (held since %s, made in system %s database %s)',
                                         billogram.billogram_caller(), now(), held_at, made_in_system, made_in_database))
     WHERE state = 'held' AND (request_id IS NULL OR id = request_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION billogram_fail_held(bigint) FROM PUBLIC;

/*
 * billogram_queue_status: one row per state present, with the age of the
 * oldest pending row, the most recent error, and since when rows are held.
 * Privileges: like billogram_requests, no access for PUBLIC.
 */
CREATE VIEW billogram_queue_status AS
SELECT state,
       count(*) AS requests,
       CASE WHEN state = 'pending' THEN now() - min(created_at) END AS oldest_pending_age,
       (array_agg(error ORDER BY coalesce(finished_at, sent_at) DESC NULLS LAST)
            FILTER (WHERE error IS NOT NULL))[1] AS last_error,
       CASE WHEN state = 'held' THEN min(held_at) END AS held_since
  FROM billogram_requests
 GROUP BY state;

REVOKE ALL ON billogram_queue_status FROM PUBLIC;

/*
 * billogram_in_doubt: the payments whose outcome is unknown, one row each,
 * with what the evidence says (see billogram_settle) and what to do:
 *   verdict       checking, not_applied, ambiguous or unchecked (see
 *                 billogram_settle), or inherited: the row came from
 *                 another database, cluster or installation while it was
 *                 being sent or settled there, or from an earlier version
 *                 of billogram, and nothing here reads its invoice;
 *   new_payments  the amounts of the payments the invoice gained since the
 *                 request was sent;
 *   advice        the verdict in a sentence, with the call that acts on it.
 * Privileges: like billogram_requests, no access for PUBLIC.
 */
CREATE VIEW billogram_in_doubt AS
SELECT r.id, r.billogram_id, r.mode, r.amount, r.sent_at,
       r.error ->> 'message' AS reason,
       coalesce(r.evidence ->> 'verdict', 'checking') AS verdict,
       (r.evidence ->> 'remaining_before')::numeric AS remaining_before,
       (r.evidence ->> 'remaining_after')::numeric AS remaining_after,
       (SELECT array_agg((f ->> 'amount')::numeric)
          FROM jsonb_array_elements(r.evidence -> 'new_events') f
         WHERE jsonb_typeof(f -> 'amount') = 'number') AS new_payments,
       (r.evidence ->> 'checked_at')::timestamptz AS checked_at,
       r.settle_at AS next_check_at,
       CASE coalesce(r.evidence ->> 'verdict', 'checking')
           WHEN 'checking' THEN
               format('being checked: the invoice is read again at %s', r.settle_at)
           WHEN 'not_applied' THEN
               format('not registered: no new payment on the invoice and its remaining sum unchanged %s after sending; billogram_resolve(%s, ''resend'') sends it again once a fresh reading shows the invoice unchanged',
                      date_trunc('second', (r.evidence ->> 'checked_at')::timestamptz - r.sent_at), r.id)
           WHEN 'unchecked' THEN
               format('the invoice could not be read (%s); check it at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      r.evidence -> 'failure' ->> 'message', r.id, r.id)
           WHEN 'inherited' THEN
               format('not checked: %s; nothing here reads its invoice: check it at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      r.evidence ->> 'why', r.id, r.id)
           ELSE
               format('ambiguous: %s; check the invoice at Billogram, then billogram_resolve(%s, ''mark_done'') or billogram_resolve(%s, ''mark_failed'')',
                      coalesce(r.evidence ->> 'why', 'the invoice does not show exactly this payment'), r.id, r.id)
       END AS advice
  FROM billogram_requests r
 WHERE r.state = 'in_doubt';

REVOKE ALL ON billogram_in_doubt FROM PUBLIC;

/*
 * Billogram's callbacks, verified and recorded from SQL.
 *
 * An application or a PostgREST endpoint that receives Billogram's POST
 * hands the Billogram-Request-Timestamp header, the Billogram-Signature
 * header and the raw body, as received, to billogram_record_callback(),
 * and answers Billogram {"status": "OK"} only if it returned.
 *
 * billogram_verify_callback(timestamp, signature, body) RETURNS boolean
 *   true when signature is HMAC-SHA256(the key in billogram.callback_sign_key_file,
 *   timestamp || ':' || body), in hex or base64 (Billogram does not say
 *   which), compared in constant time, and timestamp is within
 *   billogram.callback_max_age (5 minutes) of now.  Errors with 55000 when
 *   billogram.callback_sign_key_file is not set or cannot be used.
 *   Privileges: EXECUTE revoked from PUBLIC.
 *
 * billogram_events: one row per event Billogram told us of, keyed on its
 * event_uuid, so a callback Billogram repeats (it retries until answered)
 * is recorded once.  Only the event is kept, not the invoice the callback
 * carries with it, which holds the customer's personal data.
 *   Privileges: no access for PUBLIC; written by billogram_record_callback.
 *
 * billogram_record_callback(timestamp, signature, body) RETURNS text
 *   Verifies the callback (28000 when the signature or the timestamp is
 *   refused, nothing recorded), then records a BillogramEvent callback's
 *   event: 'recorded', or 'duplicate' for an event_uuid already there.  A
 *   new event makes the worker read its invoice again for the rows still
 *   being checked; a row whose verdict is final is not reopened.
 *   Other callback types are accepted and not recorded: 'ignored'.
 *   Privileges: EXECUTE revoked from PUBLIC; grant it to the role the
 *   receiving endpoint connects as.  SECURITY DEFINER, search_path pinned.
 */
CREATE FUNCTION billogram_verify_callback("timestamp" text, signature text, body text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'billogram_verify_callback'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_verify_callback(text, text, text) FROM PUBLIC;

CREATE TABLE billogram_events (
    event_uuid    text PRIMARY KEY,
    billogram_id  text,
    type          text,
    created_at    text,
    amount        numeric,
    event         jsonb NOT NULL,
    callback_id   text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    received_by   text NOT NULL
);

CREATE INDEX billogram_events_billogram_idx ON billogram_events (billogram_id, received_at);

COMMENT ON TABLE billogram_events IS
'Events Billogram reported through signed callbacks, once each';

REVOKE ALL ON billogram_events FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('billogram_events', '');

CREATE FUNCTION billogram_record_callback("timestamp" text, signature text, body text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cb jsonb;
    ev jsonb;
    n bigint;
BEGIN
    PERFORM billogram.billogram_assert_trusted();
    -- $1, $2, $3: timestamp, signature, body (timestamp is also a type name)
    IF NOT billogram.billogram_verify_callback($1, $2, $3) THEN
        RAISE EXCEPTION 'billogram callback refused: bad signature or stale timestamp'
            USING ERRCODE = 'invalid_authorization_specification',
                  DETAIL = 'Nothing was recorded.',
                  HINT = 'Pass the Billogram-Request-Timestamp and Billogram-Signature headers and the body exactly as received; check the key in billogram.callback_sign_key_file.';
    END IF;
    cb := $3::jsonb;
    IF cb ->> 'callback_type' IS DISTINCT FROM 'BillogramEvent' THEN
        RETURN 'ignored';
    END IF;
    ev := cb -> 'event';
    IF jsonb_typeof(ev) IS DISTINCT FROM 'object' OR ev ->> 'event_uuid' IS NULL THEN
        RAISE EXCEPTION 'billogram callback has no event with an event_uuid'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO billogram.billogram_events
           (event_uuid, billogram_id, type, created_at, amount, event, callback_id, received_by)
    VALUES (ev ->> 'event_uuid',
            coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id'),
            ev ->> 'type', ev ->> 'created_at',
            CASE WHEN jsonb_typeof(ev -> 'data' -> 'amount') = 'number'
                 THEN (ev -> 'data' ->> 'amount')::numeric END,
            ev, cb ->> 'callback_id', billogram.billogram_caller())
    ON CONFLICT (event_uuid) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 1 THEN
        -- new evidence: the worker reads the invoice again for its rows
        -- still being checked; a final verdict stays final
        UPDATE billogram.billogram_requests
           SET settle_at = now()
         WHERE billogram_id = coalesce(ev ->> 'billogram_id', cb -> 'billogram' ->> 'id')
           AND state = 'in_doubt' AND settle_at IS NOT NULL;
        IF FOUND THEN
            PERFORM billogram.billogram_wake_worker_at_commit();
        END IF;
    END IF;
    RETURN CASE WHEN n = 1 THEN 'recorded' ELSE 'duplicate' END;
END
$$;

REVOKE ALL ON FUNCTION billogram_record_callback(text, text, text) FROM PUBLIC;

/*
 * billogram_health: is the worker healthy?  One row: the worker's pid and
 * start time (NULL while none runs), transfers in flight and connections
 * open to the API, what became of the requests since it started (done,
 * failed, in_doubt, retried: back to pending to be tried again), transfers
 * finished, the p50 and p99 of the last 1024 transfers' times in ms, the
 * last error with its time, and paused_until: while Billogram has asked to
 * wait (429, 503), when sending may start again (then one request probes),
 * and refusal: while the worker refuses to serve the journal because
 * something of the extension is not what a superuser made (see
 * billogram_assert_trusted), what and why; NULL while it serves it.  The
 * counters start with each worker.
 * What to alert on is in the README.
 * Privileges: PUBLIC has none; pg_monitor, the role monitoring agents are
 * given, may read it (granted at the end of this script).  Nothing in it
 * moves money or shows personal data.
 */
CREATE FUNCTION billogram_worker_status(
    OUT pid integer, OUT started_at timestamptz,
    OUT in_flight integer, OUT connections integer,
    OUT done bigint, OUT failed bigint, OUT in_doubt bigint, OUT retried bigint,
    OUT transfers bigint, OUT latency_p50_ms float8, OUT latency_p99_ms float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT paused_until timestamptz,
    OUT refusal text)
RETURNS record
AS 'MODULE_PATHNAME', 'billogram_worker_status'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_worker_status() FROM PUBLIC;

CREATE VIEW billogram_health AS SELECT * FROM billogram_worker_status();

REVOKE ALL ON billogram_health FROM PUBLIC;

/*
 * billogram_metrics: counters for a dashboard, shaped for scraping.  One
 * row per metric and set of labels; value only grows (from zero at the
 * server's start, across restarts of the worker), so that Prometheus'
 * rate() and sum() apply, which billogram_health's percentiles and per-worker
 * counts do not.  Columns: metric, its Prometheus name; kind, outcome,
 * class, verdict, le, its labels (NULL where the metric has no such label);
 * value.  The metrics, each counted once, where the fact is decided:
 *   billogram_requests_total{kind, outcome}
 *       what became of each request.  kind: credit_payment and get_invoice
 *       (a synchronous call, counted when its caller is answered, sent or
 *       not), queued (billogram_enqueue_credit_payment, the trigger: each
 *       attempt, counted when its transfer is over), read (an invoice read
 *       before its next payment), snapshot (an in_doubt row's invoice read
 *       to settle it).  outcome: the journal's kinds (ok, api_error,
 *       bad_reply, no_reply, paused, invoice_busy, ...; README, "Errors").
 *   billogram_http_responses_total{class}
 *       HTTP exchanges with Billogram by status class: 2xx, 3xx, 4xx, 5xx,
 *       other, and none (no complete answer: a network error, a timeout).
 *   billogram_http_duration_seconds_bucket{le}, _sum, _count
 *       their times, a histogram with cumulative buckets (le from 0.005 to
 *       60 and +Inf; _count is the +Inf bucket and the sum of the classes).
 *   billogram_retries_total
 *       queued payments sent back to pending, to be tried again.
 *   billogram_pauses_total
 *       pauses begun because Billogram asked to wait (429, 503).
 *   billogram_in_doubt_created_total
 *       rows the worker made in_doubt (an outcome unknown, a row left
 *       'sending' by a worker that stopped, one caught in a copy 'sending'
 *       or still being settled where it was made).
 *   billogram_in_doubt_settled_total{verdict}
 *       in_doubt rows the worker's settlement gave a final verdict: applied
 *       (the row is done), not_applied, ambiguous, unchecked (left to an
 *       operator, billogram_in_doubt).
 * The journal's facts (retries, in_doubt rows) count when the transaction
 * that wrote them commits.  contrib/sql_exporter/billogram.collector.yml
 * scrapes this view.
 * Privileges: PUBLIC has none; pg_monitor may read the view and run its
 * function (granted at the end of this script).  Nothing in it moves money
 * or shows personal data.
 */
CREATE FUNCTION billogram_metric_values(
    OUT metric text, OUT kind text, OUT outcome text, OUT class text,
    OUT verdict text, OUT le text, OUT value float8)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'billogram_metric_values'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION billogram_metric_values() FROM PUBLIC;

CREATE VIEW billogram_metrics AS SELECT * FROM billogram_metric_values();

REVOKE ALL ON billogram_metrics FROM PUBLIC;

/*
 * billogram_purge(older_than) RETURNS bigint
 *
 * Deletes the finished rows, 'done' and 'failed' (an operator's resolution
 * of an in_doubt row ends in one of them), that finished longer ago than
 * older_than, and returns how many.  billogram_keys is left whole: a source
 * row or key that paid must never pay again, however old.  Rows that still matter are never
 * purged: 'pending' and 'sending' ones, and 'in_doubt' ones until an
 * operator resolves them.  To purge on a schedule, with pg_cron:
 *     SELECT cron.schedule('billogram-purge', '17 3 * * *',
 *                          $$SELECT billogram_purge('90 days')$$);
 * Privileges: EXECUTE revoked from PUBLIC; SECURITY DEFINER, so the grant
 * alone is enough; search_path pinned as for billogram_resolve().
 */
CREATE FUNCTION billogram_purge(older_than interval)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT billogram.billogram_assert_trusted();
    WITH gone AS (
        DELETE FROM billogram.billogram_requests
         WHERE state IN ('done', 'failed') AND finished_at < now() - older_than
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

REVOKE ALL ON FUNCTION billogram_purge(interval) FROM PUBLIC;

/*
 * billogram_invoice_summary(invoice) RETURNS jsonb
 *
 * What the journal keeps of an invoice under billogram.journal_reply =
 * 'summary': its id, number, state, currency, sums and updated_at, and of
 * each of its events the type, time, uuid and amount (data.amount).  Names,
 * addresses, e-mail, identity numbers and the PDF are left out.  Members
 * that are missing or JSON null are left out too; a member written twice
 * counts by its first occurrence.  It is the worker's own code (C, reading
 * the text of the reply without building a tree), so what it journals and
 * what this returns are the same by construction.  Also usable to shrink
 * rows journaled in full (as a superuser: billogram_journal_guard()):
 *     UPDATE billogram_requests SET response = billogram_invoice_summary(response);
 * Privileges: EXECUTE for PUBLIC: it reads nothing but its argument.
 */
CREATE FUNCTION billogram_invoice_summary(invoice jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'billogram_invoice_summary'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/*
 * billogram_journal_guard(): the extension's tables are written by its own
 * code only.
 *
 * A statement trigger before INSERT, UPDATE, DELETE and TRUNCATE on each of
 * the tables refuses (42501) every role below superuser, whatever it was
 * granted: pg_write_all_data, an explicit INSERT or UPDATE, a default
 * privilege.  A row of billogram_requests is a payment the worker sends,
 * and billogram_keys, billogram_ledger and billogram_events decide whether
 * one was made, so a direct write could pay, pay twice or pay as someone
 * else.  The extension's own writes pass: the worker runs as a superuser,
 * the SECURITY DEFINER functions as their owner, and the queueing functions
 * insert as the journal's owner, all of them superusers.  COPY FROM and a
 * data-only restore fire the same triggers, so a restore of the journal is
 * made by a superuser, as CREATE EXTENSION is.  What the worker sends is
 * checked again when it claims a row (an id of letters and digits, a body
 * made from the row's mode and amount), in case a superuser wrote it.
 * Privileges: EXECUTE revoked from PUBLIC; the triggers fire whatever EXECUTE
 * says, and without it nobody can attach the function elsewhere.
 */
CREATE FUNCTION billogram_journal_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'billogram_journal_guard'
LANGUAGE C;

REVOKE ALL ON FUNCTION billogram_journal_guard() FROM PUBLIC;

CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_requests
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_keys
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_events
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();
CREATE TRIGGER billogram_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON billogram_instance
    FOR EACH STATEMENT EXECUTE FUNCTION billogram_journal_guard();

/*
 * Privileges, whatever default privileges say.  ALTER DEFAULT PRIVILEGES
 * of the role running this script (for all schemas, or IN SCHEMA
 * billogram) adds its grants to every object made here, and the REVOKEs
 * above take PUBLIC's only.  So every grant on an object this script made,
 * to any role but its owner, is revoked here; the grants this file
 * documents are made after.  "Made by this script": the object became a
 * member of the extension in this transaction (its pg_depend row is of
 * this transaction: age 0), which is every member when the extension is
 * created and the new ones when it is updated, so the grants a DBA made on
 * objects that already existed stay.  billogram--0.2--0.3.sql ends the
 * same way.
 */
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT m.kind, m.name,
               CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
          FROM (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
                       format('%I.%I', 'billogram', c.relname) AS name, c.relowner AS owner,
                       coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                                     c.relowner)) AS acl
                  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
                   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
                   AND d.deptype = 'e' AND age(d.xmin) = 0
                UNION ALL
                SELECT 'FUNCTION', p.oid::regprocedure::text, p.proowner,
                       coalesce(p.proacl, acldefault('f', p.proowner))
                  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                 WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
                   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
                   AND d.deptype = 'e' AND age(d.xmin) = 0) m,
               aclexplode(m.acl) a
         WHERE a.grantee <> m.owner
    LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s CASCADE', g.kind, g.name, g.grantee);
    END LOOP;
END
$$;

/*
 * What is granted: USAGE on the schema to PUBLIC, which lets a role use
 * what it was granted in it and nothing more (each capability stays one
 * grant, on its object: see "Who may move money" above); EXECUTE on the
 * two pure functions to PUBLIC; the health and metrics views to pg_monitor.
 */
GRANT USAGE ON SCHEMA billogram TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_weigh(text, numeric, jsonb, jsonb, text[], boolean) TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_invoice_summary(jsonb) TO PUBLIC;
GRANT EXECUTE ON FUNCTION billogram_worker_status() TO pg_monitor;
GRANT SELECT ON billogram_health TO pg_monitor;
GRANT EXECUTE ON FUNCTION billogram_metric_values() TO pg_monitor;
GRANT SELECT ON billogram_metrics TO pg_monitor;
