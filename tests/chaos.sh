#!/usr/bin/env bash
# make chaos: the chaos run of tests/t/030_chaos.pl at full size (10,000
# payments unless CHAOS_PAYMENTS says otherwise), alone: builds the extension
# as it ships and installs it into a private copy of the server's
# installation (tests/tmp_install.sh), never the system's, then runs the
# test as the unprivileged user (tests/lib.sh), like tests/run.sh.  CHAOS_SEED replays a schedule; the seed
# is printed first and with every failure.  The last line is
# "N passed, N failed" (one per invariant the run checked).
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
export CHAOS_PAYMENTS=${CHAOS_PAYMENTS:-10000}
# a new seed each run unless one is given (make test's short run has its own
# fixed seed, tests/t/030_chaos.pl)
export CHAOS_SEED=${CHAOS_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000000 ))}

# as the unprivileged user, in the tree bg_run_unprivileged made for it
if [ "${1:-}" = --run ]; then
	cd "$top"
	pgxs=$(dirname "$(dirname "$(dirname "$("$(bg_server_pg_config)" --pgxs)")")")
	export PATH="$("$(bg_server_pg_config)" --bindir):$PATH"
	export PERL5LIB="$pgxs/src/test/perl:$top/tests/t"
	export PG_REGRESS="$pgxs/src/test/regress/pg_regress"
	export TESTDIR="$top/tmp_check/tap"
	export TESTDATADIR="$TESTDIR/tmp_check" TESTLOGDIR="$TESTDIR/tmp_check/log"
	mkdir -p "$TESTDIR"
	start=$(date +%s)
	out=$(mktemp /tmp/billogram-chaos.XXXXXX)
	prove -v tests/t/030_chaos.pl 2>&1 | tee "$out"
	echo "chaos run: $(( $(date +%s) - start )) s"
	# the invariants' own closing line, printed last; none at all is a failure
	closing=$(sed -n 's/^# \([0-9]* passed, [0-9]* failed\)$/\1/p' "$out" | tail -n 1)
	rm -f "$out"
	echo "${closing:-0 passed, 1 failed}"
	case $closing in *" 0 failed") exit 0 ;; *) exit 1 ;; esac
fi

bg_install_dependencies
BG_PG_INSTALL=$(mktemp -d /tmp/billogram-install.XXXXXX)/plain
export BG_PG_INSTALL
trap 'rm -rf "$(dirname "$BG_PG_INSTALL")"' EXIT
bg_tmp_install_create "$BG_PG_INSTALL" || exit 1
rm -f "$top"/src/*.o "$top/billogram.so"
# the logs of an earlier run would be copied along and appended to
rm -rf "$top/tmp_check/tap"
bg_build_and_install "$top" SANITIZE=0 || exit 1
BG_COPY_BACK="tmp_check/tap/tmp_check/log" bg_run_unprivileged "$top" tests/chaos.sh --run
