#!/usr/bin/env bash
# PyPI packages whose native modules carry their own TLS, for the tests of
# TLS inside modules (issue #33), installed with their dependencies into the
# folder given (target/pymods; tests put it on PYTHONPATH): grpcio (BoringSSL
# linked into its cygrpc module, stripped) and hf_transfer (Rust, native-tls
# over a trimmed static OpenSSL), and psycopg-binary for the OpenSSL 3.5
# libssl its wheel bundles (SSL_write_ex2). Through pip (the machine's index
# configuration). Idempotent.
set -euo pipefail

out=${1:?usage: pypi-modules.sh OUTDIR}
PKGS=(grpcio==1.85.4 hf_transfer==0.1.9 psycopg-binary==3.3.9)
[[ -f "$out/.done-${PKGS[*]// /_}" ]] && exit 0
rm -rf "$out.part"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --only-binary=:all: --target "$out.part" "${PKGS[@]}"
rm -rf "$out"
mv "$out.part" "$out"
touch "$out/.done-${PKGS[*]// /_}"
