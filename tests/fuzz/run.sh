#!/usr/bin/env bash
# Builds the libFuzzer harness over bg_classify_reply() with ASan and UBSan
# and runs it for $1 seconds (default 60) from the seed corpus in
# tests/fuzz/corpus.  New inputs go to a scratch corpus, not the tree.
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
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-o "$work/fuzz_reply" "$top/tests/fuzz/fuzz_reply.c" "$top/src/reply.c" -ljansson
mkdir -p "$work/corpus"
cp "$top"/tests/fuzz/corpus/* "$work/corpus/"
echo "fuzzing bg_classify_reply() for $seconds s"
"$work/fuzz_reply" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
	"$work/corpus" 2>"$work/fuzz.log" || { tail -n 60 "$work/fuzz.log"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$work/fuzz.log" || true
echo "fuzz: 1 passed, 0 failed"
