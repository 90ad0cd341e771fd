#!/usr/bin/env bash
# A PostgreSQL major other than the host's, as CI runs it from tests/run.sh:
#
#   tests/pg_root.sh 17 trixie    PostgreSQL 17 on Debian 13
#   tests/pg_root.sh 18 forky     PostgreSQL 18 on Debian testing
#
# A Debian root of SUITE built by mmdebstrap (tests/rootfs.sh) with
# postgresql-MAJOR and the installer's list for MAJOR, cached for the day
# under $BG_ROOT_CACHE (/var/cache/billogram-roots; a new day, or a fresh
# machine, builds it again), and in it, through chroot, this tree's build
# (-Werror, the suite's gcc), the whole pg_regress suite and the TAP tests
# below (tests/run.sh --only), against the mock.  Prints pg_regress's and
# prove's closing lines and "N passed, N failed"; a root that cannot be
# built is a failure, never a skip.  Needs root.
#
# The TAP tests are those that exercise code written differently for some
# major (the PG_VERSION_NUM checks in src/), beyond what pg_regress reaches:
#   001_worker       the worker's wait set (http_events.c) and its journal
#                    lookups keyed by local transaction id (journal.c),
#                    through crash restarts
#   005_queue        billogram_payment_trigger: the owner's EXECUTE check
#                    (enqueue.c) and the source row's primary key
#                    (source_row.c), through faults and pg_dump
#   016_settle       billogram_verify_callback on the mock's signed
#                    callbacks, hex and base64 (callback.c)
#   017_source_rows  the payment key by partition root and primary key
#                    (source_row.c) through partition moves and pg_restore
#   014_pause        payments right after the server closed the pooled
#                    connections: libcurl 8.22 (forky) no longer checks a
#                    connection used within the last second before reusing
#                    it, and the worker's own check (http_events.c) must
#                    keep those payments out of doubt
#   025_wait_events  the worker's and the callers' wait events, named from
#                    17 on (wait_event.c)
#   027_plans        the plans of the worker's statements and functions over
#                    a journal with history: each major's planner chooses
#                    its own, and one that walks the journal on 18 is as
#                    slow as on 15
# and, for all of them, the TAP set-up that differs from 17 on
# (TESTDATADIR, tests/suite.sh).  BG_ROOT_TAP='tests/t/*.pl' runs every TAP
# test instead, as when a new major is first tried.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# shellcheck source=tests/rootfs.sh
. "$top/tests/rootfs.sh"

tap_tests=${BG_ROOT_TAP:-tests/t/001_worker.pl tests/t/005_queue.pl tests/t/014_pause.pl tests/t/016_settle.pl tests/t/017_source_rows.pl tests/t/025_wait_events.pl tests/t/027_plans.pl}

major=${1:-}
suite=${2:-}
fail() {
	echo "PostgreSQL $major ($suite): $*"
	echo "0 passed, 1 failed"
	exit 1
}
if ! [[ $major =~ ^[0-9]+$ ]] || [ -z "$suite" ]; then
	fail "usage: tests/pg_root.sh MAJOR SUITE (as: tests/pg_root.sh 18 forky)"
fi
[ "$(id -u)" = 0 ] || fail "needs root to build and enter the $suite root (mmdebstrap, mount, chroot)"

bg_root_lock 9 "$suite-pg$major" || fail "cannot lock the $suite root"

start=$(date +%s)
# shellcheck disable=SC2046
root=$(bg_root_of_today "$suite-pg$major" "$suite" \
	$(BG_PG_MAJOR=$major bg_dependencies | sed -e 's/#.*//' -e '/^[[:space:]]*$/d')) ||
	fail "could not build the $suite root"

trap 'bg_root_umount "$root"' EXIT
bg_root_mount "$root" || fail "could not mount /proc, /sys, /dev in $root"

# this tree as it is, without what builds and test runs left in it
rm -rf "$root/root/billogram"
mkdir -p "$root/root/billogram"
tar -C "$top" --exclude=./.git --exclude=./results --exclude=./tmp_check --exclude=./log \
	--exclude='*.o' --exclude='*.so' -cf - . | tar -C "$root/root/billogram" -xf - ||
	fail "could not copy the tree into the root"

out=$(mktemp "/tmp/billogram-pg$major.XXXXXX")
# (9>&-: the servers in the root do not inherit the lock on it)
bg_root_run "$root" "cd /root/billogram && BG_PG_MAJOR=$major bash tests/run.sh --only '$tap_tests'" \
	>"$out" 2>&1 9>&-
rc=$?
# the build, pg_regress's lines and closing line, prove's per-test lines
# and summary, the suite's own checks; after a failure, all the suite
# printed (the diffs, the end of prove's output)
if [ $rc = 0 ]; then
	grep -E '^(ok |not ok |# |==> building|tests/t/|Files=|Result:|pg_regress: |processes left)' "$out"
else
	cat "$out"
fi
counts=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/&/p' "$out" | tail -n 1)
rm -f "$out"
echo "PostgreSQL $major ($suite): $(( $(date +%s) - start )) s in all"
[ -n "$counts" ] || fail "the run in the root printed no counts (exit $rc)"
echo "$counts"
[ $rc = 0 ]
