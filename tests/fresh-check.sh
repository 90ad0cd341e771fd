#!/usr/bin/env bash
# The fresh-machine rehearsal behind `make fresh-check` (not part of make
# test): builds a minimal Debian root with mmdebstrap holding only
# postgresql-NN, git, make, sudo and ca-certificates, clones this
# repository's HEAD into it, and runs the README's two commands there as
# root in a chroot, as a new user would on a new machine: `make demo`, then
# `make test`.  Both must install whatever else they need themselves.
#
#   tests/fresh-check.sh                  Debian 12 (bookworm), PostgreSQL 15
#   tests/fresh-check.sh trixie 17        Debian 13, PostgreSQL 17
#   make fresh-check SUITE=trixie PG=17   the same through make
#
# Commits only: uncommitted changes are not in the clone.  The root lives
# under /var/tmp/billogram-fresh and is removed at the end (KEEP=1 keeps it,
# unmounted, for a look); the full output of each command is kept beside it
# in logs-SUITE/.  Prints the last lines of each command's output and closes
# with "N passed, N failed" (one count per command).  Needs root.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# shellcheck source=tests/rootfs.sh
. "$top/tests/rootfs.sh"

suite=${1:-${SUITE:-bookworm}}
default_pg=$(bg_suite_pg_major "$suite")
pg=${2:-${PG:-$default_pg}}
[ -n "$pg" ] || { echo "fresh-check: say the PostgreSQL major for $suite (PG=NN)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root (mmdebstrap, mount, chroot)" >&2; exit 2; }

base=/var/tmp/billogram-fresh
root=$base/$suite-pg$pg.$$
logs=$base/logs-$suite-pg$pg
mkdir -p "$base" "$logs"

cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		bg_root_umount "$root" && echo "root kept in $root"
	else
		bg_root_remove "$root"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
if ! git -C "$top" diff --quiet HEAD 2>/dev/null; then
	bg_log "uncommitted changes are not part of the rehearsal: it clones HEAD $(git -C "$top" rev-parse --short HEAD)"
fi

passed=0
failed=0
if ! bg_root_create "$suite" "$root" "postgresql-$pg" git make sudo ca-certificates; then
	echo "fresh-check: could not build the $suite root"
	echo "0 passed, 1 failed"
	exit 1
fi
bg_log "root built in $(( $(date +%s) - start )) s"
bg_root_mount "$root" || { echo "0 passed, 1 failed"; exit 1; }

# A clone of HEAD, made inside the root by its own git from a bundle, as
# `git clone` would make it on that machine.
git -C "$top" bundle create "$root/tmp/billogram.bundle" HEAD 2>/dev/null &&
	bg_root_run "$root" "git -c advice.detachedHead=false clone -q /tmp/billogram.bundle /root/billogram" ||
	{ echo "fresh-check: could not clone HEAD into the root"; echo "0 passed, 1 failed"; exit 1; }

# The README's commands, in order; PostgreSQL's major is the one installed.
for cmd in "make demo" "make test"; do
	log=$logs/${cmd#make }.log
	bg_log "$suite: $cmd (full output in $log)"
	t0=$(date +%s)
	rc=0
	bg_root_run "$root" "cd /root/billogram && $cmd" >"$log" 2>&1 || rc=$?
	echo "--- $cmd: exit $rc after $(( $(date +%s) - t0 )) s; its last lines:"
	tail -n 12 "$log"
	if [ $rc = 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done

echo "fresh-check on $suite with PostgreSQL $pg from a clone of $(git -C "$top" rev-parse --short HEAD): $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[ $failed = 0 ]
