#!/usr/bin/env bash
# Runs every test of the extension: the package and packaging checks, the
# unit tests of the JSON scanner and invoice summary (plain C, with ASan and
# UBSan) and the mock Billogram API's self-test; pg_regress for the SQL
# surface and the TAP tests, against real PostgreSQL servers and that mock
# over HTTPS, twice: first with the extension built with AddressSanitizer
# and UndefinedBehaviorSanitizer, then built as it ships.  Then make
# installcheck against a server configured by hand, the build, pg_regress
# and the TAP tests of version-dependent code on PostgreSQL 17 in a Debian
# 13 root and on 18 in a Debian testing root (tests/pg_root.sh), the
# Debian package built, installed with apt into a fresh Debian 12 root and
# its autopkgtest run there (tests/deb.sh), the
# fuzzers over the JSON scanner and the reply classifier (20 s) and the
# benchmark's smoke run (it must run and print; no time threshold).  With
# --sanitize-only, just the sanitizer run; --regress-only and --only below.
# Installs missing Debian packages, builds the extension and installs each
# build into a private copy of the server's installation, which every
# server of the run is started from (tests/tmp_install.sh): nothing of the
# host's PostgreSQL is written, and the last check compares its bindir,
# pkglibdir and sharedir with a listing made before the first build.  Runs
# the servers as an unprivileged user when started as root.  This is what
# `make test` and CI run.  The last line is "N passed, N failed".
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

start=$(date +%s)
out=$(mktemp /tmp/billogram-test.XXXXXX)
host_listing=$(mktemp /tmp/billogram-host.XXXXXX)
# the private installations, one per build
installs=$(mktemp -d /tmp/billogram-install.XXXXXX)
trap 'rm -rf "$out" "$host_listing" "$installs"' EXIT

# --regress-only: build and pg_regress alone, with the extension as it
# ships.
# --only 'tests/t/016_settle.pl ...': build as it ships, then pg_regress and
# just the TAP tests named (a developer's quick loop, and what
# tests/pg_root.sh runs inside its Debian root; CI runs everything here);
# with --sanitize-only as well, the same with the sanitizer build.
sanitize_only=0
regress_only=0
only_tap=
while [ $# -gt 0 ]; do
	case $1 in
	--sanitize-only) sanitize_only=1 ;;
	--regress-only) regress_only=1 ;;
	--only)
		only_tap=${2:?--only needs the TAP tests to run}
		shift
		;;
	*)
		echo "usage: $0 [--sanitize-only] [--regress-only | --only 'tests/t/A.pl ...']" >&2
		exit 2
		;;
	esac
	shift
done

bg_install_dependencies

passed=0
failed=0
step() {
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAILED: $name"
	fi
}

# Run a command that ends by printing "N passed, N failed"; its counts join
# ours, and one that printed none counts as a failure.
counted() {
	local name=$1 c_pass c_fail
	shift
	"$@" 2>&1 | tee "$out" || true
	read -r c_pass c_fail < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
	passed=$((passed + ${c_pass:-0}))
	failed=$((failed + ${c_fail:-1}))
	[ -n "${c_fail:-}" ] || echo "FAILED: $name (no counts)"
}

# The host's PostgreSQL as it is before anything is built, to compare with
# at the end; the comparison first shown able to see a change.
step "the host check's comparison" bg_listing_selftest
bg_host_pg_listing >"$host_listing"

# Objects of one build flavour must not end up linked into the other; make
# clean would also remove the logs the last suite copied back.
remove_objects() {
	rm -f "$top"/src/*.o "$top/billogram.so"
}

# The last check of every run: the host's PostgreSQL byte for byte as it
# was; then the closing counts.
finish() {
	# the sanitized objects must not be what the next `make install` installs
	[ $sanitize_only = 0 ] || remove_objects
	step "the host's PostgreSQL unchanged" bg_host_pg_unchanged "$host_listing"
	echo "whole test run: $(( $(date +%s) - start )) s"
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit
}

# A fresh private installation $installs/$1 for the build that follows; the
# servers of the tests, installcheck and the bench smoke run from it.
use_tmp_install() {
	export BG_PG_INSTALL=$installs/$1
	bg_tmp_install_create "$BG_PG_INSTALL"
}

if [ $regress_only = 1 ]; then
	remove_objects
	use_tmp_install plain
	bg_build_and_install "$top" SANITIZE=0
	BG_REGRESS_ONLY=1 BG_COPY_BACK="results regression.diffs" \
		counted "pg_regress" bg_run_unprivileged "$top" tests/suite.sh
	finish
fi

if [ -n "$only_tap" ]; then
	remove_objects
	if [ $sanitize_only = 1 ]; then
		use_tmp_install sanitize
	else
		use_tmp_install plain
	fi
	bg_build_and_install "$top" SANITIZE=$sanitize_only
	BG_SANITIZE=$sanitize_only BG_TAP_TESTS="$only_tap" \
		BG_COPY_BACK="results regression.diffs log tmp_check/tap/tmp_check/log" \
		counted "the suite" bg_run_unprivileged "$top" tests/suite.sh
	finish
fi

step "package list" bash "$top/tests/packages.sh"
step "packaging files" bash "$top/tests/packaging.sh"

# the JSON scanner and the invoice summary, plain C with the sanitizers
bg_log "unit tests: src/json_validate.c, src/json_span.c and src/invoice.c"
counted "unit tests" bash "$top/tests/unit/run.sh"

# the mock Billogram API the suites run against: its faults, events and
# signed callbacks behave as tests/mock/README.md says
bg_log "the mock Billogram API's self-test"
counted "mock self-test" bash "$top/tests/mock/selftest.sh"

# The suite as the unprivileged user, with the extension built with make
# flags "$2..." and installed into the private installation $1; adds its
# closing counts to ours.
run_suite() {
	remove_objects
	use_tmp_install "$1"
	shift
	bg_build_and_install "$top" "$@"
	BG_COPY_BACK="results regression.diffs log tmp_check/tap/tmp_check/log" \
		counted "the suite ($*)" bg_run_unprivileged "$top" tests/suite.sh
}

# Sanitized first, so that the plain build's installation is the one the
# steps after the suites use.
bg_log "the suite with the extension built with SANITIZE=1 (ASan + UBSan)"
BG_SANITIZE=1 run_suite sanitize SANITIZE=1
if [ $sanitize_only = 1 ]; then
	finish
fi
bg_log "the suite with the extension built as it ships"
BG_SANITIZE=0 run_suite plain SANITIZE=0

# PGXS's make installcheck against a server set up as docs/installcheck.md
# says, all from the plain build's private installation
bg_log "make installcheck against a server configured by hand"
step "installcheck" bg_run_unprivileged "$top" tests/installcheck.sh

# PostgreSQL 17 and 18: the build, pg_regress and the TAP tests of
# version-dependent code, each in a Debian root of its own (mmdebstrap,
# cached for the day); their counts join ours.  Needs root: a run without
# it, or a root that cannot be built, fails these steps rather than
# skipping them.
bg_log "PostgreSQL 17 in a Debian 13 root: build, pg_regress, TAP"
counted "PostgreSQL 17" bash "$top/tests/pg_root.sh" 17 trixie
bg_log "PostgreSQL 18 in a Debian testing root: build, pg_regress, TAP"
counted "PostgreSQL 18" bash "$top/tests/pg_root.sh" 18 forky

# The Debian package: postgresql-15-billogram built by dpkg-buildpackage in a
# Debian 12 root, installed with apt-get into a fresh root that has only
# postgresql-15, and its autopkgtest (make installcheck) run there against
# it (tests/deb.sh; roots cached for the day, the install root copied fresh
# each run).  Needs root, as the steps above; its counts join ours.
bg_log "the Debian package: built, installed with apt into a fresh Debian 12 root, installcheck"
counted "Debian package" bash "$top/tests/deb.sh" test

step "fuzz" bash "$top/tests/fuzz/run.sh" 20
if [ -f "$top/bench/run.sh" ]; then
	# (installs into the plain build's private installation, BG_PG_INSTALL)
	step "bench smoke" bash "$top/bench/run.sh" --smoke
fi

finish
