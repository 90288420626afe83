#!/usr/bin/env bash
# Zero-downtime upgrade of shardline-proxy under load: two wrk clients — one with
# keep-alive connections, one closing its connection after every request
# (connection churn) — run across three upgrades, old -> new -> newer -> newest:
#   1. a new process started with --upgrade-from (3 shards instead of 2),
#   2. SIGUSR2 to the running one (it starts its successor itself),
#   3. --upgrade-from again, now with --accept exclusive and 2 shards.
# Each time the new process takes the listening sockets over, the old one stops
# accepting, drains and must exit 0. Prints the requests, wrk's errors (connect,
# read, write, timeout, non-2xx) and the TCP resets the kernel sent; any non-zero
# fails the script. Backends: two framework http_hello examples. Runs in its own
# network namespace when it can (root and unshare), so the reset count is exact;
# otherwise the machine-wide count is shown for information only. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${UPGRADE_DEMO_NETNS:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null &&
    command -v ip >/dev/null && unshare -n true 2>/dev/null; then
    # Build outside (the namespace has no network for cargo), run inside.
    cargo build --release -q -p shardline-proxy
    cargo build --release -q -p shardline --example http_hello
    exec unshare -n env UPGRADE_DEMO_NETNS=1 bash -c 'ip link set lo up && exec "$0"' "$0"
fi
if ! command -v wrk >/dev/null; then
    ./x bench-deps
fi
cargo build --release -q -p shardline-proxy
cargo build --release -q -p shardline --example http_hello
target=${CARGO_TARGET_DIR:-target}/release
proxy_bin=$target/shardline-proxy
hello_bin=$target/examples/http_hello

port=${PORT:-18180}
b1=$((port + 1))
b2=$((port + 2))
secs=${SECS:-16}
DEMO=upgrade-demo NETNS=${UPGRADE_DEMO_NETNS:-}
. scripts/lib/upgrade.sh

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "upgrade-demo: nothing listens on port $1" >&2
    exit 1
}

for b in $b1 $b2; do
    "$hello_bin" --addr "127.0.0.1:$b" --shards 1 --no-pin >"$work/hello-$b.log" 2>&1 &
    pids+=($!)
done
wait_port $b1
wait_port $b2

start_proxy() { # log, extra args...; sets $started
    local log=$1
    shift
    RUST_LOG=${RUST_LOG:-info} "$proxy_bin" --listen "127.0.0.1:$port" \
        --backend "127.0.0.1:$b1" --backend "127.0.0.1:$b2" --no-pin \
        --upgrade-socket "$sock" "$@" >"$log" 2>&1 &
    started=$!
    pids+=($started)
}


start_proxy "$work/gen0.log" --shards 2
gen0=$started
wait_log "$work/gen0.log" "serving upgrades"
wait_port $port

rsts0=$(out_rsts)
wrk -t2 -c40 -d"${secs}s" --timeout 5s "http://127.0.0.1:$port/keepalive" >"$work/wrk-keepalive.txt" 2>&1 &
wrk_ka=$!
wrk -t1 -c8 -d"${secs}s" --timeout 5s -H "Connection: close" "http://127.0.0.1:$port/churn" >"$work/wrk-churn.txt" 2>&1 &
wrk_churn=$!
step=$((secs / 4))

sleep "$step"
echo "upgrade 1: pid $gen0 -> new process (--upgrade-from, 3 shards)"
start_proxy "$work/gen1.log" --shards 3 --upgrade-from "$sock"
gen1=$started
wait_log "$work/gen1.log" "upgrade complete"
wait "$gen0" || { echo "upgrade-demo: the old proxy exited with $?" >&2; exit 1; }

sleep "$step"
echo "upgrade 2: pid $gen1 -> SIGUSR2 (it starts its successor)"
kill -USR2 "$gen1"
wait_log "$work/gen1.log" "started the new process"
gen2=$(sed -n 's/.*started the new process.* pid=\([0-9]*\).*/\1/p' "$work/gen1.log" | head -1)
wait_log "$work/gen1.log" "handed over to a new process"
wait "$gen1" || { echo "upgrade-demo: the old proxy exited with $?" >&2; exit 1; }
echo "          new pid $gen2"

sleep "$step"
echo "upgrade 3: pid $gen2 -> new process (--upgrade-from, --accept exclusive, 2 shards)"
start_proxy "$work/gen3.log" --shards 2 --accept exclusive --upgrade-from "$sock"
gen3=$started
wait_log "$work/gen3.log" "upgrade complete"
wait_gone "$gen2"
# Resets sent from before the load until the last old process is gone (wrk's own
# teardown at the end of its run resets connections with responses unread: not
# counted).
rsts=$(($(out_rsts) - rsts0))

wait "$wrk_ka" "$wrk_churn"
kill -TERM "$gen3"
wait "$gen3" || { echo "upgrade-demo: the last proxy exited with $?" >&2; exit 1; }

# wrk's summary: requests, socket errors, non-2xx responses.
fail=0
report() { # name, file
    local f=$2 requests connect read write timeout non2xx
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$f")
    read -r connect read write timeout < <(sed -n \
        's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$f") || true
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$f")
    connect=${connect:-0} read=${read:-0} write=${write:-0} timeout=${timeout:-0} non2xx=${non2xx:-0}
    local errors=$((connect + read + write + timeout + non2xx))
    printf '%-10s requests %8s   errors %d (connect %d, read %d, write %d, timeout %d, non-2xx %d)\n' \
        "$1" "${requests:-?}" "$errors" "$connect" "$read" "$write" "$timeout" "$non2xx"
    if [ -z "$requests" ] || [ "$requests" -eq 0 ] || [ "$errors" -ne 0 ]; then
        fail=1
        cat "$f"
    fi
}
echo "--- ${secs} s of load across 3 upgrades"
if [ -n "${SHOW_WRK:-}" ]; then cat "$work"/wrk-*.txt; fi
report keep-alive "$work/wrk-keepalive.txt"
report churn "$work/wrk-churn.txt"
report_resets "$rsts"
verdict "0 errors, 0 resets"
