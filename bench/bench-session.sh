#!/usr/bin/env bash
# The benchmark proper, run by bench/run.sh as an unprivileged user: starts a
# stand-in Billogram API (nginx over HTTPS, one instant and one 50 ms server)
# and a throw-away cluster with the extension pointed at it, measures
#   1. the raw HTTPS limit (wrk), and (1b) one 8 kB fdatasync (pg_test_fsync):
#      with the raw p50, the floor of a durable synchronous call,
#   2. synchronous calls (pgbench, 1 and 8 sessions),
#   3. how fast the worker drains a queue of payments, alone and (3b) while
#      another session holds a snapshot open,
#   4. the same against the slow API with 32 connections,
#   5. what the trigger adds to an INSERT, and (5b) what of that is the
#      trigger itself, with the worker sending nothing,
#   6. whether the worker's private memory grows over many payments,
#   7. the CPU the worker spends classifying one reply and summarizing its
#      invoice for the journal,
#   8. untimed, the fdatasync and fsync calls a payment costs the cluster
#      (strace), synchronous and through the trigger,
# prints one table and writes it to bench/results/latest.md and a
# timestamped copy.  Targets are reported, not asserted.  Exits non-zero only
# if something broke: a server did not start, a query or a load run failed,
# or payments were not all registered.  Stops and removes everything it
# started, also on failure or interruption.
#
#   bench/bench-session.sh [--smoke]     (or BENCH_SMOKE=1)
set -uo pipefail

BG_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BG_TOP
# shellcheck source=tests/lib.sh
. "$BG_TOP/tests/lib.sh"
bench=$BG_TOP/bench

smoke=${BENCH_SMOKE:-0}
serve=0                       # --serve: set up, then wait for profiling
for a in "$@"; do
	case $a in
	--smoke) smoke=1 ;;
	--serve) serve=1 ;;
	*) echo "usage: $0 [--smoke | --serve]" >&2; exit 2 ;;
	esac
done

# ---- parameters ----
if [ "$smoke" = 1 ]; then
	mode=smoke D=2 N_QUEUE=500 N_SLOW=100 N_MEM=2000 N_CPU_CALLS=200
	FSYNC_SECS=1 N_STRACE=50
else
	mode=full D=10 N_QUEUE=20000 N_SLOW=2000 N_MEM=100000 N_CPU_CALLS=2000
	FSYNC_SECS=2 N_STRACE=500
fi
MEM_BATCH=10000               # rows per transaction in step 6
[ "$N_MEM" -lt "$MEM_BATCH" ] && MEM_BATCH=$N_MEM
SLOW_DELAY=0.05               # seconds the slow API waits before answering
SLOW_CONNS=32                 # billogram.max_connections for step 4
SYNC_CONNS=8                  # billogram.max_connections default: sessions of step 2
POLL=0.02                     # seconds between checks of the queue
TARGET_QUEUE_RATE=5000        # payments/s drained (step 3)
TARGET_WORKER_US=150          # worker CPU per payment during the drain (step 3)
# the floor of a durable synchronous call: the raw 1-connection p50 plus one
# 8 kB fdatasync (step 1b), both measured in the same run
TARGET_SYNC_FLOOR_RATIO=2     # sync p50, 1 session / that floor (step 2)
TARGET_SYNC8_RAW_SHARE=0.2    # sync TPS, 8 sessions / raw 8-connection req/s (step 2)
TARGET_INSERT_COST=1.6        # INSERT TPS without trigger / with it (step 5)
TARGET_RSS_MB=10              # growth of the worker's private memory (step 6)
TARGET_SLOW_RATIO=1.25        # slow-API drain time / ideal (step 4)

# the private installation of tests/run.sh when it runs the smoke test
bindir=$("$(bg_server_pg_config)" --bindir)
work=$(mktemp -d /tmp/billogram-bench.XXXXXX)
raw=$work/raw                 # tools' output, copied to bench/results/raw/
pgdata=$work/pgdata
sockdir=$work/sock
ngx=$work/nginx
certs=$work/certs
mkdir -p "$raw" "$sockdir" "$ngx/tmp" "$work/pgblog"
results=$bench/results
api_path=/api/v2/billogram/2kAEEjE/command/credit-payment
body_file=$BG_TOP/tests/mock/example-response.json
nginx=/usr/sbin/nginx           # not on the unprivileged user's PATH

NGINX_PID=
LOAD_PID=
STRACE_PID=                   # step 8's strace, attached to the cluster
BROKEN=()                     # payments not all registered: reported, exit 1 at the end

# ---- stopping everything ----
# the script's own stdout and stderr, for cleanup: a signal can arrive while
# a load run's output is redirected to a file
exec 3>&1 4>&2
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	exec 1>&3 2>&4
	if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
		kill "$LOAD_PID" 2>/dev/null
		wait "$LOAD_PID" 2>/dev/null
	fi
	[ -n "$STRACE_PID" ] && stop_strace
	if [ -f "$pgdata/postmaster.pid" ]; then
		bg_log "stopping PostgreSQL"
		"$bindir/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null 2>&1 ||
			"$bindir/pg_ctl" -D "$pgdata" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
	fi
	if [ -n "$NGINX_PID" ]; then
		bg_log "stopping nginx"
		stop_nginx
	fi
	# keep the tools' output of the last run for reading
	if [ -d "$raw" ]; then
		[ -f "$work/server.log" ] && tail -n 200 "$work/server.log" >"$raw/server.log.tail"
		[ -f "$ngx/error.log" ] && tail -n 200 "$ngx/error.log" >"$raw/nginx-error.log.tail"
		rm -rf "$results/raw"
		mkdir -p "$results" && cp -a "$raw" "$results/raw"
	fi
	local left
	left=$(pgrep -f -- "$work" 2>/dev/null || true)
	[ -n "$left" ] && bg_log "WARNING: processes still running from $work: $left"
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
bg_exit_on_signals

BG_WHAT=benchmark
BG_SERVER_LOG=$work/server.log
fail() { bg_fail "$@"; }

# stop_process PID [SIGNAL]: send SIGNAL (TERM), give it 10 s to end, then
# KILL; reaps it
stop_process() {
	kill -"${2:-TERM}" "$1" 2>/dev/null
	for _ in $(seq 1 100); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
stop_nginx() {
	stop_process "$NGINX_PID"
	NGINX_PID=
}
# strace writes its summary when interrupted, not when killed
stop_strace() {
	stop_process "$STRACE_PID" INT
	STRACE_PID=
}

# Run a load generator bounded in time ($1 seconds, then killed), in the
# background so that cleanup can stop it; returns its exit status.
bounded() {
	local secs=$1
	shift
	timeout --kill-after=10 "$secs" "$@" &
	LOAD_PID=$!
	local rc=0
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=
	return $rc
}

q() {
	"$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$sockdir" -d postgres "$@"
}

# arithmetic on decimals: calc 'EXPR' -> number with up to 6 decimals
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }
fmt() { awk -v v="$1" -v d="${2:-2}" 'BEGIN { printf "%.*f", d, v }'; }
# key=value from a "BENCH-WRK k=v ..." line
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

# ---- 0. certificates, nginx, PostgreSQL ----
# other work on the machine skews every figure: keep what was running before
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
bg_log "benchmark mode: $mode (D=${D}s, N_QUEUE=$N_QUEUE, N_SLOW=$N_SLOW, N_MEM=$N_MEM)"
bg_log "generating a throw-away CA and server certificate"
bash "$BG_TOP/tests/mock/gen-cert.sh" "$certs" || fail "gen-cert.sh"

free_ports() {
	/usr/bin/python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# curl the stand-in API: prints "status content-type seconds", body to $2
api_post() {
	curl -sS --max-time 10 --cacert "$certs/ca.crt" -X POST \
		-H 'Content-Type: application/json' -H 'Accept: application/json' \
		--data '{"mode":"amount","amount":250}' -o "$2" \
		-w '%{http_code} %{content_type} %{time_total}' "$1"
}

bg_log "starting nginx (1 worker process, HTTPS on 127.0.0.1)"
started=0
for attempt in 1 2 3; do
	read -r FAST_PORT SLOW_PORT <<<"$(free_ports)" || fail "no free ports"
	/usr/bin/python3 "$bench/render-nginx.py" "$bench/nginx.conf" "$body_file" \
		"$ngx/nginx.conf" "$ngx" "$certs" "$FAST_PORT" "$SLOW_PORT" ||
		fail "could not write the nginx configuration"
	"$nginx" -t -q -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" 2>"$raw/nginx-t.txt" ||
		{ cat "$raw/nginx-t.txt" >&2; fail "nginx -t refused the configuration"; }
	"$nginx" -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" 2>>"$ngx/error.log" 3>&- 4>&- &
	NGINX_PID=$!
	for _ in $(seq 1 50); do
		kill -0 "$NGINX_PID" 2>/dev/null || break
		out=$(api_post "https://localhost:$FAST_PORT$api_path" /dev/null 2>/dev/null) &&
			[ "${out%% *}" = 200 ] && { started=1; break; }
		sleep 0.1
	done
	[ $started = 1 ] && break
	bg_log "nginx did not start on ports $FAST_PORT, $SLOW_PORT (attempt $attempt)"
	tail -n 5 "$ngx/error.log" >&2
	stop_nginx
done
[ $started = 1 ] || fail "nginx did not start"

bg_log "checking the replies: FAST on $FAST_PORT, SLOW ($SLOW_DELAY s) on $SLOW_PORT"
for which in FAST SLOW; do
	port=$FAST_PORT
	[ $which = SLOW ] && port=$SLOW_PORT
	out=$(api_post "https://localhost:$port$api_path" "$work/reply-$which.json") ||
		fail "curl to the $which server failed"
	read -r status ctype secs <<<"$out"
	[ "$status" = 200 ] || fail "$which server answered HTTP $status"
	[ "$ctype" = application/json ] || fail "$which server's Content-Type is $ctype"
	cmp -s "$work/reply-$which.json" "$body_file" ||
		fail "$which server's body differs from $body_file"
	if [ $which = SLOW ]; then
		awk -v t="$secs" -v d="$SLOW_DELAY" 'BEGIN { exit !(t >= d) }' ||
			fail "SLOW server answered in $secs s, not after $SLOW_DELAY s"
	fi
	bg_log "  $which: 200 application/json, body identical to example-response.json ($(wc -c <"$body_file") bytes), $secs s"
done

bg_log "creating a throw-away cluster (fsync on)"
(umask 077 && echo 'bench-secret' >"$work/api.password")
bg_init_cluster "$pgdata" "$sockdir" "$raw/initdb.txt" || fail "initdb"
cat >>"$pgdata/postgresql.conf" <<CONF

# billogram benchmark
shared_preload_libraries = 'billogram'
billogram.api_url = 'https://localhost:$FAST_PORT/api/v2'
billogram.api_user = 'bench-user'
billogram.api_password_file = '$work/api.password'
billogram.ca_file = '$certs/ca.crt'
billogram.database = 'postgres'
shared_buffers = 256MB
max_connections = 50
# durability is part of the product: measured with it
fsync = on
synchronous_commit = on
CONF
"$bindir/pg_ctl" -D "$pgdata" -l "$work/server.log" -w -t 60 start >/dev/null 3>&- 4>&- ||
	fail "PostgreSQL did not start"
q -c "CREATE EXTENSION billogram" || fail "CREATE EXTENSION billogram"
# the extension's objects are in schema billogram; the sessions name them
# unqualified (pgbench's scripts too)
q -c "ALTER DATABASE postgres SET search_path = public, billogram" ||
	fail "setting search_path"

worker_pid() {
	q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'billogram worker'" 2>/dev/null
}
wpid=
for _ in $(seq 1 100); do
	wpid=$(worker_pid)
	[ -n "$wpid" ] && break
	sleep 0.1
done
[ -n "$wpid" ] || fail "the billogram worker did not start"
bg_log "PostgreSQL up, billogram worker pid $wpid"

# CPU time (user + system, in clock ticks) a server process has used so far,
# read by the server itself: the bench's user owns the cluster
cpu_ticks_sql() { # cpu_ticks_sql PID-EXPRESSION -> SQL expression
	echo "(SELECT split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint
	         FROM pg_read_file('/proc/' || ($1) || '/stat') AS s)"
}
cpu_ticks() { q -c "SELECT $(cpu_ticks_sql "$1")"; }
# HTTP exchanges the worker has had with the API so far, every status class
# and none (billogram_metrics, from zero at the server's start)
http_exchanges() {
	q -c "SELECT sum(value)::bigint FROM billogram_metrics WHERE metric = 'billogram_http_responses_total'"
}
CLK_TCK=$(getconf CLK_TCK)

# one synchronous call through the worker, timed in the server: prints ms
sync_call_ms() {
	q <<'SQL'
SELECT extract(epoch FROM clock_timestamp()) AS bench_t0 \gset
SELECT billogram_credit_payment('2kAEEjE', 'amount', 250)->>'id' = '2kAEEjE' AS ok \gset
\if :ok
SELECT round(((extract(epoch FROM clock_timestamp()) - :bench_t0) * 1000)::numeric, 1);
\else
SELECT 'bad reply';
\endif
SQL
}
# sync_ms: sync_call_ms, checked: sets ms, fails unless the call returned the invoice
sync_ms() {
	ms=$(sync_call_ms) && [[ $ms =~ ^[0-9.]+$ ]] || fail "a synchronous call failed ($1): ${ms:-no output}"
}
sync_ms "first call"
bg_log "first synchronous call: $ms ms"

# --serve: leave the stand-in API and the cluster up for profiling (perf,
# pgbench by hand) until interrupted; the settings are in $work/serve.env.
if [ "$serve" = 1 ]; then
	cat >"$work/serve.env" <<ENV
export PGHOST=$sockdir PGDATABASE=postgres PATH=$bindir:\$PATH
BENCH_WORKER_PID=$wpid
BENCH_FAST_URL=https://127.0.0.1:$FAST_PORT$api_path
BENCH_SLOW_API=https://localhost:$SLOW_PORT/api/v2
BENCH_DIR=$BG_TOP/bench
ENV
	bg_log "serving: . $work/serve.env; stop with Ctrl-C or kill $$"
	while :; do sleep 1; done
fi

# Insert $1 rows (ids $2 || 1..$1) into payments in one transaction, unless
# $1 is 0, then wait at most $3 s until no queued row is pending or sending.
# Sets DRAIN_S (seconds from the commit to the empty queue) and, from the
# journal, N_DONE N_FAILED N_IN_DOUBT N_LEFT N_ALL.
queue_and_drain() {
	local n=$1 prefix=$2 limit=$3 out
	{
		echo '\set ON_ERROR_STOP on'
		if [ "$n" -gt 0 ]; then
			echo "INSERT INTO payments (billogram_id, amount) SELECT '$prefix' || g, 1.00 FROM generate_series(1, $n) AS g;"
		fi
		# t0: right after the commit, in the same session
		cat <<SQL
SELECT extract(epoch FROM clock_timestamp()) AS bench_t0 \gset
-- one transaction per look: a transaction held open for the whole drain
-- would hold back the xmin horizon, so the worker's claims would wade
-- through every dead entry of the pending index (a third slower here)
DO \$\$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '$limit seconds';
BEGIN
    WHILE EXISTS (SELECT 1 FROM billogram_requests WHERE state IN ('pending', 'sending'))
          AND clock_timestamp() < deadline LOOP
        COMMIT;
        PERFORM pg_sleep($POLL);
    END LOOP;
END
\$\$;
SELECT round((extract(epoch FROM clock_timestamp()) - :bench_t0)::numeric, 3);
SQL
	} >"$work/drain.sql"
	out=$(q -f "$work/drain.sql") || fail "queueing or waiting for the queue failed"
	DRAIN_S=$out
	IFS='|' read -r N_DONE N_FAILED N_IN_DOUBT N_LEFT N_ALL <<<"$(q -c "
		SELECT count(*) FILTER (WHERE state = 'done'),
		       count(*) FILTER (WHERE state = 'failed'),
		       count(*) FILTER (WHERE state = 'in_doubt'),
		       count(*) FILTER (WHERE state IN ('pending', 'sending')),
		       count(*)
		  FROM billogram_requests")" || fail "reading the journal"
	if [ "$N_LEFT" != 0 ]; then
		bg_log "WARNING: $N_LEFT payments still pending or sending after $limit s"
	fi
}

# After a drain: every journal row done and $1 of them, or note what broke.
check_all_done() {
	local what=$1 expected=$2
	if [ "$N_DONE" != "$expected" ] || [ "$N_ALL" != "$expected" ]; then
		local msg="$what: $N_DONE of $expected payments done ($N_FAILED failed, $N_IN_DOUBT in_doubt, $N_LEFT pending/sending, $N_ALL journal rows)"
		bg_log "WARNING: $msg"
		BROKEN+=("$msg")
		q -c "SELECT state, error FROM billogram_requests WHERE state <> 'done' LIMIT 5" >&2 || true
	fi
}

# ---- 1. raw HTTPS limit ----
# wrk_run NAME THREADS CONNS URL: sets W_P50 W_P99 W_AVG (ms) W_RPS
wrk_run() {
	local name=$1 t=$2 c=$3 url=$4 line
	bounded $((D + 30)) wrk -t"$t" -c"$c" -d"${D}s" --latency -s "$bench/post.lua" "$url" \
		>"$raw/$name.txt" 2>&1 || { cat "$raw/$name.txt" >&2; fail "wrk $name"; }
	line=$(grep '^BENCH-WRK ' "$raw/$name.txt") || fail "no summary from wrk $name"
	local e
	for e in err_connect err_read err_write err_status err_timeout; do
		[ "$(kv "$line" $e)" = 0 ] || { cat "$raw/$name.txt" >&2; fail "wrk $name: $e = $(kv "$line" $e)"; }
	done
	[ "$(kv "$line" requests)" -gt 0 ] || fail "wrk $name: no requests"
	W_P50=$(calc "$(kv "$line" p50_us) / 1000")
	W_P99=$(calc "$(kv "$line" p99_us) / 1000")
	W_AVG=$(calc "$(kv "$line" mean_us) / 1000")
	W_RPS=$(calc "$(kv "$line" requests) / ($(kv "$line" duration_us) / 1000000)")
}

fast_wrk_url=https://127.0.0.1:$FAST_PORT$api_path
bg_log "1. raw HTTPS limit: wrk -t1 -c1, ${D} s"
wrk_run raw-1 1 1 "$fast_wrk_url"
RAW1_P50=$W_P50 RAW1_P99=$W_P99 RAW1_AVG=$W_AVG RAW1_RPS=$W_RPS
bg_log "   p50 $RAW1_P50 ms, p99 $RAW1_P99 ms, avg $RAW1_AVG ms, $(fmt "$RAW1_RPS" 0) req/s"
bg_log "1. raw HTTPS limit: wrk -t2 -c$SYNC_CONNS, ${D} s"
wrk_run raw-8 2 "$SYNC_CONNS" "$fast_wrk_url"
RAW8_P50=$W_P50 RAW8_P99=$W_P99 RAW8_AVG=$W_AVG RAW8_RPS=$W_RPS
bg_log "   p50 $RAW8_P50 ms, p99 $RAW8_P99 ms, avg $RAW8_AVG ms, $(fmt "$RAW8_RPS" 0) req/s"

# ---- 1b. one WAL flush ----
# fsync_one_write FILE: the fdatasync line of pg_test_fsync's section "using
# one 8kB write", once complete (the label is written before the test runs)
fsync_one_write() {
	awk '/using one 8kB write/ { one = 1 } one && /^$/ { exit }
		one && $1 == "fdatasync" && /ops\/sec .*usecs\/op/ { print; exit }' "$1"
}
# PostgreSQL's own pg_test_fsync, on the data directory's filesystem: only
# its first figures are needed (one 8 kB write, then fdatasync, Linux's
# wal_sync_method), so it is stopped as soon as the fdatasync line is out.
# Sets FSYNC_US, FSYNC_OPS.
fsync_floor() {
	local out=$raw/pg_test_fsync.txt line=
	stdbuf -oL "$bindir/pg_test_fsync" -f "$work/pg_test_fsync.out" -s "$FSYNC_SECS" \
		>"$out" 2>&1 3>&- 4>&- &
	LOAD_PID=$!
	for _ in $(seq 1 $((10 * (4 * FSYNC_SECS + 60)))); do
		kill -0 "$LOAD_PID" 2>/dev/null || break
		line=$(fsync_one_write "$out")
		[ -n "$line" ] && break
		sleep 0.1
	done
	stop_process "$LOAD_PID"   # on SIGTERM it removes its file
	LOAD_PID=
	[ -n "$line" ] || line=$(fsync_one_write "$out")
	FSYNC_OPS=$(awk '{ for (i = 2; i < NF; i++) if ($(i + 1) == "ops/sec") print $i }' <<<"$line")
	if ! [[ $FSYNC_OPS =~ ^[0-9.]+$ ]] || ! awk -v v="$FSYNC_OPS" 'BEGIN { exit !(v > 0) }'; then
		cat "$out" >&2
		fail "no fdatasync figure from pg_test_fsync"
	fi
	FSYNC_US=$(calc "1000000 / $FSYNC_OPS")
}
bg_log "1b. one 8 kB fdatasync on the data directory's filesystem: pg_test_fsync -s $FSYNC_SECS"
fsync_floor
# the floor of a durable synchronous call: one round trip and one WAL flush
SYNC_FLOOR_MS=$(calc "$RAW1_P50 + $FSYNC_US / 1000")
bg_log "   $(fmt "$FSYNC_US" 0) µs per fdatasync ($(fmt "$FSYNC_OPS" 0)/s); floor of a durable synchronous call: raw 1-connection p50 $RAW1_P50 ms + $(fmt "$FSYNC_US" 0) µs = $(fmt "$SYNC_FLOOR_MS" 3) ms"

# ---- pgbench ----
# pgb_run NAME CLIENTS THREADS SCRIPT: sets P_TPS P_AVG (ms) P_P50 P_P99 (ms,
# from the per-transaction log) P_N
pgb_run() {
	local name=$1 c=$2 j=$3 script=$4
	bounded $((D + 90)) "$bindir/pgbench" -n -h "$sockdir" -c "$c" -j "$j" -T "$D" \
		-f "$script" --log --log-prefix="$work/pgblog/$name" postgres \
		>"$raw/$name.txt" 2>&1 || { tail -n 20 "$raw/$name.txt" >&2; fail "pgbench $name"; }
	P_TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$raw/$name.txt")
	P_AVG=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$raw/$name.txt")
	[ -n "$P_TPS" ] && [ -n "$P_AVG" ] || { cat "$raw/$name.txt" >&2; fail "no result from pgbench $name"; }
	grep -qE '^number of failed transactions: 0 ' "$raw/$name.txt" ||
		! grep -q '^number of failed transactions' "$raw/$name.txt" ||
		fail "pgbench $name: $(grep '^number of failed' "$raw/$name.txt")"
	# third field: the transaction's latency in microseconds
	read -r P_N P_P50 P_P99 <<<"$(cat "$work/pgblog/$name".* | awk '{ print $3 }' | sort -n | awk '
		{ v[NR] = $1 }
		function at(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return v[i] / 1000 }
		END { if (NR == 0) print 0, "nan", "nan"; else print NR, at(0.5), at(0.99) }')"
	[ "$P_N" -gt 0 ] || fail "pgbench $name logged no transaction"
	rm -f "$work/pgblog/$name".*
}

# ---- 2. synchronous calls ----
q -c "TRUNCATE billogram_requests" || fail "TRUNCATE billogram_requests"
bg_log "2. synchronous calls: pgbench -c 1 -j 1, ${D} s"
pgb_run sync-1 1 1 "$bench/sync.sql"
SYNC1_TPS=$P_TPS SYNC1_P50=$P_P50 SYNC1_P99=$P_P99 SYNC1_AVG=$P_AVG
bg_log "   p50 $SYNC1_P50 ms, p99 $SYNC1_P99 ms, $(fmt "$SYNC1_TPS" 0) TPS"
bg_log "2. synchronous calls: pgbench -c $SYNC_CONNS -j 2, ${D} s"
pgb_run sync-8 "$SYNC_CONNS" 2 "$bench/sync.sql"
SYNC8_TPS=$P_TPS SYNC8_P50=$P_P50 SYNC8_P99=$P_P99 SYNC8_AVG=$P_AVG
bg_log "   p50 $SYNC8_P50 ms, p99 $SYNC8_P99 ms, $(fmt "$SYNC8_TPS" 0) TPS"

# ---- 2b. CPU per synchronous call ----
# N_CPU_CALLS calls one after the other in one statement; the CPU the
# calling backend and the worker used meanwhile, per call
bg_log "2b. CPU per synchronous call: $N_CPU_CALLS calls in one session"
read -r SYNC_BACKEND_US SYNC_WORKER_US <<<"$(q <<SQL
SELECT pg_backend_pid() AS me \gset
SELECT $(cpu_ticks_sql ":me") AS b0, $(cpu_ticks_sql "$wpid") AS w0 \gset
SELECT count(*) = $N_CPU_CALLS AS ok FROM (
    SELECT billogram_credit_payment('2kAEEjE', 'amount', 250) FROM generate_series(1, $N_CPU_CALLS)) s \gset
\if :ok
SELECT round(($(cpu_ticks_sql ":me") - :b0) * 1e6 / $CLK_TCK / $N_CPU_CALLS)
       || ' ' || round(($(cpu_ticks_sql "$wpid") - :w0) * 1e6 / $CLK_TCK / $N_CPU_CALLS);
\endif
SQL
)" || fail "timing the CPU of synchronous calls"
[[ $SYNC_WORKER_US =~ ^[0-9]+$ ]] || fail "no CPU figures from step 2b"
bg_log "   calling backend $SYNC_BACKEND_US µs, worker $SYNC_WORKER_US µs of CPU per call"

# ---- 2c. the worker's cheapest round trip ----
# billogram_get_invoice(): handed to the worker, one GET, handed back and
# returned as jsonb, nothing journaled.  A payment on an invoice the ledger
# does not know (each of step 2's) does all of that, its reading being such
# a GET, then commits its journal row durably and makes a second exchange:
# the table puts what it must take at least beside step 2's targets.  A bare
# SELECT 1 measures pgbench's own round trip, taken off step 5's durable
# INSERT there.
bg_log "2c. the worker's cheapest round trip: billogram_get_invoice, pgbench -c 1 -j 1 and -c $SYNC_CONNS -j 2, ${D} s each; SELECT 1, -c 1"
pgb_run get-1 1 1 "$bench/get.sql"
GET1_TPS=$P_TPS GET1_P50=$P_P50
pgb_run get-8 "$SYNC_CONNS" 2 "$bench/get.sql"
GET8_TPS=$P_TPS GET8_P50=$P_P50
echo 'SELECT 1;' >"$work/noop.sql"
pgb_run noop-1 1 1 "$work/noop.sql"
NOOP_P50=$P_P50
bg_log "   1 session p50 $GET1_P50 ms, $(fmt "$GET1_TPS" 0) TPS; $SYNC_CONNS sessions $(fmt "$GET8_TPS" 0) TPS; SELECT 1 p50 $NOOP_P50 ms"

# ---- 3. queue drain ----
bg_log "3. queue drain: $N_QUEUE payments inserted in one transaction"
q <<'SQL' || fail "creating the payments tables"
TRUNCATE billogram_requests;
CREATE TABLE payments (id bigserial PRIMARY KEY, billogram_id text NOT NULL, amount numeric(12, 2));
CREATE TRIGGER register_payment AFTER INSERT ON payments FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('billogram_id', 'amount');
CREATE TABLE payments_plain (id bigserial PRIMARY KEY, billogram_id text NOT NULL, amount numeric(12, 2));
SQL
w0=$(cpu_ticks "$wpid") || fail "reading the worker's CPU time"
h0=$(http_exchanges) || fail "reading billogram_metrics"
lsn0=$(q -c "SELECT pg_current_wal_lsn()") || fail "reading the WAL position"
queue_and_drain "$N_QUEUE" q $((60 + N_QUEUE / 200))
w1=$(cpu_ticks "$wpid") || fail "reading the worker's CPU time"
h1=$(http_exchanges) || fail "reading billogram_metrics"
# the WAL of the insert and of the drain, per payment: every version of a
# journal row, its index entries and the ledger's rows are in it
QUEUE_WAL_B=$(q -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / $N_QUEUE)") ||
	fail "reading the WAL position"
check_all_done "queue drain" "$N_QUEUE"
QUEUE_S=$DRAIN_S
QUEUE_RATE=$(calc "$N_QUEUE / $QUEUE_S")
# the worker's CPU from before the insert to the empty queue, per payment
QUEUE_WORKER_US=$(calc "($w1 - $w0) * 1000000 / $CLK_TCK / $N_QUEUE")
# its HTTP requests meanwhile: the payments and the invoice readings before them
QUEUE_HTTP=$((h1 - h0))
QUEUE_HTTP_RATE=$(calc "$QUEUE_HTTP / $QUEUE_S")
bg_log "   drained in $QUEUE_S s: $(fmt "$QUEUE_RATE" 0) payments/s, $QUEUE_HTTP HTTP requests ($(fmt "$QUEUE_HTTP_RATE" 0)/s); worker CPU $(fmt "$QUEUE_WORKER_US" 0) µs, WAL $QUEUE_WAL_B bytes per payment"

# ---- 3b. the same beside a long transaction ----
# A report or a pg_dump holding a snapshot keeps every dead row version;
# the drain must not slow down with the number of rows already sent.
bg_log "3b. queue drain again, while another session holds a snapshot open"
q -c "TRUNCATE billogram_requests" || fail "emptying the journal"
PGAPPNAME=bench-long-xact "$bindir/psql" -X -q -h "$sockdir" -d postgres -c \
	"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class; SELECT pg_sleep(3600);" \
	>/dev/null 2>&1 &
for _ in $(seq 1 50); do
	[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench-long-xact' AND backend_xmin IS NOT NULL")" = 1 ] && break
	sleep 0.1
done
queue_and_drain "$N_QUEUE" l $((60 + N_QUEUE / 200))
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bench-long-xact'" >/dev/null
check_all_done "queue drain beside a long transaction" "$N_QUEUE"
QUEUE_LX_S=$DRAIN_S
QUEUE_LX_RATE=$(calc "$N_QUEUE / $QUEUE_LX_S")
bg_log "   drained in $QUEUE_LX_S s: $(fmt "$QUEUE_LX_RATE" 0) payments/s"

# switch_api SQL CONNS WHICH: apply SQL (ALTER SYSTEM ...), reload, and wait
# until billogram.max_connections is CONNS and a synchronous call shows the
# worker on the WHICH (slow or fast) API.
switch_api() {
	local sql=$1 conns=$2 which=$3 test
	test='m >= d * 1000'
	[ "$which" = fast ] && test='m < d * 1000'
	printf '%s\nSELECT pg_reload_conf();\n' "$sql" | q >/dev/null ||
		fail "switching to the $which API"
	sleep 1
	[ "$(q -c "SHOW billogram.max_connections")" = "$conns" ] ||
		fail "billogram.max_connections is not $conns after the reload"
	for _ in 1 2 3 4 5; do
		sync_ms "$which API"
		if awk -v m="$ms" -v d="$SLOW_DELAY" "BEGIN { exit !($test) }"; then
			bg_log "   a synchronous call now takes $ms ms"
			return 0
		fi
		bg_log "   a call took $ms ms: the worker is not on the $which API yet"
		sleep 1
	done
	fail "the worker did not switch to the $which API within 6 s of pg_reload_conf()"
}

# ---- 4. slow API ----
bg_log "4. slow API: billogram.api_url -> SLOW ($SLOW_DELAY s), billogram.max_connections = $SLOW_CONNS"
switch_api "ALTER SYSTEM SET billogram.api_url = 'https://localhost:$SLOW_PORT/api/v2';
ALTER SYSTEM SET billogram.max_connections = $SLOW_CONNS;" "$SLOW_CONNS" slow
q -c "TRUNCATE billogram_requests" || fail "TRUNCATE billogram_requests"
queue_and_drain "$N_SLOW" s $((60 + N_SLOW * 2 / 10))
check_all_done "slow API drain" "$N_SLOW"
SLOW_S=$DRAIN_S
SLOW_IDEAL=$(calc "$N_SLOW * $SLOW_DELAY / $SLOW_CONNS")
SLOW_RATIO=$(calc "$SLOW_S / $SLOW_IDEAL")
bg_log "   drained in $SLOW_S s; ideal $SLOW_IDEAL s; ratio $(fmt "$SLOW_RATIO" 2)"
bg_log "   back to FAST, billogram.max_connections default"
switch_api "ALTER SYSTEM RESET billogram.api_url;
ALTER SYSTEM RESET billogram.max_connections;" "$SYNC_CONNS" fast

# ---- 5. insert cost ----
q -c "TRUNCATE billogram_requests, payments" || fail "TRUNCATE"
bg_log "5. INSERT without trigger: pgbench -c 1, ${D} s"
pgb_run insert-plain 1 1 "$bench/insert-plain.sql"
PLAIN_TPS=$P_TPS PLAIN_AVG=$P_AVG PLAIN_P50=$P_P50
bg_log "   $(fmt "$PLAIN_TPS" 0) TPS, avg $PLAIN_AVG ms, p50 $PLAIN_P50 ms"
bg_log "5. INSERT with the trigger: pgbench -c 1, ${D} s"
pgb_run insert-trigger 1 1 "$bench/insert-trigger.sql"
TRIG_TPS=$P_TPS TRIG_AVG=$P_AVG TRIG_P50=$P_P50
# the trigger's TPS cost: how many INSERTs without it for one with it
INSERT_COST=$(calc "$PLAIN_TPS / $TRIG_TPS")
bg_log "   $(fmt "$TRIG_TPS" 0) TPS, avg $TRIG_AVG ms, p50 $TRIG_P50 ms; TPS cost ×$(fmt "$INSERT_COST" 2)"
trig_rows=$(q -c "SELECT count(*) FROM payments") || fail "counting payments"
bg_log "   waiting for the worker to send those $trig_rows payments"
queue_and_drain 0 - $((60 + trig_rows / 200))
check_all_done "insert with trigger" "$trig_rows"

# ---- 5b. the trigger's own cost ----
# The same INSERTs while the worker sends nothing: with billogram.api_user
# withheld it leaves queued rows pending, so what step 5 measured is parted
# into the trigger's work in the inserting backend (here) and the worker's
# sending of each row on the same two cores (the rest).
# credentials_withheld yes|no: whether a reading of an invoice (a GET: not
# journaled, so the drain's count below stays the payments') is refused for
# want of billogram.api_user, i.e. the worker has read the last reload
credentials_withheld() {
	local out
	out=$(q -c "SELECT billogram_get_invoice('2kAEEjE') IS NOT NULL" 2>&1)
	case $out in
	*'billogram.api_user is empty'*) echo yes ;;
	t) echo no ;;
	*) fail "a reading answered neither the invoice nor the missing api_user: $out" ;;
	esac
}
# set_credentials SQL WANT: apply SQL, reload, wait until credentials_withheld says WANT
set_credentials() {
	printf '%s\nSELECT pg_reload_conf();\n' "$1" | q >/dev/null || fail "ALTER SYSTEM for billogram.api_user"
	for _ in $(seq 1 50); do
		[ "$(credentials_withheld)" = "$2" ] && return 0
		sleep 0.1
	done
	fail "the worker did not see billogram.api_user change within 5 s of pg_reload_conf()"
}
q -c "TRUNCATE billogram_requests, payments" || fail "TRUNCATE"
bg_log "5b. INSERT with the trigger while the worker sends nothing (billogram.api_user withheld): pgbench -c 1, ${D} s"
set_credentials "ALTER SYSTEM SET billogram.api_user = '';" yes
pgb_run insert-trigger-alone 1 1 "$bench/insert-trigger.sql"
ALONE_TPS=$P_TPS ALONE_AVG=$P_AVG ALONE_P50=$P_P50
ALONE_COST=$(calc "$PLAIN_TPS / $ALONE_TPS")
alone_sent=$(q -c "SELECT count(*) FROM billogram_requests WHERE state <> 'pending'") || fail "counting journal rows"
[ "$alone_sent" = 0 ] || fail "step 5b: $alone_sent rows left the pending state while billogram.api_user was withheld"
bg_log "   $(fmt "$ALONE_TPS" 0) TPS, avg $ALONE_AVG ms, p50 $ALONE_P50 ms; TPS cost ×$(fmt "$ALONE_COST" 2), all rows still pending"
set_credentials "ALTER SYSTEM RESET billogram.api_user;" no
alone_rows=$(q -c "SELECT count(*) FROM payments") || fail "counting payments"
bg_log "   credentials back: waiting for the worker to send those $alone_rows payments"
queue_and_drain 0 - $((60 + alone_rows / 200))
check_all_done "insert with trigger, sent afterwards" "$alone_rows"

# ---- 6. worker memory ----
q -c "TRUNCATE billogram_requests, payments" || fail "TRUNCATE"
wpid=$(worker_pid)
[ -n "$wpid" ] || fail "no billogram worker"
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
RSS_ANON_0=$(status_kb "$wpid" RssAnon)
VM_RSS_0=$(status_kb "$wpid" VmRSS)
[ -n "$RSS_ANON_0" ] || fail "cannot read /proc/$wpid/status"
bg_log "6. worker memory: $N_MEM payments in batches of $MEM_BATCH (worker pid $wpid, RssAnon $RSS_ANON_0 kB, VmRSS $VM_RSS_0 kB)"
sent=0 batch=0
while [ $sent -lt "$N_MEM" ]; do
	n=$MEM_BATCH
	[ $((sent + n)) -gt "$N_MEM" ] && n=$((N_MEM - sent))
	batch=$((batch + 1))
	queue_and_drain "$n" "m${batch}x" $((60 + n / 200))
	sent=$((sent + n))
	[ "$N_LEFT" = 0 ] || break
done
check_all_done "worker memory" "$N_MEM"
[ "$(worker_pid)" = "$wpid" ] || fail "the billogram worker restarted during step 6 (pid $wpid, now $(worker_pid))"
RSS_ANON_1=$(status_kb "$wpid" RssAnon)
VM_RSS_1=$(status_kb "$wpid" VmRSS)
RSS_GROWTH_MB=$(calc "($RSS_ANON_1 - $RSS_ANON_0) / 1024")
bg_log "   RssAnon $RSS_ANON_0 -> $RSS_ANON_1 kB ($(fmt "$RSS_GROWTH_MB" 2) MB), VmRSS $VM_RSS_0 -> $VM_RSS_1 kB"

# ---- 7. classifying one reply, summarizing its invoice ----
gcc -O2 -I"$BG_TOP/src" -o "$work/classify_reply" "$bench/classify_reply.c" \
	"$BG_TOP/src/reply.c" "$BG_TOP/src/json_span.c" "$BG_TOP/src/json_validate.c" "$BG_TOP/src/invoice.c" -ljansson ||
	fail "building bench/classify_reply.c"
{ read -r CLASSIFY_US && read -r SUMMARY_US; } < <("$work/classify_reply" "$body_file") ||
	fail "bench/classify_reply failed"
[[ $SUMMARY_US =~ ^[0-9.]+$ ]] || fail "bench/classify_reply printed no summary figure"
bg_log "7. one $(wc -c <"$body_file")-byte reply: classifying $CLASSIFY_US µs, summarizing the invoice $SUMMARY_US µs"

# ---- 8. fdatasyncs per payment ----
# Untimed, after every timed step: strace slows every process it follows.
# Each count starts just after a CHECKPOINT, so that the earlier steps'
# checkpoint (its fsync of every file written) does not fall into it.
# strace_attach NAME: strace -c counts the fdatasync and fsync calls of
# every process of the cluster into $raw/strace-NAME.txt: the postmaster
# (-f follows the backends it starts) and its children; returns once each
# of them is attached (or gone: an autovacuum worker may end meanwhile).
strace_attach() {
	local err=$raw/strace-$1.err pm p pids args=()
	pm=$(head -n 1 "$pgdata/postmaster.pid")
	pids="$pm $(pgrep -P "$pm" | tr '\n' ' ')"
	for p in $pids; do args+=(-p "$p"); done
	strace -c -f -e trace=fdatasync,fsync -o "$raw/strace-$1.txt" "${args[@]}" \
		2>"$err" 3>&- 4>&- &
	STRACE_PID=$!
	for _ in $(seq 1 300); do
		kill -0 "$STRACE_PID" 2>/dev/null || break
		local waiting=0
		for p in $pids; do
			grep -q "^strace: Process $p attached" "$err" ||
				{ [ "$p" != "$pm" ] && ! kill -0 "$p" 2>/dev/null; } || waiting=1
		done
		[ $waiting = 0 ] && return 0
		sleep 0.1
	done
	cat "$err" >&2
	fail "strace did not attach to every process of the cluster ($pids) within 30 s"
}
# count_flushes NAME SCRIPT: with strace attached, N_STRACE transactions of
# SCRIPT (one payment each) in one session, then the queue drained; sets
# SC_FIGURE, the fdatasync and fsync calls per payment; fails if strace
# counted none
count_flushes() {
	local out=$raw/counted-$1.txt summary=$raw/strace-$1.txt fdatasync fsync
	q -c "TRUNCATE billogram_requests, payments" -c CHECKPOINT || fail "TRUNCATE, CHECKPOINT"
	strace_attach "$1"
	bounded $((120 + N_STRACE / 5)) "$bindir/pgbench" -n -h "$sockdir" -c 1 -j 1 -t "$N_STRACE" \
		-f "$2" postgres >"$out" 2>&1 || { tail -n 20 "$out" >&2; fail "pgbench $1 (counted)"; }
	grep -q "^number of transactions actually processed: $N_STRACE/$N_STRACE\$" "$out" ||
		{ cat "$out" >&2; fail "pgbench $1 (counted) did not run its $N_STRACE transactions"; }
	queue_and_drain 0 - $((60 + N_STRACE / 50))
	check_all_done "$1 (counted)" "$N_STRACE"
	stop_strace
	read -r fdatasync fsync <<<"$(awk '$NF == "fdatasync" { d = $4 } $NF == "fsync" { f = $4 }
		END { print d + 0, f + 0 }' "$summary" 2>/dev/null)"
	[ "$((fdatasync + fsync))" -gt 0 ] ||
		{ cat "$summary" "$raw/strace-$1.err" >&2; fail "strace counted no fdatasync or fsync ($1)"; }
	SC_FIGURE="$(fmt "$(calc "($fdatasync + $fsync) / $N_STRACE")" 2) (fdatasync $fdatasync, fsync $fsync)"
	bg_log "   fdatasync + fsync calls per payment: $SC_FIGURE"
}
bg_log "8. fdatasync and fsync calls per payment (strace -c -f on the cluster, untimed): $N_STRACE synchronous calls, one per transaction"
count_flushes sync "$bench/sync.sql"
SC_SYNC=$SC_FIGURE
bg_log "8. the same for $N_STRACE single-row INSERTs with the trigger, one per transaction, until the queue is drained"
count_flushes trigger "$bench/insert-trigger.sql"
SC_TRIG=$SC_FIGURE

# ---- the table ----
met() { # met 'CONDITION' -> yes/no
	awk "BEGIN { exit !($1) }" && echo yes || echo no
}
x() { echo "×$(fmt "$1" 2)"; }
MB() { fmt "$(calc "$1 / 1024")" 1; }

# a payment on an invoice the ledger does not know takes at least the
# cheapest round trip (2c), a durable commit of one row (step 5's INSERT
# without pgbench's round trip) and the POST's exchange at the raw p50
FIRST_FLOOR_MS=$(calc "$GET1_P50 + ($PLAIN_P50 - $NOOP_P50) + $RAW1_P50")
SYNC1_LIMIT_MS=$(calc "$TARGET_SYNC_FLOOR_RATIO * $SYNC_FLOOR_MS")
SYNC8_LIMIT_TPS=$(calc "$TARGET_SYNC8_RAW_SHARE * $RAW8_RPS")
sync1_ratio=$(calc "$SYNC1_P50 / $SYNC_FLOOR_MS")
sync1_met=$(met "$SYNC1_P50 <= $SYNC1_LIMIT_MS")
sync8_ratio=$(calc "$SYNC8_TPS / $RAW8_RPS")
sync8_met=$(met "$SYNC8_TPS >= $SYNC8_LIMIT_TPS")
slow_target="—" slow_met="n/a"
if [ -n "$TARGET_SLOW_RATIO" ]; then
	slow_target="≤ ×$TARGET_SLOW_RATIO"
	slow_met=$(met "$SLOW_RATIO <= $TARGET_SLOW_RATIO")
fi

when=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
stamp=$(date -u '+%Y%m%d-%H%M%S')
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_g=$(free -g | awk '/^Mem:/ { print $2 }')
fs=$(df -PT "$pgdata" | awk 'NR == 2 { print $2 }')
curl_dev=$(pkg-config --modversion libcurl 2>/dev/null || echo '?')
curl_pkg=$(dpkg-query -W -f '${Version}' libcurl4 2>/dev/null || echo '?')

{
	echo "# billogram benchmark ($mode run)"
	echo
	echo "- date: $when"
	echo "- machine: $(nproc) CPUs, $cpu; ${mem_g} GiB RAM (free -g); kernel $(uname -r); data directory on $fs; load average before the run $loadavg_before"
	echo "- PostgreSQL: $("$bindir/postgres" --version); libcurl $curl_dev (Debian libcurl4 $curl_pkg); $(openssl version | cut -d' ' -f1-2)"
	echo "- stand-in API: $("$nginx" -v 2>&1 | sed 's/^nginx version: //') with worker_processes 1 (one core for nginx, the rest for PostgreSQL and the billogram worker), HTTPS (TLS 1.2/1.3) on 127.0.0.1, body = tests/mock/example-response.json ($(wc -c <"$body_file") bytes); SLOW answers after $SLOW_DELAY s"
	echo "- load generators on the same machine: $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), pgbench $("$bindir/pgbench" --version | awk '{ print $3 }')"
	echo "- PostgreSQL settings: fsync = on, synchronous_commit = on (durability is part of the product, so it is measured with it), shared_buffers = 256MB, max_connections = 50, billogram.max_connections = $SYNC_CONNS ($SLOW_CONNS in step 4)"
	echo "- parameters: D = ${D} s per load run, N_QUEUE = $N_QUEUE, N_SLOW = $N_SLOW, N_MEM = $N_MEM (batches of $MEM_BATCH), queue polled every $POLL s"
	echo
	echo "| measure | figure | reference | ratio | target | met? |"
	echo "|---|---|---|---|---|---|"
	echo "| raw HTTPS, 1 connection (wrk -t1 -c1) | p50 $(fmt "$RAW1_P50" 3) ms, p99 $(fmt "$RAW1_P99" 3) ms, avg $(fmt "$RAW1_AVG" 3) ms; $(fmt "$RAW1_RPS" 0) req/s | — | — | — | — |"
	echo "| raw HTTPS, $SYNC_CONNS connections (wrk -t2 -c$SYNC_CONNS) | $(fmt "$RAW8_RPS" 0) req/s; p50 $(fmt "$RAW8_P50" 3) ms, p99 $(fmt "$RAW8_P99" 3) ms | — | — | — | — |"
	echo "| one 8 kB fdatasync on the data directory's filesystem (pg_test_fsync -s $FSYNC_SECS) | $(fmt "$FSYNC_US" 0) µs ($(fmt "$FSYNC_OPS" 0)/s) | — | — | — | — |"
	echo "| sync call, 1 session (pgbench -c 1) | p50 $(fmt "$SYNC1_P50" 3) ms, p99 $(fmt "$SYNC1_P99" 3) ms, avg $(fmt "$SYNC1_AVG" 3) ms; $(fmt "$SYNC1_TPS" 0) TPS | floor $(fmt "$SYNC_FLOOR_MS" 3) ms = raw 1-conn p50 $(fmt "$RAW1_P50" 3) ms + one fdatasync $(fmt "$(calc "$FSYNC_US / 1000")" 3) ms | $(x "$sync1_ratio") | p50 ≤ ×$TARGET_SYNC_FLOOR_RATIO floor | $sync1_met |"
	echo "| sync call, $SYNC_CONNS sessions (pgbench -c $SYNC_CONNS -j 2) | p50 $(fmt "$SYNC8_P50" 3) ms, p99 $(fmt "$SYNC8_P99" 3) ms, avg $(fmt "$SYNC8_AVG" 3) ms; $(fmt "$SYNC8_TPS" 0) TPS | raw $SYNC_CONNS-conn $(fmt "$RAW8_RPS" 0) req/s | $(x "$sync8_ratio") | ≥ ×$TARGET_SYNC8_RAW_SHARE raw | $sync8_met |"
	echo "| CPU per synchronous call, $N_CPU_CALLS calls in one session (utime + stime from /proc) | calling backend $SYNC_BACKEND_US µs, worker $SYNC_WORKER_US µs | — | — | — | — |"
	echo "| the worker's cheapest round trip, 1 session: billogram_get_invoice (pgbench -c 1; information: handed to the worker, one GET, handed back as jsonb, nothing journaled) | p50 $(fmt "$GET1_P50" 3) ms; $(fmt "$GET1_TPS" 0) TPS | raw 1-conn p50 $(fmt "$RAW1_P50" 3) ms | $(x "$(calc "$GET1_P50 / $RAW1_P50")") | — | — |"
	echo "| the same, $SYNC_CONNS sessions (pgbench -c $SYNC_CONNS -j 2; information: a payment on an invoice the ledger does not know does all of this and more on the same cores, so this is the most of them per second) | $(fmt "$GET8_TPS" 0) TPS, p50 $(fmt "$GET8_P50" 3) ms | step 2's target: ≥ $(fmt "$SYNC8_LIMIT_TPS" 0) TPS | $(x "$(calc "$GET8_TPS / $SYNC8_LIMIT_TPS")") | — | — |"
	echo "| least time of a payment on an invoice the ledger does not know, 1 session (information: the cheapest round trip's p50 + a durable commit of one row, step 5's INSERT p50 less SELECT 1's $(fmt "$NOOP_P50" 3) ms + raw 1-conn p50 for the POST; step 2's calls are such payments) | $(fmt "$FIRST_FLOOR_MS" 3) ms | step 2's target: p50 ≤ $(fmt "$SYNC1_LIMIT_MS" 3) ms | $(x "$(calc "$FIRST_FLOOR_MS / $SYNC1_LIMIT_MS")") | — | — |"
	echo "| queue drain, $N_QUEUE payments from one transaction | $(fmt "$QUEUE_RATE" 0) payments/s ($QUEUE_S s) | $TARGET_QUEUE_RATE payments/s | $(x "$(calc "$QUEUE_RATE / $TARGET_QUEUE_RATE")") | ≥ $TARGET_QUEUE_RATE/s | $(met "$QUEUE_RATE >= $TARGET_QUEUE_RATE") |"
	echo "| HTTP requests the worker made during that drain (billogram_metrics: billogram_http_responses_total; the payments and the invoice readings before them) | $(fmt "$QUEUE_HTTP_RATE" 0) requests/s ($QUEUE_HTTP requests, $(fmt "$(calc "$QUEUE_HTTP / $N_QUEUE")" 2) per payment) | — | — | — | — |"
	echo "| worker CPU per payment during that drain (utime + stime from /proc, insert to empty queue) | $(fmt "$QUEUE_WORKER_US" 0) µs | $TARGET_WORKER_US µs | $(x "$(calc "$QUEUE_WORKER_US / $TARGET_WORKER_US")") | ≤ $TARGET_WORKER_US µs | $(met "$QUEUE_WORKER_US <= $TARGET_WORKER_US") |"
	echo "| WAL written during that drain, the insert included (information: pg_current_wal_lsn before the insert and at the empty queue) | $QUEUE_WAL_B bytes per payment | — | — | — | — |"
	echo "| queue drain, the same while another session holds a snapshot | $(fmt "$QUEUE_LX_RATE" 0) payments/s ($QUEUE_LX_S s) | step 3: $(fmt "$QUEUE_RATE" 0) payments/s | $(x "$(calc "$QUEUE_LX_RATE / $QUEUE_RATE")") | — | — |"
	echo "| slow API ($SLOW_DELAY s), $N_SLOW payments, $SLOW_CONNS connections | drained in $SLOW_S s | ideal $(fmt "$SLOW_IDEAL" 3) s | $(x "$SLOW_RATIO") | $slow_target | $slow_met |"
	echo "| INSERT without trigger (pgbench -c 1) | $(fmt "$PLAIN_TPS" 0) TPS, avg $(fmt "$PLAIN_AVG" 3) ms, p50 $(fmt "$PLAIN_P50" 3) ms | — | — | — | — |"
	echo "| INSERT with trigger (pgbench -c 1); ratio: the TPS cost, TPS without / with | $(fmt "$TRIG_TPS" 0) TPS, avg $(fmt "$TRIG_AVG" 3) ms, p50 $(fmt "$TRIG_P50" 3) ms | without: $(fmt "$PLAIN_TPS" 0) TPS | $(x "$INSERT_COST") | ≤ ×$TARGET_INSERT_COST | $(met "$INSERT_COST <= $TARGET_INSERT_COST") |"
	echo "| INSERT with trigger while the worker sends nothing (information: the trigger's own cost; billogram.api_user withheld, rows left pending and sent afterwards) | $(fmt "$ALONE_TPS" 0) TPS, avg $(fmt "$ALONE_AVG" 3) ms, p50 $(fmt "$ALONE_P50" 3) ms | without: $(fmt "$PLAIN_TPS" 0) TPS | $(x "$ALONE_COST") | — | — |"
	echo "| worker RssAnon growth over $N_MEM payments | $(fmt "$RSS_GROWTH_MB" 2) MB ($(MB "$RSS_ANON_0") → $(MB "$RSS_ANON_1") MB) | $TARGET_RSS_MB MB | $(x "$(calc "$RSS_GROWTH_MB / $TARGET_RSS_MB")") | < $TARGET_RSS_MB MB | $(met "$RSS_GROWTH_MB < $TARGET_RSS_MB") |"
	echo "| worker VmRSS (information: counts shared_buffers pages it touched) | $(MB "$VM_RSS_0") → $(MB "$VM_RSS_1") MB | — | — | — | — |"
	echo "| classifying one reply (information: bg_classify_reply, the validating scan, mean of 20,000 calls) | $(fmt "$CLASSIFY_US" 1) µs | worker CPU per payment in the drain: $(fmt "$QUEUE_WORKER_US" 0) µs | $(x "$(calc "$CLASSIFY_US / $QUEUE_WORKER_US")") | — | — |"
	echo "| summarizing its invoice for the journal (information: bg_invoice_summary, mean of 20,000 calls) | $(fmt "$SUMMARY_US" 1) µs | worker CPU per payment in the drain: $(fmt "$QUEUE_WORKER_US" 0) µs | $(x "$(calc "$SUMMARY_US / $QUEUE_WORKER_US")") | — | — |"
	echo "| fdatasync + fsync calls per payment, $N_STRACE synchronous calls, one per transaction (information: strace -c -f on every process of the cluster, untimed) | $SC_SYNC | — | — | — | — |"
	echo "| fdatasync + fsync calls per payment, $N_STRACE single-row INSERTs with the trigger, one per transaction, until the queue is drained (information: the same) | $SC_TRIG | — | — | — | — |"
	if [ ${#BROKEN[@]} -gt 0 ]; then
		echo
		echo "**Payments not all registered:**"
		for b in "${BROKEN[@]}"; do echo "- $b"; done
	fi
} >"$work/report.md"

mkdir -p "$results"
cp "$work/report.md" "$results/latest.md"
cp "$work/report.md" "$results/bench-$stamp.md"
echo
cat "$work/report.md"
echo
bg_log "written: bench/results/latest.md and bench/results/bench-$stamp.md"
if [ ${#BROKEN[@]} -gt 0 ]; then
	bg_log "WARNING: payments were not all registered (see above)"
	exit 1
fi
exit 0
