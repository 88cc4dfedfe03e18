#!/usr/bin/env bash
# psycopg 3 (PyPI; pure Python over Debian's libpq, so its TLS is the
# system OpenSSL the agent probes) for the PostgreSQL tests: the extended
# protocol (Parse/Bind/Execute, prepared statements, pipelines), which
# Debian's psql 15 does not speak. Installed into the folder given
# (target/psycopg), through pip (the machine's index configuration).
# Idempotent.
set -euo pipefail

out=${1:?usage: psycopg.sh OUTDIR}
VERSION=3.3.9
[[ -f "$out/.psycopg-$VERSION" ]] && exit 0
rm -rf "$out.part"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-script-location \
    --target "$out.part" "psycopg==$VERSION"
rm -rf "$out"
mv "$out.part" "$out"
touch "$out/.psycopg-$VERSION"
