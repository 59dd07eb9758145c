#!/usr/bin/env bash
# Cross-builds agelab for aarch64-unknown-linux-gnu (static) inside a cached Debian sid chroot.
#
# Why a chroot: the host's rustup toolchain has no aarch64 standard library and none can be
# installed, but Debian sid ships rustc with `libstd-rust-dev:arm64`. The chroot is amd64 (no
# emulation): sid's rustc, the arm64 std, gcc-aarch64-linux-gnu as the linker. The host is left
# untouched; it only needs `debootstrap` (see docs/arm64.md).
#
# Usage: selftests/arm64/cross.sh [bins|tests|all|shell|setup]   (default: all)
#   bins   every workspace binary        -> target/aarch64-unknown-linux-gnu/release/
#   tests  test binaries of $CROSS_TEST_PACKAGES (default agelab-vmm)
#                                        -> target/aarch64-unknown-linux-gnu/release/tests/
#   setup  only create the chroot;  shell: a shell in the chroot with the repo at /src
# Environment: AGELAB_ARM64_CHROOT (default ~/.cache/agelab/arm64-chroot),
#   CROSS_TEST_PACKAGES, CROSS_JOBS (default 2),
#   CROSS_SOURCE=REV (e.g. HEAD): build that commit (git archive) instead of the working tree,
#   e.g. while others have half-done edits in a shared checkout. Outputs land in target/ alike.
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CHROOT=${AGELAB_ARM64_CHROOT:-$HOME/.cache/agelab/arm64-chroot}
PACKAGES="rustc cargo libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross ca-certificates"
OUT=$REPO/target/$TARGET/release
# The cross build has its own target dir: sid's rustc must never share artifacts or the build
# lock with the host toolchain's builds in target/release.
BUILD_DIR=target/arm64-cross
MODE=${1:-all}

die() { echo "cross-arm64: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and bind mounts)"

# The machine's own Debian mirror, read from its apt configuration (deb822 or one-line format).
mirror() {
    local uri
    uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        tr ' ' '\n' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit }}' |
            grep -E '/debian/?$' | head -n1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list(.d)"
    echo "${uri%/}"
}

setup() {
    [ -f "$CHROOT/.agelab-ready" ] && return 0
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    local m tmp
    m=$(mirror)
    tmp=$CHROOT.partial
    rm -rf "$tmp"
    mkdir -p "$(dirname "$CHROOT")"
    echo "cross-arm64: creating the sid chroot in $CHROOT from $m (once)" >&2
    debootstrap --variant=minbase sid "$tmp" "$m" >&2
    # sid's Release file on a snapshot-pinned mirror reads as expired.
    echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/90agelab"
    echo 'APT::Install-Recommends "false";' >>"$tmp/etc/apt/apt.conf.d/90agelab"
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    in_chroot "$tmp" sh -c "dpkg --add-architecture arm64 && apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null && apt-get clean" >&2
    # The host's CA bundle too, so cargo trusts whatever the host trusts (proxies included).
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/agelab-host-ca.crt"
    fi
    mkdir -p "$tmp/src" "$tmp/cargo-home"
    touch "$tmp/.agelab-ready"
    mv "$tmp" "$CHROOT"
}

# The tree mounted at /src: the working tree, or an export of commit $CROSS_SOURCE.
SRC=$REPO
if [ -n "${CROSS_SOURCE:-}" ]; then
    SRC=$(dirname "$CHROOT")/arm64-src
    rm -rf "$SRC"
    mkdir -p "$SRC/target" "$REPO/target"
    git -C "$REPO" archive "$CROSS_SOURCE" | tar -x -C "$SRC"
    echo "cross-arm64: building $CROSS_SOURCE ($(git -C "$REPO" rev-parse --short "$CROSS_SOURCE"))" >&2
fi

# Runs a command in chroot $1 inside a private mount namespace, so the bind mounts vanish with it.
in_chroot() {
    local root=$1
    shift
    unshare --mount --propagation private -- sh -c '
        root=$1 src=$2 repo=$3; shift 3
        mount --bind /dev "$root/dev" && mount -t proc proc "$root/proc" &&
        mkdir -p "$root/src" && mount --bind "$src" "$root/src" &&
        if [ "$src" != "$repo" ]; then mount --bind "$repo/target" "$root/src/target"; fi &&
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            CARGO_HOME=/cargo-home SSL_CERT_FILE="$SSL" CARGO_HTTP_CAINFO="$SSL" "$@"' \
        sh "$root" "$SRC" "$REPO" "$@"
}

cargo_env=(
    CARGO_TARGET_DIR=/src/$BUILD_DIR
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    # linker_messages: glibc's static-linking notes (getaddrinfo, getpwnam) concern code agelab
    # never calls in the lab.
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -A linker_messages"
    CARGO_BUILD_JOBS=${CROSS_JOBS:-2}
)

cross_cargo() {
    SSL=/etc/ssl/certs/agelab-host-ca.crt
    [ -f "$CHROOT$SSL" ] || SSL=/etc/ssl/certs/ca-certificates.crt
    export SSL
    in_chroot "$CHROOT" sh -c 'cd /src && exec env "$@"' sh "${cargo_env[@]}" cargo "$@"
}

build_bins() {
    cross_cargo build --release --target $TARGET --workspace --bins
    mkdir -p "$OUT"
    local n=0
    for f in "$REPO/$BUILD_DIR/$TARGET/release"/*; do
        [ -f "$f" ] && [ -x "$f" ] || continue
        cp -f "$f" "$OUT/"
        n=$((n + 1))
    done
    echo "cross-arm64: $n binaries in ${OUT#$REPO/}" >&2
}

build_tests() {
    local pkgs=() p
    for p in ${CROSS_TEST_PACKAGES:-agelab-vmm}; do pkgs+=(-p "$p"); done
    mkdir -p "$OUT/tests"
    # Test executables are named <target>-<hash>: copy them as <target>.
    local json
    json=$(cross_cargo test --release --target $TARGET "${pkgs[@]}" --no-run --message-format=json)
    echo "$json" | grep '"executable":"' | sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p' |
        while read -r name exe; do
            cp -f "$REPO/${exe#/src/}" "$OUT/tests/$name"
            echo "cross-arm64: tests/$name" >&2
        done
}

# Plain sequences, not `&&` lists: `set -e` must stop at the first failing step.
case $MODE in
setup | bins | tests | all | shell) setup ;;
*) die "unknown mode $MODE (bins|tests|all|setup|shell)" ;;
esac
case $MODE in
bins) build_bins ;;
tests) build_tests ;;
all)
    build_bins
    build_tests
    ;;
shell)
    SSL=/etc/ssl/certs/ca-certificates.crt
    export SSL
    in_chroot "$CHROOT" bash
    ;;
esac
