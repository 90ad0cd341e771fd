#!/usr/bin/env bash
# Checks the installer's package list against Debian's packaging: every file
# that the build, the tests and the fuzzer use, found the way they find it
# (pg_config, the compiler's own search, PATH), must belong (dpkg -S) to a
# package of bg_dependencies() or to something one of them depends on.  A
# file that moves to another package, or a new file the build starts to use,
# fails here instead of on a fresh machine.  Run by tests/run.sh after the
# installer, so everything it names is installed.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/lib.sh
. "$top/tests/lib.sh"

pg_config=$(bg_pg_config)
pgxs=$("$pg_config" --pgxs)
pgxs_top=$(dirname "$(dirname "$(dirname "$pgxs")")")

# The listed packages and, transitively, what they depend on (installed
# ones only; alternatives "a | b" count each installed side).
declare -A allowed=()
queue=$(bg_dependencies | sed -e 's/#.*//' -e '/^[[:space:]]*$/d')
while [ -n "$queue" ]; do
	next=
	for pkg in $queue; do
		[ -n "${allowed[$pkg]:-}" ] && continue
		allowed[$pkg]=1
		deps=$(dpkg-query -W -f='${Depends},${Pre-Depends}' "$pkg" 2>/dev/null |
			tr ',|' '\n\n' | sed -e 's/([^)]*)//g' -e 's/:any//g' -e 's/[[:space:]]//g' | sort -u)
		for d in $deps; do
			[ -z "${allowed[$d]:-}" ] && dpkg-query -W "$d" >/dev/null 2>&1 && next="$next $d"
		done
	done
	queue=$next
done

# Headers as the compiler resolves them with the build's own flags.
headers=$(printf '#include "postgres.h"\n#include <curl/curl.h>\n#include <jansson.h>\n' |
	gcc -I"$("$pg_config" --includedir-server)" $(pkg-config --cflags libcurl jansson) \
		-M -E -x c - 2>/dev/null | tr ' \\' '\n\n' |
	grep -E '/(postgres\.h|curl/curl\.h|jansson\.h)$' | sort -u)

# libFuzzer's runtime as clang's driver links it (-###: print the commands,
# run none); where it lives differs between clang 14 and 19
fuzzer_runtime=$(clang -fsanitize=fuzzer -### -x c /dev/null -o /dev/null 2>&1 |
	tr ' ' '\n' | tr -d '"' | grep -m1 '/libclang_rt\.fuzzer[-.]')

files="$headers
$pgxs
$pgxs_top/src/test/regress/pg_regress
$pgxs_top/src/test/perl/PostgreSQL/Test/Cluster.pm
$("$pg_config" --bindir)/postgres
$("$pg_config" --bindir)/initdb
$("$pg_config" --bindir)/psql
$(gcc -print-file-name=libcurl.so)
$(gcc -print-file-name=libjansson.so)
$(gcc -print-file-name=libasan.so)
$(command -v pkg-config)
$(command -v make)
$(command -v prove)
/usr/bin/python3
$(command -v openssl)
$(command -v curl)
$(command -v clang)
$(command -v mmdebstrap)
$(command -v mount)
$(perl -MIPC::Run -e 'print $INC{"IPC/Run.pm"}' 2>/dev/null)
$fuzzer_runtime"

passed=0
failed=0
while read -r f; do
	[ -n "$f" ] || continue
	# the directory resolved (/usr/lib/gcc/.../../../libcurl.so), the file
	# itself not: a -dev package's .so is a symlink to the runtime's
	f=$(readlink -f "$(dirname "$f")")/$(basename "$f")
	if [ ! -e "$f" ]; then
		echo "not ok - $f: missing"
		failed=$((failed + 1))
		continue
	fi
	owner=$(dpkg -S "$f" 2>/dev/null | head -n 1 | cut -d: -f1)
	# merged /usr: dpkg may know the file under its other name (mount is
	# /bin/mount in Debian 12, /usr/bin/mount in 13)
	case $f in
	/usr/bin/* | /usr/sbin/* | /usr/lib/*) alias=${f#/usr} ;;
	/bin/* | /sbin/* | /lib/*) alias=/usr$f ;;
	*) alias= ;;
	esac
	[ -z "$owner" ] && [ -n "$alias" ] &&
		owner=$(dpkg -S "$alias" 2>/dev/null | head -n 1 | cut -d: -f1)
	owner=${owner%%,*}
	if [ -z "$owner" ]; then
		echo "not ok - $f: no Debian package ships it"
		failed=$((failed + 1))
	elif [ -z "${allowed[$owner]:-}" ]; then
		echo "not ok - $f: shipped by $owner, which the installer's list does not bring"
		failed=$((failed + 1))
	else
		echo "ok - $f ($owner)"
		passed=$((passed + 1))
	fi
done <<<"$files"
# each of the 23 lookups above must have found a file
expected=23
if [ $((passed + failed)) -ne $expected ]; then
	echo "not ok - found $((passed + failed)) of the $expected files the build uses"
	failed=$((failed + 1))
fi
echo "packages: $passed passed, $failed failed"
[ $failed = 0 ]
