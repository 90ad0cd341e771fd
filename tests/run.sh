#!/usr/bin/env bash
# Runs every test of the extension: pg_regress for the SQL surface, then the
# TAP tests, against real PostgreSQL servers and the bundled mock Billogram
# API over HTTPS.  Installs missing Debian packages, builds and installs the
# extension, and runs the servers as an unprivileged user when started as
# root.  This is what `make test` and CI run.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

start=$(date +%s)
bg_install_dependencies
bg_build_and_install "$top"
rc=0
BG_COPY_BACK="results regression.diffs log tmp_check/tap/tmp_check/log" \
	bg_run_unprivileged "$top" tests/suite.sh || rc=$?
echo "whole test run: $(( $(date +%s) - start )) s"
exit $rc
