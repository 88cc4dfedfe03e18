#!/usr/bin/env bash
# Builds plainsight's Java agent (jvm/) into the folder given (target/jvm):
#   plainsight-jsse.jar        the agent (Agent-Class), with Debian's ASM
#                              moved to dev.plainsight.jsse.asm and the
#                              hook class as a resource
#   libplainsight-jsse.so      the native methods plainsight probes
# The plainsight binary embeds both (src/jvm/files.rs). Nothing is
# rebuilt when no source is newer than its output.
set -euo pipefail

out=${1:?usage: build-jvm.sh OUTDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
JDK=${JDK:-/usr/lib/jvm/java-17-openjdk-amd64}
ASM=/usr/share/java/asm.jar
ASM_COMMONS=/usr/share/java/asm-commons.jar
mkdir -p "$out"

newer() { # newer OUTPUT INPUT...: true when OUTPUT is missing or older than an input
    local o=$1; shift
    [[ -e $o ]] || return 0
    [[ -n $(find "$@" -newer "$o" -print -quit) ]]
}

if newer "$out/libplainsight-jsse.so" "$here/jvm/native" "$here/bpf/events.h"; then
    gcc -O2 -Wall -Wextra -Werror -shared -fPIC -fno-omit-frame-pointer \
        -I"$JDK/include" -I"$JDK/include/linux" -I"$here/bpf" \
        -o "$out/libplainsight-jsse.so" "$here/jvm/native/plainsight_jsse.c"
fi

if newer "$out/plainsight-jsse.jar" "$here/jvm/agent" "$here/jvm/boot" "$here/jvm/build" "$ASM"; then
    rm -rf "$out/agent" "$out/asm" "$out/boot" && mkdir -p "$out/agent" "$out/asm" "$out/boot"
    # The hook belongs to java.base's sun.security.ssl: compiled as a patch
    # of that module, carried in the agent jar as a resource.
    "$JDK/bin/javac" -source 17 -target 17 -Xlint:all,-options -Werror --patch-module "java.base=$here/jvm/boot" \
        -d "$out/boot" $(find "$here/jvm/boot" -name '*.java')
    mkdir -p "$out/agent/dev/plainsight/jsse"
    cp "$out/boot/sun/security/ssl/PlainsightJsse.class" "$out/agent/dev/plainsight/jsse/PlainsightJsse.bin"
    "$JDK/bin/java" -cp "$ASM:$ASM_COMMONS" "$here/jvm/build/Relocate.java" "$ASM" "$out/asm"
    "$JDK/bin/javac" --release 17 -Xlint:all -Werror -cp "$out/asm" -d "$out/agent" \
        $(find "$here/jvm/agent" -name '*.java')
    cp -r "$out/asm/." "$out/agent/"
    cat > "$out/MANIFEST.MF" <<'MF'
Agent-Class: dev.plainsight.jsse.Agent
Can-Retransform-Classes: true
Can-Redefine-Classes: true
MF
    "$JDK/bin/jar" --create --file "$out/plainsight-jsse.jar" --manifest "$out/MANIFEST.MF" -C "$out/agent" .
fi
