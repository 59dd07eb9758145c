#!/bin/busybox sh
# agelab lab init (PID 1 of the lab guest). Built into the initramfs by selftests/lab/src/initramfs.rs.
#
# Channels: the console (kernel and init messages only), the command's stdout and stderr on two
# dedicated serial ports, and framed status records (`agelab-status v1 ...`) on a third one:
# booted, warn, started, exit <status>. The host takes the exit status from the status port only.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/opt/agelab/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
# The command's stdout and stderr are serial ports (ttys) that the host keeps as log files:
# TERM=dumb tells agelab's progress lines not to redraw in place there.
export TERM=dumb

. /lib/agelab/arch.env
. /agelab/env

mkdir -p /proc /sys /dev /tmp /root /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

for t in "$AGELAB_OUT" "$AGELAB_ERR" "$AGELAB_STATUS"; do
    stty -F "/dev/$t" raw -echo 115200 2>/dev/null
done
# Held open for the whole run so the port settings stick and closing them drains the output.
exec 7>"/dev/$AGELAB_OUT" 8>"/dev/$AGELAB_ERR" 9>"/dev/$AGELAB_STATUS"

up_s() { read -r up _ </proc/uptime; echo "$up"; }
status() { echo "agelab-status v1 $*" >&9; }
warn() { echo "agelab-init: warning: $*" >/dev/console; status warn "$*"; }

status booted "uptime=$(up_s)"

# Load the modules of group $1 (listed in dependency order); no list means built in.
load_group() {
    [ -f "/lib/agelab/modgroups/$1" ] || return 0
    while read -r m; do
        grep -q "^$m " /proc/modules && continue
        insmod "/lib/agelab/modules/$m.ko" || { warn "insmod $m failed"; return 1; }
    done <"/lib/agelab/modgroups/$1"
}

for pair in $AGELAB_KVM_GROUPS; do
    grep -qw "${pair%%:*}" /proc/cpuinfo && load_group "${pair#*:}"
done
[ -c /dev/kvm ] || warn "no /dev/kvm in this guest"
for m in $AGELAB_MODULES; do
    load_group "$m"
done

if [ -w /sys/kernel/mm/lru_gen/enabled ]; then
    echo y >/sys/kernel/mm/lru_gen/enabled || warn "cannot enable lru_gen"
fi

if [ -n "$AGELAB_ZRAM" ]; then
    load_group zram
    if [ ! -e /sys/block/zram0 ] && [ -w /sys/class/zram-control/hot_add ]; then
        read -r _ </sys/class/zram-control/hot_add
    fi
    { echo "$AGELAB_ZRAM" >/sys/block/zram0/disksize &&
        mkswap /dev/zram0 >/dev/null && swapon /dev/zram0; } || warn "zram swap of $AGELAB_ZRAM failed"
fi

echo "agelab-init: running the command" >/dev/console
cd /tmp
status started "uptime=$(up_s)"
sh /agelab/run </dev/null >&7 2>&8 7>&- 8>&- 9>&-
rc=$?
# Closing the last descriptors of the output ports waits until they are transmitted.
exec 7>&- 8>&-
status exit "$rc" "uptime=$(up_s)"
exec 9>&-
sync
echo o >/proc/sysrq-trigger
# Power-off runs asynchronously; without the sleep init would exit first and panic.
sleep 30
