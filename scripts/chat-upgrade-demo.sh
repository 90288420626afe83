#!/usr/bin/env bash
# Zero-downtime upgrade of shardline-chat with a data directory, under
# connection churn: IRC clients connect, register, say a line in #demo, QUIT
# and start over, as fast as they can, across two upgrades:
#   1. a new process started with --upgrade-from (3 shards instead of 2),
#   2. SIGUSR2 to the running one (it starts its successor itself).
# Each new process takes the listening sockets and the data directory (the old
# one writes its store out and unlocks it). Checked:
#   - no client is refused, reset or left without its welcome (001) — every
#     registration succeeds;
#   - an account registered before the upgrades logs in (SASL PLAIN) on the
#     last process, and what was said before the first upgrade is in its
#     CHATHISTORY;
#   - a session opened before the upgrades stays on its old process and is
#     still served until it QUITs; then that process exits 0.
# Runs in its own network namespace when it can (root and unshare), so TCP
# resets are counted exactly. About 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CHAT_UPGRADE_NETNS:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null &&
    command -v ip >/dev/null && unshare -n true 2>/dev/null; then
    cargo build --release -q -p shardline-chat
    exec unshare -n env CHAT_UPGRADE_NETNS=1 bash -c 'ip link set lo up && exec "$0"' "$0"
fi
cargo build --release -q -p shardline-chat
chat_bin=${CARGO_TARGET_DIR:-target}/release/shardline-chat

port=${PORT:-16767}
secs=${SECS:-12}
DEMO=chat-upgrade-demo NETNS=${CHAT_UPGRADE_NETNS:-}
. scripts/lib/upgrade.sh
data=$work/data
cat >"$work/chat.toml" <<EOF
[flood]
enabled = false
[accounts]
registration = "open"
EOF
start_chat() { # log, args...
    local log=$1
    shift
    RUST_LOG=info "$chat_bin" --config "$work/chat.toml" --data-dir "$data" \
        --listen "127.0.0.1:$port" --no-pin --upgrade-socket "$sock" "$@" >"$log" 2>&1 &
    started=$!
    pids+=("$started")
}

# The IRC side, in Python: a client, the churn, the checks.
cat >"$work/irc.py" <<'PY'
import base64, os, socket, sys, threading, time

PORT = int(sys.argv[2])

class Client:
    def __init__(self, nick, caps=""):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        self.buf = b""
        self.nick = nick
        if caps:
            self.send(f"CAP REQ :{caps}")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")

    def send(self, line):
        self.s.sendall(line.encode() + b"\r\n")

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.s.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        text = line.decode(errors="replace")
        if text.startswith("PING"):
            self.send("PONG" + text[4:])
        return text

    def until(self, pred):
        while True:
            l = self.line()
            if pred(l):
                return l

    def welcome(self):
        self.until(lambda l: " 001 " in l)
        self.until(lambda l: " 376 " in l or " 422 " in l)

def command(l):
    parts = l.split(" ")
    i = 1 if parts[0].startswith(("@", ":")) else 0
    if parts[0].startswith("@"):
        i = 2 if parts[1].startswith(":") else 1
    return parts[i] if i < len(parts) else ""

def before():
    # An account and a line said before the upgrades; a session kept open.
    c = Client("founder", "sasl draft/account-registration echo-message")
    c.send("CAP END")
    c.welcome()
    c.send("REGISTER founder * :sesame-demo")
    c.until(lambda l: command(l) in ("REGISTER", "FAIL"))
    c.send("JOIN #demo")
    c.send("PRIVMSG #demo :said before the upgrades")
    c.until(lambda l: command(l) == "PRIVMSG")
    print("before: registered founder, said a line, session kept open", flush=True)
    # Stay connected: answer PINGs until told to leave (a file appears).
    c.s.settimeout(None)
    def read_on():
        try:
            while True:
                c.line()
        except (OSError, ConnectionError):
            pass
    threading.Thread(target=read_on, daemon=True).start()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.1)
    c.send("PRIVMSG #demo :still served by the old process")
    c.send("QUIT :done")
    print("before: the old session said its last line and quit", flush=True)

def churn(seconds, threads):
    ok = [0] * threads
    errors = []
    stop = time.time() + seconds
    def run(t):
        n = 0
        while time.time() < stop:
            n += 1
            nick = f"c{t}x{n}"
            try:
                c = Client(nick)
                c.welcome()
                c.send(f"PRIVMSG #demo :{nick} says hi")
                c.send("QUIT :bye")
                c.until(lambda l: l.startswith("ERROR"))
                c.s.close()
                ok[t] += 1
            except Exception as e:
                errors.append(f"{nick}: {e!r}")
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(f"churn      registrations {sum(ok):6d}   errors {len(errors)}", flush=True)
    for e in errors[:10]:
        print("  " + e, flush=True)
    sys.exit(1 if errors or sum(ok) == 0 else 0)

def after():
    c = Client("checker", "sasl batch draft/chathistory")
    ack = c.until(lambda l: command(l) == "CAP")
    if " ACK " not in ack:
        print(f"after:     capabilities refused: {ack}", flush=True)
        sys.exit(1)
    c.send("AUTHENTICATE PLAIN")
    c.until(lambda l: command(l) == "AUTHENTICATE")
    c.send("AUTHENTICATE " + base64.b64encode(b"\0founder\0sesame-demo").decode())
    end = c.until(lambda l: command(l) in ("903", "904"))
    c.send("CAP END")
    c.welcome()
    c.send("JOIN #demo")
    c.send("CHATHISTORY LATEST #demo * 1000")
    lines = []
    while True:
        l = c.line()
        if command(l) == "BATCH" and " -" in l:
            break
        if command(l) == "PRIVMSG":
            lines.append(l.split(" PRIVMSG ", 1)[1].split(" :", 1)[-1])
    ok = command(end) == "903" and "said before the upgrades" in lines
    print(f"after:     SASL as founder {'903' if command(end) == '903' else 'FAILED'}; "
          f"CHATHISTORY has the line said before: {'yes' if 'said before the upgrades' in lines else 'NO'} "
          f"({len(lines)} lines: {lines[:3]})", flush=True)
    sys.exit(0 if ok else 1)

{"before": before, "churn": lambda: churn(float(sys.argv[3]), int(sys.argv[4])), "after": after}[sys.argv[1]]()
PY

start_chat "$work/gen0.log" --shards 2
gen0=$started
wait_log "$work/gen0.log" "serving upgrades"

python3 "$work/irc.py" before "$port" "$work/leave" &
holder=$!
sleep 1
rsts0=$(out_rsts)
python3 "$work/irc.py" churn "$port" "$secs" 6 >"$work/churn.txt" 2>&1 &
churn=$!
step=$((secs / 3))

sleep "$step"
echo "upgrade 1: pid $gen0 -> new process (--upgrade-from, 3 shards)"
start_chat "$work/gen1.log" --shards 3 --upgrade-from "$sock"
gen1=$started
wait_log "$work/gen1.log" "upgrade complete"
wait_log "$work/gen0.log" "data directory written out and unlocked"

sleep "$step"
echo "upgrade 2: pid $gen1 -> SIGUSR2 (it starts its successor)"
kill -USR2 "$gen1"
wait_log "$work/gen1.log" "started the new process"
gen2=$(sed -n 's/.*started the new process.* pid=\([0-9]*\).*/\1/p' "$work/gen1.log" | head -1)
wait_log "$work/gen1.log" "data directory written out and unlocked"
echo "          new pid $gen2"

fail=0
wait "$churn" || fail=1
# The churn's clients have all left gen1 (each QUIT); it exits by itself.
wait "$gen1" || { echo "chat-upgrade-demo: pid $gen1 exited with $?" >&2; fail=1; }
rsts=$(($(out_rsts) - rsts0))
cat "$work/churn.txt"

# The session opened before the upgrades is still on gen0.
touch "$work/leave"
wait "$holder" || fail=1
wait "$gen0" || { echo "chat-upgrade-demo: pid $gen0 exited with $?" >&2; fail=1; }
grep -q "history store was handed to a new process" "$work/gen0.log" || fail=1
python3 "$work/irc.py" after "$port" || fail=1
kill -TERM "$gen2"
wait_gone "$gen2"

report_resets "$rsts"
verdict "every registration served, 0 resets, history and accounts kept"
