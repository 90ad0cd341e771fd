#!/usr/bin/env bash
# The test suite proper, run by tests/run.sh as an unprivileged user: starts
# the mock API, runs pg_regress on a temporary instance configured for it,
# then the TAP tests (each starts its own clusters and mock), and prints one
# closing line of counts.
set -uo pipefail

BG_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BG_TOP
# shellcheck source=tests/lib.sh
. "$BG_TOP/tests/lib.sh"
cd "$BG_TOP"

# Every server and client, pg_regress and the TAP modules come from the
# private installation tests/run.sh made (tests/tmp_install.sh).
bindir=$("$(bg_server_pg_config)" --bindir)
pgxs=$(dirname "$(dirname "$(dirname "$("$(bg_server_pg_config)" --pgxs)")")")
export PATH="$bindir:$PATH"

work=$(mktemp -d /tmp/billogram-suite.XXXXXX)
trap 'bg_stop_mock; "$bindir/pg_ctl" -D "$work/installed/data" -m immediate stop >/dev/null 2>&1; rm -rf "$work"' EXIT

# ---- sanitizer run (BG_SANITIZE=1: the installed extension is SANITIZE=1) ----
# Every process of the suite gets the ASan runtime preloaded, as a sanitized
# module requires of the program that loads it; findings are fatal and are
# written to $sanitizer_reports, which must stay empty.  Leak detection is
# off: PostgreSQL frees by resetting memory contexts and at exit.
sanitizer_reports=
if [ "${BG_SANITIZE:-0}" = 1 ]; then
	san=$work/sanitize
	sanitizer_reports=$san/reports
	mkdir -p "$sanitizer_reports"
	gcc -shared -fPIC -O1 -o "$san/libswift_demangle_stub.so" tests/sanitize/swift_demangle_stub.c &&
		# shellcheck disable=SC2046
		gcc -shared -fPIC -g -O0 $(make -s sanitize-flags PG_CONFIG="$(bg_pg_config)") \
			-I"$("$(bg_pg_config)" --includedir-server)" \
			-o "$san/canary.so" tests/sanitize/canary.c ||
		{ echo "building the sanitizer helpers failed"; echo "0 passed, 1 failed"; exit 1; }
	export BG_CANARY=$san/canary.so
	export LD_PRELOAD="$(readlink -f "$(gcc -print-file-name=libasan.so)") $san/libswift_demangle_stub.so"
	export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$sanitizer_reports/asan"
	export UBSAN_OPTIONS="print_stacktrace=1:abort_on_error=1:log_path=$sanitizer_reports/ubsan"
	echo "sanitizer run: LD_PRELOAD=$LD_PRELOAD"
fi

# ---- the private installation ----
# A server started from it loads its billogram.so, not the host's.
i_fail=0
bg_tmp_install_serves "$work/installed" || i_fail=1

# ---- pg_regress ----
bg_start_mock "$work/mock"
{
	bg_mock_config
	# the worker journals in the regression database, created by pg_regress
	echo "billogram.database = 'contrib_regression'"
	echo "mock.ctl = '/usr/bin/python3 $BG_TOP/tests/mock/mockctl http://127.0.0.1:$MOCK_CTL_PORT'"
} > "$work/regress.conf"

tests=$(sed -n 's/^REGRESS = //p' Makefile)

rm -rf results regression.diffs regression.out tmp_check
mkdir -p tmp_check
"$pgxs/src/test/regress/pg_regress" \
	--temp-instance=tmp_check/regress --temp-config="$work/regress.conf" \
	--bindir="$bindir" --inputdir=. --dbname=contrib_regression \
	$tests 2>&1 | tee "$work/regress.out"
regress_rc=${PIPESTATUS[0]}
bg_stop_mock
[ $regress_rc = 0 ] || { echo "--- regression.diffs ---"; cat regression.diffs 2>/dev/null | head -200; }
r_fail=$(grep -cE '^(not ok|test .* \.\.\. FAILED| .* \.\.\. FAILED)' "$work/regress.out" || true)
r_pass=$(grep -cE '\.\.\. ok|^ok ' "$work/regress.out" || true)

# BG_REGRESS_ONLY=1 (tests/run.sh --regress-only): pg_regress alone
if [ "${BG_REGRESS_ONLY:-0}" = 1 ]; then
	failed=$r_fail
	[ $regress_rc = 0 ] || [ $r_fail -gt 0 ] || failed=$((failed + 1))
	echo "pg_regress on PostgreSQL $BG_PG_MAJOR: $r_pass passed, $failed failed"
	failed=$((failed + i_fail))
	echo "$((r_pass + 1 - i_fail)) passed, $failed failed"
	[ $failed = 0 ]
	exit
fi

# ---- TAP ----
export PERL5LIB="$pgxs/src/test/perl:$BG_TOP/tests/t"
export PG_REGRESS="$pgxs/src/test/regress/pg_regress"
export TESTDIR="$BG_TOP/tmp_check/tap"
# Where the TAP clusters and logs go: from TESTDIR up to 15, from these two
# from 17 on (without them 17 uses a relative tmp_check, and the servers,
# whose working directory is their data directory, cannot find the mock's
# CA file there).  The same place either way.
export TESTDATADIR="$TESTDIR/tmp_check"
export TESTLOGDIR="$TESTDIR/tmp_check/log"
mkdir -p "$TESTDIR"
prove_rc=0
# BG_TAP_TESTS (tests/run.sh --only): just those
# shellcheck disable=SC2086
prove -v ${BG_TAP_TESTS:-tests/t/*.pl} > "$work/prove.out" 2>&1 || prove_rc=$?
# the per-test lines and prove's own summary
grep -E '^(tests/t/|All tests|Files=|Result:|not ok|#   Failed)' "$work/prove.out"
[ $prove_rc = 0 ] || tail -n 60 "$work/prove.out"
t_pass=$(grep -cE '^ok ' "$work/prove.out" || true)
t_fail=$(grep -cE '^not ok ' "$work/prove.out" || true)

passed=$((r_pass + t_pass + 1 - i_fail))
failed=$((r_fail + t_fail + i_fail))

# ---- nothing left running ----
# Every TAP test stops the servers and mocks it started, also when it
# fails: a mock API or postmaster of this tree still running now is a
# defect (matched by this tree's path, so another run on the machine is
# not counted).  Given a moment: a process told to stop may still be exiting.
left=
for _ in $(seq 1 50); do
	left=$(pgrep -af -- "$BG_TOP/(tests/mock/|tmp_check/)" || true)
	[ -z "$left" ] && break
	sleep 0.1
done
if [ -z "$left" ]; then
	echo "processes left running by the TAP tests: none"
	passed=$((passed + 1))
else
	echo "processes left running by the TAP tests:"
	echo "$left"
	failed=$((failed + 1))
fi
[ $regress_rc = 0 ] || [ $r_fail -gt 0 ] || failed=$((failed + 1))
[ $prove_rc = 0 ] || [ $t_fail -gt 0 ] || failed=$((failed + 1))
echo "pg_regress: $r_pass passed, $r_fail failed; TAP: $t_pass passed, $t_fail failed"

# ---- sanitizer findings, anywhere in the run ----
# ASan's reports are files in $sanitizer_reports; UBSan's go to stderr, so
# to the server logs (008_sanitizer's own are its deliberate faults).
if [ -n "$sanitizer_reports" ]; then
	found=$( {
		find "$sanitizer_reports" -type f
		grep -lE 'runtime error:|ERROR: AddressSanitizer' \
			log/postmaster.log tmp_check/tap/tmp_check/log/*.log 2>/dev/null |
			grep -v '/008_sanitizer'
	} | sort)
	if [ -z "$found" ]; then
		echo "sanitizer findings: none"
		passed=$((passed + 1))
	else
		echo "sanitizer findings in: $found"
		for f in $found; do
			echo "--- $f"
			grep -E -A30 'runtime error:|ERROR: AddressSanitizer' "$f" | head -n 60
		done
		failed=$((failed + 1))
	fi
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
