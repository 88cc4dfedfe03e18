#!/usr/bin/env bash
# Installs every system package plainsight needs to build, run and test.
# Idempotent: packages already present are skipped. Run as root.
set -euo pipefail

# The Java agent (jvm/) is built with Debian's JDK 17 and ASM.
# The unit tests check the stripped-BoringSSL locator against Android's
# libssl (android-libboringssl) and stand-ins linked by lld.
BUILD_PKGS=(clang lld llvm libelf-dev zlib1g-dev libzstd-dev pkg-config make gcc
            openjdk-17-jdk-headless libasm-java android-libboringssl)
# Tools used by the tests and their TLS fixtures.
TEST_PKGS=(curl openssl libssl-dev python3 nodejs chromium
           android-libboringssl android-libboringssl-dev
           procps psmisc bc binutils gnutls-bin wget golang-go
           tshark prometheus podman runc debootstrap nginx-light libnss3-tools iproute2
           python3-pip
           postgresql redis-server redis-tools mariadb-server mariadb-client
           libdbd-mariadb-perl
           lighttpd lighttpd-mod-mbedtls lighttpd-mod-wolfssl libmbedtls-dev libwolfssl-dev
           erlang-base erlang-crypto erlang-ssl erlang-inets)

# The peers `make bench` compares against.
BENCH_PKGS=(bpftrace bpfcc-tools firefox-esr)
# make test-kernels: Debian's 6.1 kernel under qemu (the kernel package itself
# is downloaded by scripts/kernel-vm.sh with apt-get download).
VM_PKGS=(qemu-system-x86 busybox-static cpio file)
# Only needed to regenerate bpf/vmlinux.h (bpftool btf dump file /sys/kernel/btf/vmlinux format c).
DEV_PKGS=(bpftool)

want=("${BUILD_PKGS[@]}")
case "${1:-}" in
    --test) want+=("${TEST_PKGS[@]}") ;;
    --dev) want+=("${TEST_PKGS[@]}" "${DEV_PKGS[@]}") ;;
    --bench) want+=("${TEST_PKGS[@]}" "${BENCH_PKGS[@]}") ;;
    --vm) want+=("${TEST_PKGS[@]}" "${VM_PKGS[@]}") ;;
    "") ;;
    *) echo "usage: $0 [--test|--bench|--vm|--dev]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        # node may come from outside Debian (preinstalled); accept a working binary.
        if [[ "$p" == nodejs ]] && command -v node >/dev/null 2>&1; then continue; fi
        if [[ "$p" == python3 ]] && command -v python3 >/dev/null 2>&1; then continue; fi
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark (wireshark-common) asks whether non-root users may capture; answer "no" up front.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # nginx's package enables a site on port 80; the tests run their own nginx
    # on 127.0.0.1 with a configuration of their own, and nothing should listen.
    if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
        systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
    fi
    # lighttpd's package starts it on port 80 too; the tests run their own.
    if [[ " ${missing[*]} " == *" lighttpd "* ]]; then
        systemctl disable --now lighttpd >/dev/null 2>&1 || service lighttpd stop >/dev/null 2>&1 || true
    fi
    # Likewise the database servers: the tests start their own, as their
    # users, from temporary data folders, on free ports of 127.0.0.1.
    for svc in postgresql redis-server mariadb; do
        if [[ " ${missing[*]} " == *" ${svc%-server}"* ]]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo (Rust toolchain) not found on PATH" >&2
    exit 1
fi
