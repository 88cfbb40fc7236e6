# ds3 — plain make. `make help` lists the targets.
#
# Switches:
#   BLAS=openblas|none   GEMMs through OpenBLAS (default) or plain loops
#   NO_OMP=1             build without OpenMP (same numbers, one thread)
#   PRECISION=f64        double as the scalar type, built into build-f64/ (oracle mode)
#   SAN=1                AddressSanitizer + UBSan, built into build-san/ and build-f64-san/
#   CC=clang             any C11 compiler
#   PLAIN_C=1            the kernels as plain C loops, not vector extensions (same bits), into build-plain/
#   MPI=1                expert parallelism across processes (mpirun), built with mpicc into build-mpi/

CC ?= cc
BLAS ?= openblas
PRECISION ?= f32

# CFLAGS (-O2 unless given, e.g. `make CFLAGS=-O3`) comes first; the flags
# ds3 needs are added after it with `override`, so a command-line CFLAGS adds
# to them and never replaces them (-ffp-contract=off last: the bits, docs/PORTABILITY.md).
CFLAGS ?= -O2
override CFLAGS += -std=c11 -Wall -Wextra -ffp-contract=off -MMD -MP -fPIC -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc
# PCRE2 runs the tokenizer's pre-tokenisation regexes (docs/TOKENIZER.md).
override CFLAGS += $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
LDLIBS := -lcjson $(or $(shell pkg-config --libs libpcre2-8 2>/dev/null),-lpcre2-8) -lm

# SAN=1: every build output goes to a -san twin of its directory, so the
# normal builds are untouched; any sanitizer report aborts the program.
# float-cast-overflow is named because gcc's "undefined" leaves it out.
ifdef SAN
  SAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer \
               -fno-sanitize-recover=all
  override CFLAGS += $(SAN_FLAGS) -g
  override LDFLAGS += $(SAN_FLAGS)
  SAN_SUFFIX := -san
endif

# PLAIN_C=1: the lane kernel and dot product as plain C loops (src/kernels/simd.h).
ifdef PLAIN_C
  override CFLAGS += -DDS3_PLAIN_C
  SAN_SUFFIX := -plain$(SAN_SUFFIX)
endif

# MPI=1: the same sources with -DDS3_MPI through Open MPI's mpicc (OMPI_CC picks
# the compiler under it), into build-mpi/; Open MPI installed when missing
# (docs/ARCHITECTURE.md, "Expert parallelism").
ifdef MPI
  BASE_CC := $(CC)
  override CC := mpicc
  override CFLAGS += -DDS3_MPI
  SAN_SUFFIX := -mpi$(SAN_SUFFIX)
endif

ifeq ($(PRECISION),f64)
  BUILD ?= build-f64$(SAN_SUFFIX)
  override CFLAGS += -DDS3_F64
else
  BUILD ?= build$(SAN_SUFFIX)
endif
BUILD_F64 := build-f64$(SAN_SUFFIX)
# Synthetic models: a sanitized CLI writes its own copies (same bytes, but the
# cache stamp is per binary), so it never rewrites build/models under a
# concurrent normal `make test`.
MODELS := $(if $(SAN),build-san/models,build/models)

ifeq ($(BLAS),openblas)
  override CFLAGS += -DDS3_BLAS $(shell pkg-config --cflags openblas 2>/dev/null)
  LDLIBS := $(or $(shell pkg-config --libs openblas 2>/dev/null),-lopenblas) $(LDLIBS)
endif

ifndef NO_OMP
  override CFLAGS += -fopenmp
  override LDFLAGS += -fopenmp
else
  # Without OpenMP the `#pragma omp` lines are meant to be ignored.
  override CFLAGS += -Wno-unknown-pragmas
endif

# The library: src/*.c and one folder per layer (src/error.h says which).
LIB_SRC := $(wildcard src/*.c src/*/*.c)
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
CLI_SRC := $(wildcard cli/*.c)
CLI_OBJ := $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
DEPS_STAMP := $(if $(MPI),build-mpi/.deps-ok,build/.deps-ok)

.PHONY: all help run test test-quick deps clean bench bench-peer models

# Build the library (static and shared) and the CLI.
all: $(BUILD)/libds3.a $(BUILD)/libds3.so $(BUILD)/ds3

# List the targets.
help:
	@echo "make            build $(BUILD)/libds3.a, $(BUILD)/libds3.so and the CLI $(BUILD)/ds3"
	@echo "make run        install missing deps, build, continue a sentence with the trained model (ref_data/models/austen-tiny)"
	@echo "make bench      measure the machine and ds3 on small (fp8, bf16): bench/results/ (docs/BENCHMARKS.md)"
	@echo "make bench-peer ds3 against llama.cpp on small, same run (builds llama.cpp in build-peer/)"
	@echo "make test       unit + end-to-end tests (fp32 and f64 builds, the Python package) against ref_data/"
	@echo "make test-quick the fp32 build's tests only"
	@echo "make test SAN=1 the same tests built with ASan + UBSan (build-san/, build-f64-san/)"
	@echo "make fuzz       run each libFuzzer target FUZZ_SECONDS (60) with ASan + UBSan (build-fuzz/)"
	@echo "make valgrind   every test under valgrind memcheck (NO_OMP=1 build in build-vg/)"
	@echo "make deps       install missing build dependencies (scripts/install-deps.sh)"
	@echo "make check-math ds3's exp/log/pow/sin/cos against MPFR: every RoPE input + 10^7 random per set (libmpfr-dev; slow)"
	@echo "make install    PREFIX=/usr/local (DESTDIR too): CLI, libraries, ds3.h, ds3.pc, data"
	@echo "make uninstall  remove what make install put under PREFIX"
	@echo "make clean      remove every build directory"
	@echo "make MPI=1      build-mpi/ds3 with Open MPI: mpirun -np N build-mpi/ds3 … splits the experts (installs Open MPI)"
	@echo "switches: BLAS=openblas|none  NO_OMP=1  PRECISION=f64  SAN=1  CC=clang  PLAIN_C=1  MPI=1"

# Install what is missing (libopenblas-dev, libcjson-dev, …), once.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh
	@$(if $(MPI),CC="$(BASE_CC)" MPI=1 )sh scripts/install-deps.sh
	@mkdir -p $(dir $@) && touch $@

# The lane kernel's AVX2 copy (chosen at run time, same bits as the portable one).
ifneq (,$(findstring x86_64,$(shell $(or $(BASE_CC),$(CC)) -dumpmachine)))
$(BUILD)/obj/kernels/linear_avx2.o: override CFLAGS += -mavx2 -mf16c
endif

$(BUILD)/obj/%.o: src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libds3.a: $(LIB_OBJ)
	ar rcs $@ $^

$(BUILD)/libds3.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/cli/%.o: cli/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Where the CLI finds data/tokenizers/ (the source tree; $$DS3_DATA_DIR overrides it).
$(BUILD)/cli/text.o: override CFLAGS += -DDS3_DATA_DIR='"$(abspath data)"'

# --version names the commit: cli/ds3.o is rebuilt when it changes.
DS3_COMMIT := $(or $(shell git describe --always --dirty --abbrev=12 2>/dev/null),unknown)
$(shell mkdir -p $(BUILD) && (echo '$(DS3_COMMIT)' | cmp -s - $(BUILD)/.commit || echo '$(DS3_COMMIT)' > $(BUILD)/.commit))
$(BUILD)/cli/ds3.o: CFLAGS += -DDS3_COMMIT='"$(DS3_COMMIT)"'
$(BUILD)/cli/ds3.o: $(BUILD)/.commit

$(BUILD)/ds3: $(CLI_OBJ) $(BUILD)/libds3.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/harness.h $(BUILD)/libds3.a | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/libds3.a $(LDFLAGS) $(LDLIBS)

# Synthetic reference models used by the tests (deterministic, cached).
models: $(BUILD)/ds3
	@sh scripts/make-models.sh $(BUILD)/ds3 build/models

# Build, then continue a sentence with the trained model shipped in ref_data/models/austen-tiny
# (docs/TRAINED.md: DeepSeek-V3's architecture at 3.3 M parameters, trained on Jane Austen).
RUN_MODEL ?= ref_data/models/austen-tiny
RUN_PROMPT ?= It is a truth universally acknowledged
run: all
	$(BUILD)/ds3 run -m $(RUN_MODEL) -p "$(RUN_PROMPT)" -n 48 --repeat-penalty 1.3

# ---- benchmarks: bench/bench_*.c against the library (docs/BENCHMARKS.md) ----
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

$(BUILD)/bench/%: bench/%.c bench/bench.h $(BUILD)/libds3.a | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ibench -o $@ $< $(BUILD)/libds3.a $(LDFLAGS) $(LDLIBS)

# Measure the machine, then ds3 on `small` (fp8, bf16), then transformers when a venv
# has it: bench/results/*.csv, .txt, .png. A few minutes; BENCH_QUICK=1 for less.
bench: all $(BENCH_BIN)
	@sh bench/run.sh $(BUILD)

# ds3 and llama.cpp side by side on small (bench/peer.sh): downloads and builds
# llama.cpp into build-peer/ (pinned llama-cpp-python sdist from PyPI). Never in CI.
bench-peer: all $(BENCH_BIN)
	@sh bench/peer.sh $(BUILD)

-include $(BENCH_BIN:=.d)

# The fp32 build's tests only.
test-quick: all $(TEST_BIN)
	@sh scripts/make-models.sh $(BUILD)/ds3 $(MODELS)
	@$(SAN_ENV) sh tests/run.sh $(BUILD) $(MODELS)

# All tests: the fp32 build, then the f64 (oracle-mode) build, then the Python
# package (python/tests/run.sh; not with SAN=1) and, where Open MPI is installed,
# mpirun against one process (build-mpi/, tests/test_mpi.sh); one closing line.
test: all $(TEST_BIN)
	@$(MAKE) --no-print-directory PRECISION=f64 all tests-bin-f64
	@$(if $(SAN)$(MPI),:,if command -v mpicc > /dev/null 2>&1; then $(MAKE) --no-print-directory MPI=1 all; fi)
	@sh scripts/make-models.sh $(BUILD)/ds3 $(MODELS)
	@$(SAN_ENV) $(if $(SAN),,DS3_PYTHON_TESTS=1 DS3_MPI_TESTS=1) sh tests/run.sh $(BUILD) $(MODELS) $(BUILD_F64)

.PHONY: tests-bin-f64
tests-bin-f64: $(TEST_BIN)

# Sanitizer reports: stack traces, and a failing exit status for UBSan too;
# malloc returns NULL when it cannot (as without ASan), so that the library's
# out-of-memory errors are what gets tested, not ASan's abort.
SAN_ENV := $(if $(SAN),ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:strict_string_checks=1 \
             UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

# ---- fuzzing: libFuzzer targets tests/fuzz/fuzz_*.c (docs/ROBUSTNESS.md) ----
# Built with clang against the library sources (no BLAS, no OpenMP: the
# parsers need neither) with ASan + UBSan, into build-fuzz/. `make fuzz` runs
# each target FUZZ_SECONDS; FUZZ_TARGETS picks some (e.g. "config tokens").
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR := build-fuzz
FUZZ_CFLAGS := -std=c11 -g -O2 -fno-omit-frame-pointer -ffp-contract=off -Wall -Wextra -Wno-unknown-pragmas -MMD -MP \
               -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -fno-sanitize-recover=all \
               -fsanitize=address,undefined,float-cast-overflow
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:src/%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)

.PHONY: fuzz fuzz-build
# Build the fuzz targets (clang + libFuzzer: libclang-rt-dev on Debian).
fuzz-build: $(FUZZ_BIN)
# Run every fuzz target for FUZZ_SECONDS (default 60) each.
fuzz: fuzz-build
	@sh tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The lane kernel's AVX2 copy needs its flag here too.
ifneq (,$(findstring x86_64,$(shell $(FUZZ_CC) -dumpmachine 2>/dev/null)))
$(FUZZ_DIR)/obj/kernels/linear_avx2.o: FUZZ_CFLAGS += -mavx2 -mf16c
endif

# clang and its libFuzzer runtime, installed when missing (once).
$(FUZZ_DIR)/.deps-ok: scripts/install-deps.sh
	@CC=$(FUZZ_CC) BLAS=none NO_OMP=1 FUZZ=1 sh scripts/install-deps.sh
	@mkdir -p $(FUZZ_DIR) && touch $@

$(FUZZ_DIR)/obj/%.o: src/%.c | $(FUZZ_DIR)/.deps-ok
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/libds3.a: $(FUZZ_LIB_OBJ)
	ar rcs $@ $^

# A target that #includes a library source defines that file's symbols
# itself, so the archive's copy is never pulled in.
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DIR)/libds3.a cli/args.c | $(FUZZ_DIR)/.deps-ok
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(if $(filter fuzz_tokens,$(notdir $@)),cli/args.c) \
	    $(FUZZ_DIR)/libds3.a $(filter-out -lopenblas%,$(LDLIBS))

-include $(wildcard $(FUZZ_DIR)/*.d $(FUZZ_DIR)/obj/*.d $(FUZZ_DIR)/obj/*/*.d)

# ---- valgrind: every test program under memcheck (docs/ROBUSTNESS.md) ----
VG_DIR := build-vg
.PHONY: valgrind
# Run every test under valgrind: a NO_OMP=1 build in build-vg/ (slow: minutes).
valgrind:
	@$(MAKE) --no-print-directory NO_OMP=1 BUILD=$(VG_DIR) all tests-bin-f64
	@sh scripts/make-models.sh $(VG_DIR)/ds3 $(VG_DIR)/models
	@sh tests/valgrind.sh $(VG_DIR) $(VG_DIR)/models

# ---- ds3's own libm against MPFR (tests/mpfr/, docs/PORTABILITY.md) ----
CHECK_MATH_N ?= 10000000
CHECK_MATH_PARTS ?= all
.PHONY: check-math
# Check exp/log/pow/sin/cos against MPFR: every RoPE input of the built-in and ref_data configs + CHECK_MATH_N random per set.
check-math: $(BUILD)/check_math
	$(BUILD)/check_math -n $(CHECK_MATH_N) --part $(CHECK_MATH_PARTS) $(wildcard ref_data/configs/*.json)

$(BUILD)/check_math: tests/mpfr/check_math.c $(BUILD)/libds3.a | $(DEPS_STAMP)
	@MPFR=1 sh scripts/install-deps.sh
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libds3.a $(LDFLAGS) $(LDLIBS) -lmpfr -lgmp

# ---- install: PREFIX (default /usr/local), DESTDIR for staging (docs/PORTABILITY.md) ----
# The binary finds its data as PREFIX/bin/../share/ds3 wherever the tree is moved.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share/ds3
MANDIR ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
PC_PRIVATE := $(filter -l% -L% -fopenmp,$(LDFLAGS) $(LDLIBS))
.PHONY: install uninstall
# Install the CLI, libds3.a/.so, ds3.h, ds3.pc, data/tokenizers (and man page, completion when present).
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(DATADIR)
	install -m 755 $(BUILD)/ds3 $(DESTDIR)$(BINDIR)/ds3
	install -m 644 $(BUILD)/libds3.a $(DESTDIR)$(LIBDIR)/libds3.a
	install -m 755 $(BUILD)/libds3.so $(DESTDIR)$(LIBDIR)/libds3.so
	install -m 644 include/ds3.h $(DESTDIR)$(INCLUDEDIR)/ds3.h
	cp -R data/tokenizers $(DESTDIR)$(DATADIR)/
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' 'Name: ds3' \
	    'Description: CPU reference implementation of the DeepSeek-V3 architecture' \
	    'Version: $(shell sed -n 's/^#define DS3_VERSION "\(.*\)"/\1/p' cli/ds3.c)' \
	    'Cflags: -I$${includedir}$(if $(filter f64,$(PRECISION)), -DDS3_F64)' \
	    'Libs: -L$${libdir} -lds3' 'Libs.private: $(PC_PRIVATE)' > $(DESTDIR)$(LIBDIR)/pkgconfig/ds3.pc
	if [ -f man/ds3.1 ]; then install -d $(DESTDIR)$(MANDIR)/man1 && install -m 644 man/ds3.1 $(DESTDIR)$(MANDIR)/man1/ds3.1; fi
	if [ -f completion/ds3.bash ]; then install -d $(DESTDIR)$(COMPLETIONDIR) && \
	    install -m 644 completion/ds3.bash $(DESTDIR)$(COMPLETIONDIR)/ds3; fi

# Remove what `make install` put under the same PREFIX.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ds3 $(DESTDIR)$(LIBDIR)/libds3.a $(DESTDIR)$(LIBDIR)/libds3.so \
	    $(DESTDIR)$(INCLUDEDIR)/ds3.h $(DESTDIR)$(LIBDIR)/pkgconfig/ds3.pc \
	    $(DESTDIR)$(MANDIR)/man1/ds3.1 $(DESTDIR)$(COMPLETIONDIR)/ds3
	rm -rf $(DESTDIR)$(DATADIR)

# Remove all build outputs.
clean:
	rm -rf build build-f64 build-mpi build-f64-mpi build-san build-f64-san build-fuzz build-vg build-plain build-f64-plain python/build

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d)
