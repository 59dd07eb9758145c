#!/usr/bin/env bash
# `make soak`: a flake hunt. Runs the cargo suite (`cargo test --workspace --release`, as `make
# unit` does) SOAK_RUNS times while the host is disturbed the way a real one is, all at once:
#   - a CPU hog (one busy-looping shell);
#   - every SOAK_KNOB_PERIOD seconds `echo 1 > /proc/sys/vm/compact_memory` and
#     `echo 3 > /proc/sys/vm/drop_caches` (write-only triggers: they start a compaction or drop
#     clean caches once and hold no setting, so there is nothing to restore);
#   - another agelab VM: `agelab run --duration SOAK_VM_DURATION` in a loop.
# Each perturbation and the cargo run live in a session of their own and are stopped, with every
# process in that session, on every exit path (end, error, SIGINT/SIGTERM/SIGHUP); the agelab VM
# gets SIGTERM and restores what it changed on the host itself. After an interrupted cargo run,
# `agelab cleanup` undoes what the killed test processes left in the host-change journal.
# Every failing test is printed with its run number and test binary; each run's whole log is
# target/soak/run-N.log. Last line: `soak: N runs, F failed tests`; exit 1 if F > 0, 2 on bad
# settings, 130/143/129 when interrupted.
# Env: SOAK_RUNS (default 5), SOAK_CARGO_ARGS (test selection, default --workspace),
#      SOAK_VM_DURATION (default 30s), SOAK_KNOB_PERIOD (seconds, default 3), CARGO, AGELAB.
set -u

runs=${SOAK_RUNS:-5}
read -r -a selection <<<"${SOAK_CARGO_ARGS:---workspace}"
vm_duration=${SOAK_VM_DURATION:-30s}
knob_period=${SOAK_KNOB_PERIOD:-3}
cargo=${CARGO:-cargo}
agelab=${AGELAB:-target/release/agelab}
logdir=target/soak

if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "soak: SOAK_RUNS=$runs: expected a positive whole number of runs" >&2
    exit 2
fi
if ! [[ $knob_period =~ ^[1-9][0-9]*$ ]]; then
    echo "soak: SOAK_KNOB_PERIOD=$knob_period: expected a positive whole number of seconds" >&2
    exit 2
fi
if [[ ! -x $agelab ]]; then
    echo "soak: $agelab is not built (run 'make build')" >&2
    exit 2
fi
mkdir -p "$logdir"

# Everything is started in a session of its own (`setsid`, which keeps the pid) with SIGINT and
# SIGQUIT back at their defaults: bash starts background commands with both ignored, which cargo,
# the test binaries and every process they start would inherit (a SIGINT would not stop the cargo
# run, and the tests would not run as they do under `make unit`).
# Session ids (= pids of their leaders) of everything started here.
hog_sid='' knobs_sid='' vm_sid='' cargo_sid=''
run=0 failed=0 interrupted=0 cargo_killed=0
failures=()

# Pids of the live (not zombie) processes of session $1.
session_pids() {
    ps -o pid=,stat= -s "$1" 2>/dev/null | awk '$2 !~ /^Z/ { print $1 }'
}

# Sends signal $2 to every process of session $1, waits up to $3 s for them to end, then
# SIGKILLs what is left; reaps the leader (a child of this shell).
stop_session() {
    local sid=$1 sig=$2 grace=$3 what=$4 pids i
    [[ -n $sid ]] || return 0
    mapfile -t pids < <(session_pids "$sid")
    if ((${#pids[@]})); then
        kill -s "$sig" "${pids[@]}" 2>/dev/null
        for ((i = 0; i < grace * 10; i++)); do
            [[ -z $(session_pids "$sid") ]] && break
            sleep 0.1
        done
        mapfile -t pids < <(session_pids "$sid")
        if ((${#pids[@]})); then
            echo "soak: $what still running ${grace}s after SIG$sig: SIGKILL ${pids[*]}" >&2
            kill -KILL "${pids[@]}" 2>/dev/null
        fi
    fi
    wait "$sid" 2>/dev/null
    return 0
}

# Waits (up to 5 s) until $1, the pid `setsid CMD &` left in $!, leads a session of its own:
# stop_session finds the processes to stop by that session id. Until the forked shell has run
# setsid, it is still in this script's session.
leads_session() {
    local sid i
    for ((i = 0; i < 50; i++)); do
        sid=$(ps -o sid= -p "$1" 2>/dev/null | tr -d ' ')
        [[ $sid == "$1" ]] && return 0
        # Already gone: nothing left to stop.
        [[ -z $sid ]] && return 0
        sleep 0.1
    done
    echo "soak: pid $1 is not the leader of a session of its own (session '$sid')" >&2
    exit 1
}

stop_all() {
    # A second Ctrl-C must not cut the cleanup short.
    trap '' INT TERM HUP
    if [[ -n $cargo_sid && -n $(session_pids "$cargo_sid") ]]; then
        echo "soak: stopping the cargo run (SIGINT to its session)" >&2
        cargo_killed=1
    fi
    stop_session "$cargo_sid" INT 30 "cargo test"
    stop_session "$vm_sid" TERM 30 "agelab run loop"
    stop_session "$knobs_sid" TERM 5 "knob loop"
    stop_session "$hog_sid" TERM 5 "CPU hog"
    cargo_sid='' vm_sid='' knobs_sid='' hog_sid=''
    if ((cargo_killed)); then
        "$agelab" cleanup >&2 || echo "soak: agelab cleanup failed" >&2
    fi
}

summary() {
    local t
    if ((${#failures[@]})); then
        echo "soak: failing tests (run: test):"
        for t in "${failures[@]}"; do
            echo "  $t"
        done
    fi
    echo "soak: $run runs, $failed failed tests"
}

on_exit() {
    local rc=$?
    stop_all
    if ((interrupted)); then
        echo "soak: interrupted during run $run of $runs (its log is incomplete)" >&2
    fi
    summary
    if ((interrupted)); then
        exit "$rc"
    elif ((failed)); then
        exit 1
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'interrupted=1; exit 130' INT
trap 'interrupted=1; exit 143' TERM
trap 'interrupted=1; exit 129' HUP

# The test binaries are built first, undisturbed, so that every run spends its time testing.
echo "soak: building the tests: $cargo test ${selection[*]} --release --no-run" >&2
setsid env --default-signal=INT,QUIT "$cargo" test "${selection[@]}" --release --no-run >"$logdir/build.log" 2>&1 &
cargo_sid=$!
leads_session "$cargo_sid"
wait "$cargo_sid"
rc=$?
cargo_sid=''
if ((rc != 0)); then
    echo "soak: building the tests failed (exit $rc), see $logdir/build.log" >&2
    exit 2
fi

# shellcheck disable=SC2016 # the loops expand their own positional parameters
{
    setsid env --default-signal=INT,QUIT bash -c 'while :; do :; done' &
    hog_sid=$!
    leads_session "$hog_sid"
    setsid env --default-signal=INT,QUIT bash -c 'while :; do
            echo 1 >/proc/sys/vm/compact_memory || echo "soak: compact_memory not written" >&2
            echo 3 >/proc/sys/vm/drop_caches || echo "soak: drop_caches not written" >&2
            sleep "$0"
        done' "$knob_period" 2>>"$logdir/knobs.log" &
    knobs_sid=$!
    leads_session "$knobs_sid"
    setsid env --default-signal=INT,QUIT bash -c 'while :; do
            echo "soak: agelab run --duration $1 at $(date +%T)"
            "$0" run --duration "$1" --quiet
            echo "soak: agelab run exited $?"
            sleep 1
        done' "$agelab" "$vm_duration" >>"$logdir/vm.log" 2>&1 &
    vm_sid=$!
    leads_session "$vm_sid"
}
echo "soak: perturbations: CPU hog (pid $hog_sid), compact_memory + drop_caches every" \
    "${knob_period}s (pid $knobs_sid), agelab run --duration $vm_duration in a loop" \
    "(pid $vm_sid, log $logdir/vm.log)" >&2

# Prints one line per failing test of a cargo test log: `BINARY: TEST`. Test names come from
# libtest's `test NAME ... FAILED` lines and `failures:` lists; a test binary that failed without
# naming a test (killed by a signal, a harness = false binary, a build error) is listed as a
# whole with cargo's reason.
failing_tests() {
    awk '
        function add(name) {
            if (!((bin, name) in seen)) {
                seen[bin, name] = 1
                named[bin] = 1
                print bin ": " name
            }
        }
        /^ *Running / {
            bin = $0
            if (match(bin, /\(([^)]*)\)$/)) {
                bin = substr(bin, RSTART + 1, RLENGTH - 2)
                sub(/.*\//, "", bin)
                sub(/-[0-9a-f]+$/, "", bin)
            }
            inlist = 0
            next
        }
        /^ *Doc-tests / { bin = $0; sub(/^ *Doc-tests /, "doc-tests ", bin); inlist = 0; next }
        /^test .+ \.\.\. FAILED$/ {
            name = $0
            sub(/^test /, "", name)
            sub(/ \.\.\. FAILED$/, "", name)
            add(name)
            next
        }
        /^failures:$/ { inlist = 1; next }
        inlist && /^    [^ ]/ { name = $0; sub(/^    /, "", name); add(name); next }
        inlist && /^$/ { inlist = 0; next }
        /^error: test failed, to rerun pass / { failed_bin = bin; why = ""; next }
        /process didn.t exit successfully: / && failed_bin != "" {
            why = $0
            sub(/.*\(/, "", why)
            sub(/\)$/, "", why)
            next
        }
        /^error: could not compile / { build_error = $0 }
        END {
            if (failed_bin != "" && !(failed_bin in named)) {
                bin = failed_bin
                add("(whole binary failed: " (why == "" ? "see log" : why) ")")
            }
            if (build_error != "") { bin = "cargo"; add(build_error) }
        }
    ' "$1"
}

for ((run = 1; run <= runs; run++)); do
    log=$logdir/run-$run.log
    echo "soak: run $run of $runs: $cargo test ${selection[*]} --release (log $log)" >&2
    start=$SECONDS
    setsid env --default-signal=INT,QUIT "$cargo" test "${selection[@]}" --release >"$log" 2>&1 &
    cargo_sid=$!
    leads_session "$cargo_sid"
    wait "$cargo_sid"
    rc=$?
    cargo_sid=''
    mapfile -t found < <(failing_tests "$log")
    if ((rc != 0 && ${#found[@]} == 0)); then
        found=("cargo: exit $rc without a failing test named (see the log)")
    fi
    for t in "${found[@]}"; do
        echo "soak: run $run: FAILED $t (log $log)"
        failures+=("run $run: $t")
    done
    failed=$((failed + ${#found[@]}))
    echo "soak: run $run: cargo exit $rc, ${#found[@]} failed tests, $((SECONDS - start)) s" >&2
done
run=$runs
