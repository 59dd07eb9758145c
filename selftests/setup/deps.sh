#!/usr/bin/env bash
# Installs the Debian packages `make test` needs, and only those that are missing.
#
#   selftests/setup/deps.sh              install what is missing (root, network)
#   selftests/setup/deps.sh --check      exit 0 when everything is present, else 3 and name what is not
#   selftests/setup/deps.sh --simulate   print the apt plan (`apt-get install -s`), change nothing
#   --download-only DIR                  fetch the missing packages' .debs into DIR, install nothing
#   --admindir DIR                       judge "installed" from DIR/status instead of the host's
#                                        dpkg database (tests simulate machine states with it)
#   --packages "P Q"                     replace the package list (tests)
#
# Why this is more than `apt-get install`: a fresh machine of this project's kind ships qemu-utils
# 10.0 from bookworm-backports while its apt sources list only bookworm, and that qemu-utils Breaks
# bookworm's qemu-system-common 7.2. So QEMU is taken at the *version of the QEMU packages already
# installed* (any of them), from whichever suite of the host's own Debian mirror serves it; with no
# QEMU package installed, apt's default candidate is used. The backports suite is only ever added to
# a private apt state under ~/.cache/agelab/setup-apt (own sources parts and lists): the host's apt
# configuration and lists are never changed, also when this script is killed.
set -euo pipefail

# lab: QEMU, busybox, cpio, xz/zstd (kernel modules); custom lab kernel build: build-essential bc
# bison flex libelf-dev libssl-dev dwarves patch; arm64 (make cross-arm64, agelab lab --arch arm64):
# debootstrap (the sid build chroot), qemu-system-arm.
PACKAGES="qemu-system-x86 qemu-system-arm busybox-static cpio xz-utils zstd build-essential bc bison flex libelf-dev libssl-dev dwarves patch debootstrap chromium"
# Packages built from Debian's qemu source whose versions must agree with each other.
QEMU_FAMILY="qemu-utils qemu-system-common qemu-system-data qemu-system-x86 qemu-system-arm qemu-system-gui qemu-block-extra qemu-system-misc qemu-system-ppc qemu-system-mips qemu-system-sparc"

mode=install
admindir=/var/lib/dpkg
state="${AGELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agelab}/setup-apt"
while (($#)); do
  case "$1" in
    --check) mode=check ;;
    --simulate) mode=simulate ;;
    --download-only) mode=download; download_dir="$2"; shift ;;
    --admindir) admindir="$2"; shift ;;
    --packages) PACKAGES="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "setup: $*" >&2; }

# installed_version PKG: the version dpkg has installed, or nothing.
installed_version() {
  dpkg-query --admindir="$admindir" -W -f '${Status}\t${Version}\n' "$1" 2>/dev/null |
    awk -F'\t' '$1 == "install ok installed" { print $2 }' || true
}

missing=()
for p in $PACKAGES; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  say "every package is present ($(wc -w <<<"$PACKAGES") checked); nothing to install"
  exit 0
fi
if [ "$mode" = check ]; then
  say "missing: ${missing[*]}"
  exit 3
fi

# The QEMU version already on the machine, if any: the new QEMU packages must match it.
qemu_version=""
for p in $QEMU_FAMILY; do
  v=$(installed_version "$p")
  if [ -n "$v" ]; then qemu_version="$v"; qemu_from="$p"; break; fi
done
targets=()
for p in "${missing[@]}"; do
  if [ -n "$qemu_version" ] && [[ " $QEMU_FAMILY " == *" $p "* ]]; then
    targets+=("$p=$qemu_version")
  else
    targets+=("$p")
  fi
done

how_to="as root: apt-get update && apt-get install --no-install-recommends ${targets[*]}"
if [ "$mode" = install ] && [ "$(id -u)" != 0 ]; then
  say "cannot install ${missing[*]}: not root. Run $how_to (QEMU from the suite that serves ${qemu_version:-the default version}), then make test again"
  exit 1
fi

# Private apt state: the host's sources plus the backports suite of the host's own Debian mirror.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
mirror=$(
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null; echo; } |
    awk -v c="$codename" 'BEGIN{RS=""} /Suites:[^\n]*[ \t]/ && $0 ~ ("Suites:[^\n]*" c "([ \t\n]|$)") {
      if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }'
)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk -v c="$codename" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $(i+1) == c) { print $i; exit } }' /etc/apt/sources.list)
fi
mkdir -p "$state/lists/partial" "$state/parts"
# One run at a time rewrites the private state (parallel tests, two `make setup`s).
exec 9>"$state/lock"
flock 9
rm -f "$state/parts/"*
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && cp "$f" "$state/parts/"
done
if [ -n "$mirror" ] && [ -n "$codename" ]; then
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$codename" >"$state/parts/agelab-backports.sources"
fi
apt_opts=(-o "Dir::Etc::SourceParts=$state/parts" -o "Dir::State::Lists=$state/lists"
  -o "Dir::State::status=$admindir/status" -o "Acquire::Check-Valid-Until=false")
# The private lists belong to root; apt's _apt sandbox user could not write them.
[ "$(id -u)" != 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")

# apt's own progress, never silenced: its progress bars on a terminal; in a log (CI) one line per
# index or package fetched (`Get:`), the total (`Fetched ... in ...s (rate)`) and dpkg's
# per-package steps, without a pty.
terminal=no
if [ -t 1 ] && [ -t 2 ]; then
  terminal=yes
  progress_opts=(-o Dpkg::Progress-Fancy=1)
else
  progress_opts=(-q -o Dpkg::Use-Pty=0)
fi

export DEBIAN_FRONTEND=noninteractive
if ! out=$(apt-get "${apt_opts[@]}" "${progress_opts[@]}" update 2>&1 | tee /dev/stderr) ||
  grep -q '^[WE]: Failed to fetch' <<<"$out"; then
  say "cannot install ${missing[*]}: apt-get update failed (no network, or the mirror '${mirror:-?}' is unreachable): $(grep -m1 -E '^[WE]:' <<<"$out" || echo "$out" | tail -n1). Run $how_to"
  exit 1
fi
# QEMU's own packages come from the suite that serves the installed QEMU version (its
# dependencies, e.g. seabios, need that suite's versions too); everything else from the defaults.
qemu_targets=() other_targets=() qemu_suite=""
for t in "${targets[@]}"; do
  if [[ "$t" == *=* ]]; then qemu_targets+=("$t"); else other_targets+=("$t"); fi
done
if ((${#qemu_targets[@]})); then
  first=${qemu_targets[0]%%=*}
  qemu_suite=$(apt-cache "${apt_opts[@]}" madison "$first" |
    awk -F' [|] ' -v v="$qemu_version" '$2 == v { split($3, a, " "); sub(/\/.*/, "", a[2]); print a[2]; exit }')
  if [ -z "$qemu_suite" ]; then
    say "cannot install $first at $qemu_version to match the installed $qemu_from: no suite of the mirror '${mirror:-?}' serves it. Remove $qemu_from (apt-get remove $qemu_from) or install a matching QEMU by hand"
    exit 1
  fi
  say "QEMU: matching the installed $qemu_from $qemu_version (suite $qemu_suite)"
fi

# apt_install [EXTRA OPTS --] PKG...: one apt-get install in the private state.
apt_install() {
  local extra=()
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  if [ "$mode" = simulate ]; then
    apt-get "${apt_opts[@]}" "${extra[@]}" install -s --no-install-recommends "$@"
    return
  fi
  if [ "$mode" = download ]; then
    extra+=(-d -o "Dir::Cache::archives=$download_dir")
    mkdir -p "$download_dir/partial"
  fi
  local cmd=(apt-get "${apt_opts[@]}" "${progress_opts[@]}" "${extra[@]}" install -y --no-install-recommends "$@")
  # On a terminal apt draws its progress bars on it directly; otherwise its output goes to stderr
  # as it comes and into install.log.
  if [ "$terminal" = yes ]; then
    echo "(apt ran on the terminal: ${cmd[*]})" >>"$state/install.log"
    "${cmd[@]}" || { say "cannot install $* (apt's output above). Run $how_to"; exit 1; }
  elif ! "${cmd[@]}" 2>&1 | tee -a "$state/install.log" >&2; then
    say "cannot install $* (apt's output above; log: $state/install.log). Run $how_to"
    exit 1
  fi
}
: >"$state/install.log"
if [ "$mode" = download ]; then say "fetching ${targets[*]}"; else say "installing ${targets[*]}"; fi
((${#other_targets[@]} == 0)) || apt_install -- "${other_targets[@]}"
((${#qemu_targets[@]} == 0)) || apt_install -t "$qemu_suite" -- "${qemu_targets[@]}"
case "$mode" in
  install) say "installed ${#targets[@]} packages" ;;
  download) say "downloaded ${#targets[@]} packages and their dependencies into $download_dir" ;;
esac
