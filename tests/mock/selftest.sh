#!/bin/bash
# selftest.sh: quick self-check of the Billogram mock.
#
# Generates throw-away certificates in a temp dir, starts billogram_mock.py
# there, exercises it with curl --cacert and mockctl, stops it with SIGTERM
# and prints "N passed, N failed".  Exit status 0 only if all passed.
# SELFTEST_LOG=FILE keeps a copy of the mock's log.
# Needs bash, curl, openssl and /usr/bin/python3; runs as any user.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/billogram-mock-selftest.XXXXXX")
U=selftest-user
PW='s3cret:with:colons'
PASS=0
FAIL=0
PID=

cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -TERM "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
	fi
	[ -n "${SELFTEST_LOG:-}" ] && cp "$T/mock.log" "$SELFTEST_LOG"
	rm -rf "$T"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1${2:+ ($2)}"; }
# check NAME EXPECTED ACTUAL
check() {
	if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected '$2', got '$3'"; fi
}
# check_grep NAME PATTERN FILE
check_grep() {
	if grep -q -e "$2" "$3" 2>/dev/null; then ok "$1"; else bad "$1" "no '$2' in $(head -c 300 "$3" 2>/dev/null)"; fi
}
# py FILE EXPR: evaluate a python expression on the bytes of FILE (as b)
py() {
	/usr/bin/python3 -c "import sys,json,decimal; L=lambda x: json.loads(x, parse_float=decimal.Decimal); b=open(sys.argv[1],'rb').read(); print($2)" "$1" 2>&1
}

start_mock() {
	rm -f "$T/port" "$T/ctlport"
	"$HERE/billogram_mock.py" --cert "$T/certs/server.crt" --key "$T/certs/server.key" \
		--user "$U" --password "$PW" --port-file "$T/port" --ctl-port-file "$T/ctlport" \
		--log "$T/mock.log" "$@" &
	PID=$!
	for _ in $(seq 100); do
		[ -s "$T/port" ] && break
		sleep 0.1
	done
	PORT=$(cat "$T/port" 2>/dev/null)
	CPORT=$(cat "$T/ctlport" 2>/dev/null)
	API=https://127.0.0.1:$PORT/api/v2/billogram
	CTL=http://127.0.0.1:$CPORT
}

# stop_mock NAME: SIGTERM, must be gone within 1 s with status 0
stop_mock() {
	local t0 t1 rc
	t0=$(date +%s%N)
	kill -TERM "$PID"
	for _ in $(seq 100); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.01
	done
	t1=$(date +%s%N)
	wait "$PID"
	rc=$?
	PID=
	check "$1: exit status 0 after SIGTERM" 0 "$rc"
	if [ $(((t1 - t0) / 1000000)) -lt 1000 ]; then
		ok "$1: stopped within 1 s ($(((t1 - t0) / 1000000)) ms)"
	else
		bad "$1: stopped within 1 s" "$(((t1 - t0) / 1000000)) ms"
	fi
}

# req METHOD ID-PATH [curl args...]: sets CODE and RC, body in $T/body,
# headers in $T/hdr
req() {
	local method=$1 path=$2
	shift 2
	rm -f "$T/body" "$T/hdr"
	CODE=$(curl -sS --cacert "$T/certs/ca.crt" -X "$method" -o "$T/body" -D "$T/hdr" \
		-w '%{http_code}' "$@" "$API/$path" 2>"$T/err")
	RC=$?
}
# pay ID JSON [curl args...]
pay() {
	local id=$1 body=$2
	shift 2
	req POST "$id/command/credit-payment" -u "$U:$PW" -H 'Content-Type: application/json' \
		--data-binary "$body" "$@"
}
remaining() { "$HERE/mockctl" "$CTL" invoice "$1" | py /dev/stdin 'L(b)["remaining_sum"]'; }

##########################################################################
"$HERE/gen-cert.sh" "$T/certs"
check "gen-cert.sh exit status" 0 $?
check "gen-cert.sh is quiet" "" "$("$HERE/gen-cert.sh" "$T/certs" 2>&1)"

start_mock
if [ -z "$PORT" ] || [ -z "$CPORT" ]; then
	bad "mock started and wrote its port files"
	cat "$T/mock.log" 2>/dev/null
	echo "$PASS passed, $FAIL failed"
	exit 1
fi
ok "mock started (api $PORT, ctl $CPORT)"
check "port file is number + newline" "$PORT." "$(tr '\n' . <"$T/port")"
check "control /health" ok "$(curl -sS "$CTL/health")"

# --- certificate: both names verify
for host in 127.0.0.1 localhost; do
	CODE=$(curl -sS --cacert "$T/certs/ca.crt" -u "$U:$PW" -o /dev/null -w '%{http_code}' \
		"https://$host:$PORT/api/v2/billogram/certcheck" 2>"$T/err")
	check "TLS verifies for $host" "0 200" "$? $CODE"
done

# --- success twice
pay inv1 '{"mode":"amount","amount":250}'
check "pay 250: curl ok, 200" "0 200" "$RC $CODE"
check "pay 250: remaining_sum -750.00" '-750.00 PartlyPaid OK inv1' \
	"$(py "$T/body" 'b.split(b"\"remaining_sum\":")[1].split(b",")[0].decode(), L(b)["data"]["state"], L(b)["status"], L(b)["data"]["id"]')"
check_grep "pay 250: total_sum -1000.00" '"total_sum":-1000.00' "$T/body"
check_grep "pay 250: Payment event with exact amount" '"type":"Payment","created_at":"[^"]*","data":{"amount":250.00}' "$T/body"
pay inv1 '{"mode":"amount","amount":250.5}'
check "pay 250.5: 200" 200 "$CODE"
check_grep "pay 250.5: remaining_sum -499.50" '"remaining_sum":-499.50,' "$T/body"
check "pay 250.5: two events" 2 "$(py "$T/body" 'len(L(b)["data"]["events"])')"
check "pay 250.5: events carry uuid4, billogram_id, type, created_at, data" \
	"True inv1 inv1 Payment Payment True" \
	"$(py "$T/body" 'len(set(e["event_uuid"] for e in L(b)["data"]["events"])) == 2 and all(__import__("uuid").UUID(e["event_uuid"]).version == 4 and str(__import__("uuid").UUID(e["event_uuid"])) == e["event_uuid"] for e in L(b)["data"]["events"]), *[e["billogram_id"] for e in L(b)["data"]["events"]], *[e["type"] for e in L(b)["data"]["events"]], all(set(e) == {"event_uuid","billogram_id","type","created_at","data"} for e in L(b)["data"]["events"])')"
req GET inv1 -u "$U:$PW"
check "GET invoice: 200" 200 "$CODE"
check_grep "GET invoice: remaining -499.50" '"remaining_sum":-499.50,' "$T/body"
check_grep "GET invoice: event amounts in creation order, two decimals" '"data":{"amount":250.00}}.*"data":{"amount":250.50}}' "$T/body"
cp "$T/body" "$T/inv1.get"
check "GET invoice: created_at ascending" True \
	"$(py "$T/body" '[e["created_at"] for e in L(b)["data"]["events"]] == sorted(e["created_at"] for e in L(b)["data"]["events"])')"
"$HERE/mockctl" "$CTL" invoice inv1 >"$T/ctlinv"
check "control invoice: events as in the API, amounts as strings, and payments" \
	"True ['250.00', '250.50'] 2" \
	"$(/usr/bin/python3 -c 'import sys,json; c=json.load(open(sys.argv[1])); a=json.load(open(sys.argv[2]))["data"]["events"]; print([e["event_uuid"] for e in c["events"]] == [e["event_uuid"] for e in a] and [e["created_at"] for e in c["events"]] == [e["created_at"] for e in a] and all(e["billogram_id"] == "inv1" and e["type"] == "Payment" for e in c["events"]), [e["data"]["amount"] for e in c["events"]], len(c["payments"]))' "$T/ctlinv" "$T/inv1.get" 2>&1)"
pay inv1 '{"mode":"remaining"}'
check "pay remaining: 200 Paid" "200 Paid" "$CODE $(py "$T/body" 'L(b)["data"]["state"]')"
check_grep "pay remaining: remaining_sum 0.00" '"remaining_sum":0.00,' "$T/body"
pay inv1 '{"mode":"remaining"}'
check "pay remaining again: 400 INVALID_OBJECT_STATE" "400 INVALID_OBJECT_STATE" \
	"$CODE $(py "$T/body" 'L(b)["status"]')"
check "mockctl invoice inv1" "0.00" "$(remaining inv1)"

# --- validation
pay inv2 '{"mode":"amount","amount":1000.01}'
check "amount too large: 400 INVALID_PARAMETER amount" "400 INVALID_PARAMETER amount amount exceeds the remaining sum" \
	"$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"], L(b)["data"]["message"]')"
pay inv2 '{"mode":"amount","amount":0}'
check "amount 0: 400 amount" "400 INVALID_PARAMETER amount" "$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"]')"
pay inv2 '{"mode":"amount","amount":"5"}'
check "amount string: 400 amount" "400 INVALID_PARAMETER amount" "$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"]')"
pay inv2 '{"mode":"amount","amount":1.005}'
check "amount 3 decimals: 400 amount" "400 INVALID_PARAMETER amount" "$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"]')"
pay inv2 '{"mode":"all"}'
check "bad mode: 400 mode [mode]" "400 INVALID_PARAMETER mode ['mode']" \
	"$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"], L(b)["data"]["field_path"]')"
pay inv2 '{"mode":"amount","amount":5,"note":"x"}'
check "unknown key: 400 UNKNOWN_PARAMETER" "400 UNKNOWN_PARAMETER" "$CODE $(py "$T/body" 'L(b)["status"]')"
pay inv2 '{"mode":"remaining","amount":5}'
check "remaining + amount: 400 INVALID_PARAMETER_COMBINATION" "400 INVALID_PARAMETER_COMBINATION" "$CODE $(py "$T/body" 'L(b)["status"]')"
pay inv2 '[1]'
check "body not an object: 400" "400 INVALID_PARAMETER" "$CODE $(py "$T/body" 'L(b)["status"]')"
pay inv2 '{"mode":"remaining"' -H 'Content-Type: text/plain'
check "wrong Content-Type: 400" "400 INVALID_PARAMETER" "$CODE $(py "$T/body" 'L(b)["status"]')"
check "validation errors left inv2 untouched" "-1000.00" "$(remaining inv2)"

# --- auth and routing
pay inv3 '{"mode":"amount","amount":1}' -u "$U:wrong"
check "wrong password: 403 INVALID_AUTH" "403 INVALID_AUTH" "$CODE $(py "$T/body" 'L(b)["status"]')"
req POST inv3/command/credit-payment -H 'Content-Type: application/json' --data-binary '{"mode":"remaining"}'
check "missing auth: 401 MISSING_AUTH" "401 MISSING_AUTH" "$CODE $(py "$T/body" 'L(b)["status"]')"
req GET inv3/command/credit-payment -u "$U:$PW"
check "wrong method: 405 JSON" "405 METHOD_NOT_ALLOWED" "$CODE $(py "$T/body" 'L(b)["status"]')"
req GET inv3/command/other -u "$U:$PW"
check "unknown path: 404 NOT_FOUND" "404 NOT_FOUND" "$CODE $(py "$T/body" 'L(b)["status"]')"

# --- magic ids
pay nf1 '{"mode":"remaining"}'
check "nf: 404 Billogram not found" "404 NOT_FOUND Billogram not found" \
	"$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["message"]')"
pay e400a '{"mode":"remaining"}'
check "e400: 400 field amount" "400 INVALID_PARAMETER amount ['amount']" \
	"$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["field"], L(b)["data"]["field_path"]')"
pay e401a '{"mode":"remaining"}'
check "e401: 401 MISSING_AUTH" "401 MISSING_AUTH" "$CODE $(py "$T/body" 'L(b)["status"]')"
pay e403a '{"mode":"remaining"}'
check "e403: 403 PERMISSION_DENIED" "403 PERMISSION_DENIED" "$CODE $(py "$T/body" 'L(b)["status"]')"
pay e409a '{"mode":"remaining"}'
check "e409: 409 SOME_NEW_STATUS" "409 SOME_NEW_STATUS Conflict for test" \
	"$CODE $(py "$T/body" 'L(b)["status"], L(b)["data"]["message"]')"
pay e429a '{"mode":"remaining"}'
check "e429: 429 TOO_MANY_REQUESTS" "429 TOO_MANY_REQUESTS" "$CODE $(py "$T/body" 'L(b)["status"]')"
check_grep "e429: Retry-After: 1" '^Retry-After: 1' "$T/hdr"
pay e500a '{"mode":"remaining"}'
check "e500: 500 HTML" "500" "$CODE"
check_grep "e500: text/html" '^Content-Type: text/html' "$T/hdr"
check_grep "e500: HTML body" '<h1>500 Internal Server Error</h1>' "$T/body"
pay e502a '{"mode":"remaining"}'
check "e502: 502 empty body" "502 0" "$CODE $(wc -c <"$T/body")"
pay e503a '{"mode":"remaining"}'
check "e503: 503" 503 "$CODE"
check_grep "e503: Retry-After: 2" '^Retry-After: 2' "$T/hdr"
check_grep "e503: HTML body" '<html>' "$T/body"
for id in e500a e502a e503a e429a e409a; do
	"$HERE/mockctl" "$CTL" invoice "$id" >/dev/null 2>&1
	check "$id: not applied" 1 $?
done
pay e504a '{"mode":"amount","amount":10}'
check "e504: 504 GATEWAY_TIMEOUT" "504 GATEWAY_TIMEOUT" "$CODE $(py "$T/body" 'L(b)["status"]')"
check "e504: applied" "-990.00" "$(remaining e504a)"
pay drop1 '{"mode":"amount","amount":1}'
check "drop: curl error 52" 52 "$RC"
check "drop: applied" "-999.00" "$(remaining drop1)"
pay cut1 '{"mode":"amount","amount":2}'
check "cut: curl error 18" 18 "$RC"
check "cut: applied" "-998.00" "$(remaining cut1)"
pay trunc1 '{"mode":"amount","amount":3}'
check "trunc: 200, body is not JSON" "0 200 bad" "$RC $CODE $(py "$T/body" '"ok" if L(b) else "?"' | grep -q Error && echo bad)"
check "trunc: applied" "-997.00" "$(remaining trunc1)"
pay notjson1 '{"mode":"remaining"}'
check "notjson: 200 text/plain hello" "200 hello" "$CODE $(cat "$T/body")"
check_grep "notjson: text/plain" '^Content-Type: text/plain' "$T/hdr"
pay empty1 '{"mode":"remaining"}'
check "empty: 200, 0 bytes, applied" "200 0 0.00" "$CODE $(wc -c <"$T/body") $(remaining empty1)"
pay wrongtype1 '{"mode":"remaining"}'
check "wrongtype" '200 {"status":"OK","data":[1,2,3]}' "$CODE $(cat "$T/body")"
pay nodata1 '{"mode":"remaining"}'
check "nodata" '200 {"status":"OK"}' "$CODE $(cat "$T/body")"
pay nostatus1 '{"mode":"remaining"}'
check "nostatus" '200 {"data":{"id":"x"}}' "$CODE $(cat "$T/body")"
pay okerr1 '{"mode":"remaining"}'
check "okerr: 200 with error status, not applied" "200 INVALID_PARAMETER 1" \
	"$CODE $(py "$T/body" 'L(b)["status"]') $("$HERE/mockctl" "$CTL" invoice okerr1 >/dev/null 2>&1; echo $?)"
pay created1 '{"mode":"amount","amount":5}'
check "created: 201 with success body" "201 OK -995.00" "$CODE $(py "$T/body" 'L(b)["status"]') $(remaining created1)"
pay huge2 '{"mode":"amount","amount":7}'
check "huge2: 200, valid JSON, 2 MiB attachment" "200 2097152 -993.00" \
	"$CODE $(py "$T/body" 'len(L(b)["data"]["attachment_content"]), L(b)["data"]["remaining_sum"]')"
pay bigok1 '{"mode":"remaining"}'
check "bigok: 200, valid JSON, 100 KiB attachment" "200 102400" \
	"$CODE $(py "$T/body" 'len(L(b)["data"]["attachment_content"])')"
pay deep1 '{"mode":"remaining"}'
check "deep: 200, 100000 nested arrays" "200 True True" \
	"$CODE $(py "$T/body" 'b.startswith(b"{\"status\":\"OK\",\"data\":" + b"["*100000 + b"]"*100000), b.endswith(b"]}")')"
pay nul1 '{"mode":"remaining"}'
check "nul: 200 with raw NUL" "200 True" "$CODE $(py "$T/body" 'b"\x00" in b')"
pay badutf1 '{"mode":"remaining"}'
check "badutf: 200 with \\xff\\xfe" "200 True" "$CODE $(py "$T/body" 'b"\xff\xfe" in b')"
pay latnul1 '{"mode":"remaining"}'
check "latnul: 200, valid JSON with the escape \\u0000" "200 True 0.00" \
	"$CODE $(py "$T/body" '"\x00" in L(b)["data"]["attachment_content"], L(b)["data"]["remaining_sum"]')"
pay latx1 '{"mode":"remaining"}'
check "latx: 200, valid JSON with raw UTF-8 a LATIN1 database cannot hold" "200 True True" \
	"$CODE $(py "$T/body" '"\u20ac" in L(b)["data"]["attachment_content"], "\u20ac".encode() in b')"
t0=$(date +%s%N)
pay slow1500x '{"mode":"amount","amount":1}'
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
check "slow1500: success after >= 1.5 s" "200 yes" "$CODE $([ "$ms" -ge 1500 ] && [ "$ms" -lt 5000 ] && echo yes || echo "no ($ms ms)")"
pay silent1 '{"mode":"remaining"}' --max-time 2
check "silent: no reply (curl timeout 28)" 28 "$RC"
pay trickle1 '{"mode":"amount","amount":4}' --max-time 3
check "trickle: curl timeout 28 with some bytes" "28 yes" "$RC $([ "$(wc -c <"$T/body")" -ge 1 ] && [ "$(wc -c <"$T/body")" -le 5 ] && echo yes || wc -c <"$T/body")"
check "trickle: applied" "-996.00" "$(remaining trickle1)"
# applied (a...) and not applied (n...) twins of the faults a client cannot
# tell apart from the reply alone
pay a500a '{"mode":"amount","amount":11}'
check "a500: 500" 500 "$CODE"
check_grep "a500: text/html" '^Content-Type: text/html' "$T/hdr"
check_grep "a500: HTML body" '<h1>500 Internal Server Error</h1>' "$T/body"
check "a500: applied" "-989.00" "$(remaining a500a)"
pay a500a '{"mode":"amount","amount":990}'
check "a500: a refused payment gets its 400, nothing applied" "400 INVALID_PARAMETER -989.00" \
	"$CODE $(py "$T/body" 'L(b)["status"]') $(remaining a500a)"
pay a502a '{"mode":"amount","amount":12}'
check "a502: 502 empty body, applied" "502 0 -988.00" "$CODE $(wc -c <"$T/body") $(remaining a502a)"
pay adrop1 '{"mode":"amount","amount":13}'
check "adrop: curl error 52, applied" "52 -987.00" "$RC $(remaining adrop1)"
pay ndrop1 '{"mode":"amount","amount":14}'
check "ndrop: curl error 52" 52 "$RC"
"$HERE/mockctl" "$CTL" invoice ndrop1 >/dev/null 2>&1
check "ndrop: not applied" 1 $?
pay n500a '{"mode":"amount","amount":15}'
check "n500: 500 HTML" "500 yes" "$CODE $(grep -q '<h1>500 Internal Server Error</h1>' "$T/body" && echo yes)"
"$HERE/mockctl" "$CTL" invoice n500a >/dev/null 2>&1
check "n500: not applied" 1 $?
"$HERE/mockctl" "$CTL" requests >"$T/rec"
check "new faults recorded under their names" "a500 a500 a502 adrop ndrop n500" \
	"$(py "$T/rec" '" ".join(r["fault"] for r in L(b) if r["id"] in ("a500a","a502a","adrop1","ndrop1","n500a"))')"
check "drop is still drop" "drop" "$(py "$T/rec" '" ".join(r["fault"] for r in L(b) if r["id"] == "drop1")')"
req GET a500a -u "$U:$PW"
check "GET on an a500 id returns the invoice" "200 -989.00" "$CODE $(py "$T/body" 'L(b)["data"]["remaining_sum"]')"
req GET ndrop1 -u "$U:$PW"
check "GET on an ndrop id returns the untouched invoice" "200 -1000.00 0" \
	"$CODE $(py "$T/body" 'L(b)["data"]["remaining_sum"], len(L(b)["data"]["events"])')"
req GET drop1 -u "$U:$PW"
check "GET on a drop id returns the invoice" "200 -999.00" "$CODE $(py "$T/body" 'L(b)["data"]["remaining_sum"]')"
req GET nf2 -u "$U:$PW"
check "GET on nf id: 404" 404 "$CODE"

# --- payments made outside the API (control /invoice/{id}/pay)
"$HERE/mockctl" "$CTL" pay out1 12.50 >"$T/out"
check "pay outside: exit 0" 0 $?
check "pay outside: creates the invoice, pays, adds an event" \
	"out1 -987.50 PartlyPaid 1 Payment 12.50 out1 None 12.50" \
	"$(py "$T/out" 'L(b)["id"], L(b)["remaining_sum"], L(b)["state"], len(L(b)["events"]), L(b)["events"][0]["type"], L(b)["events"][0]["data"]["amount"], L(b)["events"][0]["billogram_id"], L(b)["payments"][0]["seq"], L(b)["payments"][0]["amount"]')"
check "pay outside: the reply is the invoice view" "$(cat "$T/out")" "$("$HERE/mockctl" "$CTL" invoice out1)"
req GET out1 -u "$U:$PW"
check "pay outside: the API shows it" "200 -987.50" "$CODE $(py "$T/body" 'L(b)["data"]["remaining_sum"]')"
check_grep "pay outside: event amount a number with two decimals" '"data":{"amount":12.50}}' "$T/body"
pay out1 '{"mode":"amount","amount":100}'
"$HERE/mockctl" "$CTL" pay out1 remaining >"$T/out"
check "pay outside remaining: Paid, 3 events, distinct uuids, in order" "0.00 Paid 3 3 ['12.50', '100.00', '887.50']" \
	"$(py "$T/out" 'L(b)["remaining_sum"], L(b)["state"], len(L(b)["events"]), len(set(e["event_uuid"] for e in L(b)["events"])), [e["data"]["amount"] for e in L(b)["events"]]')"
check "pay outside: nothing recorded in /requests (only the API's GET and POST)" "GET POST" \
	"$("$HERE/mockctl" "$CTL" requests out1 | py /dev/stdin '" ".join(r["method"] for r in L(b))')"
"$HERE/mockctl" "$CTL" pay out1 remaining >"$T/out"
check "pay outside remaining with nothing left: 400" "1 True" "$? $(py "$T/out" '"error" in L(b)')"
"$HERE/mockctl" "$CTL" pay out2 1000.01 >"$T/out"
check "pay outside too much: 400 exceeds" "1 amount exceeds the remaining sum" "$? $(py "$T/out" 'L(b)["error"]')"
for a in abc 0 1.005 -5 1e2 ' 5'; do
	"$HERE/mockctl" "$CTL" pay out2 "$a" >"$T/out"
	check "pay outside amount '$a': 400 with a JSON error" "1 True" "$? $(py "$T/out" '"error" in L(b)')"
done
for body in '[1]' '{"amount":"1","x":1}' '{"mode":"remaining","amount":"1"}' '{"mode":"all"}' '{"amount":true}' 'nope' ''; do
	check "pay outside body '$body': 400" 400 "$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "$body" "$CTL/invoice/out2/pay")"
done
check "pay outside deeply nested body: 400" 400 \
	"$(/usr/bin/python3 -c 'print("["*100000 + "]"*100000)' | curl -sS -o /dev/null -w '%{http_code}' --data-binary @- "$CTL/invoice/out2/pay")"
check "pay outside bad id: 400" 400 "$(curl -sS -o /dev/null -w '%{http_code}' --data-binary '{"amount":"1"}' "$CTL/invoice/a-b/pay")"
check "pay outside: refusals left out2 untouched" "-1000.00 0" \
	"$("$HERE/mockctl" "$CTL" invoice out2 | py /dev/stdin 'L(b)["remaining_sum"], len(L(b)["events"])')"
check "pay outside: a JSON number amount" "200 -997.50" \
	"$(curl -sS -o "$T/out" -w '%{http_code}' --data-binary '{"amount":2.5}' "$CTL/invoice/out2/pay") $(py "$T/out" 'L(b)["remaining_sum"]')"
check "pay outside: usage error" 2 "$("$HERE/mockctl" "$CTL" pay out2 >/dev/null 2>&1; echo $?)"

# --- signed callbacks (control /callback)
# cbcheck REPLY GET-BODY KEY ENCODING EVENT-INDEX: what a receiver would
# check of a /callback reply, against the invoice a GET returned just before
cat >"$T/cbcheck.py" <<'PYEOF'
import base64, decimal, hashlib, hmac, json, re, sys, uuid
reply_bytes = open(sys.argv[1], "rb").read()
get = json.loads(open(sys.argv[2], "rb").read(), parse_float=decimal.Decimal)["data"]
key, enc, idx = sys.argv[3], sys.argv[4], int(sys.argv[5])
reply = json.loads(reply_bytes)
ts, sig, body = reply["timestamp"], reply["signature"], reply["body"]
cb = json.loads(body, parse_float=decimal.Decimal)
mac = hmac.new(key.encode("utf-8"), (ts + ":" + body).encode("utf-8"), hashlib.sha256).digest()
want = mac.hex() if enc == "hex" else base64.b64encode(mac).decode()
open(sys.argv[1] + ".signed", "wb").write((ts + ":" + body).encode("utf-8"))
print(sorted(reply) == ["body", "signature", "timestamp"],
      max(reply_bytes) < 128 and all(ord(c) < 128 for c in body),
      list(cb) == ["callback_id", "callback_timestamp", "callback_type", "custom", "billogram", "event"],
      cb["callback_type"], cb["custom"],
      uuid.UUID(cb["callback_id"]).version == 4,
      bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cb["callback_timestamp"])),
      cb["billogram"] == get, cb["event"] == get["events"][idx],
      hmac.compare_digest(sig, want))
PYEOF
cbcheck() { /usr/bin/python3 "$T/cbcheck.py" "$@" 2>&1; }
CBOK="True True True BillogramEvent None True True True True True"
pay cb1 '{"mode":"amount","amount":10}'
pay cb1 '{"mode":"amount","amount":20}'
"$HERE/mockctl" "$CTL" pay cb1 5 >/dev/null
req GET cb1 -u "$U:$PW"
cp "$T/body" "$T/cb1.get"
KEY='sign-key-123'
"$HERE/mockctl" "$CTL" callback cb1 "$KEY" >"$T/cb"
check "callback: exit 0" 0 $?
check "callback (default: last event, hex): body, event, signature" "$CBOK" "$(cbcheck "$T/cb" "$T/cb1.get" "$KEY" hex -1)"
check "callback: default timestamp is now with 6 decimals" yes \
	"$(py "$T/cb" '"yes" if __import__("re").fullmatch(r"[0-9]+\.[0-9]{6}", L(b)["timestamp"]) and abs(float(L(b)["timestamp"]) - __import__("time").time()) < 60 else L(b)["timestamp"]')"
check "callback: signature is lower-case hex" yes "$(py "$T/cb" '"yes" if __import__("re").fullmatch("[0-9a-f]{64}", L(b)["signature"]) else L(b)["signature"]')"
check "callback: event amount written with two decimals" True "$(py "$T/cb" 'L(b)["body"].endswith("\"data\":{\"amount\":5.00}}}")')"
check "callback: openssl dgst -hmac verifies the hex signature" "$(py "$T/cb" 'L(b)["signature"]')" \
	"$(openssl dgst -sha256 -hmac "$KEY" "$T/cb.signed" | awk '{print $NF}')"
"$HERE/mockctl" "$CTL" callback cb1 "$KEY" base64 >"$T/cb"
check "callback base64: verifies" "$CBOK" "$(cbcheck "$T/cb" "$T/cb1.get" "$KEY" base64 -1)"
check "callback: openssl dgst -hmac verifies the base64 signature" "$(py "$T/cb" 'L(b)["signature"]')" \
	"$(openssl dgst -sha256 -hmac "$KEY" -binary "$T/cb.signed" | base64)"
for ev in 0 1 2 -1 -2 -3; do
	"$HERE/mockctl" "$CTL" callback cb1 "$KEY" "$ev" >"$T/cb"
	check "callback event $ev" "$CBOK" "$(cbcheck "$T/cb" "$T/cb1.get" "$KEY" hex "$ev")"
done
check "callback event 0 is the first payment" "10.00 20.00 5.00" \
	"$(for ev in 0 1 2; do "$HERE/mockctl" "$CTL" callback cb1 k "$ev" | py /dev/stdin 'L(L(b)["body"])["event"]["data"]["amount"]'; done | tr '\n' ' ' | sed 's/ $//')"
"$HERE/mockctl" "$CTL" callback cb1 "$KEY" 1 base64 >"$T/cb"
check "callback event 1 base64" "$CBOK" "$(cbcheck "$T/cb" "$T/cb1.get" "$KEY" base64 1)"
curl -sS -o "$T/cb" --data-binary '{"id":"cb1","key":"k\u00e5\u00e4\u00f6","event":-1,"timestamp":"1550155518.141119","encoding":"hex"}' "$CTL/callback"
check "callback: given timestamp kept, UTF-8 key" "1550155518.141119 $CBOK" \
	"$(py "$T/cb" 'L(b)["timestamp"]') $(cbcheck "$T/cb" "$T/cb1.get" "kåäö" hex -1)"
check "callback: openssl agrees on a UTF-8 key" "$(py "$T/cb" 'L(b)["signature"]')" \
	"$(openssl dgst -sha256 -hmac "kåäö" "$T/cb.signed" | awk '{print $NF}')"
check "callback: each has its own callback_id" 2 \
	"$(for i in 1 2; do "$HERE/mockctl" "$CTL" callback cb1 k | py /dev/stdin 'L(L(b)["body"])["callback_id"]'; done | sort -u | wc -l)"
for ev in 3 -4; do
	"$HERE/mockctl" "$CTL" callback cb1 k "$ev" >"$T/cb"
	check "callback event $ev: 404" "1 no such invoice or event" "$? $(py "$T/cb" 'L(b)["error"]')"
done
check "callback unknown invoice: 404, not created" "1 1" \
	"$("$HERE/mockctl" "$CTL" callback nocb1 k >/dev/null; echo $?) $("$HERE/mockctl" "$CTL" invoice nocb1 >/dev/null 2>&1; echo $?)"
req GET cbnone1 -u "$U:$PW"
check "callback on an invoice without events: 404" 404 \
	"$(curl -sS -o /dev/null -w '%{http_code}' --data-binary '{"id":"cbnone1","key":"k"}' "$CTL/callback")"
for body in '{}' '{"id":"cb1"}' '{"key":"k"}' '{"id":"cb1","key":5}' '{"id":"cb1","key":"k","encoding":"hex2"}' \
	'{"id":"cb1","key":"k","event":"1"}' '{"id":"cb1","key":"k","event":1.0}' '{"id":"cb1","key":"k","event":true}' \
	'{"id":"cb1","key":"k","timestamp":1550155518.14}' '{"id":"cb1","key":"k","timestamp":"a b"}' \
	'{"id":"cb1","key":"k","timestamp":""}' '{"id":"cb1","key":"k","x":1}' '[1]' 'nope'; do
	check "callback body '$body': 400" 400 "$(curl -sS -o /dev/null -w '%{http_code}' --data-binary "$body" "$CTL/callback")"
done
check "callback: usage errors" "2 2" \
	"$("$HERE/mockctl" "$CTL" callback cb1 >/dev/null 2>&1; echo $?) $("$HERE/mockctl" "$CTL" callback cb1 k x >/dev/null 2>&1; echo $?)"

# --- the record holds the exact body bytes
printf '{ "mode" :\t"amount",\r\n "amount": 12.50 , "x\\u00e9": "\xc3\xa9\xff"}' >"$T/odd"
pay rec1 "@$T/odd"
check "odd body: 400 UNKNOWN_PARAMETER" 400 "$CODE"
"$HERE/mockctl" "$CTL" requests rec1 >"$T/rec"
check "record: one entry for rec1" 1 "$(py "$T/rec" 'len(L(b))')"
check "record: exact body bytes (latin-1)" True \
	"$(/usr/bin/python3 -c 'import sys,json; r=json.load(open(sys.argv[1]))[0]; print(r["body"].encode("latin-1")==open(sys.argv[2],"rb").read())' "$T/rec" "$T/odd")"
check "record: method, path, id, lower-case headers" "POST /api/v2/billogram/rec1/command/credit-payment rec1 application/json True" \
	"$(py "$T/rec" 'L(b)[0]["method"], L(b)[0]["path"], L(b)[0]["id"], L(b)[0]["headers"]["content-type"], L(b)[0]["headers"]["authorization"].startswith("Basic ")')"
"$HERE/mockctl" "$CTL" requests >"$T/rec"
check "record: includes failed-auth, faulted and dropped requests in order" True \
	"$(py "$T/rec" '[r["seq"] for r in L(b)] == list(range(1, len(L(b))+1)) and all(i in [r["id"] for r in L(b)] for i in ["inv3","e500a","drop1","silent1"])')"

# --- keep-alive: three requests on one connection
CODE=$(curl -sS --cacert "$T/certs/ca.crt" -u "$U:$PW" -o /dev/null -o /dev/null -o /dev/null \
	-w '%{http_code}:%{num_connects} ' "$API/ka1" "$API/ka1" "$API/ka1" 2>"$T/err")
check "keep-alive: 3 requests, 1 connection" "200:1 200:0 200:0 " "$CODE"

# --- global faults
"$HERE/mockctl" "$CTL" fault '{"mode":"status","status":503,"retry_after":1,"count":2}' >/dev/null
check "fault status accepted" 0 $?
pay g1 '{"mode":"amount","amount":1}'
a="$CODE $(grep -c '^Retry-After: 1' "$T/hdr")"
pay g1 '{"mode":"amount","amount":1}'
b="$CODE"
pay g1 '{"mode":"amount","amount":1}'
check "fault status count 2: 503 503 then 200" "503 1 503 200" "$a $b $CODE"
check "fault status: not applied" "-999.00" "$(remaining g1)"
"$HERE/mockctl" "$CTL" fault '{"mode":"status","status":429,"retry_after":2,"for_s":1.5}' >"$T/fault"
check "fault status for_s accepted, with its end" "True" \
	"$(py "$T/fault" 'L(b)["fault"]["until"] > L(b)["fault"]["for_s"]')"
pay g3 '{"mode":"amount","amount":1}'
a="$CODE $(grep -c '^Retry-After: 2' "$T/hdr")"
sleep 1.7
pay g3 '{"mode":"amount","amount":1}'
check "fault status for_s 1.5: 429 then, after it, 200" "429 1 200" "$a $CODE"
check "fault status for_s: none once over" "none" \
	"$(curl -sS "$CTL/fault" | py /dev/stdin 'L(b)["mode"]')"
"$HERE/mockctl" "$CTL" fault '{"mode":"down"}' >/dev/null
n0=$("$HERE/mockctl" "$CTL" requests | py /dev/stdin 'len(L(b))')
pay g2 '{"mode":"remaining"}'
if [ "$RC" -ne 0 ]; then ok "fault down: connection fails (curl $RC)"; else bad "fault down: connection fails" "curl ok, $CODE"; fi
check "fault down: nothing recorded" "$n0" "$("$HERE/mockctl" "$CTL" requests | py /dev/stdin 'len(L(b))')"
"$HERE/mockctl" "$CTL" fault '{"mode":"slow","ms":700}' >/dev/null
t0=$(date +%s%N)
pay g2 '{"mode":"amount","amount":1}'
t1=$(date +%s%N)
check "fault slow 700: success after >= 0.7 s" "200 yes" "$CODE $([ $(((t1 - t0) / 1000000)) -ge 700 ] && echo yes)"
"$HERE/mockctl" "$CTL" fault '{"mode":"random","rate":1.0,"seed":7}' >/dev/null
outs=
for i in 1 2 3 4 5 6; do
	pay r1 '{"mode":"amount","amount":1}' --max-time 10
	outs="$outs $RC/$CODE"
done
if echo "$outs" | grep -qv ' 0/200 0/200 0/200 0/200 0/200 0/200'; then ok "fault random rate 1: every request faulted:$outs"; else bad "fault random" "$outs"; fi
"$HERE/mockctl" "$CTL" fault '{"mode":"none"}' >/dev/null
pay g2 '{"mode":"amount","amount":1}'
check "fault none: back to normal" 200 "$CODE"
"$HERE/mockctl" "$CTL" fault '{"mode":"nope"}' >/dev/null 2>&1
check "bad fault JSON rejected" 1 $?

# --- the mock's clock: behind by two hours, then without a zone
"$HERE/mockctl" "$CTL" clock '{"offset_s":-7200}' >/dev/null
check "clock offset accepted" 0 $?
pay clk1 '{"mode":"amount","amount":1}'
check "clock behind: the event is two hours old" "True" \
	"$(py "$T/body" '__import__("datetime").datetime.now(__import__("datetime").timezone.utc) - __import__("datetime").datetime.strptime(L(b)["data"]["events"][-1]["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").timezone.utc) > __import__("datetime").timedelta(seconds=7000)')"
"$HERE/mockctl" "$CTL" clock '{"offset_s":0,"naive":true}' >/dev/null
pay clk1 '{"mode":"amount","amount":1}'
check "clock naive: created_at without a zone" "False" \
	"$(py "$T/body" 'L(b)["data"]["events"][-1]["created_at"].endswith("Z")')"
"$HERE/mockctl" "$CTL" clock '{"offset_s":"x"}' >/dev/null 2>&1
check "bad clock JSON rejected" 1 $?
"$HERE/mockctl" "$CTL" reset >/dev/null
check "reset: record empty" "[]" "$("$HERE/mockctl" "$CTL" requests)"
"$HERE/mockctl" "$CTL" invoice inv1 >/dev/null 2>&1
check "reset: invoices gone" 1 $?

# --- 16 concurrent keep-alive clients x 20 payments of 1.00 on one invoice
urls=()
for i in $(seq 20); do urls+=("$API/conc1/command/credit-payment"); done
pids=()
for c in $(seq 16); do
	curl -sS --cacert "$T/certs/ca.crt" -u "$U:$PW" -H 'Content-Type: application/json' \
		--data-binary '{"mode":"amount","amount":1}' -o /dev/null -w '\n%{http_code} %{num_connects}\n' \
		"${urls[@]}" >"$T/conc.$c" 2>&1 &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
cat "$T"/conc.* | grep -E '^[0-9]{3} [0-9]+$' >"$T/conc.all"
check "concurrency: 320 replies 200" 320 "$(grep -c '^200 ' "$T/conc.all")"
check "concurrency: one connection per client" 16 "$(awk '{s += $2} END {print s}' "$T/conc.all")"
check "concurrency: 320 payments applied exactly" "-680.00" "$(remaining conc1)"
check "concurrency: 320 recorded" 320 "$("$HERE/mockctl" "$CTL" requests conc1 | py /dev/stdin 'len(L(b))')"

# --- a stalled TLS client does not block others
exec 3<>/dev/tcp/127.0.0.1/"$PORT"
req GET stall1 -u "$U:$PW" --max-time 5
check "stalled client (no handshake) does not block accept" 200 "$CODE"

# --- SIGTERM with a request in flight
pay silent2 '{"mode":"remaining"}' --max-time 30 &
cpid=$!
sleep 0.5
stop_mock "with a silent request in flight"
wait "$cpid" 2>/dev/null
exec 3>&-

# --- fixed ports and --magic-get
start_mock --magic-get
req GET e503z -u "$U:$PW"
check "--magic-get: GET on e503 id gives 503" 503 "$CODE"
req GET a500z -u "$U:$PW"
check "--magic-get: GET on a500 id gives 500 and pays nothing" "500 -1000.00" "$CODE $(remaining a500z)"
req GET adrop2 -u "$U:$PW"
check "--magic-get: GET on adrop id drops" 52 "$RC"
req GET ndrop2 -u "$U:$PW"
check "--magic-get: GET on ndrop id drops" 52 "$RC"
stop_mock "idle"

# --- the mock goes when the process that started it is gone
rm -f "$T/orphan.pid"
(
	"$HERE/billogram_mock.py" --cert "$T/certs/server.crt" --key "$T/certs/server.key" \
		--user "$U" --password "$PW" --port-file "$T/port2" --ctl-port-file "$T/ctlport2" \
		--log "$T/mock2.log" &
	echo $! >"$T/orphan.pid"
	sleep 1
)
opid=$(cat "$T/orphan.pid")
for _ in $(seq 30); do
	kill -0 "$opid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$opid" 2>/dev/null; then
	bad "a mock whose parent exited is still running after 3 s"
	kill "$opid"
else
	ok "a mock whose parent exited stops by itself"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
