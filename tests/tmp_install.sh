# The test run's own PostgreSQL installation, and the check that the host's
# was left as it was.  Sourced by tests/lib.sh.
#
# tests/run.sh never installs the extension into the server's directories:
# as PostgreSQL's own `make check` does with tmp_install, it installs it with
# `make install DESTDIR=` into a private copy of the server's installation,
# one for each build (sanitized, plain), and runs every server and client of
# the tests from that copy's bindir.  PostgreSQL finds its share and library
# directories relative to the running program (make_relative_path() in
# src/port/path.c), so a server started from the copy loads the copy's
# billogram.so and extension files and never the host's;
# bg_tmp_install_create checks the copy's pg_config says so, and
# bg_tmp_install_loaded that a running server did.
#
# Before its first build tests/run.sh records bg_host_pg_listing, a sha256
# listing of the host's bindir, pkglibdir and sharedir; at its end it
# compares a new one with it (bg_listing_compare), and any difference fails
# the run, naming the paths.

# The pg_config of the installation the tests run: the private copy when
# BG_PG_INSTALL names one (tests/run.sh), else the host's (make demo, make
# bench).  Its --bindir, --pkglibdir, --sharedir and --pgxs are the copy's.
bg_server_pg_config() {
	echo "${BG_PG_INSTALL:-}$(bg_pg_config)"
}

# bg_tmp_install_create DIR: DIR becomes a copy of the host's server
# installation in DESTDIR layout (DIR/usr/lib/postgresql/NN/bin, ...): the
# programs, the library directory with PGXS (pg_regress, the TAP modules)
# and the share directory; not JIT bitcode nor man pages, which no test
# reads, nor a billogram installed earlier, so that only this run's build
# can be loaded.  Fails if the copy's pg_config does not place its
# directories in DIR.
bg_tmp_install_create() {
	local dir=$1 pg_config bindir pkglibdir sharedir start
	pg_config=$(bg_pg_config)
	bindir=$("$pg_config" --bindir)
	pkglibdir=$("$pg_config" --pkglibdir)
	sharedir=$("$pg_config" --sharedir)
	start=$(date +%s%N)
	rm -rf "$dir"
	mkdir -p "$dir$bindir" "$dir$pkglibdir" "$dir$sharedir" || return 1
	# the test user reaches it through the caller's mktemp -d (mode 700)
	chmod 755 "$dir" "$(dirname "$dir")"
	cp -a "$bindir/." "$dir$bindir/" &&
		tar -C "$pkglibdir" --exclude=./bitcode --exclude='./billogram*' -cf - . |
		tar -C "$dir$pkglibdir" -xf - &&
		tar -C "$sharedir" --exclude=./man --exclude='./extension/billogram*' -cf - . |
		tar -C "$dir$sharedir" -xf - || return 1
	local opt want got
	for opt in bindir pkglibdir sharedir; do
		want=$dir$("$pg_config" --$opt)
		got=$("$dir$bindir/pg_config" --$opt)
		if [ "$got" != "$want" ]; then
			bg_log "the copy of PostgreSQL in $dir does not find its own files: its pg_config --$opt is $got, not $want"
			return 1
		fi
	done
	bg_log "private PostgreSQL installation in $dir: $(du -sh "$dir" | cut -f1), $((($(date +%s%N) - start) / 1000000)) ms"
}

# bg_tmp_install_loaded PGDATA: the server running on PGDATA has the
# billogram.so of the installation under test mapped, and no other: the
# run's private installation (BG_PG_INSTALL), or, without one (the Debian
# package's autopkgtest), the system's, where the package put it.  Prints
# an "ok"/"not ok" line.
bg_tmp_install_loaded() {
	local pid want got which=private
	[ -n "${BG_PG_INSTALL:-}" ] || which=system
	pid=$(head -n 1 "$1/postmaster.pid")
	want=${BG_PG_INSTALL:-}$("$(bg_pg_config)" --pkglibdir)/billogram.so
	got=$(awk '$6 ~ /\/billogram\.so$/ { print $6 }' "/proc/$pid/maps" | sort -u | tr '\n' ' ')
	if [ "$got" = "$want " ]; then
		echo "ok - the server runs the $which installation's $want"
	else
		echo "not ok - the server has '${got% }' mapped, not the $which installation's $want"
		return 1
	fi
}

# bg_tmp_install_serves DIR: a cluster made in DIR by the private
# installation's initdb and started by its pg_ctl with billogram preloaded
# runs that installation's billogram.so (bg_tmp_install_loaded); stopped
# again.  Prints an "ok"/"not ok" line.
bg_tmp_install_serves() {
	local dir=$1 bindir rc=0
	if [ -z "${BG_PG_INSTALL:-}" ]; then
		echo "not ok - the servers run the host's PostgreSQL: no private installation (BG_PG_INSTALL)"
		return 1
	fi
	bindir=$("$(bg_server_pg_config)" --bindir)
	mkdir -p "$dir"
	if ! bg_init_cluster "$dir/data" "$dir" "$dir/initdb.log" ||
		! echo "shared_preload_libraries = 'billogram'" >>"$dir/data/postgresql.conf" ||
		! "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null; then
		echo "not ok - a server from the private installation $BG_PG_INSTALL did not start"
		tail -n 5 "$dir/server.log" 2>/dev/null
		return 1
	fi
	bg_tmp_install_loaded "$dir/data" || rc=1
	"$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || rc=1
	return $rc
}

# ---- the host's installation, unchanged ----

# The host's directories a test run must leave as they were.
bg_host_pg_dirs() {
	local pg_config
	pg_config=$(bg_pg_config)
	"$pg_config" --bindir
	"$pg_config" --pkglibdir
	"$pg_config" --sharedir
}

# bg_listing DIR...: every path under the DIRs, one line each, sorted:
# "path<TAB>type mode owner", then for a file "path<TAB>sha256 HEX", for a
# symbolic link "path<TAB>link TARGET".  A directory that does not exist
# lists nothing.
bg_listing() {
	{
		find "$@" -printf '%p\t%y %m %u:%g\n' 2>/dev/null
		find "$@" -type l -printf '%p\tlink %l\n' 2>/dev/null
		find "$@" -type f -print0 2>/dev/null | xargs -0 -r sha256sum |
			sed -E 's/^([0-9a-f]{64})  (.*)$/\2\tsha256 \1/'
	} | LC_ALL=C sort
}

bg_host_pg_listing() {
	# shellcheck disable=SC2046
	bg_listing $(bg_host_pg_dirs)
}

# bg_listing_compare BEFORE AFTER: prints "added: PATH", "removed: PATH" or
# "changed: PATH" for each path whose lines differ between two listings,
# sorted by path; fails if there is any.
bg_listing_compare() {
	awk -F '\t' '
		FILENAME == ARGV[1] { before[$0] = 1; had[$1] = 1; next }
		{ after[$0] = 1; has[$1] = 1 }
		END {
			for (l in before) if (!(l in after)) { split(l, f, "\t"); differs[f[1]] = 1 }
			for (l in after) if (!(l in before)) { split(l, f, "\t"); differs[f[1]] = 1 }
			for (p in differs)
				print p "\t" (!(p in had) ? "added" : !(p in has) ? "removed" : "changed")
		}' "$1" "$2" | LC_ALL=C sort | awk -F '\t' '{ print $2 ": " $1 } END { exit NR > 0 }'
}

# bg_host_pg_unchanged BEFORE: the host's directories listed again and
# compared with BEFORE; prints an "ok"/"not ok" line and the paths that
# differ.
bg_host_pg_unchanged() {
	local now diff rc=0
	now=$(mktemp /tmp/billogram-host.XXXXXX)
	bg_host_pg_listing >"$now"
	diff=$(bg_listing_compare "$1" "$now") || rc=1
	rm -f "$now"
	if [ $rc = 0 ]; then
		echo "ok - the host's PostgreSQL is byte for byte as before the run ($(grep -c $'\tsha256 ' "$1") files under $(bg_host_pg_dirs | paste -sd ' '))"
	else
		echo "not ok - the host's PostgreSQL changed during the run:"
		echo "$diff" | sed 's/^/    /'
	fi
	return $rc
}

# The comparison names a file changed in place (same size), one added, one
# removed, a symbolic link pointed elsewhere, a mode changed and a new
# directory, and finds nothing between two listings of an unchanged tree.
bg_listing_selftest() {
	local d out expected rc=0
	d=$(mktemp -d /tmp/billogram-listing.XXXXXX)
	mkdir "$d/t"
	echo a >"$d/t/kept"
	echo b >"$d/t/changed"
	echo c >"$d/t/removed"
	echo m >"$d/t/mode"
	ln -s kept "$d/t/link"
	bg_listing "$d/t" >"$d/before"
	bg_listing "$d/t" >"$d/again"
	bg_listing_compare "$d/before" "$d/again" >/dev/null || rc=1
	echo B >"$d/t/changed"
	rm "$d/t/removed"
	echo n >"$d/t/added"
	ln -sfn changed "$d/t/link"
	chmod 600 "$d/t/mode"
	mkdir "$d/t/dir"
	bg_listing "$d/t" >"$d/after"
	out=$(bg_listing_compare "$d/before" "$d/after") && rc=1
	expected="added: $d/t/added
changed: $d/t/changed
added: $d/t/dir
changed: $d/t/link
changed: $d/t/mode
removed: $d/t/removed"
	[ "$out" = "$expected" ] || rc=1
	rm -rf "$d"
	if [ $rc = 0 ]; then
		echo "ok - the host check names a changed, added and removed file, a link, a mode and a directory"
	else
		echo "not ok - the host check's comparison: got"
		echo "$out" | sed 's/^/    /'
	fi
	return $rc
}
