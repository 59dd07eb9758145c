#!/usr/bin/env bash
# Runs every selftest listed in selftests/selftests.list from DIR (default target/release) and
# prints a KTAP summary, kselftest-runner style: each test's output indented as `# ` diagnostics,
# then `ok N name`, `ok N name # SKIP` (exit 4) or `not ok N name # exit=RC`.
# Exits 0 when nothing failed, 1 otherwise (a listed binary that is missing is a failure).
# Env: SELFTEST_TIMEOUT (seconds per test, default 300), SELFTEST_LIST (another list file).
set -u
dir=${1:-target/release}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
list=${SELFTEST_LIST:-$here/selftests.list}
timeout_s=${SELFTEST_TIMEOUT:-300}

if [[ ! -d $dir ]]; then
    echo "run_selftests.sh: binary directory '$dir' does not exist (run 'make build')" >&2
    exit 2
fi
if [[ ! -r $list ]]; then
    echo "run_selftests.sh: cannot read test list '$list'" >&2
    exit 2
fi

mapfile -t tests < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$list" | grep -v '^$')

echo "TAP version 13"
echo "1..${#tests[@]}"
pass=0 fail=0 skip=0 n=0
for line in "${tests[@]}"; do
    n=$((n + 1))
    read -r -a argv <<<"$line"
    bin=${argv[0]}
    name="selftests: agelab: $line"
    echo "# selftests: agelab: $line"
    if [[ ! -x $dir/$bin ]]; then
        echo "# $dir/$bin: not built"
        echo "not ok $n $name # missing binary"
        fail=$((fail + 1))
        continue
    fi
    start=$(date +%s.%N)
    timeout --kill-after=10 "$timeout_s" "$dir/$bin" "${argv[@]:1}" 2>&1 | sed -u 's/^/# /'
    rc=${PIPESTATUS[0]}
    secs=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo "?")
    case $rc in
        0) echo "ok $n $name"; pass=$((pass + 1)) ;;
        4) echo "ok $n $name # SKIP"; skip=$((skip + 1)) ;;
        124 | 137) echo "not ok $n $name # TIMEOUT ${timeout_s} seconds"; fail=$((fail + 1)) ;;
        *) echo "not ok $n $name # exit=$rc"; fail=$((fail + 1)) ;;
    esac
    echo "# ($line: ${secs}s)"
done
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
[[ $fail -eq 0 ]]
