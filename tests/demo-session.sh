#!/usr/bin/env bash
# The demo proper, run by tests/demo.sh as an unprivileged user: starts the
# mock API and a throw-away cluster pointed at it, runs one psql session that
# registers credit payments and hits two errors, then stops and removes
# everything it made, also when something fails on the way.  Exits 0 only if
# the session showed the expected invoices and SQLSTATEs.
set -euo pipefail

BG_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BG_TOP
# shellcheck source=tests/lib.sh
. "$BG_TOP/tests/lib.sh"

bindir=$("$(bg_pg_config)" --bindir)
work=$(mktemp -d /tmp/billogram-demo.XXXXXX)
pgdata=$work/pgdata
sockdir=$work/sock
mkdir -p "$sockdir"

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -f "$pgdata/postmaster.pid" ]; then
		bg_log "stopping the cluster"
		"$bindir/pg_ctl" -D "$pgdata" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			"$bindir/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ -n "${MOCK_PID:-}" ]; then
		bg_log "stopping the mock API"
		bg_stop_mock || true
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
bg_exit_on_signals

BG_WHAT=demo
BG_SERVER_LOG=$work/server.log
fail() { bg_fail "$@"; }

bg_log "starting the mock Billogram API (HTTPS, throw-away CA)"
bg_start_mock "$work/mock"
[ -n "${MOCK_PORT:-}" ] || fail "the mock API did not start"

bg_log "creating a throw-away cluster in $pgdata"
bg_init_cluster "$pgdata" "$sockdir" "$work/initdb.log" || fail "initdb"
{
	echo
	echo "# billogram demo"
	bg_mock_config
} >>"$pgdata/postgresql.conf"

bg_log "starting it (shared_preload_libraries = 'billogram', API at https://localhost:$MOCK_PORT/api/v2)"
"$bindir/pg_ctl" -D "$pgdata" -l "$work/server.log" -w -t 60 start >/dev/null ||
	fail "the cluster did not start"

psql_base=("$bindir/psql" -X -h "$sockdir" -d postgres)

# The postmaster starts the worker once the cluster is up; wait for it so the
# first call does not meet "worker is not running".
for _ in $(seq 1 100); do
	n=$("${psql_base[@]}" -Atq -c \
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'billogram worker'" 2>/dev/null || echo 0)
	[ "$n" = 1 ] && break
	sleep 0.1
done
[ "$n" = 1 ] || fail "the billogram worker did not start"

bg_log "one psql session"
echo
# No ON_ERROR_STOP: errors are printed as psql prints them and the session
# goes on.  stderr joins stdout so that each error follows its query.
"${psql_base[@]}" 2>&1 <<'SQL' | tee "$work/psql.out"
\set ECHO queries
CREATE EXTENSION billogram;

\echo
\echo '-- mode amount: pay 250.00 on credit invoice 2kAEEjE (the mock starts every invoice at -1000.00)'
SELECT jsonb_pretty(jsonb_build_object('id', inv->'id',
                                       'remaining_sum', inv->'remaining_sum',
                                       'state', inv->'state')) AS invoice
  FROM billogram.billogram_credit_payment('2kAEEjE', 'amount', 250) AS inv;

\echo '-- the function returns the whole updated invoice (the reply''s "data") as jsonb'
\set QUIET on
\pset format unaligned
\set QUIET off
SELECT billogram.billogram_credit_payment('2kAEEjE', 'amount', 250);
\set QUIET on
\pset format aligned
\set QUIET off
\echo

\echo '-- mode remaining: pay out what is left'
SELECT jsonb_pretty(jsonb_build_object('id', inv->'id',
                                       'remaining_sum', inv->'remaining_sum',
                                       'state', inv->'state')) AS invoice
  FROM billogram.billogram_credit_payment('2kAEEjE', 'remaining') AS inv;

\echo '-- Billogram refuses: an unknown invoice (the mock answers 404)'
SELECT billogram.billogram_credit_payment('nf404demo', 'amount', 10);
\echo SQLSTATE: :LAST_ERROR_SQLSTATE

\echo
\echo '-- bad input is refused before anything is sent'
SELECT billogram.billogram_credit_payment('2kAEEjE', 'amount', 10.001);
\echo SQLSTATE: :LAST_ERROR_SQLSTATE

\echo
\echo '-- the trigger option: each committed insert is queued, then sent by the worker'
CREATE TABLE payouts (id serial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2),
                      mode text NOT NULL DEFAULT 'amount');
CREATE TRIGGER register_payout AFTER INSERT ON payouts FOR EACH ROW
    EXECUTE FUNCTION billogram.billogram_payment_trigger('invoice', 'amount', 'mode');
INSERT INTO payouts (invoice, amount, mode) VALUES ('7xQpRt2', 120.50, 'amount'), ('9LmNo3k', NULL, 'remaining');
\echo '-- a missing amount is refused, never paid out as the remaining sum'
INSERT INTO payouts (invoice, amount) VALUES ('7xQpRt2', NULL);
\echo SQLSTATE: :LAST_ERROR_SQLSTATE
DO $$ BEGIN
    WHILE EXISTS (SELECT 1 FROM billogram.billogram_requests WHERE state IN ('pending', 'sending')) LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

\echo
\echo '-- every request, synchronous or queued, is in the journal'
SELECT id, origin, billogram_id, mode, amount, state, http_status,
       response->'remaining_sum' AS remaining, error->>'sqlstate' AS sqlstate
  FROM billogram.billogram_requests ORDER BY id;
SQL
echo

bg_log "what the mock API received"
/usr/bin/python3 "$BG_TOP/tests/mock/mockctl" "$MOCK_CTL_PORT" requests >"$work/requests.json" ||
	fail "could not read the mock's request record"
/usr/bin/python3 - "$work/requests.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print("   %s %s %s" % (r["method"], r["path"], r["body"]))
PY

out=$work/psql.out
grep -q '"remaining_sum"' "$out" || fail "no invoice in the psql output"
grep -q '"state": "Paid"' "$out" || fail "mode remaining did not pay the invoice"
grep -qx 'SQLSTATE: BG404' "$out" || fail "no BG404 error in the psql output"
grep -qx 'SQLSTATE: 22023' "$out" || fail "no 22023 error in the psql output"
bg_log "demo OK: payments registered, errors reported with their SQLSTATEs"
