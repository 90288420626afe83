#!/usr/bin/env bash
# End-to-end check of the chat_room, http_hello and counter examples on each backend:
# start each on a free port with 2 shards, drive it with real clients (python3
# sockets, curl), stop it with SIGTERM and require a clean exit (status 0).
# Bounded: every wait has a timeout, and the whole run stops by itself.
#   chat_room   two clients on different shards (handoff round-robin) see each
#               other's lines, the "N users online" notice counts both, a silent
#               client is kicked;
#   http_hello  curl makes 3 requests on one keep-alive connection, 2 pipelined
#               requests are answered in order, a bad request gets 400 and a close;
#   counter     the reports show the bytes sent, SIGHUP resets them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "examples-e2e: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build --release -q -p shardline --example chat_room --example http_hello --example counter
bin="${CARGO_TARGET_DIR:-target}/release/examples"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

fail() {
    echo "examples-e2e: $name $io: $*"
    kill -9 "$pid" 2>/dev/null || true
    cat "$log"
    exit 1
}

# start NAME ARGS...: runs the example on $io and a free $port, waits until it serves.
start() {
    name=$1
    shift
    port=$(free_port)
    log=$(mktemp)
    "$bin/$name" --addr "127.0.0.1:$port" --shards 2 --io "$io" "$@" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "server started" "$log" && break
        sleep 0.1
    done
    grep -q "server started" "$log" || fail "did not start within 10 s"
    grep -q "backend=$([ "$io" = uring ] && echo io_uring || echo epoll)" "$log" \
        || fail "shard did not log its backend"
}

# stop: SIGTERM, then the process must exit with status 0 within 30 s.
stop() {
    kill -TERM "$pid"
    status=0
    timeout 30 tail --pid="$pid" -f /dev/null || fail "did not exit within 30 s of SIGTERM"
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || fail "exited with status $status"
    echo "examples-e2e: $name $io ok"
    rm -f "$log"
}

# Helpers for the python checks: line-reading clients with timeouts.
PYLIB='
import socket, sys, time
def client(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb")
def expect(f, needle, what):
    for line in f:
        if needle in line:
            return line
    sys.exit(f"{what}: connection closed before {needle!r}")
'

for io in uring epoll; do
    start chat_room --accept handoff --idle-secs 4 --notice-secs 1
    timeout 60 python3 -c "$PYLIB"'
port = int(sys.argv[1])
a, af = client(port)
expect(af, b"nick?", "alice")
a.sendall(b"alice\n")
wa = expect(af, b"welcome alice", "alice")
b, bf = client(port)
expect(bf, b"nick?", "bob")
b.sendall(b"bob\r\n")
wb = expect(bf, b"welcome bob", "bob")
assert wa.split(b"shard")[1] != wb.split(b"shard")[1], f"same shard: {wa!r} {wb!r}"
expect(af, b"* bob joined", "alice")
a.sendall(b"hello from alice\n")
expect(bf, b"<alice> hello from alice", "bob")
b.sendall(b"hi alice\n")
expect(af, b"<bob> hi alice", "alice")
expect(bf, b"* 2 users online", "bob")
a.close(); b.close()
c, cf = client(port)
expect(cf, b"nick?", "silent")
t = time.monotonic()
expect(cf, b"idle too long", "silent")
assert cf.read() == b"", "still open after the idle kick"
assert time.monotonic() - t > 2, "kicked too early"
' "$port" || fail "chat check failed"
    stop

    start http_hello
    out=$(curl -sS --max-time 10 "http://127.0.0.1:$port/a" "http://127.0.0.1:$port/b" "http://127.0.0.1:$port/c") \
        || fail "curl failed"
    grep -q "request #3 on this connection, path /c" <<<"$out" || fail "no keep-alive: $out"
    timeout 30 python3 -c "$PYLIB"'
port = int(sys.argv[1])
s, f = client(port)
s.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
for n, path in ((1, b"/one"), (2, b"/two")):
    assert f.readline().startswith(b"HTTP/1.1 200"), "pipelined status"
    while f.readline() != b"\r\n":
        pass
    body = f.readline()
    assert f"request #{n} ".encode() in body and path in body, body
s, f = client(port)
s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nnonsense\r\n\r\n")
assert f.readline().startswith(b"HTTP/1.1 200")
rest = f.read()
assert b"HTTP/1.1 400 Bad Request" in rest, rest
' "$port" || fail "http check failed"
    stop

    start counter --every-ms 200
    timeout 60 python3 -c "$PYLIB"'
import os, signal
port, pid, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def wait_report(needle, what):
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if needle in open(log).read():
            return
        time.sleep(0.1)
    sys.exit(f"no report with {needle!r} ({what})")
s, sf = client(port)
s.sendall(b"x" * 5000)
wait_report("open=1 accepted=1 bytes=5000", "after sending")
os.kill(pid, signal.SIGHUP)
wait_report("open=1 accepted=0 bytes=0", "after SIGHUP")
# The makefile() object holds the socket open: close both, or no FIN is sent.
sf.close()
s.close()
wait_report("open=0 accepted=0 bytes=0", "after closing")
' "$port" "$pid" "$log" || fail "counter check failed"
    stop
done
