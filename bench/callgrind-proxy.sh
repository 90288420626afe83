#!/usr/bin/env bash
# User-space instructions per proxied HTTP request, counted by callgrind —
# stable on a shared machine where wall-clock figures are not. Runs one
# shardline-proxy shard under callgrind (collecting only inside the shard
# loop) in front of the framework's http_hello example, warms it with wrk,
# zeroes the counters, drives it with wrk (keep-alive, 64 connections) and
# divides the instructions by the requests served.
#
#   bench/callgrind-proxy.sh [--io uring|epoll] [--seconds N] [PROXY ...]
#
# PROXY defaults to target/release/shardline-proxy. Give several binaries
# (say one built from an older commit) to compare them in one run: each gets
# an "Ir/request" line, then the functions whose inclusive cost per request differs
# most from the first binary's.
#
# Needs valgrind, wrk and release builds (cargo build --release
# -p shardline-proxy && cargo build --release -p shardline --example
# http_hello). Bounded: wrk runs 2 s + --seconds (default 10) per binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
io=uring
secs=10
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
    --io) io=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bins+=("$1"); shift ;;
    esac
done
[ ${#bins[@]} -gt 0 ] || bins=("$root/target/release/shardline-proxy")
hello=$root/target/release/examples/http_hello
for tool in valgrind callgrind_annotate callgrind_control wrk python3; do
    command -v "$tool" >/dev/null || { echo "callgrind-proxy: $tool is not installed" >&2; exit 1; }
done
for b in "${bins[@]}" "$hello"; do
    [ -x "$b" ] || { echo "callgrind-proxy: no $b (build it with --release)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "callgrind outputs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "callgrind-proxy: nothing listens on port $1" >&2
    exit 1
}

backend=$(free_port)
"$hello" --addr "127.0.0.1:$backend" --shards 1 --no-pin >"$work/backend.log" 2>&1 &
pids+=($!)
wait_port "$backend"

n=0
for bin in "${bins[@]}"; do
    port=$(free_port)
    out=$work/callgrind.$n.out
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='shardline::shard::Shard*::run*' \
        "$bin" --listen "127.0.0.1:$port" --backend "127.0.0.1:$backend" \
        --shards 1 --io "$io" --no-pin >"$work/proxy.$n.log" 2>&1 &
    vg=$!
    pids+=("$vg")
    wait_port "$port"
    wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$vg" >/dev/null
    wrk -t1 -c64 -d"${secs}s" "http://127.0.0.1:$port/" >"$work/wrk.$n.txt"
    kill -INT "$vg"
    wait "$vg" || true
    awk '/requests in/ {print $1}' "$work/wrk.$n.txt" >"$work/reqs.$n"
    awk '/^summary:|^totals:/ {print $2; exit}' "$out" >"$work/ir.$n"
    # Inclusive cost per function ("file:function"; self costs are not usable
    # after callgrind_control -z in callgrind 3.19), paths from the repository root
    # on (so builds from two checkouts compare).
    callgrind_annotate --inclusive=yes --tree=none --auto=no --threshold=99.9 "$out" 2>/dev/null |
        grep -v -e '=>' -e 'PROGRAM TOTALS' |
        sed -nE 's/^ *([0-9,]+) +\( *[0-9.]+%\) +(.*[^ ]) *$/\1\t\2/p' |
        sed -E -e 's/^([0-9]+),/\1/; :a; s/^([0-9]+),/\1/; ta' -e 's/ \[[^]]*\]$//' \
            -e 's#\t.*/(framework|apps|bench)/#\t\1/#' >"$work/fn.$n"
    n=$((n + 1))
done

echo "io: $io, wrk -t1 -c64 for ${secs} s after a 2 s warm-up (not counted)"
python3 - "$work" "$n" "${bins[@]}" <<'PY'
import sys
work, n, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
per = []
for j in range(n):
    reqs = int(open(f"{work}/reqs.{j}").read())
    ir = int(open(f"{work}/ir.{j}").read())
    print(f"{names[j]}\n  requests {reqs}   Ir {ir}   Ir/request {ir / reqs:.0f}")
    costs = {}
    for line in open(f"{work}/fn.{j}"):
        c, _, name = line.rstrip("\n").partition("\t")
        costs[name] = max(costs.get(name, 0), int(c) / reqs)
    per.append(costs)
for j in range(1, n):
    names_all = set(per[0]) | set(per[j])
    diffs = sorted(names_all, key=lambda k: -abs(per[j].get(k, 0) - per[0].get(k, 0)))[:int(__import__("os").environ.get("TOP", "20"))]
    print(f"\ninstructions per request (inclusive: the function and what it calls), binary {j} minus binary 0:")
    for k in diffs:
        a, b = per[0].get(k, 0), per[j].get(k, 0)
        print(f"  {b - a:+8.0f}  {a:8.0f} -> {b:8.0f}  {k[-130:]}")
PY
