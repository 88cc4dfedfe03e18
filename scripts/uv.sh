#!/usr/bin/env bash
# uv (PyPI's wheel, a stripped Rust executable with rustls on aws-lc-rs) for
# the stripped-TLS tests, unpacked into the folder given (target/uv).
# Through pip (the machine's index configuration). Idempotent.
set -euo pipefail

out=${1:?usage: uv.sh OUTDIR}
VERSION=0.13.9
[[ -x "$out/uv" ]] && exit 0
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    -d "$dl" "uv==$VERSION"
mkdir -p "$out"
python3 - "$dl" "$out" "$VERSION" <<'PY'
import glob, os, sys, zipfile
dl, out, version = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(dl, "uv-*.whl"))
with zipfile.ZipFile(wheel) as z:
    data = z.read(f"uv-{version}.data/scripts/uv")
tmp = os.path.join(out, ".uv.part")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.rename(tmp, os.path.join(out, "uv"))
PY
