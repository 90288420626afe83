#!/usr/bin/env bash
# The proxy's must-show, scripted: curl through shardline-proxy (quick-start mode,
# round-robin) to two local HTTP backends, on each I/O backend. The answers must
# alternate between the backends; after one backend is killed every request must
# still succeed (a refused connect goes to the other backend); SIGTERM must stop
# the proxy with status 0. Then HTTPS: the quick start with --tls-cert/--tls-key (a
# CA and an ECDSA P-256 certificate made here with openssl), curl --cacert, answers
# alternating again. Prints what curl printed. Bounded: every wait times out.
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
tls_port=$((port + 3))
pids=()
certs=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=Shardline demo CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$certs/site.key" -out "$certs/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$certs/ext"
openssl x509 -req -in "$certs/site.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 2 -extfile "$certs/ext" -out "$certs/site.pem" 2>/dev/null
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
trap 'cleanup; rm -rf "$certs"' EXIT

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
    # HTTPS: the backend killed above comes back; TLS terminated by the proxy.
    backend "$b1"
    wait_for "$b1"
    target/release/shardline-proxy --listen "127.0.0.1:$tls_port" \
        --tls-cert "$certs/site.pem" --tls-key "$certs/site.key" \
        --backend "127.0.0.1:$b1" --backend "127.0.0.1:$b2" --io "$io" --shards 1 >"$log" 2>&1 &
    proxy=$!
    pids+=("$proxy")
    for _ in $(seq 100); do
        curl -s -o /dev/null --cacert "$certs/ca.pem" "https://localhost:$tls_port/" && break
        sleep 0.1
    done
    echo "proxy-demo: $io: curl --cacert ca.pem https://localhost:$tls_port/"
    answers=()
    for i in 1 2 3 4; do
        a=$(curl -s --max-time 5 --cacert "$certs/ca.pem" "https://localhost:$tls_port/")
        echo "  curl $i: $a"
        answers+=("$a")
    done
    if [ -z "${answers[0]}" ] || [ "${answers[0]}" = "${answers[1]}" ] ||
        [ "${answers[0]}" != "${answers[2]}" ] || [ "${answers[1]}" != "${answers[3]}" ]; then
        echo "proxy-demo: $io: HTTPS answers do not alternate" >&2
        cat "$log"
        exit 1
    fi
    kill -TERM "$proxy"
    status=0
    wait "$proxy" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "proxy-demo: $io: TLS proxy exited with status $status" >&2
        cat "$log"
        exit 1
    fi
    cleanup
    rm -f "$log"
    echo "proxy-demo: $io ok"
done
