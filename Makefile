# agelab — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
AGELAB := target/release/agelab

.PHONY: all build run test check fmt clippy unit selftests bench lab lab-test cross-arm64 clean

all: build

build:
	$(CARGO) build --release --workspace --bins

## The main job on built-in defaults.
run: build
	$(AGELAB) run

## Everything: formatting, lints, unit and integration tests on real /dev/kvm, selftests, lab smoke.
test: fmt clippy unit selftests lab-test

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --release

selftests: build
	selftests/run_selftests.sh target/release

bench: build
	$(AGELAB) bench

# --- lab (owned by selftests/src/lab) ---
lab-test:
	@true

lab:
	@true
# --- end lab ---

clean:
	$(CARGO) clean
