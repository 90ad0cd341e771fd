#!/usr/bin/env bash
# `make installcheck` as docs/installcheck.md describes it, run by
# tests/run.sh as the unprivileged user with the extension installed in its
# private PostgreSQL installation (tests/tmp_install.sh), whose programs and
# PGXS are used throughout: the mock started by hand, a server configured
# and started like an administrator's (Unix socket only), then PGXS's make
# installcheck against it.  Then the refusals: a session without mock.ctl, and a mock that is
# gone, must each stop the run at once with its reason.  Prints "ok"/"not
# ok" lines and a closing count.
set -uo pipefail

BG_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BG_TOP
# shellcheck source=tests/lib.sh
. "$BG_TOP/tests/lib.sh"
cd "$BG_TOP" || exit 1

pg_config=$(bg_server_pg_config)
bindir=$("$pg_config" --bindir)
work=$(mktemp -d /tmp/billogram-installcheck.XXXXXX)
pgdata=$work/data
BG_SERVER_LOG=$work/server.log
cleanup() {
	[ -f "$pgdata/postmaster.pid" ] && "$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1
	bg_stop_mock
	rm -rf "$work"
}
trap cleanup EXIT
bg_exit_on_signals

passed=0
failed=0

# 1. the mock, 2. the server's settings, as the document says
bg_start_mock "$work/mock"
bg_init_cluster "$pgdata" "$work" "$work/initdb.log" || { echo "0 passed, 1 failed"; exit 1; }
{
	bg_mock_config
	echo "billogram.database = 'contrib_regression'"
	echo "mock.ctl = '/usr/bin/python3 $BG_TOP/tests/mock/mockctl http://127.0.0.1:$MOCK_CTL_PORT'"
} >>"$pgdata/postgresql.conf"
"$bindir/pg_ctl" -D "$pgdata" -l "$BG_SERVER_LOG" -w start >/dev/null ||
	{ tail -n 20 "$BG_SERVER_LOG"; echo "0 passed, 1 failed"; exit 1; }
PGUSER=$(id -un)
export PGHOST=$work PGPORT=5432 PGUSER
if bg_tmp_install_loaded "$pgdata"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

# 3. PGXS's target; its per-test and closing lines shown (pg_regress
# writes them as "test x ... ok" and " All N tests passed." up to 15, in
# TAP form from 16 on), its diffs on failure
rc=0
make -s installcheck PG_CONFIG="$pg_config" >"$work/installcheck.out" 2>&1 || rc=$?
grep -E '^(make installcheck:|ok |not ok |# |test | *All | *[0-9]+ of [0-9]+ tests)' "$work/installcheck.out"
[ $rc = 0 ] || head -n 80 regression.diffs 2>/dev/null
bg_check $rc "make installcheck against a server configured as docs/installcheck.md says"

# A session that lacks mock.ctl: refused before pg_regress, with the reason
t0=$(date +%s)
out=$(PGOPTIONS='-c mock.ctl=' make -s installcheck PG_CONFIG="$pg_config" 2>&1)
rc=$?
echo "$out" | grep '^make installcheck:' | sed 's/^/    /'
[ $rc != 0 ] && echo "$out" | grep -q 'mock.ctl is not set' &&
	! echo "$out" | grep -q 'test setup'
bg_check $? "without mock.ctl: refused before any test, saying so ($(( $(date +%s) - t0 )) s)"

# The mock gone: refused within the 10 s bound, not hanging
bg_stop_mock
t0=$(date +%s)
out=$(make -s installcheck PG_CONFIG="$pg_config" 2>&1)
rc=$?
secs=$(( $(date +%s) - t0 ))
echo "$out" | grep '^make installcheck:' | sed 's/^/    /'
[ $rc != 0 ] && echo "$out" | grep -q 'the mock does not answer' && [ $secs -le 15 ]
bg_check $? "with the mock gone: refused within 15 s, saying so (${secs} s)"

echo "installcheck: $passed passed, $failed failed"
[ $failed = 0 ]
