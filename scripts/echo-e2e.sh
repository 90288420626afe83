#!/usr/bin/env bash
# End-to-end check of the echo example on each backend and accept mode: start it, verify 1,000
# concurrent connections byte for byte with the independent echo_check client, stop
# it with SIGTERM and require a clean exit (status 0). Bounded: every step times out.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p shardline --example echo --example echo_check
port=${PORT:-17000}
for combo in uring:reuseport uring:exclusive uring:handoff epoll:reuseport epoll:exclusive epoll:handoff; do
    io=${combo%%:*}
    accept=${combo##*:}
    log=$(mktemp)
    target/release/examples/echo --addr "127.0.0.1:$port" --shards 2 --io "$io" --accept "$accept" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "server started" "$log" && break
        sleep 0.1
    done
    if ! timeout 180 target/release/examples/echo_check --addr "127.0.0.1:$port" --conns 1000 --timeout 170; then
        kill -9 "$pid" 2>/dev/null || true
        cat "$log"
        exit 1
    fi
    kill -TERM "$pid"
    status=0
    timeout 30 tail --pid="$pid" -f /dev/null || status=$?
    wait "$pid" || status=$?
    grep -q "backend=$([ "$io" = uring ] && echo io_uring || echo epoll)" "$log" || { echo "echo-e2e: $io: shard did not log its backend"; cat "$log"; exit 1; }
    if [ "$status" -ne 0 ]; then
        echo "echo-e2e: $io: server exited with status $status"
        cat "$log"
        exit 1
    fi
    echo "echo-e2e: $io $accept ok"
    rm -f "$log"
    port=$((port + 1))
done
# TLS: the same check over 1,000 concurrent TLS connections, on each backend, with a
# certificate the server makes at start (--tls) and echo_check verifying it.
for io in uring epoll; do
    log=$(mktemp)
    dir=$(mktemp -d)
    target/release/examples/echo --addr "127.0.0.1:$port" --shards 2 --io "$io" --tls --tls-dir "$dir" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "server started" "$log" && break
        sleep 0.1
    done
    if ! timeout 180 target/release/examples/echo_check --addr "127.0.0.1:$port" --conns 1000 --timeout 170 --tls-ca "$dir/ca.pem"; then
        kill -9 "$pid" 2>/dev/null || true
        cat "$log"
        exit 1
    fi
    kill -TERM "$pid"
    status=0
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "echo-e2e: tls $io: server exited with status $status"
        cat "$log"
        exit 1
    fi
    echo "echo-e2e: tls $io ok"
    rm -rf "$log" "$dir"
    port=$((port + 1))
done
