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
printf '\n== access_tracking_perf_test %s: phase times (s)\n' "$atp_args"
printf '%-32s' phase
printf '%14s' "${cols[@]}"
echo
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

printf '\n== lru_gen_secondary_mmu_test %s: guest ns/access aging/idle ratio\n' "$sec_args"
printf '%-16s' source
printf '%14s' "${cols[@]}"
echo
for s in lru_gen page_idle kvm-clear-log uffd-minor; do
    printf '%-16s' "$s"
    for c in "${cols[@]}"; do
        v=$(grep -E "^# $s +idle" "$out/$c.log" 2>/dev/null | sed 's/.*ratio *\([0-9.]*\).*/\1/' | head -1)
        printf '%14s' "${v:--}"
    done
    echo
done
printf '%-16s' "sees guest-only"
for c in "${cols[@]}"; do
    v=$(grep -o 'secondary MMU: [a-z]*' "$out/$c.log" 2>/dev/null | awk '{print $3}' | head -1)
    printf '%14s' "${v:--}"
done
echo

printf '\n== tlb_flush_accuracy_test %s: hot pages reported idle (%% lost)\n' "$tlb_args"
printf '%-16s' source
printf '%14s' "${cols[@]}"
echo
for s in page_idle lru_gen damon-vaddr kvm-clear-log uffd-minor; do
    printf '%-16s' "$s"
    for c in "${cols[@]}"; do
        v=$(grep -E "^# $s +(read|write) hot" "$out/$c.log" 2>/dev/null | sed 's/.*(\([0-9.]*\)% lost).*/\1/' | head -1)
        printf '%14s' "${v:--}"
    done
    echo
done
echo "logs: $out/"
exit $failed
