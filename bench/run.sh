#!/usr/bin/env bash
# The benchmark behind `make bench`: installs what is missing (the test
# dependencies plus nginx, its echo module, wrk and strace), builds and
# installs the extension (into the private PostgreSQL installation
# BG_PG_INSTALL when tests/run.sh runs the smoke test, see
# tests/tmp_install.sh; system-wide otherwise), then runs
# bench/bench-session.sh, as the unprivileged user
# `billogram` in a copy of the tree when started as root.  The results come
# back to bench/results/ (latest.md and a timestamped copy).
#
#   bash bench/run.sh            # full run: 10 s per load, 20,000 queued payments, ...
#   bash bench/run.sh --smoke    # smallest run (also BENCH_SMOKE=1): every step, a few seconds each
#
# Targets are reported, never asserted; the exit status is non-zero only if
# something broke (a server did not start, a query failed, payments were not
# all registered).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

args=()
for a in "$@"; do
	case $a in
	--smoke) args+=(--smoke) ;;
	*) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
	esac
done
# the unprivileged run starts with an empty environment: pass it as a flag
if [ "${BENCH_SMOKE:-0}" = 1 ] && [ ${#args[@]} = 0 ]; then
	args+=(--smoke)
fi

# Debian packages the benchmark needs besides the test dependencies.
bench_install_dependencies() {
	bg_install_packages <<LIST
nginx
libnginx-mod-http-echo
wrk
curl
procps
strace
LIST
}

start=$(date +%s)
bg_install_dependencies
bench_install_dependencies
bg_build_and_install "$top"
rc=0
BG_COPY_BACK="bench/results" \
	bg_run_unprivileged "$top" bench/bench-session.sh ${args[@]+"${args[@]}"} || rc=$?
echo "whole benchmark run: $(( $(date +%s) - start )) s"
exit $rc
