#!/usr/bin/env bash
# Runs every test of the extension: pg_regress for the SQL surface and the
# TAP tests, against real PostgreSQL servers and the bundled mock Billogram
# API over HTTPS; then the fuzzer over the reply classifier (20 s) and the
# benchmark's smoke run (it must run and print; no time threshold).
# Installs missing Debian packages, builds and installs the extension, and
# runs the servers as an unprivileged user when started as root.  This is
# what `make test` and CI run.  The last line is "N passed, N failed".
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

start=$(date +%s)
out=$(mktemp /tmp/billogram-test.XXXXXX)
trap 'rm -f "$out"' EXIT

bg_install_dependencies
bg_build_and_install "$top"

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

rc=0
BG_COPY_BACK="results regression.diffs log tmp_check/tap/tmp_check/log" \
	bg_run_unprivileged "$top" tests/suite.sh 2>&1 | tee "$out" || true
read -r s_pass s_fail < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
passed=$((passed + ${s_pass:-0}))
failed=$((failed + ${s_fail:-1}))

step "fuzz" bash "$top/tests/fuzz/run.sh" 20
if [ -f "$top/bench/run.sh" ]; then
	step "bench smoke" bash "$top/bench/run.sh" --smoke
fi

echo "whole test run: $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
