#!/usr/bin/env bash
# Each BPF source stays small, one concern per file (libbpf-tools style):
# no .bpf.c over 500 lines and no shared header over 500 lines.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for f in bpf/*.bpf.c bpf/*.h; do
    [[ "$f" == bpf/vmlinux.h ]] && continue
    n=$(wc -l < "$f")
    if ((n > 500)); then
        echo "check-bpf-size: $f has $n lines (at most 500: split it by concern)" >&2
        status=1
    fi
done
exit $status
