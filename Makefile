# billogram: PGXS build, plus the project's own entry points.
#
#   make && make install    build and install the extension
#   make demo               throw-away cluster + mock API + a payment from psql
#   make test               every test (pg_regress and TAP), as CI runs them
#   make bench              the benchmark

EXTENSION = billogram
MODULE_big = billogram
OBJS = \
	src/billogram.o \
	src/channel.o \
	src/credit_payment.o \
	src/enqueue.o \
	src/guc.o \
	src/http.o \
	src/queue.o \
	src/redact.o \
	src/reply.o \
	src/report.o \
	src/request.o \
	src/worker.o
DATA = sql/billogram--0.1.sql
PGFILEDESC = "billogram - Billogram credit payments from SQL"

# pg_regress is run by tests/run.sh against a cluster it configures itself
REGRESS = setup credit_payment bad_input api_errors transport privileges queue

PG_CPPFLAGS = $(shell pkg-config --cflags libcurl jansson 2>/dev/null)
SHLIB_LINK = $(shell pkg-config --libs libcurl jansson 2>/dev/null || echo -lcurl -ljansson)

# no JIT bitcode: nothing here is worth inlining, and it would need clang
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
all:
	@echo "pg_config not found: run 'make test' or 'make demo', which install what is missing" >&2
	@exit 1
endif

.PHONY: test demo bench

test:
	bash tests/run.sh

demo:
	bash tests/demo.sh

bench:
	@test -f bench/run.sh || { echo "no benchmark yet (issue: Benchmarks)" >&2; exit 1; }
	bash bench/run.sh

# libFuzzer over the reply classifier (clang from Debian); FUZZ_SECONDS=60
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)
