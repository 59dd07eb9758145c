#!/usr/bin/env bash
# Benchmark of the secondary-MMU aging selftests (issue 8), on the host and every lab kernel:
#   1. access_tracking_perf_test phase times (seconds), one column per kernel;
#   2. guest ns/access while each source ages vs at rest (lru_gen_secondary_mmu_test), as ratios;
#   3. hot pages reported idle after marking (tlb_flush_accuracy_test), per source.
# Env: KERNELS (default: debian-6.1 debian-6.12 debian-7.2 custom-7.2), BINS (static binaries
# for the lab, passed as --bins; default: the lab builds them), ATP_ARGS, SEC_ARGS, TLB_ARGS,
# OUT (logs, default target/bench-selftests). Exits 1 if a run failed (exit code not 0 or 4).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kernels=${KERNELS:-debian-6.1 debian-6.12 debian-7.2 custom-7.2}
kernels=${kernels//,/ }
atp_args=${ATP_ARGS:--b 64M -v 2}
sec_args=${SEC_ARGS:--b 16M -v 2 -d 300ms}
tlb_args=${TLB_ARGS:-}
out=${OUT:-target/bench-selftests}
agelab=target/release/agelab
mkdir -p "$out"
bins=()
[[ -n ${BINS:-} ]] && bins=(--bins "$BINS")
# DAMON's damon_stat module (7.2) holds DAMON exclusively; switch it off in the throwaway guest.
free_damon='{ echo N > /sys/module/damon_stat/parameters/enabled; } 2>/dev/null'
script="$free_damon; access_tracking_perf_test $atp_args; echo atp-rc=\$?; \
lru_gen_secondary_mmu_test $sec_args; echo sec-rc=\$?; tlb_flush_accuracy_test $tlb_args; echo tlb-rc=\$?"

failed=0
# The host's guest fault costs, which every fault-bound figure below moves with (the probe's
# own failure is said on the line and does not fail the benchmark).
"$agelab" host-profile || true
run() { # name, then the command
    local name=$1
    shift
    "$@" >"$out/$name.log" 2>&1
    grep -E '^(atp|sec|tlb)-rc=' "$out/$name.log" | grep -vqE 'rc=(0|4)$' && failed=1
    grep -qE '^(atp|sec|tlb)-rc=' "$out/$name.log" || failed=1
}
run host sh -c "PATH=target/release:\$PATH; $script"
for k in $kernels; do
    run "$k" "$agelab" lab --kernel "$k" "${bins[@]}" --timeout 900s -- sh -c "$script"
done

cols=(host $kernels)
header() { # title, label column width, label column heading
    printf '\n== %s\n' "$1"
    printf "%-$2s" "$3"
    printf '%14s' "${cols[@]}"
    echo
}
row() { # label, then a command that reads one log on stdin and prints the value first
    local label=$1 c v
    shift
    printf '%-16s' "$label"
    for c in "${cols[@]}"; do
        v=$("$@" 2>/dev/null <"$out/$c.log" | head -1)
        printf '%14s' "${v:--}"
    done
    echo
}
idle_ratio() { grep -E "^# $1 +idle" | sed 's/.*ratio *\([0-9.]*\).*/\1/'; }
sees_guest_only() { grep -o 'secondary MMU: [a-z]*' | awk '{print $3}'; }
hot_lost() { grep -E "^# $1 +(read|write) hot" | sed 's/.*(\([0-9.]*\)% lost).*/\1/'; }

header "access_tracking_perf_test $atp_args: phase times (s)" 32 phase
phases=$(cat "$out"/*.log | sed -n 's/^\([A-Z][A-Za-z ()_-]*[a-z)]\) *: \([0-9]*\.[0-9]*\)s$/\1/p' | awk '!seen[$0]++')
while IFS= read -r p; do
    [[ -z $p ]] && continue
    printf '%-32s' "$p"
    for c in "${cols[@]}"; do
        # Mark memory idle appears twice: both values, joined by '/'.
        v=$(grep -F "$p" "$out/$c.log" 2>/dev/null | grep -E "^$(printf '%s' "$p" | sed 's/[()]/\\&/g') *: " |
            sed 's/.*: \([0-9]*\.[0-9]\{4\}\).*/\1/' | paste -sd/)
        printf '%14s' "${v:--}"
    done
    echo
done <<<"$phases"

header "lru_gen_secondary_mmu_test $sec_args: guest ns/access aging/idle ratio" 16 source
for s in lru_gen page_idle kvm-clear-log uffd-minor; do
    row "$s" idle_ratio "$s"
done
row "sees guest-only" sees_guest_only

header "tlb_flush_accuracy_test $tlb_args: hot pages reported idle (% lost)" 16 source
for s in page_idle lru_gen damon-vaddr kvm-clear-log uffd-minor; do
    row "$s" hot_lost "$s"
done
echo "logs: $out/"
exit $failed
