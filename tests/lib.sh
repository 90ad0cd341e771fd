# Shared by tests/run.sh, tests/demo.sh and bench/run.sh: installing what is
# missing, building the extension, and dropping root for PostgreSQL; the
# test run's private PostgreSQL installation is tests/tmp_install.sh.
#
# PostgreSQL refuses to run as root, so when these scripts are started as root
# they build and install as root, then run the servers and tests as the
# unprivileged user $BG_TEST_USER in a copy of the tree that user owns.

BG_TEST_USER=${BG_TEST_USER:-billogram}
# The PostgreSQL major to build and test against: BG_PG_MAJOR if set, else
# the newest server installed (Debian 13 ships 17, Debian 12 ships 15), else
# 15, which the installer then installs.
bg_installed_pg_major() {
	local d major=
	for d in /usr/lib/postgresql/*/bin/postgres; do
		[ -x "$d" ] || continue
		d=${d#/usr/lib/postgresql/}
		d=${d%%/*}
		[ -z "$major" ] || [ "$d" -gt "$major" ] && major=$d
	done
	echo "${major:-15}"
}
BG_PG_MAJOR=${BG_PG_MAJOR:-$(bg_installed_pg_major)}

bg_log() { printf '==> %s\n' "$*" >&2; }

# bg_check STATUS NAME: one counted check, as TAP prints it ("ok - NAME"
# when STATUS is 0, else "not ok - NAME"), added to the caller's $passed
# or $failed.
bg_check() {
	if [ "$1" = 0 ]; then
		echo "ok - $2"
		passed=$((passed + 1))
	else
		echo "not ok - $2"
		failed=$((failed + 1))
	fi
}

bg_as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Package names on stdin, one a line ("#" starts a comment): print those
# that dpkg does not have installed.  Asking dpkg, rather than looking for a
# file each package is thought to ship, cannot drift from Debian's packaging
# (pgxs.mk, for one, belongs to postgresql-client-NN, not to the -dev package
# that provides postgres.h).
bg_missing_packages() {
	local pkg status
	while read -r pkg _; do
		case $pkg in '' | '#'*) continue ;; esac
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
		[ "${status:0:2}" = ii ] || printf '%s ' "$pkg"
	done
	return 0
}

# Install with apt-get the packages named on stdin that are not installed.
# Services the packages would start (nginx on port 80 of every address,
# PostgreSQL's default cluster) are not started: a policy-rc.d refusing every
# start is in place meanwhile.
bg_install_packages() {
	local missing
	missing=$(bg_missing_packages)
	[ -z "$missing" ] && return 0
	bg_log "installing Debian packages: $missing"
	local policy=/usr/sbin/policy-rc.d added=0 rc=0
	if [ ! -e "$policy" ]; then
		bg_as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
		added=1
	fi
	bg_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
	if [ $rc = 0 ]; then
		# shellcheck disable=SC2086
		bg_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $missing >/dev/null || rc=$?
	fi
	[ $added = 1 ] && bg_as_root rm -f "$policy"
	return $rc
}

# What building and testing the extension needs.  tests/packages.sh checks
# that every file the build and the tests use comes from one of these.
bg_dependencies() {
	cat <<LIST
postgresql-$BG_PG_MAJOR
postgresql-server-dev-$BG_PG_MAJOR
libcurl4-openssl-dev
libjansson-dev
pkg-config
make
gcc
libc6-dev
perl
libipc-run-perl
python3
openssl
# the mock API's self-test drives it with the curl command
curl
clang
# the libFuzzer and sanitizer runtimes: a Recommends of clang, so not
# installed with --no-install-recommends
libclang-rt-dev
# build and enter the Debian roots of the PostgreSQL 17 and 18 steps
# (tests/pg_root.sh): mount is not in a minimal Debian
mmdebstrap
mount
LIST
}

bg_install_dependencies() {
	bg_dependencies | bg_install_packages
}

# The host's pg_config: what the extension is built with, and where `make
# install` puts it.  The tests run bg_server_pg_config's installation.
bg_pg_config() {
	echo "/usr/lib/postgresql/$BG_PG_MAJOR/bin/pg_config"
}

# shellcheck source=tests/tmp_install.sh
. "$(dirname "${BASH_SOURCE[0]}")/tmp_install.sh"

# Build the extension in $1 with make flags "$2...", and install it: into
# the private installation $BG_PG_INSTALL when one is set (tests/run.sh),
# else into the server's own directories (make demo, make bench).
bg_build_and_install() {
	local top=$1 install
	shift
	if [ -n "${BG_PG_INSTALL:-}" ]; then
		bg_log "building the extension and installing it into $BG_PG_INSTALL"
		install=(make DESTDIR="$BG_PG_INSTALL")
	else
		bg_log "building and installing the extension"
		install=(bg_as_root make)
	fi
	make -C "$top" -s PG_CONFIG="$(bg_pg_config)" "$@" >/dev/null
	"${install[@]}" -C "$top" -s PG_CONFIG="$(bg_pg_config)" "$@" install >/dev/null
}

# Run script $2 as the unprivileged user in a private copy of the tree $1,
# so that files PostgreSQL and pg_regress write belong to that user; the
# directories named in BG_COPY_BACK (relative to the tree) are copied back
# afterwards, for reading after a failure.  Without root, runs in place.
bg_run_unprivileged() {
	local top=$1 script=$2
	shift 2
	if [ "$(id -u)" != 0 ]; then
		bash "$top/$script" "$@"
		return
	fi
	id "$BG_TEST_USER" >/dev/null 2>&1 ||
		useradd --system --create-home --shell /bin/bash "$BG_TEST_USER"
	local copy
	copy=$(mktemp -d /tmp/billogram-run.XXXXXX)
	cp -a "$top/." "$copy/"
	chown -R "$BG_TEST_USER" "$copy"
	local rc=0
	runuser -u "$BG_TEST_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
		HOME="$(getent passwd "$BG_TEST_USER" | cut -d: -f6)" LANG=C.UTF-8 \
		CI="${CI:-}" BG_SANITIZE="${BG_SANITIZE:-0}" BG_PG_MAJOR="$BG_PG_MAJOR" \
		BG_PG_INSTALL="${BG_PG_INSTALL:-}" \
		BG_REGRESS_ONLY="${BG_REGRESS_ONLY:-0}" BG_TAP_TESTS="${BG_TAP_TESTS:-}" \
		${CHAOS_SEED:+CHAOS_SEED="$CHAOS_SEED"} ${CHAOS_PAYMENTS:+CHAOS_PAYMENTS="$CHAOS_PAYMENTS"} \
		bash "$copy/$script" "$@" || rc=$?
	local d
	for d in ${BG_COPY_BACK:-}; do
		rm -rf "${top:?}/$d"
		if [ -e "$copy/$d" ]; then
			mkdir -p "$(dirname "$top/$d")"
			cp -a "$copy/$d" "$top/$d"
		fi
	done
	rm -rf "$copy"
	return $rc
}

# ---- used as the unprivileged user ----

# Say that $BG_WHAT failed and why, show the end of the server log
# $BG_SERVER_LOG if there is one, and exit 1 (the EXIT trap cleans up).
bg_fail() {
	bg_log "${BG_WHAT:-run} FAILED: $*"
	if [ -n "${BG_SERVER_LOG:-}" ] && [ -f "$BG_SERVER_LOG" ]; then
		echo "--- end of the server log ---" >&2
		tail -n 30 "$BG_SERVER_LOG" >&2
	fi
	exit 1
}

# Interrupted: exit with the usual codes, so that the EXIT trap runs.
bg_exit_on_signals() {
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# Start the mock API with fresh certificates in $1; sets MOCK_PORT,
# MOCK_CTL_PORT, MOCK_PID, MOCK_CERTS and MOCK_PASSWORD_FILE (the password
# in a file only this user can read, as billogram.api_password_file wants).
bg_start_mock() {
	local dir=$1
	mkdir -p "$dir"
	bash "$BG_TOP/tests/mock/gen-cert.sh" "$dir/certs"
	MOCK_CERTS=$dir/certs
	MOCK_PASSWORD_FILE=$dir/api.password
	(umask 077 && printf '%s\n' "${MOCK_PASSWORD:-demo-secret-8f3a}" >"$MOCK_PASSWORD_FILE")
	rm -f "$dir/port" "$dir/ctl-port"
	/usr/bin/python3 "$BG_TOP/tests/mock/billogram_mock.py" \
		--cert "$dir/certs/server.crt" --key "$dir/certs/server.key" \
		--user "${MOCK_USER:-demo-user}" --password "${MOCK_PASSWORD:-demo-secret-8f3a}" \
		--port-file "$dir/port" --ctl-port-file "$dir/ctl-port" \
		--log "$dir/mock.log" &
	MOCK_PID=$!
	local i
	for i in $(seq 1 100); do
		[ -s "$dir/port" ] && [ -s "$dir/ctl-port" ] && break
		sleep 0.1
	done
	MOCK_PORT=$(cat "$dir/port")
	MOCK_CTL_PORT=$(cat "$dir/ctl-port")
	export MOCK_PORT MOCK_CTL_PORT MOCK_CERTS MOCK_PASSWORD_FILE
}

bg_stop_mock() {
	[ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
	MOCK_PID=
}

# initdb a throw-away cluster in $1 (trust, UTF8, no sync), reachable only
# through a Unix socket in $2; initdb's output goes to $3.
bg_init_cluster() {
	local pgdata=$1 sockdir=$2 log=$3 locale=C
	if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
		locale=C.UTF-8
	fi
	"$("$(bg_server_pg_config)" --bindir)/initdb" -D "$pgdata" -A trust --no-sync -E UTF8 \
		--locale="$locale" >"$log" 2>&1 || { cat "$log" >&2; return 1; }
	printf "\nlisten_addresses = ''\nunix_socket_directories = '%s'\n" "$sockdir" \
		>>"$pgdata/postgresql.conf"
}

# postgresql.conf lines that load the extension and point it at the mock.
bg_mock_config() {
	cat <<CONF
shared_preload_libraries = 'billogram'
billogram.api_url = 'https://localhost:$MOCK_PORT/api/v2'
billogram.api_user = '${MOCK_USER:-demo-user}'
billogram.api_password_file = '$MOCK_PASSWORD_FILE'
billogram.ca_file = '$MOCK_CERTS/ca.crt'
CONF
}
