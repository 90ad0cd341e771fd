#!/usr/bin/env bash
# PostgreSQL 17, as CI runs it from tests/run.sh: a Debian 13 (trixie) root
# built by mmdebstrap with postgresql-17 and the installer's list for 17,
# cached for the day under /var/cache/billogram-roots (a new day, or a fresh
# machine, builds it again: ~5 minutes), and in it, through chroot, this
# tree's build (-Werror, gcc 14) and the pg_regress suite against the mock
# (tests/run.sh --regress-only).  Prints pg_regress's closing line and
# "N passed, N failed"; a root that cannot be built is a failure, never a
# skip.  Needs root.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# shellcheck source=tests/rootfs.sh
. "$top/tests/rootfs.sh"

major=17
suite=trixie
fail() {
	echo "PostgreSQL $major: $*"
	echo "0 passed, 1 failed"
	exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root to build and enter the $suite root (mmdebstrap, mount, chroot)"

cache=${BG_ROOT_CACHE:-/var/cache/billogram-roots}
root=$cache/$suite-pg$major-$(date +%Y%m%d)
if [ ! -x "$root/usr/lib/postgresql/$major/bin/postgres" ]; then
	for old in "$cache/$suite-pg$major"-*; do
		[ -d "$old" ] && bg_root_remove "$old"
	done
	# shellcheck disable=SC2046
	bg_root_create "$suite" "$root" $(BG_PG_MAJOR=$major bg_dependencies | sed -e 's/#.*//' -e '/^[[:space:]]*$/d') ||
		fail "could not build the $suite root in $root"
else
	bg_log "using the $suite root of today: $root"
fi

trap 'bg_root_umount "$root"' EXIT
bg_root_mount "$root" || fail "could not mount /proc, /sys, /dev in $root"

# this tree as it is, without what builds and test runs left in it
rm -rf "$root/root/billogram"
mkdir -p "$root/root/billogram"
tar -C "$top" --exclude=./.git --exclude=./results --exclude=./tmp_check --exclude=./log \
	--exclude='*.o' --exclude='*.so' -cf - . | tar -C "$root/root/billogram" -xf - ||
	fail "could not copy the tree into the root"

out=$(mktemp /tmp/billogram-pg17.XXXXXX)
bg_root_run "$root" "cd /root/billogram && BG_PG_MAJOR=$major bash tests/run.sh --regress-only" \
	>"$out" 2>&1
rc=$?
grep -E '^(ok |not ok |# |pg_regress on|==> building)' "$out"
[ $rc = 0 ] || { grep -A200 -- '--- regression.diffs ---' "$out" | head -n 120; tail -n 20 "$out"; }
counts=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/&/p' "$out" | tail -n 1)
rm -f "$out"
[ -n "$counts" ] || fail "the run in the root printed no counts (exit $rc)"
echo "$counts"
[ $rc = 0 ]
