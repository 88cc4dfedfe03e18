#!/usr/bin/env bash
# Section 8 of docs/benchmarks.md (run by scripts/bench.sh; alone, it prints
# the section): what capture costs mbedTLS, wolfSSL and Erlang/OTP programs
# at 1 KiB. bench/embedded_rr.c built on each C library, and
# bench/erlang_rr.escript (OTP's ssl, client and server in one node), the
# modes interleaved over ROUNDS rounds of SECS seconds. Needs root and a
# release build.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-2}"
AGENT=./target/release/plainsight
CERT=target/fixtures/cert.pem
KEY=target/fixtures/key.pem
WORK="$(mktemp -d)"
AGENT_PID=""
cleanup() {
    [[ -n "$AGENT_PID" ]] && kill -INT "$AGENT_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

gcc -O2 -DUSE_MBEDTLS -o "$WORK/mbedtls_rr" bench/embedded_rr.c -lmbedtls -lmbedx509 -lmbedcrypto
gcc -O2 -DUSE_WOLFSSL -o "$WORK/wolfssl_rr" bench/embedded_rr.c -lwolfssl

start_agent() { # log, args...
    local log="$1"; shift
    rm -f "$log" # a reused log's "ready" must not stand for this agent's
    "$AGENT" "$@" 2>"$log" >/dev/null &
    AGENT_PID=$!
    for _ in $(seq 400); do
        grep -q "plainsight: ready" "$log" 2>/dev/null && return 0
        sleep 0.025
    done
    echo "agent did not start:" >&2; cat "$log" >&2; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=""; }
rr() { # program -> rt_per_s
    local cmd=("$WORK/$1")
    [[ $1 == erlang_rr ]] && cmd=(escript bench/erlang_rr.escript)
    taskset -c 0 "${cmd[@]}" "$CERT" "$KEY" api.acme.com 1024 "$SECS" |
        sed -n 's/.*rt_per_s=\([0-9.]*\).*/\1/p'
}
# The process the agent is given by name: the Erlang VM runs as beam.smp.
comm_of() { [[ $1 == erlang_rr ]] && echo beam.smp || echo "$1"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {printf "%s-%s", a[1], a[NR]}'; }
lost_of() { sed -n 's/.*lost records: \([0-9]*\) plaintext.*/\1/p' "$1"; }

declare -A RT LOST
PROGS=(mbedtls_rr wolfssl_rr)
command -v escript >/dev/null 2>&1 && PROGS+=(erlang_rr)
MODES=(none nomatch capture)
for round in $(seq "$ROUNDS"); do
    for p in "${PROGS[@]}"; do
        for mode in "${MODES[@]}"; do
            case $mode in
                none) r=$(rr "$p") ;;
                nomatch) start_agent "$WORK/a.log" --comm "$(comm_of "$p")" --sni nomatch.invalid; r=$(rr "$p"); stop_agent ;;
                capture) start_agent "$WORK/a.log" --comm "$(comm_of "$p")" --raw --output json --write "$WORK/c.json"
                         r=$(rr "$p"); stop_agent; LOST[$p]+="$(lost_of "$WORK/a.log") " ;;
            esac
            RT[$p,$mode]+="$r "
        done
    done
    echo "mbedtls/wolfssl/erlang round $round done" >&2
done

echo "## 8. mbedTLS, wolfSSL and Erlang/OTP"
echo
echo "\`bench/embedded_rr.c\` (tls_rr's loop) on Debian's mbedTLS $(dpkg-query -W -f='${Version}' libmbedtls-dev 2>/dev/null)"
echo "(TLS 1.2) and wolfSSL $(dpkg-query -W -f='${Version}' libwolfssl-dev 2>/dev/null) (TLS 1.3): 1 KiB round trips, client and server"
echo "pinned to CPU 0; \`bench/erlang_rr.escript\`, the same loop in Erlang/OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null) \`ssl\` (TLS 1.3,"
echo "AES-256-GCM; the agent given \`--comm beam.smp\`). ${SECS} s per measurement, the modes interleaved, $ROUNDS rounds: median round trips/s"
echo "(min-max), ratio to no agent. Agent modes with \`--comm\` of the program; non-matching is"
echo "\`--sni nomatch.invalid\`, capture \`--raw --output json --write\`. Measured $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "\`mbedtls_ssl_read\`, \`wolfSSL_write\` and \`wolfSSL_read\` keep a uretprobe (\`--explain\` says why), which goes"
echo "per process under filters: their entry probe is then inside the function on an emulated instruction,"
echo "so a non-matching call pays one emulated hit; a captured call pays the uretprobe's hit on the first"
echo "instruction, which the kernel single-steps, too."
echo
echo "| library | none | non-matching | capture | lost records, capture (per round) |"
echo "|---|---|---|---|---|"
for p in "${PROGS[@]}"; do
    n=$(echo "${RT[$p,none]}" | median)
    row="| ${p%_rr} |"
    for mode in "${MODES[@]}"; do
        m=$(echo "${RT[$p,$mode]}" | median)
        row+=" $m ($(echo "${RT[$p,$mode]}" | spread)), $(printf '%.2f' "$(echo "$m / $n" | bc -l)")x |"
    done
    echo "$row ${LOST[$p]} |"
done
echo
