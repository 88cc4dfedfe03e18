#!/usr/bin/env bash
# make bench: what plainsight costs the host, what it can carry, what it
# misses. Writes docs/benchmarks.md (every number measured in this run).
# Not part of make test. Needs root. ~11 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"     # interleaved repetitions of each overhead mode
SECS="${SECS:-2}"         # seconds per overhead measurement
RUNS="${RUNS:-1000}"      # start-up completeness runs
NEW_RUNS="${NEW_RUNS:-100}" # start-up runs of content never seen (build ID changed)
NODE_RUNS="${NODE_RUNS:-5}" # runs of node with its build ID changed (a big program seen first)
IDLE="${IDLE:-60}"        # idle measurement seconds
SIZES=(1024 4096 65536)
# A previous build of the agent (a path to its binary): its non-matching and
# capture modes are measured in the same interleaved rounds, so that a change
# is compared with what it changed on one machine at one time.
BASE_AGENT="${BASE_AGENT:-}"
BASE_NAME="${BASE_NAME:-}"  # what to call it in the report (a commit, say)
OUT=docs/benchmarks.md
WORK="$(mktemp -d)"
LIBSSL=/usr/lib/x86_64-linux-gnu/libssl.so.3
AGENT_PID=""; PEER_PID=""; SRV_PID=""
cleanup() {
    for p in $AGENT_PID $PEER_PID $SRV_PID; do kill -INT "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

bash tests/fixtures/build.sh target/fixtures >/dev/null
bash scripts/build-jvm.sh target/jvm
cargo build --release --locked -q
gcc -O2 -o "$WORK/tls_rr" bench/tls_rr.c -lssl -lcrypto
CERT=target/fixtures/cert.pem
KEY=target/fixtures/key.pem
AGENT=./target/release/plainsight

start_agent() { # log, args... (USE_AGENT: another binary)
    local log="$1"; shift
    # A log left by the last run would say "ready" before this agent is.
    rm -f "$log"
    "${USE_AGENT:-$AGENT}" "$@" 2>"$log" >/dev/null &
    AGENT_PID=$!
    for _ in $(seq 400); do
        grep -q "plainsight: ready" "$log" 2>/dev/null && return 0
        sleep 0.025
    done
    echo "agent did not start:"; cat "$log"; exit 1
}
stop_agent() { kill -INT "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=""; }
start_peer() { # log, bpftrace program
    BPFTRACE_STRLEN=200 bpftrace -e "$2" >"$1" 2>&1 &
    PEER_PID=$!
    for _ in $(seq 400); do
        grep -q "Attaching" "$1" 2>/dev/null && { sleep 0.5; return 0; }
        sleep 0.025
    done
    echo "bpftrace did not start:"; cat "$1"; exit 1
}
stop_peer() { kill -INT "$PEER_PID" 2>/dev/null || true; wait "$PEER_PID" 2>/dev/null || true; PEER_PID=""; }
rr() { # size [rate] -> "rt_per_s mb_per_s"
    taskset -c 0 "$WORK/tls_rr" "$CERT" "$KEY" api.acme.com "$1" "$SECS" "${2:-0}" |
        sed -n 's/.*rt_per_s=\([0-9.]*\) mb_per_s=\([0-9.]*\).*/\1 \2/p'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {printf "%s-%s", a[1], a[NR]}'; }
lost_of() { sed -n 's/.*lost records: \([0-9]*\) plaintext.*/\1/p' "$1"; }

FLOOR='uprobe:'$LIBSSL':SSL_write {} uretprobe:'$LIBSSL':SSL_write {} uprobe:'$LIBSSL':SSL_read {} uretprobe:'$LIBSSL':SSL_read {}'
PEER='uprobe:'$LIBSSL':SSL_write { @b[tid] = arg1; } uretprobe:'$LIBSSL':SSL_write /@b[tid]/ { printf("%r\n", buf(@b[tid], 200)); delete(@b[tid]); } uprobe:'$LIBSSL':SSL_read { @r[tid] = arg1; } uretprobe:'$LIBSSL':SSL_read /@r[tid] && retval > 0/ { printf("%r\n", buf(@r[tid], 200)); delete(@r[tid]); }'

# bcc's sslsniff: run it once to see whether it works on this kernel.
SSLSNIFF="unavailable"
if command -v sslsniff-bpfcc >/dev/null; then
    timeout 20 sslsniff-bpfcc >"$WORK/sslsniff.log" 2>&1 &
    sp=$!; sleep 8
    if kill -0 "$sp" 2>/dev/null && ! grep -qi "error\|fail\|traceback" "$WORK/sslsniff.log"; then
        SSLSNIFF="runs"; kill -INT "$sp" 2>/dev/null || true
    else
        SSLSNIFF="fails: $(grep -m1 -iE 'error|fail|No such|Exception' "$WORK/sslsniff.log" | cut -c1-160)"
    fi
    wait "$sp" 2>/dev/null || true
fi

# ---- 1. overhead ----------------------------------------------------------
declare -A RT MB LOST
MODES=(none floor nomatch nomatch_hostwide capture nomatch_entry capture_entry bpftrace)
[[ -n "$BASE_AGENT" ]] && MODES+=(base_nomatch base_capture)
declare -A LABEL=([none]="none" [floor]="floor" [nomatch]="non-matching"
    [nomatch_hostwide]="non-matching, returns everywhere" [capture]="capture"
    [nomatch_entry]="non-matching at entry" [capture_entry]="capture at entry"
    [bpftrace]="bpftrace copy" [base_nomatch]="non-matching, base build"
    [base_capture]="capture, base build")
for round in $(seq "$ROUNDS"); do
    for size in "${SIZES[@]}"; do
        for mode in "${MODES[@]}"; do
            case $mode in
                none) r=$(rr "$size") ;;
                floor) start_peer "$WORK/peer.log" "$FLOOR"; r=$(rr "$size"); stop_peer ;;
                nomatch) start_agent "$WORK/a.log" --comm tls_rr --sni nomatch.invalid; r=$(rr "$size"); stop_agent ;;
                nomatch_hostwide) start_agent "$WORK/a.log" --comm tls_rr --sni nomatch.invalid --host-wide-returns
                         r=$(rr "$size"); stop_agent ;;
                capture) start_agent "$WORK/a.log" --comm tls_rr --raw --output json --write "$WORK/capture.json"
                         r=$(rr "$size"); stop_agent; LOST[$size]+="$(lost_of "$WORK/a.log") " ;;
                nomatch_entry) start_agent "$WORK/a.log" --comm tls_rr --sni nomatch.invalid --probe-at-entry
                         r=$(rr "$size"); stop_agent ;;
                capture_entry) start_agent "$WORK/a.log" --comm tls_rr --raw --output json --write "$WORK/capture.json" --probe-at-entry
                         r=$(rr "$size"); stop_agent ;;
                bpftrace) start_peer "$WORK/peer.log" "$PEER"; r=$(rr "$size"); stop_peer ;;
                base_nomatch) USE_AGENT=$BASE_AGENT start_agent "$WORK/a.log" --comm tls_rr --sni nomatch.invalid
                         r=$(rr "$size"); stop_agent ;;
                base_capture) USE_AGENT=$BASE_AGENT start_agent "$WORK/a.log" --comm tls_rr --raw --output json --write "$WORK/capture.json"
                         r=$(rr "$size"); stop_agent ;;
            esac
            RT[$mode,$size]+="${r%% *} "; MB[$mode,$size]+="${r##* } "
        done
    done
    echo "overhead round $round done" >&2
done

# ---- 2. capacity ----------------------------------------------------------
declare -A CAP
CAP_RATES=(25 50 100 200 400)
for rate in "${CAP_RATES[@]}"; do
    start_agent "$WORK/cap.log" --comm tls_rr --raw --output json --write "$WORK/capture.json"
    t0=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
    r=$(rr 65536 "$rate")
    t1=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
    rss=$(awk '/VmHWM/{print $2}' "/proc/$AGENT_PID/status")
    stop_agent
    CAP[$rate]="${r##* } $(lost_of "$WORK/cap.log") $(( t1 - t0 )) $rss"
done
echo "capacity done" >&2

# ---- 4. idle ------------------------------------------------------------------
t_start=$(date +%s.%N)
start_agent "$WORK/idle.log"
t_ready=$(date +%s.%N)
c0=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
sleep "$IDLE"
c1=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
idle_rss=$(awk '/VmRSS/{print $2}' "/proc/$AGENT_PID/status")
idle_anon=$(awk '/RssAnon/{print $2}' "/proc/$AGENT_PID/status")
stop_agent
TICK=$(getconf CLK_TCK)

# ---- 5. every other process's syscalls ------------------------------------
# dd copying 1-byte blocks: 2 syscalls per byte, no TLS. Its time with no
# agent, with an agent that captures nothing yet, and once a TLS library
# has had a wanted connection (the socket hook is attached then).
DD_N=2000000
dd_time() { local t0 t1; t0=$(date +%s%N); dd if=/dev/zero of=/dev/null bs=1 count=$DD_N 2>/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
dd_best() { local b=""; for _ in 1 2 3; do local t; t=$(dd_time); [[ -z "$b" || $t -lt $b ]] && b=$t; done; echo "$b"; }
DD_NONE=$(dd_best)
start_agent "$WORK/dd.log" --comm tls_rr
DD_IDLE=$(dd_best)
taskset -c 0 "$WORK/tls_rr" "$CERT" "$KEY" api.acme.com 1024 1 0 >/dev/null
grep -q "tls_sock_sys_enter" "$WORK/dd.log" && DD_HOOK_ON=yes || DD_HOOK_ON=no
DD_HOOK=$(dd_best)
stop_agent

# ---- 6. Java (JSSE) ---------------------------------------------------------
# bench/JsseLoop.java: one JVM, a JSSE server thread and a JSSE client, 1 KiB
# round trips on one connection. Modes interleaved over the rounds; in the
# agent modes the loop starts once the Java agent is in (its log line).
JAVA=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
mkdir -p "$WORK/jcls"
/usr/lib/jvm/java-17-openjdk-amd64/bin/javac -cp target/fixtures/java -d "$WORK/jcls" bench/JsseLoop.java
ln -sf "$JAVA" "$WORK/jsse_loop"
java_rr() { # agent log or "" -> rt_per_s
    local fifo="$WORK/jfifo" out="$WORK/jloop.out"
    rm -f "$fifo"; mkfifo "$fifo"
    "$WORK/jsse_loop" -cp "$WORK/jcls:target/fixtures/java" JsseLoop 1024 "$SECS" "$CERT" "$KEY" <"$fifo" >"$out" &
    local jpid=$!
    exec 8>"$fifo"
    for _ in $(seq 400); do grep -q READY "$out" 2>/dev/null && break; sleep 0.025; done
    if [[ -n "$1" ]]; then
        for _ in $(seq 800); do grep -q "loaded into jsse_loop\[$jpid\]" "$1" && break; sleep 0.025; done
    fi
    echo go >&8; exec 8>&-
    wait "$jpid"
    sed -n 's/^rt_per_s=\([0-9]*\).*/\1/p' "$out"
}
declare -A JRT
JMODES=(none nomatch capture)
for round in $(seq "$ROUNDS"); do
    for mode in "${JMODES[@]}"; do
        case $mode in
            none) r=$(java_rr "") ;;
            nomatch) start_agent "$WORK/j.log" --comm jsse_loop --sni nomatch.invalid; r=$(java_rr "$WORK/j.log"); stop_agent ;;
            capture) start_agent "$WORK/j.log" --comm jsse_loop --raw --output json --write "$WORK/jcapture.json"
                     r=$(java_rr "$WORK/j.log"); stop_agent ;;
        esac
        JRT[$mode]+="$r "
    done
    echo "java round $round done" >&2
done
# From a JVM's start to its first captured byte: a JVM that makes requests
# from its first moment (HttpClientGet, 400 of them) against the test server.
python3 tests/fixtures/tls_server.py --cert "$CERT" --key "$KEY" >"$WORK/jsrv.out" &
SRV_PID=$!
for _ in $(seq 200); do grep -q PORT "$WORK/jsrv.out" 2>/dev/null && break; sleep 0.025; done
JPORT=$(awk '{print $2}' "$WORK/jsrv.out")
ln -sf "$JAVA" "$WORK/jsse_first"
JFIRST=""; JATTACH=""
for round in $(seq "$ROUNDS"); do
    start_agent "$WORK/jf.log" --comm jsse_first --raw --output json --write "$WORK/jfirst.json"
    t0=$(date +%s.%N)
    "$WORK/jsse_first" -cp target/fixtures/java HttpClientGet --count 400 \
        "https://api.acme.com:$JPORT/first" 1.1 api.acme.com >/dev/null 2>&1
    stop_agent
    first=$(python3 -c 'import json,sys,datetime
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r.get("type")=="data":
        t=datetime.datetime.strptime(r["time"],"%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        print(int((t.timestamp()-float(sys.argv[2]))*1000)); break' "$WORK/jfirst.json" "$t0")
    JFIRST+="$first "
    JATTACH+="$(sed -n 's/.*loaded into jsse_first\[[0-9]*\] (.*) in \([0-9]*\) ms.*/\1/p' "$WORK/jf.log" | head -1) "
done
kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""

# ---- 7. first sight and a restarted agent ----------------------------------
# How long a program is held when the agent first sees its files (no result
# in memory or on disk), with a cold and a warm page cache, and when a
# restarted agent knows them from its cache on disk (--cache-dir). Each
# program runs under a name of its own; its longest hold is read from the
# agent's debug log ("pid N held U us").
cold_cache() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
longest_hold() { # log pid -> us
    sed -n "s/.*pid $2 held \([0-9]*\) us.*/\1/p" "$1" | sort -n | tail -1
}
returns_attach() { # log pid -> us spent attaching its per-process return probes (longest)
    sed -n "s/.*\[$2\] has a wanted connection: return probes .* attached for it in \([0-9]*\) us.*/\1/p" "$1" | sort -n | tail -1
}
hold_of() { # name cache-dir cold(yes/no) cmd... -> longest hold (us)
    local name=$1 dir=$2 cold=$3; shift 3
    ln -sf "$1" "$WORK/$name"; shift
    [[ $cold == yes ]] && cold_cache
    start_agent "$WORK/h.log" --comm "$name" --cache-dir "$dir" --log-level debug
    "$WORK/$name" "$@" >/dev/null 2>&1 &
    local p=$!
    wait "$p" || true
    stop_agent
    echo "$(longest_hold "$WORK/h.log" "$p") $(returns_attach "$WORK/h.log" "$p")"
}
declare -A HOLD
SIGHT=("uv|$PWD/target/uv/uv|--version" "node|$(command -v node)|-e|0"
       "rustls_stripped|$PWD/target/fixtures/rustls_client_awslc_stripped|--help"
       "bun|$PWD/target/stripped/bun|--version" "deno|$PWD/target/stripped/deno|--version"
       "chromium|/usr/lib/chromium/chromium|--headless=new|--no-sandbox|--dump-dom|about:blank"
       "firefox_libxul|/usr/lib/firefox-esr/firefox-esr|--headless|--screenshot|$WORK/ff.png|about:blank"
       "grpcio_cygrpc|/usr/bin/python3|-c|import sys; sys.path.insert(0, '$PWD/target/pymods'); import grpc"
       "hf_transfer|/usr/bin/python3|-c|import sys; sys.path.insert(0, '$PWD/target/pymods'); import hf_transfer")
for entry in "${SIGHT[@]}"; do
    IFS='|' read -r label exe args <<<"$entry"
    [[ -x "$exe" ]] || continue
    IFS='|' read -r -a argv <<<"${entry#*|*|}"
    rm -rf "$WORK/hc"
    HOLD[$label,cold]=$(hold_of "h_$label" "$WORK/hc" yes "$exe" "${argv[@]}")
    rm -rf "$WORK/hc"
    HOLD[$label,warm]=$(hold_of "h_$label" "$WORK/hc" no "$exe" "${argv[@]}")
    HOLD[$label,restart]=$(hold_of "h_$label" "$WORK/hc" no "$exe" "${argv[@]}")
    HOLD[$label,restart_cold]=$(cold_cache; hold_of "h_$label" "$WORK/hc" yes "$exe" "${argv[@]}")
done

# --inventory over the processes running now (each distinct file read once).
t0=$(date +%s%N)
"$AGENT" --inventory >/dev/null 2>"$WORK/inv.err" || true
INV=$(( ($(date +%s%N) - t0) / 1000000 ))
INV_LINE=$(grep "inventory of" "$WORK/inv.err" | sed 's/^plainsight: //')

# ---- 3. completeness at start-up -------------------------------------------
python3 tests/fixtures/tls_server.py --cert "$CERT" --key "$KEY" >"$WORK/srv.out" 2>/dev/null &
SRV_PID=$!
for _ in $(seq 100); do grep -q PORT "$WORK/srv.out" && break; sleep 0.05; done
PORT=$(awk '/PORT/{print $2}' "$WORK/srv.out")
printf 'GET /start HTTP/1.1\r\nHost: api.acme.com\r\nConnection: close\r\n\r\n' >"$WORK/req"
# A run of a fresh copy of src, its time (us) appended to runtimes.LABEL; its exit status.
run_copy() { # src label
    cp "$1" "$WORK/newtls"   # a new inode every run
    local t0 t1 st=0
    t0=$(date +%s%N)
    "$WORK/newtls" 127.0.0.1 "$PORT" api.acme.com "$WORK/req" >/dev/null 2>&1 || st=1
    t1=$(date +%s%N)
    rm -f "$WORK/newtls"
    echo "$(( (t1 - t0) / 1000 ))" >>"$WORK/runtimes.$2"
    return $st
}
# The same executable with another build ID (new content for the agent).
patch_build_id() { # src dst n
    python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = bytearray(open(src, "rb").read())
phoff, = struct.unpack_from("<Q", b, 0x20)
phentsize, phnum = struct.unpack_from("<HH", b, 0x36)
for i in range(phnum):
    h = phoff + i * phentsize
    if struct.unpack_from("<I", b, h)[0] != 4:  # PT_NOTE
        continue
    off, = struct.unpack_from("<Q", b, h + 8)
    size, = struct.unpack_from("<Q", b, h + 32)
    o = off
    while o + 12 <= off + size:
        namesz, descsz, typ = struct.unpack_from("<III", b, o)
        name_at = o + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if b[name_at:name_at + 4] == b"GNU\0" and typ == 3:
            struct.pack_into("<I", b, desc_at, n)
            open(dst, "wb").write(b)
            sys.exit(0)
        o = desc_at + ((descsz + 3) & ~3)
sys.exit("no GNU build ID")
PY
}
pct_of() { # p, values on stdin
    sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; print a[i]}'
}
# Without the agent: what a run takes.
ok0=0
for i in $(seq "$NEW_RUNS"); do run_copy target/fixtures/tls_client_static none && ok0=$((ok0 + 1)); done
start_agent "$WORK/start.log" --comm newtls --raw --output json --write "$WORK/start.json"
ok=0
for i in $(seq "$RUNS"); do
    run_copy target/fixtures/tls_client_static known && ok=$((ok + 1))
done
sleep 1
# Thousands of uprobes to detach: the kernel takes ~0.1 s each, so do not
# wait for the agent's exit, only for its summary (printed before).
kill -INT "$AGENT_PID"
for _ in $(seq 1200); do grep -q "pause durations" "$WORK/start.log" && break; sleep 0.05; done
AGENT_PID=""
captured=$(python3 - "$WORK/start.json" <<'PY'
import json, sys
pids = set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") == "data" and r["direction"] == "write" and r["data"].startswith("GET /start "):
        pids.add(r["pid"])
print(len(pids))
PY
)
known_hits=$(grep -c "known content" "$WORK/start.log" || true)
pauses=$(sed -n 's/.*pause durations (us): //p' "$WORK/start.log" | tr ' ' '\n' | grep -v '^$' | sort -n)
pct() { echo "$pauses" | pct_of "$1"; }
P50=$(pct 50); P99=$(pct 99); PMAX=$(echo "$pauses" | tail -1); NP=$(echo "$pauses" | grep -c . || true)
# New content every run: the executable with its build ID changed.
for i in $(seq "$NEW_RUNS"); do
    patch_build_id target/fixtures/tls_client_static "$WORK/new.$i" "$i"
    chmod 755 "$WORK/new.$i"
done
start_agent "$WORK/new.log" --comm newtls
okn=0
for i in $(seq "$NEW_RUNS"); do run_copy "$WORK/new.$i" new && okn=$((okn + 1)); done
sleep 1
kill -INT "$AGENT_PID"
for _ in $(seq 1200); do grep -q "pause durations" "$WORK/new.log" && break; sleep 0.05; done
AGENT_PID=""
npauses=$(sed -n 's/.*pause durations (us): //p' "$WORK/new.log" | tr ' ' '\n' | { grep -v '^$' || true; } | sort -n)
N50=$(echo "$npauses" | pct_of 50); N99=$(echo "$npauses" | pct_of 99); NMAX=$(echo "$npauses" | tail -1)
# A big program seen for the first time: node (99 MB) with its build ID
# changed each run, after one run of the original (its libraries known).
NODE=$(readlink -f /usr/bin/node)
start_agent "$WORK/node.log" --log-level debug
"$NODE" -e 0
for i in $(seq "$NODE_RUNS"); do
    patch_build_id "$NODE" "$WORK/node.$i" "$i"
    chmod 755 "$WORK/node.$i"
    "$WORK/node.$i" -e 0
    rm -f "$WORK/node.$i"
done
sleep 1
kill -INT "$AGENT_PID"
for _ in $(seq 1200); do grep -q "pause durations" "$WORK/node.log" && break; sleep 0.05; done
AGENT_PID=""
# Each copy's hold, by its pid, and how long its inspection took.
nodepauses=$(for pid in $(sed -n 's/.*instrumented .*executed by node\.[0-9]*\[\([0-9]*\)\].*/\1/p' "$WORK/node.log"); do
    sed -n "s/.*pid $pid held \([0-9]*\) us.*/\1/p" "$WORK/node.log"
done | sort -n)
nodeinsp=$(sed -n 's/.*inspecting file .* took \([0-9]*\) ms.*/\1/p' "$WORK/node.log" | sort -n | tr '\n' ' ')
NODE50=$(echo "$nodepauses" | pct_of 50); NODEMAX=$(echo "$nodepauses" | tail -1); NODEN=$(echo "$nodepauses" | grep -c . || true)
R0_50=$(pct_of 50 <"$WORK/runtimes.none"); R0_99=$(pct_of 99 <"$WORK/runtimes.none")
RK_50=$(pct_of 50 <"$WORK/runtimes.known"); RK_99=$(pct_of 99 <"$WORK/runtimes.known")
RN_50=$(pct_of 50 <"$WORK/runtimes.new"); RN_99=$(pct_of 99 <"$WORK/runtimes.new")
kill -INT "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""
echo "start-up done" >&2

# ---- 8. mbedTLS and wolfSSL (its own script: it can be run alone) ----------
ROUNDS="$ROUNDS" SECS="$SECS" bash scripts/bench-embedded.sh >"$WORK/embedded.md"

# ---- report -----------------------------------------------------------------
mkdir -p docs
{
    echo "# Benchmarks"
    echo
    echo "Generated by \`make bench\` (scripts/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs"
    echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r),"
    echo "$(openssl version | cut -d' ' -f1-2). No number in this file is typed by hand."
    echo
    echo "## 1. Overhead on a TLS request/response workload"
    echo
    echo "\`bench/tls_rr.c\`: client and server processes over loopback TCP, system libssl.so.3, both pinned"
    echo "to CPU 0; one round trip = SSL_write + SSL_read on each side. ${SECS} s per measurement, the modes"
    echo "interleaved, $ROUNDS rounds: median round trips/s (min-max), ratio to no agent."
    echo
    echo "- **none**: no agent."
    echo "- **floor**: bpftrace, empty programs on SSL_write/SSL_read entry + return (what any uprobe agent pays)."
    echo "- **non-matching**: plainsight \`--sni nomatch.invalid\` (probes fire, nothing is captured): entry"
    echo "  probes only, the return probes being attached per process, to processes with a wanted connection."
    echo "- **… returns everywhere**: the same with \`--host-wide-returns\` (return probes in every process, as"
    echo "  without filters)."
    echo "- **capture**: plainsight capturing everything tls_rr sends and receives to a JSON file"
    echo "  (\`--raw --output json --write\`)."
    echo "- Every plainsight mode runs with \`--comm tls_rr\` (nothing else on the host is looked at), so its"
    echo "  return probes go per process: tls_rr is held once, at its first wanted connection, in capture mode."
    echo "- **… at entry**: the same with \`--probe-at-entry\` (probes at function entry + uretprobes, as"
    echo "  other tracers place them); without it probes sit on emulated instructions inside SSL_write/SSL_read"
    echo "  (\`--explain\` shows where)."
    echo "- **bpftrace copy**: bpftrace copying up to 200 bytes per call (bpftrace $(bpftrace --version | awk '{print $2}')'s string limit) and printing it: a peer doing a (smaller) capture."
    echo "- bcc \`sslsniff\`: $SSLSNIFF."
    if [[ -n "$BASE_AGENT" ]]; then
        echo "- **…, base build**: the same modes with a previous build (${BASE_NAME:-$BASE_AGENT}), measured in the same rounds."
    fi
    echo
    head="| message |"; rule="|---|"
    for mode in "${MODES[@]}"; do head+=" ${LABEL[$mode]} |"; rule+="---|"; done
    echo "$head lost records, capture (per round) |"
    echo "$rule---|"
    for size in "${SIZES[@]}"; do
        n=$(echo "${RT[none,$size]}" | median)
        row="| $size B |"
        for mode in "${MODES[@]}"; do
            m=$(echo "${RT[$mode,$size]}" | median)
            row+=" $m ($(echo "${RT[$mode,$size]}" | spread)), $(printf '%.2f' "$(echo "$m / $n" | bc -l)")x, $(echo "${MB[$mode,$size]}" | median) MB/s |"
        done
        row+=" ${LOST[$size]} |"
        echo "$row"
    done
    echo
    echo "## 2. Capacity (capture everything to JSON, 64 KiB messages, paced client)"
    echo
    echo "| offered MB/s | achieved MB/s | lost records | agent CPU s per captured MB | agent peak RSS |"
    echo "|---|---|---|---|---|"
    best=0
    for rate in "${CAP_RATES[@]}"; do
        read -r mbs lost ticks rss <<<"${CAP[$rate]}"
        cpu_per_mb=$(echo "$ticks / $TICK / ($mbs * $SECS)" | bc -l)
        printf '| %s | %s | %s | %.4f | %s MiB |\n' "$rate" "$mbs" "$lost" "$cpu_per_mb" "$((rss / 1024))"
        if [[ "$lost" == "0" ]] && (( $(echo "$mbs > $best" | bc) )); then best=$mbs; fi
    done
    echo
    echo "Highest captured rate with zero lost records at default settings: **$best MB/s**."
    echo
    echo "## 3. Completeness at start-up"
    echo
    echo "$RUNS runs of a fresh executable (tls_client_static copied to a new inode each run) that does TLS"
    echo "at once: $ok runs succeeded, **$captured of $RUNS requests captured**; $known_hits of them instrumented"
    echo "from the inspection cache (same build ID, size and owner: known content)."
    echo
    echo "| | runs | held paused p50 / p99 / max | run time p50 / p99 |"
    echo "|---|---|---|---|"
    echo "| no agent | $ok0 of $NEW_RUNS | - | $((R0_50 / 1000)).$(printf '%03d' $((R0_50 % 1000))) / $((R0_99 / 1000)).$(printf '%03d' $((R0_99 % 1000))) ms |"
    echo "| known content (a copy) | $ok of $RUNS | $P50 / $P99 / $PMAX us | $((RK_50 / 1000)).$(printf '%03d' $((RK_50 % 1000))) / $((RK_99 / 1000)).$(printf '%03d' $((RK_99 % 1000))) ms |"
    echo "| new content (build ID changed each run) | $okn of $NEW_RUNS | $N50 / $N99 / $NMAX us | $((RN_50 / 1000)).$(printf '%03d' $((RN_50 % 1000))) / $((RN_99 / 1000)).$(printf '%03d' $((RN_99 % 1000))) ms |"
    echo
    echo "node ($(( $(stat -c %s "$NODE") / 1000000 )) MB, exports its OpenSSL) seen for the first time: $NODE_RUNS runs, its build ID changed each"
    echo "run: $NODEN held, **p50 $NODE50 us, max $NODEMAX us** (inspection, attach and release); inspections"
    echo "over 2 ms took (ms): ${nodeinsp:-none}."
    echo
    echo "## 4. Idle cost"
    echo
    echo "Start to ready: $(printf '%.2f' "$(echo "$t_ready - $t_start" | bc -l)") s. Over ${IDLE} s idle: agent CPU"
    echo "$(printf '%.2f' "$(echo "($c1 - $c0) / $TICK" | bc -l)") s ($(printf '%.2f' "$(echo "($c1 - $c0) / $TICK / $IDLE * 100" | bc -l)") % of a core), RSS $((idle_rss / 1024)) MiB: anonymous"
    echo "$((idle_anon / 1024)) MiB, the rest mapped (the BPF ring buffers, 2 x 32 MiB of plaintext by default, and the binary)."
    echo
    echo "## 5. Every other process's syscalls"
    echo
    echo "\`dd bs=1 count=$DD_N\` (two syscalls a byte, no TLS), best of 3: no agent $((DD_NONE / 1000)) ms;"
    echo "agent running, nothing wanted yet $((DD_IDLE / 1000)) ms ($(( (DD_IDLE - DD_NONE) * 1000 / (2 * DD_N) )) ns a syscall: the syscall"
    echo "tracepoints every agent path needs); after a TLS library's first wanted connection (socket hook"
    echo "attached: $DD_HOOK_ON) $((DD_HOOK / 1000)) ms ($(( (DD_HOOK - DD_IDLE) * 1000 / (2 * DD_N) )) ns more a syscall: one raw tracepoint on"
    echo "\`sys_enter\` that returns on one global read while no TLS call waits for its socket)."
    echo
    echo "## 6. Java (JSSE)"
    echo
    echo "\`bench/JsseLoop.java\` on Debian's JDK 17: one JVM, a JSSE server thread and a JSSE client (\`SSLSocket\`),"
    echo "1 KiB round trips on one connection over loopback, ${SECS} s per measurement after 1 s of warm-up, the modes"
    echo "interleaved, $ROUNDS rounds: median round trips/s (min-max), ratio to no agent. Agent modes run with"
    echo "\`--comm jsse_loop\`; the loop starts once the Java agent is in."
    echo
    echo "| mode | round trips/s | ratio |"
    echo "|---|---|---|"
    jnone=$(echo "${JRT[none]}" | median)
    for mode in "${JMODES[@]}"; do
        m=$(echo "${JRT[$mode]}" | median)
        case $mode in none) l="none" ;; nomatch) l="non-matching (\`--sni nomatch.invalid\`)" ;; capture) l="capture (\`--raw --output json --write\`)" ;; esac
        echo "| $l | $m ($(echo "${JRT[$mode]}" | spread)) | $(printf '%.2f' "$(echo "$m / $jnone" | bc -l)")x |"
    done
    echo
    echo "From a JVM's start (\`HttpClientGet --count 400\`, requests from its first moment) to its first"
    echo "captured byte, per round (ms): $JFIRST; of which the attach (from the agent seeing the JVM to the"
    echo "Java agent loaded, ms): $JATTACH. Requests made before that are not captured."
    echo
    echo "## 7. First sight and a restarted agent"
    echo
    echo "The longest hold (ms) of one run of each program: the agent seeing its files for the first time"
    echo "(nothing in memory or on disk) with a cold page cache (\`drop_caches\`) and a warm one, then a"
    echo "restarted agent on the same \`--cache-dir\` (warm, and cold page cache). uv and deno are stripped Rust"
    echo "executables (aws-lc located without symbols; deno has no .eh_frame), bun and chromium carry stripped"
    echo "BoringSSL (located without symbols or FDEs); node exports its OpenSSL. A hold is bounded by"
    echo "\`--max-pause-ms\`; an inspection that outlasts it finishes after the process is resumed. grpcio_cygrpc and"
    echo "hf_transfer are Python importing those modules (stripped BoringSSL in a 17 MB module; a trimmed OpenSSL)."
    echo "A restarted agent attaches the TLS files its cache knows at its start (warm start), so their"
    echo "first process is held for no attach of them. Each agent here is given \`--comm\` of its program and no"
    echo "\`--sni\`: every connection of that process is wanted, so the OpenSSL-family return probes, which go"
    echo "per process under filters, are attached for it at its first sight, while it is held. In parentheses:"
    echo "that attach, when over 1 ms (the kernel's uprobe registration waits for an RCU grace period when none"
    echo "ran just before). Without filters, or with \`--host-wide-returns\`, there is no such attach."
    echo
    echo "| program | first sight, cold | first sight, warm | restarted agent | restarted agent, cold |"
    echo "|---|---|---|---|---|"
    for entry in "${SIGHT[@]}"; do
        label=${entry%%|*}
        [[ -n "${HOLD[$label,cold]:-}" ]] || continue
        ms() { # "hold [returns]" (us) -> "12.3", or "12.3 (11.9)" when return probes took over 1 ms of it
            local h r; read -r h r <<<"$1"
            [[ -n "$h" ]] || { echo "-"; return; }
            printf '%.1f' "$(echo "$h / 1000" | bc -l)"
            [[ -n "$r" && "$r" -gt 1000 ]] && printf ' (%.1f)' "$(echo "$r / 1000" | bc -l)"
            true
        }
        echo "| $label | $(ms "${HOLD[$label,cold]}") | $(ms "${HOLD[$label,warm]}") | $(ms "${HOLD[$label,restart]}") | $(ms "${HOLD[$label,restart_cold]}") |"
    done
    echo
    cat "$WORK/embedded.md"
    echo "\`plainsight --inventory\` on this host: $INV ms wall ($INV_LINE)."
    echo
    echo "## Reading the numbers"
    echo
    echo "On this kernel a uprobe on an instruction that must be single-stepped costs ~10 us"
    echo "(measured here: ~9.5 us against ~0.7 us for an emulated one); SSL_write/SSL_read start with such an instruction, so the floor (and"
    echo "the *at entry* columns) are low for every tool that probes function entries. plainsight decodes each"
    echo "probed function (iced-x86) and puts its probes on instructions the kernel emulates: the first"
    echo "conditional jump of SSL_write/SSL_read (arguments still in their registers) and the epilogue's"
    echo "stack-protector jump (return value final) instead of a uretprobe. With filters given, the return"
    echo "probes are only in processes with a wanted connection: a non-matching call pays its entry probe"
    echo "alone (compare the two non-matching columns). The ring buffer is read by polling (no wake-up per"
    echo "record; BPF wakes the reader only once a ring is a quarter full)."
    echo
    echo "A fresh executable is held while its probes are registered. The first uprobe registration after a"
    echo "quiet moment waits for an RCU grace period in the kernel (its stack: uprobe_register ->"
    echo "register_for_each_vma -> rcu_sync_enter -> synchronize_rcu); registrations that follow"
    echo "within a grace period do not wait. That, not inspection or the cache, is the tail of the held column."
} >"$OUT"
cat "$OUT"
