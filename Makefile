# billogram: PGXS build, plus the project's own entry points.
#
#   make && make install    build and install the extension
#   make demo               throw-away cluster + mock API + a payment from psql
#   make test               every test, as CI runs them: the suite with the
#                           extension built plainly and built with sanitizers,
#                           and on PostgreSQL 17 and 18 in Debian roots
#                           (tests/pg_root.sh), and the Debian package
#                           installed with apt and tested (tests/deb.sh);
#                           installs into private copies of the server's
#                           installation, never the system's
#   make test SANITIZE=1    only the suite, built with ASan and UBSan
#   make bench              the benchmark
#   make chaos              the chaos run at full size (tests/chaos.sh):
#                           10,000 payments under generated faults, then the
#                           books checked; SEED=n replays a schedule,
#                           CHAOS_PAYMENTS=n sets its size
#   make installcheck       pg_regress against a running server configured
#                           as docs/installcheck.md says
#   make fresh-check        (root) make demo and make test from a clone of
#                           HEAD in a minimal Debian 12 root; SUITE=trixie
#                           PG=17 for Debian 13 and PostgreSQL 17
#   make deb                (root) the Debian packages (debian/):
#                           postgresql-15-, -17- and -18-billogram, each
#                           built in a Debian root of its release, into
#                           build/deb/

EXTENSION = billogram
# this Makefile's directory (MAKEFILE_LIST changes once PGXS is included)
BG_SRCDIR := $(dir $(lastword $(MAKEFILE_LIST)))
MODULE_big = billogram
OBJS = \
	src/batch.o \
	src/billogram.o \
	src/callback.o \
	src/channel.o \
	src/channel_worker.o \
	src/credentials.o \
	src/credit_payment.o \
	src/enqueue.o \
	src/guc.o \
	src/http.o \
	src/http_events.o \
	src/http_failure.o \
	src/inflight.o \
	src/intake.o \
	src/invoice.o \
	src/jobs.o \
	src/journal.o \
	src/journalfuncs.o \
	src/jsonb_fit.o \
	src/json_span.o \
	src/json_validate.o \
	src/metrics.o \
	src/other_databases.o \
	src/outcomes.o \
	src/pause.o \
	src/queue.o \
	src/redact.o \
	src/reply.o \
	src/report.o \
	src/request.o \
	src/row_moves.o \
	src/settle.o \
	src/source_row.o \
	src/statements.o \
	src/stats.o \
	src/trigger.o \
	src/trust.o \
	src/wait_event.o \
	src/worker.o \
	src/worker_memory.o
DATA = sql/billogram--0.1.control sql/billogram--0.2.control sql/billogram--0.1.sql sql/billogram--0.2.sql sql/billogram--0.3.sql sql/billogram--0.1--0.2.sql sql/billogram--0.2--0.3.sql
PGFILEDESC = "billogram - Billogram credit payments from SQL"

# pg_regress is run by tests/run.sh against a cluster it configures itself,
# and by PGXS's make installcheck against the running server, which must be
# configured as docs/installcheck.md says (checked first, REGRESS_PREP)
REGRESS = setup credit_payment get_invoice bad_input api_errors transport privileges routes queue copies health callbacks verdicts readings source_rows
REGRESS_PREP = installcheck-prereq

# The version is read from the control file, the one place it is written, so
# that the User-Agent the worker sends (and META.json, checked by
# tests/packaging.sh) cannot drift from the SQL version installed.
EXTVERSION := $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(dir $(lastword $(MAKEFILE_LIST)))billogram.control)

PG_CPPFLAGS = $(shell pkg-config --cflags libcurl jansson 2>/dev/null) -DBG_EXTVERSION=\"$(EXTVERSION)\"

# Warnings are errors in the project's own builds (gcc 12 and 14, PostgreSQL
# 15 and 17 are kept clean).  -Wno-unused-parameter because PostgreSQL's own
# headers (ilist.h, bufpage.h, fmgr.h) and every callback signature have
# parameters they do not use.  A build with a newer compiler that warns about
# something new can still be had with "make WERROR=".
WERROR ?= -Werror
PG_CFLAGS += -Wall -Wextra $(WERROR) -Wno-unused-parameter
SHLIB_LINK = $(shell pkg-config --libs libcurl jansson 2>/dev/null || echo -lcurl -ljansson)

# SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer, every finding
# fatal; tests/suite.sh preloads the runtime into the servers (see
# tests/sanitize/).  Switching needs a clean build, which tests/run.sh does.
SANITIZE_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ifeq ($(SANITIZE),1)
PG_CFLAGS += $(SANITIZE_FLAGS) -g
SHLIB_LINK += $(SANITIZE_FLAGS)
endif

# no JIT bitcode: nothing here is worth inlining, and it would need clang
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
# PGXS tracks no header dependencies: every object is rebuilt when any of
# the project's headers changes (a struct that grew in reply.h once left
# stale objects that disagreed about its layout)
$(OBJS): $(wildcard $(BG_SRCDIR)src/*.h)
else
all:
	@echo "pg_config not found: run 'make test' or 'make demo', which install what is missing" >&2
	@exit 1
endif

.PHONY: test demo bench chaos sanitize-flags fresh-check installcheck-prereq deb

installcheck-prereq:
	@bash tests/installcheck-prereq.sh '$(bindir)/psql'

# The fresh-machine rehearsal (root; not part of make test): make demo and
# make test from a clone of HEAD in a minimal Debian root built by
# mmdebstrap.  SUITE=trixie PG=17 for Debian 13 and PostgreSQL 17.
SUITE ?= bookworm
fresh-check:
	bash tests/fresh-check.sh $(SUITE) $(PG)

# The Debian packages, each built by dpkg-buildpackage in a root of the
# Debian release whose PostgreSQL it is for (tests/deb.sh; roots cached for
# the day).  DEB_SUITES=bookworm for Debian 12's alone.
DEB_SUITES ?= bookworm trixie forky
deb:
	@set -e; for suite in $(DEB_SUITES); do bash tests/deb.sh build $$suite build/deb; done
	@ls -l build/deb/*.deb

test:
	bash tests/run.sh $(if $(filter 1,$(SANITIZE)),--sanitize-only)

sanitize-flags:
	@echo $(SANITIZE_FLAGS)

demo:
	bash tests/demo.sh

chaos:
	CHAOS_SEED=$(SEED) CHAOS_PAYMENTS=$(CHAOS_PAYMENTS) bash tests/chaos.sh

bench:
	@test -f bench/run.sh || { echo "no benchmark yet (issue: Benchmarks)" >&2; exit 1; }
	bash bench/run.sh

# libFuzzer over the JSON scanner and the reply classifier (clang from
# Debian); FUZZ_SECONDS=60 in all, split between them
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)
