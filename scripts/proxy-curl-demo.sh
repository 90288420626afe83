#!/usr/bin/env bash
# The proxy's must-show, scripted: curl through shardline-proxy (quick-start mode,
# round-robin) to two local HTTP backends, on each I/O backend. The answers must
# alternate between the backends; after one backend is killed every request must
# still succeed (a refused connect goes to the other backend); SIGTERM must stop
# the proxy with status 0. Prints what curl printed. Bounded: every wait times out.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || {
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends curl
}
cargo build --release -q -p shardline-proxy
port=${PORT:-18080}
b1=$((port + 1))
b2=$((port + 2))
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

# A backend that answers every GET with its own name.
backend() {
    python3 - "$1" <<'PY' &
import http.server, sys
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"hello from backend :{port}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
    pids+=($!)
}

wait_for() {
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "proxy-demo: nothing answers on port $1" >&2
    return 1
}

for io in uring epoll; do
    pids=()
    backend "$b1"
    backend "$b2"
    wait_for "$b1"
    wait_for "$b2"
    log=$(mktemp)
    target/release/shardline-proxy --listen "127.0.0.1:$port" \
        --backend "127.0.0.1:$b1" --backend "127.0.0.1:$b2" --io "$io" --shards 1 >"$log" 2>&1 &
    proxy=$!
    pids+=("$proxy")
    wait_for "$port"
    echo "proxy-demo: $io: round-robin over :$b1 and :$b2"
    answers=()
    for i in 1 2 3 4; do
        a=$(curl -s --max-time 5 "http://127.0.0.1:$port/")
        echo "  curl $i: $a"
        answers+=("$a")
    done
    if [ "${answers[0]}" = "${answers[1]}" ] || [ "${answers[0]}" != "${answers[2]}" ] ||
        [ "${answers[1]}" != "${answers[3]}" ]; then
        echo "proxy-demo: $io: answers do not alternate" >&2
        cat "$log"
        exit 1
    fi
    { kill -9 "${pids[0]}" && wait "${pids[0]}"; } 2>/dev/null || true
    echo "proxy-demo: $io: backend :$b1 killed"
    ok=0
    for i in $(seq 20); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/")
        [ "$code" = 200 ] && ok=$((ok + 1))
    done
    echo "  $ok/20 requests answered 200 after the kill"
    if [ "$ok" -ne 20 ]; then
        cat "$log"
        exit 1
    fi
    kill -TERM "$proxy"
    status=0
    timeout 30 tail --pid="$proxy" -f /dev/null || status=$?
    wait "$proxy" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "proxy-demo: $io: proxy exited with status $status" >&2
        cat "$log"
        exit 1
    fi
    cleanup
    rm -f "$log"
    echo "proxy-demo: $io ok"
done
