#!/usr/bin/env bash
# The demo behind `make demo`: a throw-away PostgreSQL cluster with the
# extension preloaded, the bundled mock Billogram API over HTTPS, and one psql
# session that registers credit payments and shows what failures look like.
# Installs missing Debian packages, builds and installs the extension, and
# runs the server as an unprivileged user when started as root (the same
# steps as tests/run.sh).  Leaves nothing running and nothing behind.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

bg_install_dependencies
bg_build_and_install "$top"
rc=0
bg_run_unprivileged "$top" tests/demo-session.sh || rc=$?
exit $rc
