# plainsight: two commands on a fresh Debian machine of this kind.
#   make run    installs what is missing, builds, starts the agent (as root)
#   make test   installs what is missing, runs every test (as root)

CARGO ?= cargo
ARGS ?=

.PHONY: all deps test-deps build run test unit fixtures bench clean hooks test-kernels

all: build

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh --test

build: deps
	$(CARGO) build --release --locked

run: build
	./target/release/plainsight $(ARGS)

hooks: build
	./target/release/plainsight --hooks

fixtures: test-deps
	bash tests/fixtures/build.sh target/fixtures

# Every test: unit and property tests of the parsers, and end-to-end tests of
# the agent against real TLS programs (needs root, BPF, uprobes).
test: test-deps fixtures
	$(CARGO) test --locked --no-fail-fast -- --test-threads=4

unit: deps
	$(CARGO) test --locked --bins

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
