#!/usr/bin/env bash
# The Debian package (debian/), built and tested in Debian roots:
#
#   tests/deb.sh build SUITE DIR   postgresql-NN-billogram for the PostgreSQL
#                                  of Debian SUITE (bookworm 15, trixie 17,
#                                  forky 18), its .debs into DIR; make deb
#                                  runs it for each of the three
#   tests/deb.sh test [SUITE]      what make test runs (for bookworm, the
#                                  default): SUITE's package built,
#                                  installed with apt into a fresh root of
#                                  SUITE, and its autopkgtest run there
#
# The package is built as Debian builds it, by dpkg-buildpackage in a root of
# SUITE holding only build-essential and debian/control's Build-Depends (the
# root SUITE-debbuild, cached for the day in /var/cache/billogram-roots, as
# tests/pg_root.sh caches its roots), from a copy of this tree as it is.
# debian/control is committed as pg_buildext generates it on Debian 12; in
# a root whose PostgreSQL is another major, the copy's control is generated
# again (PG_UPDATECONTROL, as apt.postgresql.org builds for other releases).
#
# The test installs the package into a fresh copy of a root that holds
# postgresql-NN and nothing else (SUITE-pgNN-bare, cached for the day and
# never changed: each run installs into a copy of it), with apt-get install
# ./postgresql-NN-billogram_*.deb as an administrator would, so that apt
# finds the libraries its Depends name in the archive, and the autopkgtest's
# own Depends (debian/tests/control).  Then debian/tests/installcheck, as
# autopkgtest would run it: make installcheck, the whole pg_regress suite,
# against the installed package on a cluster that preloads it, and the
# mock.  Prints "ok"/"not ok" lines, the installcheck's closing lines, the
# time each part took, and "N passed, N failed"; a root that cannot be
# built fails the run, never skips it.  Needs root; touches nothing of the
# host's PostgreSQL.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"
# shellcheck source=tests/rootfs.sh
. "$top/tests/rootfs.sh"

# What is mounted or made now, undone at exit however the run ends: the
# build root (unmounted), the install root (removed), temporary files.
build_root=
root=
debs=
out=
cleanup() {
	[ -z "$build_root" ] || bg_root_umount "$build_root"
	[ -z "$root" ] || bg_root_remove "$root"
	rm -rf "$debs" "$out"
}
trap cleanup EXIT
bg_exit_on_signals

passed=0
failed=0
# A part that cannot go on: counted as a failure, and the counts closed.
give_up() {
	bg_check 1 "$*"
	echo "$passed passed, $failed failed"
	exit 1
}

# deb_field FILE FIELD: the value of FIELD in the deb822 FILE (the first
# paragraph that has it), its continuation lines joined.
deb_field() {
	awk -v f="$2" '
		!on && tolower($0) ~ "^" tolower(f) ":" { sub(/^[^:]*:/, ""); v = $0; on = 1; next }
		on && /^[ \t]/ { v = v " " $0; next }
		on { exit }
		END { print v }' "$1"
}

# The package names of a relationship field on stdin: versions, the
# alternatives after the first and autopkgtest's @ (the packages under
# test) left out.
deb_names() {
	tr ',' '\n' | sed -e 's/|.*//' -e 's/([^)]*)//g' -e 's/\[[^]]*\]//g' \
		-e 's/[[:space:]]//g' | grep -v -e '^$' -e '^@'
}

# Copy this tree as it is, without what builds and test runs left in it,
# into directory $1.
copy_tree() {
	rm -rf "$1" && mkdir -p "$1" &&
		tar -C "$top" --exclude=./.git --exclude=./results --exclude=./tmp_check \
			--exclude=./log --exclude=./build --exclude='*.o' --exclude='*.so' -cf - . |
		tar -C "$1" -xf -
}

# build SUITE DIR: postgresql-NN-billogram built in SUITE's build root, its
# .debs copied to DIR.  Prints what it did; returns non-zero on failure.
build() {
	local suite=$1 dir=$2 major rc log t0
	major=$(bg_suite_pg_major "$suite")
	[ -n "$major" ] || { echo "deb: no PostgreSQL major known for $suite"; return 1; }
	[ "$(id -u)" = 0 ] || { echo "deb: needs root to build and enter the $suite root"; return 1; }
	t0=$(date +%s)
	bg_root_lock 8 "$suite-debbuild" || return 1
	# shellcheck disable=SC2046
	build_root=$(bg_root_of_today "$suite-debbuild" "$suite" build-essential \
		$(deb_field "$top/debian/control" Build-Depends | deb_names |
			sed 's/^debhelper-compat$/debhelper/')) ||
		{ build_root=; echo "deb: could not build the $suite build root"; return 1; }
	bg_root_mount "$build_root" || { echo "deb: could not mount $build_root"; return 1; }
	copy_tree "$build_root/root/build/billogram" || return 1
	rm -f "$build_root"/root/build/*.deb
	# debian/control names the committed major's package; another major's
	# root generates its own (pg_buildext checkcontrol, run by dh, updates
	# it when told to, and refuses a stale control otherwise)
	local update=
	grep -q "^Package: postgresql-$major-billogram\$" "$top/debian/control" || update=PG_UPDATECONTROL=yes
	log=$(mktemp /tmp/billogram-deb.XXXXXX)
	# the Build-Depends of an earlier day's root may lack what
	# debian/control has added since: installed then, from the archive
	bg_root_run "$build_root" "cd /root/build/billogram &&
		{ dpkg-checkbuilddeps 2>/dev/null ||
		  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq ./ >/dev/null; }; } &&
		env $update DEB_BUILD_OPTIONS=parallel=$(nproc) dpkg-buildpackage -us -uc -b" >"$log" 2>&1 8>&-
	rc=$?
	if [ $rc = 0 ]; then
		grep -E "^(dpkg-deb: building package|Notice: Updating)" "$log"
		mkdir -p "$dir" && cp "$build_root"/root/build/*.deb "$dir/" || rc=1
	else
		tail -n 40 "$log"
	fi
	rm -f "$log"
	bg_root_umount "$build_root" && build_root=
	exec 8>&-
	echo "deb: postgresql-$major-billogram in the $suite root: exit $rc after $(( $(date +%s) - t0 )) s"
	return $rc
}

# test_package SUITE: SUITE's package built, installed into a fresh root,
# tested
test_package() {
	local suite=$1 major start t0 rc f name deb bare before after new lib
	major=$(bg_suite_pg_major "$suite")
	start=$(date +%s)
	[ -n "$major" ] || give_up "no PostgreSQL major known for $suite"
	[ "$(id -u)" = 0 ] || give_up "the Debian package: needs root (mmdebstrap, mount, chroot)"
	debs=$(mktemp -d /tmp/billogram-debs.XXXXXX)
	out=$(mktemp /tmp/billogram-deb-test.XXXXXX)

	build "$suite" "$debs"
	bg_check $? "postgresql-$major-billogram built by dpkg-buildpackage in a $suite root"
	deb=
	for f in "$debs"/postgresql-"$major"-billogram_*.deb; do
		[ -f "$f" ] && deb=$f
	done
	[ -n "$deb" ] || give_up "the build left no postgresql-$major-billogram_*.deb"

	# Depends: the server, and libcurl and jansson from the shlibs of the
	# library (a package without them installs and then fails to load)
	local depends
	depends=$(dpkg-deb -f "$deb" Depends | deb_names)
	echo "# Depends: $(dpkg-deb -f "$deb" Depends)"
	# (libcurl4 is libcurl4t64 from Debian 13 on, after the 64-bit time_t
	# transition)
	for lib in "postgresql-$major" 'libcurl4(t64)?' libjansson4; do
		name=$(grep -xE "$lib" <<<"$depends")
		[ -n "$name" ]
		bg_check $? "the package depends on ${name:-$lib}"
	done

	# A fresh root: a copy of one that holds postgresql-NN only
	t0=$(date +%s)
	bg_root_lock 7 "$suite-pg$major-bare" || give_up "cannot lock the $suite bare root"
	bare=$(bg_root_of_today "$suite-pg$major-bare" "$suite" "postgresql-$major") ||
		give_up "could not build a $suite root with postgresql-$major"
	# (and the copies of runs that were killed before removing theirs)
	for f in "$(dirname "$bare")/$suite-pg$major-bare"-*-install.*; do
		[ -d "$f" ] && ! kill -0 "${f##*.}" 2>/dev/null && bg_root_remove "$f"
	done
	root=$bare-install.$$
	cp -a "$bare" "$root" || give_up "could not copy $bare"
	exec 7>&-
	bg_root_mount "$root" || give_up "could not mount /proc, /sys, /dev in $root"
	echo "deb: a fresh $suite root with postgresql-$major in $(( $(date +%s) - t0 )) s"

	# apt-get install of the file, as an administrator would install it
	t0=$(date +%s)
	mkdir -p "$root/root/debs" && cp "$deb" "$root/root/debs/"
	before=$(bg_root_run "$root" "dpkg-query -W -f='\${Package}\n'" | sort)
	# (without Recommends: the package's Depends must be enough)
	bg_root_run "$root" "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends ./root/debs/$(basename "$deb")" >"$out" 2>&1
	rc=$?
	bg_check $rc "apt-get install ./$(basename "$deb") in a fresh $suite root"
	[ $rc = 0 ] || cat "$out"
	after=$(bg_root_run "$root" "dpkg-query -W -f='\${db:Status-Abbrev}\${Package}\n'" |
		sed -n 's/^ii *//p' | sort)
	new=$(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')
	echo "# installed by apt with it: $new"
	for lib in 'libcurl4(t64)?' libjansson4; do
		name=$(tr ' ' '\n' <<<"$new" | grep -xE "$lib")
		[ -n "$name" ]
		bg_check $? "apt brought ${name:-$lib} from the archive, which the root did not have"
	done
	[ -f "$root/usr/lib/postgresql/$major/lib/billogram.so" ] &&
		[ -f "$root/usr/share/postgresql/$major/extension/billogram.control" ]
	bg_check $? "billogram.so and billogram.control in PostgreSQL $major's directories"

	# the autopkgtest, with its Depends, from the source tree as
	# autopkgtest unpacks it
	local test_depends
	test_depends=$(deb_field "$top/debian/tests/control" Depends | deb_names | tr '\n' ' ')
	bg_root_run "$root" "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $test_depends" >"$out" 2>&1
	rc=$?
	bg_check $rc "the autopkgtest's Depends installed: $test_depends"
	[ $rc = 0 ] || cat "$out"
	echo "deb: installed in $(( $(date +%s) - t0 )) s"

	t0=$(date +%s)
	copy_tree "$root/root/src" || give_up "could not copy the tree into the root"
	bg_root_run "$root" "cd /root/src && debian/tests/installcheck" >"$out" 2>&1
	rc=$?
	# (short: tests/installcheck.sh prints pg_regress's lines, not its log)
	cat "$out"
	local counts
	counts=$(sed -n 's/^installcheck: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
	if [ -n "$counts" ]; then
		passed=$((passed + ${counts% *}))
		failed=$((failed + ${counts#* }))
	else
		bg_check 1 "debian/tests/installcheck printed no counts (exit $rc)"
	fi
	[ $rc = 0 ] || [ "${counts#* }" != 0 ] || bg_check 1 "debian/tests/installcheck exited $rc"
	# every process the test started has ended with it
	local left=
	left=$(for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$(readlink -f "$root")" ] && printf '%s ' "${p#/proc/}"
	done)
	[ -z "$left" ]
	bg_check $? "no process left in the root${left:+ (left: $left)}"
	echo "deb: installcheck in $(( $(date +%s) - t0 )) s"

	bg_root_remove "$root" && root=
	echo "Debian package ($suite, PostgreSQL $major): $(( $(date +%s) - start )) s in all"
	echo "$passed passed, $failed failed"
	[ $failed = 0 ]
}

case ${1:-} in
build)
	if [ -z "${2:-}" ] || [ -z "${3:-}" ]; then
		echo "usage: tests/deb.sh build SUITE DIR" >&2
		exit 2
	fi
	build "$2" "$3"
	;;
test)
	test_package "${2:-bookworm}"
	;;
*)
	echo "usage: tests/deb.sh build SUITE DIR | tests/deb.sh test [SUITE]" >&2
	exit 2
	;;
esac
