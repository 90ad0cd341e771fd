# shellcheck shell=bash
# Debian roots built with mmdebstrap, entered with chroot: used by
# tests/fresh-check.sh (a minimal Debian as a new user has it) and by
# tests/pg_root.sh (PostgreSQL 17 on Debian 13, 18 on Debian testing).
# Sourced after tests/lib.sh; needs root.
#
# A root is built under a temporary name and renamed when mmdebstrap
# succeeds, so a half-built root is never taken for a finished one.  While a
# root is entered, /proc, /sys, /dev and a tmpfs on /dev/shm are mounted in
# it (and /dev/pts); bg_root_remove refuses to delete a root that still has a mount in it
# and deletes with --one-file-system besides, so that the host's /dev can
# never go with it.

# The Debian mirror the host's apt uses (its first deb source for the
# main archive), so that roots come from where this machine's packages
# come from; empty when none is found (mmdebstrap then uses its default).
bg_root_mirror() {
	{
		sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
		sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1
}

# bg_root_create SUITE DIR PACKAGE...: a root of Debian SUITE in DIR with
# only apt's essentials and the packages named (mmdebstrap's apt variant).
#
# Every root is built with apt's Valid-Until check off, and keeps it off
# (mmdebstrap writes its --aptopt into the root's apt.conf.d).  Testing and
# unstable sign their Release file for a week only (Valid-Until), and apt
# refuses one past that date: here the forky archive's is, so that root
# cannot be built with the check on.  The option is harmless everywhere: a
# stable or oldstable Release file carries no Valid-Until, so for those
# suites it changes nothing, and for every suite apt still verifies the
# signatures against Debian's keyring.  What it gives up, noticing a mirror
# that serves week-old metadata, matters to a machine kept up to date, not
# to a test root rebuilt every day.  Passing it for every suite also spares
# a list of which codename is testing now, which would go stale with each
# Debian release.
bg_root_create() {
	local suite=$1 dir=$2
	shift 2
	if ! command -v mmdebstrap >/dev/null 2>&1; then
		echo mmdebstrap | bg_install_packages || {
			bg_log "cannot install mmdebstrap"
			return 1
		}
	fi
	local tmp=$dir.building.$$ mirror include
	include=$(IFS=,; echo "$*")
	mirror=$(bg_root_mirror)
	bg_root_remove "$tmp" || return 1
	mkdir -p "$(dirname "$dir")"
	bg_log "building a $suite root in $dir with: $include"
	# stdin from /dev/null: without a terminal, mmdebstrap would read
	# sources from it
	# shellcheck disable=SC2086
	if ! mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
		--include="$include" "$suite" "$tmp" $mirror \
		</dev/null >"$tmp.log" 2>&1; then
		tail -n 20 "$tmp.log" >&2
		bg_root_remove "$tmp"
		rm -f "$tmp.log"
		bg_log "mmdebstrap $suite failed"
		return 1
	fi
	rm -f "$tmp.log"
	bg_root_remove "$dir" || return 1
	mv "$tmp" "$dir"
}

# bg_root_of_today NAME SUITE PACKAGE...: print the path of the root
# NAME-YYYYMMDD of today under $BG_ROOT_CACHE (/var/cache/billogram-roots),
# built by bg_root_create with the packages named when today's is not there
# yet; the roots of earlier days of NAME are removed first, so that a new day
# (or a fresh machine) builds it again from the archive as it is.  A root is
# renamed into place only once built, so one that exists is complete.  The
# caller holds the lock of NAME (bg_root_lock), or two runs would build it
# at once.  Fails when it cannot be built.
bg_root_of_today() {
	local name=$1 suite=$2 cache=${BG_ROOT_CACHE:-/var/cache/billogram-roots}
	shift 2
	local root old start
	root=$cache/$name-$(date +%Y%m%d)
	if [ -d "$root" ]; then
		bg_log "using the $suite root of today: $root"
		echo "$root"
		return 0
	fi
	# the date's digits, so that NAME's locks and the roots of a longer
	# name (bookworm-pg15-bare beside bookworm-pg15) are not matched
	for old in "$cache/$name"-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
		[ -d "$old" ] && { bg_root_remove "$old" || return 1; }
	done
	start=$(date +%s)
	bg_root_create "$suite" "$root" "$@" || return 1
	bg_log "$suite root $name built in $(( $(date +%s) - start )) s"
	echo "$root"
}

# bg_root_lock FD NAME: take the lock of the cached root NAME on file
# descriptor FD, waiting for the run that holds it.  One run per root at a
# time: a second would rebuild, refill or unmount the root under the first.
# (A server started inside the root must not inherit FD: close it there.)
bg_root_lock() {
	local cache=${BG_ROOT_CACHE:-/var/cache/billogram-roots}
	mkdir -p "$cache" || return 1
	eval "exec $1>\"\$cache/$2.lock\"" || return 1
	flock "$1"
}

# bg_suite_pg_major SUITE: the PostgreSQL major that Debian SUITE ships as
# its default (the server its postgresql package depends on); empty for a
# suite not known here.
bg_suite_pg_major() {
	case $1 in
	bookworm) echo 15 ;;
	trixie) echo 17 ;;
	forky) echo 18 ;;
	esac
}

# Mount points inside root $1 that are mounted now, deepest first.
bg_root_mounts() {
	local dir
	dir=$(readlink -f "$1")
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}

bg_root_mount() {
	local dir=$1
	mount -t proc proc "$dir/proc" || return 1
	mount -t sysfs sysfs "$dir/sys" || return 1
	mount --bind /dev "$dir/dev" || return 1
	# apt-get logs through a pseudo-terminal, and says so when there is none
	mount --bind /dev/pts "$dir/dev/pts" || return 1
	mount -t tmpfs -o mode=1777 tmpfs "$dir/dev/shm" || return 1
	# apt-get in the root resolves names as the host does
	cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
}

# End what still runs inside root $1 (a server left by an interrupted run):
# the processes whose root directory is it, all started by us through it.
bg_root_kill() {
	local dir p pids=
	dir=$(readlink -f "$1")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$dir" ] && pids="$pids ${p#/proc/}"
	done
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null
	sleep 2
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null
	return 0
}

bg_root_umount() {
	local dir=$1 m
	[ -d "$dir" ] || return 0
	bg_root_kill "$dir"
	for m in $(bg_root_mounts "$dir"); do
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
	[ -z "$(bg_root_mounts "$dir")" ]
}

bg_root_remove() {
	local dir=$1
	[ -e "$dir" ] || return 0
	bg_root_umount "$dir" || { bg_log "mounts remain in $dir: not removing it"; return 1; }
	rm -rf --one-file-system "$dir"
}

# bg_root_run DIR COMMAND: COMMAND by bash, as root in the chroot, with a
# clean environment (CI passed through).
bg_root_run() {
	local dir=$1
	shift
	chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" /bin/bash -c "$*"
}
