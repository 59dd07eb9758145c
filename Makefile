# agelab — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
AGELAB := target/release/agelab

.PHONY: all build run setup test check fmt clippy unit soak selftests bench lab lab-test cross-arm64 lab-arm64 clean

all: build

build:
	$(CARGO) build --release --workspace --bins

## The main job on built-in defaults.
run: build
	$(AGELAB) run

## Installs what the tests and the lab need and is missing (Debian packages, QEMU matching the
## machine's qemu-utils, rustfmt/clippy); installs nothing when everything is present.
setup:
	selftests/setup/deps.sh
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 \
		|| rustup component add rustfmt clippy

## Everything: set-up, formatting, lints, unit and integration tests on real /dev/kvm, selftests,
## the lab matrix on the Debian kernels.
test: setup fmt clippy unit selftests lab-test

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/import-cycles

unit:
	$(CARGO) test --workspace --release

## Flake hunt: the `make unit` suite SOAK_RUNS times (default 5) beside a CPU hog, periodic
## compact_memory/drop_caches and another agelab VM; failing tests by run, logs in target/soak.
soak: build
	CARGO="$(CARGO)" AGELAB="$(AGELAB)" selftests/soak.sh

selftests: build
	selftests/run_selftests.sh target/release

## Benchmarks: ratios measured side by side in one run (never asserted as timed tests).
bench: build
	$(AGELAB) bench foundation
	$(AGELAB) bench dirty
	$(AGELAB) bench dirty-layout
	$(AGELAB) bench scaling --json-out target/scaling_bench.json
	$(AGELAB) bench region
	$(AGELAB) bench engine

# --- lab (owned by selftests/lab, crate agelab-lab) ---
## The lab boots real kernels under QEMU TCG (see docs/selftests-and-lab.md). `make test` runs the
## matrix on the three Debian kernels (downloads, ~5 s boots) and the secondary-MMU verdicts on
## the negative-control pair; `make lab` runs everything on every kernel.
LAB_TEST_KERNELS ?= debian-6.1,debian-6.12,debian-7.2
LAB_KERNELS ?= debian-6.1,debian-6.12,debian-7.2,custom-7.2,custom-7.2+no-secondary-mmu-aging
## The negative-control pair: custom-7.2 and the same source with MGLRU's calls into secondary
## MMUs removed. `make test` runs the secondary-MMU verdicts on both (each must pass on the first
## and fail on the second); the two builds take ~3-4 min each on 2 idle cores, cached afterwards.
LAB_CONTROL_KERNELS ?= custom-7.2,custom-7.2+no-secondary-mmu-aging
LAB_CONTROL_TESTS ?= lab-kvm,access-tracking,lru-gen-secondary-mmu,lru-gen-secondary-mmu-observed
LAB_MATRIX ?= selftests/lab/matrix.txt
## Lines that measure rather than check (reclaim against its peers): `make lab`, `make bench-lab`.
LAB_BENCH_MATRIX ?= selftests/lab/bench-matrix.txt
LAB_BENCH_KERNELS ?= debian-6.12,debian-7.2
LAB_RESULTS ?= target/lab-results
.PHONY: bench-lab

## The lab runner's own tests (integration tests selftests/tests/lab_*.rs: they also run in
## `make unit`, so `make test` skips them here) and the lab matrix on the Debian kernels.
lab-test: build
ifeq ($(filter test,$(MAKECMDGOALS)),)
	$(CARGO) test --release -p agelab --test lab_kernels --test lab_runner
endif
	$(AGELAB) lab --kernel $(LAB_TEST_KERNELS) --matrix $(LAB_MATRIX) --results $(LAB_RESULTS)
	$(AGELAB) lab --kernel $(LAB_CONTROL_KERNELS) --matrix $(LAB_MATRIX) --tests $(LAB_CONTROL_TESTS) \
		--results $(LAB_RESULTS)

## Every lab kernel × every test of the lab matrix, as a table (logs in $(LAB_RESULTS)), then
## the mutation matrix.
lab: setup build
	$(AGELAB) lab --kernel $(LAB_KERNELS) --matrix $(LAB_MATRIX) --results $(LAB_RESULTS)
	$(AGELAB) lab --kernel $(LAB_BENCH_KERNELS) --matrix $(LAB_BENCH_MATRIX) --results $(LAB_RESULTS)-bench
	$(MAKE) mutants

## The mutation matrix (docs/ab-and-mutants.md): custom-7.2 and every mutant of
## selftests/lab/mutants/ (built from the base's kept tree) × selftests/lab/mutants/tests.txt;
## the kill table, JSON in $(LAB_RESULTS)/mutants/mutants.json. LAB_MUTANTS="a b" picks some.
LAB_MUTANTS ?=
.PHONY: mutants
mutants: build
	$(AGELAB) mutants $(foreach m,$(LAB_MUTANTS),--mutant $(m)) --results $(LAB_RESULTS)

## Boot-to-command time per lab kernel and the custom kernel's build time (cold, recorded).
bench-lab: build
	$(AGELAB) lab --bench --kernel $(LAB_KERNELS)
	$(AGELAB) lab --kernel $(LAB_BENCH_KERNELS) --matrix $(LAB_BENCH_MATRIX) --results $(LAB_RESULTS)-bench
# --- end lab ---

## Secondary-MMU aging selftests on the host and every lab kernel: phase times, guest slowdown
## per aging source, TLB loss per source (logs in target/bench-selftests).
.PHONY: bench-selftests
bench-selftests: build
	KERNELS="$(LAB_KERNELS)" selftests/access_tracking_bench.sh

## Access sources × lab kernels (issue 7): precision, recall and harvest cost per GiB per pass for
## read-only, write-only and mixed guests, one table (per-kernel logs in $(LAB_RESULTS)).
LAB_SOURCES_MEM ?= 256M
.PHONY: lab-sources
lab-sources: build
	@mkdir -p $(LAB_RESULTS)
	@for k in $$(echo $(LAB_KERNELS) | tr , ' '); do \
	  echo "lab-sources: $$k" >&2; \
	  $(AGELAB) lab --kernel $$k --append damon_stat.enabled=N --timeout 1200s -- \
	    source_matrix --mem $(LAB_SOURCES_MEM) --label $$k >$(LAB_RESULTS)/sources-$$k.log 2>&1 \
	    || echo "lab-sources: $$k failed, see $(LAB_RESULTS)/sources-$$k.log" >&2; \
	done
	@echo "| kernel | source | workload | precision | recall | ms/GiB per pass | note |"
	@echo "|---|---|---|---|---|---|---|"
	@for k in $$(echo $(LAB_KERNELS) | tr , ' '); do \
	  tr -d '\r' <$(LAB_RESULTS)/sources-$$k.log | grep '^| ' | grep -v -e '^| kernel |' -e '^|---'; \
	done

## Proactive reclaim: 6 policies × read-heavy hot/cold and phase-shift guests, 5 reps each, with
## zram swap for the run (restored afterwards): table, target/bench-reclaim.{svg,json}.
.PHONY: bench-reclaim
bench-reclaim: build
	$(AGELAB) reclaim --reps 5 --duration 10s --max-step 10 --step-period 1s --zram 1G \
		--svg target/bench-reclaim.svg --json-out target/bench-reclaim.json

## aarch64: every binary and the vmm test binaries, static, cross-built in a cached Debian sid
## chroot (~/.cache/agelab/arm64-chroot) into target/aarch64-unknown-linux-gnu/release.
cross-arm64:
	selftests/arm64/cross.sh all

## The lab matrix on Debian's arm64 kernel (qemu-system-aarch64 with EL2), aarch64 binaries.
lab-arm64: cross-arm64 build
	$(AGELAB) lab --arch arm64 --kernel debian-7.2 --matrix $(LAB_MATRIX) \
		--bins target/aarch64-unknown-linux-gnu/release --results $(LAB_RESULTS)-arm64

clean:
	$(CARGO) clean
