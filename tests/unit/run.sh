#!/usr/bin/env bash
# Builds the unit tests of src/json_validate.c, src/json_span.c and
# src/invoice.c with ASan and UBSan (plain C, no PostgreSQL needed) and runs
# them on the mock's example invoice.  The last line is the test program's
# "N passed, M failed"; the exit status is non-zero if anything failed or did
# not build.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/billogram-unit.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
	-Wall -Wextra -Werror \
	-o "$work/json_span_test" "$top/tests/unit/json_span_test.c" \
	"$top/src/json_span.c" "$top/src/json_validate.c" "$top/src/invoice.c"
"$work/json_span_test" "$top/tests/mock/example-response.json"
