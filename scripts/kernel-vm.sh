#!/usr/bin/env bash
# Runs a command inside Debian's 6.1 kernel under qemu, with this machine's
# root filesystem shared read-only (9p) and a tmpfs on /tmp.
#
#   scripts/kernel-vm.sh [--env NAME=VALUE]... COMMAND [ARG...]
#
# Exits with COMMAND's status. The kernel package comes from Debian
# (apt-get download of the image linux-image-amd64 depends on), unpacked in
# target/vm/; the initramfs is busybox-static plus the virtio/9p modules.
# Packages: scripts/install-deps.sh --vm. Software emulation (TCG): /dev/kvm
# has no usable VT-x on this machine kind (the README, "Kernel hooks", says
# what runs there).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
VM="$REPO/target/vm"
MEM="${VM_MEM:-2048}"
CPUS="${VM_CPUS:-2}"
TIMEOUT="${VM_TIMEOUT:-3000}"

envs=()
while [[ "${1:-}" == --env ]]; do envs+=("$2"); shift 2; done
[[ $# -gt 0 ]] || { echo "usage: $0 [--env NAME=VALUE]... COMMAND [ARG...]" >&2; exit 2; }

mkdir -p "$VM"
# ---- kernel -----------------------------------------------------------------
if ! ls "$VM"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
    [[ -n "$pkg" ]] || { echo "kernel-vm: no linux-image package found (apt-get update?)" >&2; exit 1; }
    echo "kernel-vm: downloading $pkg" >&2
    (cd "$VM" && rm -f linux-image-*.deb && apt-get download -q "$pkg" >&2)
    rm -rf "$VM/kernel"
    dpkg-deb -x "$VM"/linux-image-*.deb "$VM/kernel"
fi
KERNEL="$(ls "$VM"/kernel/boot/vmlinuz-* | head -1)"
KVER="${KERNEL##*/vmlinuz-}"
MODS="$VM/kernel/lib/modules/$KVER/kernel"

# ---- initramfs ----------------------------------------------------------------
INITRD="$VM/initramfs-$KVER.cpio.gz"
if [[ ! -e "$INITRD" || "$0" -nt "$INITRD" ]]; then
    root="$VM/initramfs"
    rm -rf "$root"
    mkdir -p "$root"/{bin,lib/modules,proc,sys,dev,mnt/host,run}
    cp /bin/busybox "$root/bin/busybox"
    file "$root/bin/busybox" 2>/dev/null | grep -q "statically linked" \
        || { echo "kernel-vm: /bin/busybox is not static (install busybox-static)" >&2; exit 1; }
    for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet \
             9pnet_virtio 9p; do
        f="$(find "$MODS" -name "$m.ko*" | head -1)"
        [[ -n "$f" ]] || { echo "kernel-vm: module $m not found in $MODS" >&2; exit 1; }
        case "$f" in
            *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
            *) cp "$f" "$root/lib/modules/$m.ko" ;;
        esac
        echo "$m" >>"$root/lib/modules/order"
    done
    cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /mnt/host || echo "VM-EXIT-CODE=125"
h=/mnt/host
mount -t proc proc $h/proc
mount -t sysfs sys $h/sys
mount -t devtmpfs dev $h/dev
mkdir -p /run/pts 2>/dev/null
mount -t devpts devpts $h/dev/pts 2>/dev/null
mount -t tmpfs tmp $h/tmp
mount -t tmpfs run $h/run
mount -t tracefs tracefs $h/sys/kernel/tracing
mount -t bpf bpf $h/sys/fs/bpf 2>/dev/null
ip link set lo up
cmd="$(sed -n 's/.*vmcmd=\([^ ]*\).*/\1/p' /proc/cmdline)"
chroot $h /bin/sh "$cmd"
echo "VM-EXIT-CODE=$?"
poweroff -f
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
fi

# ---- run ----------------------------------------------------------------------
script="cd $(printf %q "$REPO") && export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp"
for e in "${envs[@]}"; do script+=" $(printf %q "$e")"; done
script+=" && $(printf '%q ' "$@")"
# The script goes in a file of the tree the VM mounts: the kernel's command
# line holds 2048 bytes, and a longer one is cut (the shell then waits for
# the rest of its input, for ever).
cmdfile="$VM/cmd.$$.sh"
printf '%s\n' "$script" >"$cmdfile"
log="$(mktemp)"
trap 'rm -f "$log" "$cmdfile"' EXIT
set +e
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp "$CPUS" -m "$MEM" -nographic -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=${VM_LOGLEVEL:-3} panic=-1 vmcmd=$cmdfile" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap | tee "$log"
set -e
code="$(sed -n 's/.*VM-EXIT-CODE=\([0-9]*\).*/\1/p' "$log" | tail -1)"
if [[ -z "$code" ]]; then
    echo "kernel-vm: the VM did not report an exit code (timeout ${TIMEOUT}s or crash)" >&2
    exit 124
fi
exit "$code"
