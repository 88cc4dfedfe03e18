#!/usr/bin/env bash
# A program shipped as an npm package's binary (Bun, Deno: stripped executables
# with their TLS linked in) for the stripped-TLS tests, unpacked from the
# package's tarball (`npm pack`, no install scripts run: npm has been seen to
# leave @oven/bun-linux-x64 without its bin/bun) into OUTDIR/NAME.
# Idempotent. Usage: npm-binary.sh OUTDIR NAME PACKAGE@VERSION PATH-IN-PACKAGE
set -euo pipefail

out=${1:?usage: npm-binary.sh OUTDIR NAME PACKAGE@VERSION PATH}
name=${2:?} pkg=${3:?} inner=${4:?}
[[ -x "$out/$name" ]] && exit 0
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT
(cd "$dl" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$dl"/*.tgz -C "$dl" "package/$inner"
mkdir -p "$out"
install -m 0755 "$dl/package/$inner" "$out/.$name.part"
mv -f "$out/.$name.part" "$out/$name"
