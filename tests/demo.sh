#!/usr/bin/env bash
# The demo behind `make demo`: a throw-away PostgreSQL cluster with the
# extension preloaded, the bundled mock Billogram API over HTTPS, and one psql
# session that registers credit payments and shows what failures look like.
# The same steps as tests/run.sh, but for the extension, which the demo
# installs system-wide (tests/run.sh only into private copies of the
# server's installation); what the demo installs stays installed:
# - the Debian packages of bg_dependencies (tests/lib.sh) that are missing,
#   which is the whole test suite's list, PostgreSQL 15 and its server
#   headers, clang and mmdebstrap among them (apt-get, as root or by sudo);
# - the extension, built in this tree and installed by `make install` into
#   the server's library and extension directories, system-wide;
# - when started as root, the system user billogram, which runs the server.
# The cluster, the mock API and their files are stopped and removed: the
# demo leaves nothing running, and nothing of its own in /tmp.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

bg_install_dependencies
bg_build_and_install "$top"
rc=0
bg_run_unprivileged "$top" tests/demo-session.sh || rc=$?
exit $rc
