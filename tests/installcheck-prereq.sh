#!/usr/bin/env bash
# Run by `make installcheck` before pg_regress (PGXS's REGRESS_PREP): checks
# that the running server it is about to test was configured as
# docs/installcheck.md says, so that a server without the mock fails here at
# once with the reason instead of in seven diffs and timeouts.  $1 is psql;
# the server is found the way pg_regress finds it (PGHOST, PGPORT, PGUSER).
set -uo pipefail

psql=${1:-psql}
doc="see docs/installcheck.md"
fail() {
	echo "make installcheck: $*" >&2
	echo "make installcheck: the server is not configured for these tests; $doc" >&2
	exit 1
}

q() {
	PGCONNECT_TIMEOUT=10 "$psql" -X -A -t -q -v ON_ERROR_STOP=1 -d postgres -c "$1" 2>&1
}

out=$(q "SELECT 1") || fail "cannot connect to the server: $out"
[ "$(q "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")" = t ] ||
	fail "the tests create the extension and read the mock through COPY FROM PROGRAM: connect as a superuser"
case ",$(q "SHOW shared_preload_libraries" | tr -d ' ')," in
*,billogram,*) ;;
*) fail "billogram is not in shared_preload_libraries" ;;
esac
db=$(q "SELECT current_setting('billogram.database', true)")
[ "$db" = contrib_regression ] ||
	fail "billogram.database is '$db': the worker must journal in contrib_regression, the database pg_regress creates"
user=$(q "SELECT current_setting('billogram.api_user', true)")
[ "$user" = demo-user ] ||
	fail "billogram.api_user is '$user': the expected output was made with the mock's demo-user"
ctl=$(q "SELECT current_setting('mock.ctl', true)")
[ -n "$ctl" ] || fail "mock.ctl is not set: the tests read what the mock received through it"
# The server runs mock.ctl, so ask the mock through the server, bounded in
# time: a mock that is not listening must not hang the run
# (COPY's program must be a literal, hence EXECUTE).
health=$(q "DO \$\$ BEGIN
	CREATE TEMP TABLE h (l text);
	EXECUTE format('COPY h FROM PROGRAM %L',
				   'timeout 10 ' || current_setting('mock.ctl') || ' health');
END \$\$;
SELECT string_agg(l, ' ') FROM h")
[ "$health" = ok ] || fail "the mock does not answer through mock.ctl ('$ctl'): $health"
echo "make installcheck: server configured for the tests (billogram preloaded, mock answering)"
