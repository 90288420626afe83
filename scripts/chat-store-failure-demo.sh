#!/usr/bin/env bash
# The chat's store failing under it, for real: shardline-chat keeps its data
# directory on a small ext4 filesystem (a loop device, in a private mount
# namespace), and while two clients talk in a channel the filesystem
#   1. fills up (ENOSPC), then is freed again,
#   2. turns read-only mid-run (ext4's trigger_fs_error with errors=remount-ro:
#      the kernel's own emergency read-only, so open files fail with EROFS).
# Each time the script checks that every message is still delivered, that a new
# client can still connect and talk, that the server says so in its log
# ("store write failed: history is not being stored ...") and counts it in
# /metrics (shardline_chat_store_write_errors_total, ..._records_dropped_total),
# and that writes resume once there is room again. Then it stops the server
# (SIGTERM, exit 0), repairs the filesystem (e2fsck), restarts the server on it
# with another shard count and checks CHATHISTORY: what was said while the disk
# could take it is there in order; what was said while it could not is not.
#
#   scripts/chat-store-failure-demo.sh              # both backends, 2 shards
#   IOS=epoll SHARDS=4 scripts/chat-store-failure-demo.sh
#   CHAT_BIN=target/release/shardline-chat scripts/chat-store-failure-demo.sh
#
# Needs root (mount, losetup) and e2fsprogs; runs itself under `unshare -m` so
# the mount never leaks. Every wait is bounded (WAIT seconds, default 20).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${STORE_DEMO_NS:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "store-failure-demo: FAIL: needs root (mount, losetup)" >&2; exit 1; }
    exec unshare -m --propagation private env STORE_DEMO_NS=1 "$0" "$@"
fi

DEMO=store-failure-demo
IOS=${IOS:-uring epoll}
SHARDS=${SHARDS:-2}
WAIT=${WAIT:-20}
CHANNEL='#store'
start_time=$SECONDS
# shellcheck source=scripts/lib/irc.sh
source scripts/lib/irc.sh

if ! command -v mkfs.ext4 >/dev/null || ! command -v e2fsck >/dev/null; then
    say "installing e2fsprogs"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends e2fsprogs >/dev/null ||
        fail "mkfs.ext4 and e2fsck (e2fsprogs) are needed"
fi
bin=${CHAT_BIN:-}
if [ -z "$bin" ]; then
    ./x deps
    timeout 1800 cargo build --release -q -p shardline-chat || fail "build failed"
    bin=${CARGO_TARGET_DIR:-target}/release/shardline-chat
fi
[ -x "$bin" ] || fail "no server binary at $bin"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-store-failure.XXXXXX")
keep=0
server_pid=""
data="$tmp/data"
cleanup() {
    for name in "${!IRC_FD[@]}"; do irc_close "$name"; done
    stop_pid "$server_pid" 10
    mountpoint -q "$data" 2>/dev/null && umount "$data"
    [ "$keep" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM
on_fail() {
    for f in "$tmp"/server*.log; do
        [ -s "$f" ] && { echo "--- $(basename "$f") (tail)" >&2; tail -n 25 "$f" >&2; }
    done
    for f in "$tmp"/*.log; do
        case $f in */server*) continue ;; esac
        [ -s "$f" ] && { echo "--- $(basename "$f") (tail)" >&2; tail -n 10 "$f" >&2; }
    done
}

# Flood control off: the clients say many lines quickly.
printf '[flood]\nenabled = false\n' >"$tmp/chat.toml"

mount_data() {
    mkdir -p "$data"
    mount -o loop,errors=remount-ro "$tmp/disk.img" "$data" || fail "cannot mount the loop filesystem (no loop devices here?)"
}

# start_server SHARDS IO LOG: on $port, /metrics on $admin.
start_server() {
    RUST_LOG=info "$bin" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --shards "$1" \
        --io "$2" --no-pin --data-dir "$data" --config "$tmp/chat.toml" >"$3" 2>&1 &
    server_pid=$!
    local deadline=$((SECONDS + WAIT))
    until grep -q "server started" "$3"; do
        kill -0 "$server_pid" 2>/dev/null || fail "server exited at start"
        [ "$SECONDS" -lt "$deadline" ] || fail "server did not start"
        sleep 0.1
    done
}
stop_server() {
    kill -TERM "$server_pid"
    timeout "$WAIT" tail --pid="$server_pid" -f /dev/null || fail "server did not stop"
    local status=0
    wait "$server_pid" || status=$?
    server_pid=""
    [ "$status" -eq 0 ] || fail "server exited with status $status"
}
metric() { # NAME: the sum over shards
    curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m"(\\{|$)" { s += $2 } END { print s + 0 }'
}
# say_all TAG N: alice says "TAG 1" .. "TAG N" in the channel; bob must get each.
say_all() {
    local i
    for i in $(seq 1 "$2"); do
        irc_send alice "PRIVMSG $CHANNEL :$1 $i"
        irc_expect bob "^(@[^ ]+ )?:alice![^ ]+ PRIVMSG $CHANNEL :$1 $i$"
    done
}
# a_newcomer_talks TAG: a fresh client connects, joins and is heard.
a_newcomer_talks() {
    irc_open "carol$1" "$port"
    irc_register "carol$1" "carol$1"
    irc_send "carol$1" "JOIN $CHANNEL"
    irc_expect "carol$1" "^:[^ ]+ 366 carol$1 $CHANNEL "
    irc_send "carol$1" "PRIVMSG $CHANNEL :newcomer during $1"
    irc_expect bob "PRIVMSG $CHANNEL :newcomer during $1$"
    irc_send "carol$1" "QUIT"
    irc_close "carol$1"
}
# history: bob's CHATHISTORY LATEST of the channel, one text per line.
history() {
    local ref
    irc_send bob "CHATHISTORY LATEST $CHANNEL * 100"
    irc_expect bob "^(@[^ ]+ )?:[^ ]+ BATCH \+([^ ]+) chathistory $CHANNEL$"
    ref=${BASH_REMATCH[2]}
    : >"$tmp/history.txt"
    while irc_expect bob "^(@[^ ]+ )?:[^ ]+ (BATCH -$ref|PRIVMSG $CHANNEL :(.*))$"; do
        [ -n "${BASH_REMATCH[3]}" ] || break
        printf '%s\n' "${BASH_REMATCH[3]}" >>"$tmp/history.txt"
    done
    cat "$tmp/history.txt"
}
connect_pair() {
    irc_open alice "$port"
    irc_register alice alice
    irc_open bob "$port"
    irc_register bob bob "draft/chathistory batch server-time message-tags"
    irc_send alice "JOIN $CHANNEL"
    irc_expect alice "^:[^ ]+ 366 alice $CHANNEL "
    irc_send bob "JOIN $CHANNEL"
    irc_expect bob "^:[^ ]+ 366 bob $CHANNEL "
}
quit_pair() {
    for c in alice bob; do
        irc_send $c "QUIT"
        irc_expect $c "^ERROR "
        irc_close $c
    done
}

run_backend() {
    local io=$1 shards_after=$((SHARDS == 1 ? 2 : SHARDS - 1))
    say "--- io=$io, $SHARDS shard(s)"
    truncate -s 0 "$tmp/disk.img"
    truncate -s 32M "$tmp/disk.img"
    mkfs.ext4 -q -F "$tmp/disk.img"
    mount_data
    port=$(free_port)
    admin=$(free_port)
    start_server "$SHARDS" "$io" "$tmp/server-$io.log"
    connect_pair
    say_all "stored" 5

    # 1. The disk fills up.
    # Big blocks first, then 1 KiB ones for the rest (the blocks' size here).
    dd if=/dev/zero of="$data/filler" bs=1M status=none 2>/dev/null || true
    dd if=/dev/zero of="$data/filler2" bs=1k status=none 2>/dev/null || true
    sync
    say_all "disk-full" 40
    wait_grep "the log to say the store failed (ENOSPC)" -F "store write failed" "$tmp/server-$io.log"
    a_newcomer_talks full
    local errors dropped
    errors=$(metric shardline_chat_store_write_errors_total)
    dropped=$(metric shardline_chat_store_records_dropped_total)
    [ "$errors" -gt 0 ] && [ "$dropped" -gt 0 ] || fail "disk full: write_errors=$errors records_dropped=$dropped"
    say "disk full: every message delivered, a newcomer served; write_errors=$errors records_dropped=$dropped"
    rm -f "$data/filler" "$data/filler2"
    sync
    # The writer retries the write it could not finish; wait until one lands.
    local deadline=$((SECONDS + WAIT)) n=0
    until grep -q "store writes are succeeding again" "$tmp/server-$io.log"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "store writes did not resume after the disk was freed"
        n=$((n + 1))
        say_all "freed-$n" 1
        sleep 0.2
    done
    local written_before
    written_before=$(metric shardline_chat_store_records_written_total)
    say_all "after-free" 3
    # Bob has them once they are delivered, not once they are on disk: wait
    # until the writer wrote and synced them before the filesystem fails, or
    # the kernel drops them with its dirty pages (the store's batched sync
    # promises no more than that).
    deadline=$((SECONDS + WAIT))
    until [ "$(metric shardline_chat_store_records_written_total)" -ge $((written_before + 3)) ] &&
        [ "$(metric shardline_chat_store_unsynced_records)" -eq 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "the messages said after the disk was freed were not synced"
        sleep 0.05
    done
    say "space freed: the log says store writes are succeeding again; what was said since is synced"

    # 2. The filesystem turns read-only under the server.
    local dev
    dev=$(basename "$(findmnt -no SOURCE "$data")")
    [ -w "/sys/fs/ext4/$dev/trigger_fs_error" ] || fail "no /sys/fs/ext4/$dev/trigger_fs_error"
    echo 1 >"/sys/fs/ext4/$dev/trigger_fs_error"
    findmnt -no OPTIONS "$data" | grep -qw ro || fail "the filesystem did not turn read-only"
    local errors_before=$errors
    say_all "read-only" 5
    a_newcomer_talks ro
    deadline=$((SECONDS + WAIT))
    until [ "$(metric shardline_chat_store_write_errors_total)" -gt "$errors_before" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "read-only: no write error counted"
        sleep 0.1
    done
    grep -q "Read-only file system" "$tmp/server-$io.log" || fail "the log does not name the read-only filesystem"
    say "read-only filesystem: every message delivered, a newcomer served, the log names EROFS"
    # While it runs, the history in memory still has everything.
    history >"$tmp/history-live.txt"
    grep -qx "read-only 5" "$tmp/history-live.txt" || fail "live CHATHISTORY lacks what was said while read-only"
    quit_pair
    stop_server

    # Repair, restart with another shard count: what reached the disk is there.
    umount "$data"
    e2fsck -fy "$tmp/disk.img" >"$tmp/fsck-$io.out" 2>&1 || [ $? -le 1 ] || fail "e2fsck could not repair the image"
    mount_data
    start_server "$shards_after" "$io" "$tmp/server-$io-restart.log"
    irc_open bob "$port"
    irc_register bob bob "draft/chathistory batch server-time message-tags"
    irc_send bob "JOIN $CHANNEL"
    irc_expect bob "^:[^ ]+ 366 bob $CHANNEL "
    history >"$tmp/history-$io.txt"
    local want
    want=$(printf 'stored %s\n' 1 2 3 4 5)
    [ "$(grep '^stored ' "$tmp/history-$io.txt")" = "$want" ] || fail "after restart the stored messages are not all there in order: $(tr '\n' '|' <"$tmp/history-$io.txt")"
    [ "$(grep '^after-free ' "$tmp/history-$io.txt")" = "$(printf 'after-free %s\n' 1 2 3)" ] ||
        fail "after restart the messages said after the disk was freed are not all there: $(tr '\n' '|' <"$tmp/history-$io.txt")"
    if grep -q '^read-only ' "$tmp/history-$io.txt"; then fail "messages said while read-only came back from a read-only disk"; fi
    # Order: the texts are in the order they were said.
    local order
    order=$(grep -nE '^(stored|disk-full|after-free) ' "$tmp/history-$io.txt" | cut -d: -f2 | cut -d' ' -f1 | uniq | tr '\n' ' ')
    case $order in
    "stored after-free " | "stored disk-full after-free ") ;;
    *) fail "history out of order after restart: $order" ;;
    esac
    local parts=""
    for tag in stored disk-full freed after-free read-only; do
        parts+=" $tag=$(grep -c "^$tag" "$tmp/history-$io.txt" || true)"
    done
    say "restarted with $shards_after shard(s): CHATHISTORY in order,$parts (disk-full: what fit in the log's last block)"
    irc_send bob "QUIT"
    irc_close bob
    stop_server
    umount "$data"
}

for io in $IOS; do
    run_backend "$io"
done
say "PASS ($((SECONDS - start_time)) s)"
