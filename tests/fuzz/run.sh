#!/usr/bin/env bash
# Builds the libFuzzer harnesses with ASan and UBSan and runs them for $1
# seconds in all (default 60), split between them: fuzz_json_span (the JSON
# scanner and the invoice summary, differential against jansson) and
# fuzz_reply (bg_classify_reply()).  Each starts from its seed corpus in
# tests/fuzz/corpus/<target>; new inputs go to a scratch corpus, not the
# tree.  The last line is "fuzz: N passed, M failed", one per harness.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-60}
. "$top/tests/lib.sh"
bg_install_packages <<LIST
clang
libclang-rt-dev
libjansson-dev
LIST
work=$(mktemp -d /tmp/billogram-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

# the scanner gets the first half: it is the newer code, and the reply
# harness exercises it again underneath bg_classify_reply()
span_seconds=$((seconds / 2))
[ "$span_seconds" -ge 1 ] || span_seconds=1
reply_seconds=$((seconds - span_seconds))
[ "$reply_seconds" -ge 1 ] || reply_seconds=1

passed=0
failed=0

# fuzz NAME SECONDS SOURCES...: build the harness tests/fuzz/NAME.c with the
# given sources from src/, run it, count the outcome
fuzz() {
	local name=$1 secs=$2 target=${1#fuzz_}
	shift 2
	local sources=()
	for s in "$@"; do sources+=("$top/src/$s"); done
	if ! clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-o "$work/$name" "$top/tests/fuzz/$name.c" "${sources[@]}" -ljansson; then
		echo "$name: does not build"
		failed=$((failed + 1))
		return
	fi
	mkdir -p "$work/corpus-$target"
	cp "$top/tests/fuzz/corpus/$target"/* "$work/corpus-$target/"
	echo "fuzzing $name for $secs s"
	if "$work/$name" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 \
		-artifact_prefix="$work/$name-" "$work/corpus-$target" 2>"$work/$name.log"; then
		grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$work/$name.log" || true
		passed=$((passed + 1))
	else
		tail -n 60 "$work/$name.log"
		for a in "$work/$name"-*; do
			[ -f "$a" ] && echo "$name: failing input (base64): $(base64 -w0 "$a")"
		done
		failed=$((failed + 1))
	fi
}

fuzz fuzz_json_span "$span_seconds" json_span.c json_validate.c invoice.c
fuzz fuzz_reply "$reply_seconds" reply.c json_span.c json_validate.c invoice.c
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
