#!/usr/bin/env bash
# Must-show demo for issues 6 and 14: a real IRC client, weechat-headless (Debian),
# and a second client — a raw socket speaking IRC from bash — whose connections live
# on different shards of shardline-chat, log in to their accounts with SASL (weechat
# with SCRAM-SHA-256; the raw client with PLAIN),
# join one channel and talk to each other, in the channel and privately. Then the
# server is killed with `kill -9`, restarted with another shard count (SHARDS_AFTER),
# and a fresh client's `CHATHISTORY LATEST` returns what was said, in order, with
# msgids and server-times — the channel's history and the private conversation —
# and a second weechat logs in with SASL PLAIN to an account made before the kill.
#
#   scripts/chat-weechat-demo.sh            # 2 shards, then 1; io auto
#   SHARDS=4 SHARDS_AFTER=2 IO=epoll scripts/chat-weechat-demo.sh
#   CHAT_BIN=target/release/shardline-chat scripts/chat-weechat-demo.sh   # no build
#
# The server runs with `--accept handoff` (round-robin), so the two consecutive
# connections land on different shards. The proof does not rely on that: the server's
# debug log names the shard of every client that leaves ("client leaving shard=N ...
# reason=Quit: <message>"), and each client quits with its own message. The script
# checks what each side received (weechat's logger files, the raw client's lines),
# prints a short transcript and exits non-zero on any failure. Every wait is bounded
# (WAIT seconds, default 20); the server and weechat are stopped on exit.
#
# Needs: weechat-headless and weechat-plugins (for the fifo plugin that drives
# weechat); installed with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-2}
SHARDS_AFTER=${SHARDS_AFTER:-$((SHARDS == 1 ? 2 : SHARDS - 1))}
IO=${IO:-auto}
WAIT=${WAIT:-20}
CHANNEL='#demo'
start_time=$SECONDS

say() { printf 'demo: %s\n' "$*"; }
fail() {
    printf 'demo: FAIL: %s\n' "$*" >&2
    [ -n "${tmp:-}" ] && [ -f "$tmp/server.log" ] && { echo "--- server log (tail)" >&2; tail -n 30 "$tmp/server.log" >&2; }
    [ -n "${tmp:-}" ] && [ -f "$tmp/raw.log" ] && { echo "--- raw client" >&2; cat "$tmp/raw.log" >&2; }
    [ -n "${tmp:-}" ] && [ -d "$tmp/weechat/logs" ] && { echo "--- weechat logs" >&2; tail -n 20 "$tmp"/weechat/logs/*.weechatlog >&2; }
    [ -n "${tmp:-}" ] && keep=1 && echo "demo: files kept in $tmp" >&2
    exit 1
}

# --- dependencies -----------------------------------------------------------------
need=()
command -v weechat-headless >/dev/null || need+=(weechat-headless)
dpkg-query -W -f='${Status}' weechat-plugins 2>/dev/null | grep -q "install ok installed" || need+=(weechat-plugins)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# CHAT_BIN=path uses an already built server instead of building one.
bin=${CHAT_BIN:-}
if [ -z "$bin" ]; then
    ./x deps
    cargo build --release -q -p shardline-chat || fail "build failed"
    bin=target/release/shardline-chat
fi

# --- processes, cleanup -----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-weechat-demo.XXXXXX")
keep=0
server_pid=""
weechat_pid=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    if [ -n "$weechat_pid" ] && kill -0 "$weechat_pid" 2>/dev/null; then
        kill -TERM "$weechat_pid" 2>/dev/null || true
        timeout 5 tail --pid="$weechat_pid" -f /dev/null || kill -KILL "$weechat_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        timeout 10 tail --pid="$server_pid" -f /dev/null || kill -KILL "$server_pid" 2>/dev/null || true
    fi
    [ "$keep" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# Waits (at most WAIT seconds) until `grep -q ARGS...` succeeds.
wait_grep() {
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT))
    until grep -q "$@" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}

# --- accounts, made with the operator's offline tool on the server's data directory -
WEE_PW="weechat-scram-secret"
PLAIN_PW="weechat-plain-secret"
RAW_PW="raw-socket-secret"
for a in "wee:$WEE_PW" "weep:$PLAIN_PW" "raw:$RAW_PW"; do
    printf '%s\n' "${a#*:}" | "$bin" --data-dir "$tmp/data" account add "${a%%:*}" >>"$tmp/account.out" 2>&1 \
        || { cat "$tmp/account.out" >&2; fail "account add ${a%%:*} failed"; }
done
"$bin" --data-dir "$tmp/data" account list >"$tmp/accounts.txt" 2>&1 || fail "account list failed"
for a in wee weep raw; do grep -qw "$a" "$tmp/accounts.txt" || fail "account list lacks $a"; done
say "accounts wee, weep, raw created (shardline-chat --data-dir DIR account add NAME)"

# --- the server -------------------------------------------------------------------
# start_server SHARDS LOG: on $port (picked on the first start), the data directory
# kept across restarts.
port=""
start_server() {
    local shards=$1 log=$2 attempt
    for attempt in 1 2 3 4 5; do
        if [ -z "$port" ] || [ "$attempt" -gt 1 ]; then
            [ -n "${PORT:-}" ] && [ "$attempt" -gt 1 ] && fail "server did not start"
            port=${PORT:-$((20000 + RANDOM % 30000))}
            ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && continue
        fi
        RUST_LOG=info,shardline_chat=debug "$bin" --listen "127.0.0.1:$port" --shards "$shards" \
            --io "$IO" --accept handoff --no-pin --data-dir "$tmp/data" >"$log" 2>&1 &
        server_pid=$!
        deadline=$((SECONDS + WAIT))
        while kill -0 "$server_pid" 2>/dev/null && ! grep -q "server started" "$log"; do
            [ "$SECONDS" -lt "$deadline" ] || fail "server did not start"
            sleep 0.1
        done
        grep -q "server started" "$log" && return 0
        server_pid=""
    done
    fail "server did not start"
}
start_server "$SHARDS" "$tmp/server.log"
say "$(grep -o 'server started.*' "$tmp/server.log")"

# --- client 1: weechat-headless ---------------------------------------------------
# Only the irc, logger and fifo plugins; the logger flushes at once; weechat's own
# send throttle (anti_flood: 2 s between lines in 3.8) is off; the fifo plugin lets
# this script type into weechat (`irc.shardline.#demo *text` says text there). `ssl`
# is weechat 3.x's name, `tls` 4.x's; the unknown one is only warned about. It logs
# in with SASL SCRAM-SHA-256 (`sasl_fail disconnect`: a failed login is not hidden
# by weechat carrying on without an account).
wdir="$tmp/weechat"
mkdir -p "$wdir"
weechat-headless --dir "$wdir" -P irc,logger,fifo -s -r "/set logger.file.flush_delay 0;\
/server add shardline 127.0.0.1/$port;/set irc.server.shardline.ssl off;\
/set irc.server.shardline.tls off;/set irc.server.shardline.nicks wee;\
/set irc.server.shardline.username wee;/set irc.server.shardline.realname weechat;\
/set irc.server.shardline.sasl_mechanism scram-sha-256;/set irc.server.shardline.sasl_username wee;\
/set irc.server.shardline.sasl_password $WEE_PW;/set irc.server.shardline.sasl_fail disconnect;\
/set irc.server.shardline.autojoin $CHANNEL;/set irc.server.shardline.anti_flood_prio_high 0;\
/set irc.server.shardline.anti_flood_prio_low 0;/set irc.server.shardline.anti_flood 0;\
/connect shardline" \
    </dev/null >"$tmp/weechat.out" 2>&1 &
weechat_pid=$!
chanlog="$wdir/logs/irc.shardline.$CHANNEL.weechatlog"
srvlog="$wdir/logs/irc.server.shardline.weechatlog"
wait_grep "weechat to log in with SASL" -F "SASL authentication successful" "$srvlog"
grep -F "You are now logged in as wee" "$srvlog" >/dev/null || fail "weechat: no 900 (logged in as wee)"
wait_grep "weechat to join $CHANNEL" -E "wee (\[[^]]*\] )?(\([^)]*\) )?\(~wee@127\.0\.0\.1\) has joined $CHANNEL" "$chanlog"
fifo=$(ls "$wdir"/weechat_fifo_* 2>/dev/null | head -n 1 || true)
[ -p "$fifo" ] || fail "weechat's fifo pipe is missing"
weechat_cmd() { printf '%s\n' "$1" >"$fifo"; }
say "weechat logged in as wee (SASL SCRAM-SHA-256) and joined $CHANNEL"


# --- client 2: a raw IRC connection from bash ---------------------------------------
exec 3<>"/dev/tcp/127.0.0.1/$port"
raw_send() {
    printf '%s\r\n' "$1" >&3
    printf '>> %s\n' "$1" >>"$tmp/raw.log"
}
# Reads lines until one matches the extended regex $1 (answers PINGs meanwhile).
raw_expect() {
    local deadline=$((SECONDS + WAIT)) line left
    while :; do
        left=$((deadline - SECONDS))
        [ "$left" -gt 0 ] || fail "raw client: timed out waiting for /$1/"
        IFS= read -r -t "$left" -u 3 line || fail "raw client: connection closed or timed out waiting for /$1/"
        line=${line%$'\r'}
        printf '<< %s\n' "$line" >>"$tmp/raw.log"
        [[ $line == PING* ]] && raw_send "PONG ${line#PING }"
        [[ $line =~ $1 ]] && return 0
    done
}
# SASL PLAIN by hand: CAP LS 302, CAP REQ :sasl, AUTHENTICATE PLAIN, the base64 of
# "authzid NUL authcid NUL password", CAP END.
raw_send "CAP LS 302"
raw_send "NICK raw"
raw_send "USER raw 0 * :raw socket client"
raw_expect "^:[^ ]+ CAP [^ ]+ LS :.*sasl"
raw_send "CAP REQ :sasl"
raw_expect "^:[^ ]+ CAP [^ ]+ ACK :sasl"
raw_send "AUTHENTICATE PLAIN"
raw_expect "^(:[^ ]+ )?AUTHENTICATE \+$"
raw_send "AUTHENTICATE $(printf 'raw\0raw\0%s' "$RAW_PW" | base64 -w0)"
raw_expect "^:[^ ]+ 900 raw .* raw :You are now logged in as raw"
raw_expect "^:[^ ]+ 903 raw :SASL authentication successful"
raw_send "CAP END"
raw_expect "^:[^ ]+ 001 raw "
raw_send "JOIN $CHANNEL"
raw_expect "^:[^ ]+ 366 raw $CHANNEL "
grep -Eq "^<< :[^ ]+ 353 raw = $CHANNEL :.*@wee" "$tmp/raw.log" || fail "raw client: NAMES does not list @wee"
wait_grep "weechat to see raw join" -E "raw (\[[^]]*\] )?(\([^)]*\) )?\(~raw@127\.0\.0\.1\) has joined $CHANNEL" "$chanlog"
say "raw client joined $CHANNEL; each sees the other"

# --- messages both ways -------------------------------------------------------------
raw_send "PRIVMSG $CHANNEL :hello weechat, from a raw socket"
wait_grep "weechat to log raw's message" -F "$(printf 'raw\thello weechat, from a raw socket')" "$chanlog"
weechat_cmd "irc.shardline.$CHANNEL *hello raw client, from weechat"
raw_expect "^:wee!~wee@127\.0\.0\.1 PRIVMSG $CHANNEL :hello raw client, from weechat$"
raw_send "PRIVMSG wee :psst, privately"
wait_grep "weechat to log the private message" -F "$(printf 'raw\tpsst, privately')" "$wdir/logs/irc.shardline.raw.weechatlog"
weechat_cmd "irc.server.shardline */msg raw private reply"
raw_expect "^:wee!~wee@127\.0\.0\.1 PRIVMSG raw :private reply$"
say "channel and private messages delivered both ways"


# --- quits --------------------------------------------------------------------------
weechat_cmd "irc.server.shardline */quit weechat-bye"
raw_expect "^:wee!~wee@127\.0\.0\.1 QUIT :Quit: weechat-bye$"
timeout "$WAIT" tail --pid="$weechat_pid" -f /dev/null || fail "weechat did not exit after /quit"
weechat_pid=""
raw_send "QUIT :raw-bye"
raw_expect "^ERROR "
exec 3>&-

# --- which shard each connection lived on -------------------------------------------
wait_grep "the server to log both clients leaving" -F "reason=Quit: raw-bye" "$tmp/server.log"
shard_of() { grep -F "client leaving" "$tmp/server.log" | grep -F "reason=Quit: $1" | sed -n 's/.*shard=\([0-9]*\).*/\1/p' | head -n 1; }
wee_shard=$(shard_of weechat-bye)
raw_shard=$(shard_of raw-bye)
[ -n "$wee_shard" ] && [ -n "$raw_shard" ] || fail "server log does not name both clients' shards"
if [ "$SHARDS" -gt 1 ] && [ "$wee_shard" = "$raw_shard" ]; then
    fail "both connections were on shard $wee_shard"
fi

# --- kill -9, restart with another shard count, CHATHISTORY ---------------------------
# The default sync policy (batch) may lose the last 5 ms of history to a kill -9;
# everything above was said well before that.
sleep 0.2
kill -KILL "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
say "server killed with kill -9; restarting with $SHARDS_AFTER shard(s)"
start_server "$SHARDS_AFTER" "$tmp/server2.log"
say "$(grep -o 'server started.*' "$tmp/server2.log")"

cp "$tmp/raw.log" "$tmp/raw-before.log"
: >"$tmp/raw.log"
exec 3<>"/dev/tcp/127.0.0.1/$port"
raw_send "CAP LS 302"
raw_send "NICK raw"
raw_send "USER raw 0 * :raw socket client"
raw_expect "^:[^ ]+ CAP [^ ]+ LS :.*draft/chathistory"
raw_send "CAP REQ :sasl draft/chathistory batch server-time message-tags"
raw_expect "^:[^ ]+ CAP [^ ]+ ACK :"
raw_send "AUTHENTICATE PLAIN"
raw_expect "^(:[^ ]+ )?AUTHENTICATE \+$"
raw_send "AUTHENTICATE $(printf 'raw\0raw\0%s' "$RAW_PW" | base64 -w0)"
raw_expect "^:[^ ]+ 903 raw "
raw_send "CAP END"
raw_expect "^:[^ ]+ 001 raw "
raw_send "JOIN $CHANNEL"
raw_expect "^:[^ ]+ 366 raw $CHANNEL "
raw_send "CHATHISTORY LATEST $CHANNEL * 50"
raw_expect "^(@[^ ]+ )?:[^ ]+ BATCH -"
raw_send "CHATHISTORY LATEST wee * 50"
raw_expect "^(@[^ ]+ )?:[^ ]+ BATCH -"
raw_send "QUIT :history-read"
raw_expect "^ERROR "
exec 3>&-
cp "$tmp/raw.log" "$tmp/history.log"

# history_texts TARGET: the PRIVMSG texts of the CHATHISTORY batch for TARGET, in
# order, each checked for a msgid and a server-time tag.
history_texts() {
    local ref
    ref=$(sed -n "s/^<< :[^ ]* BATCH +\([^ ]*\) chathistory $1\$/\1/p" "$tmp/history.log" | head -n 1)
    [ -n "$ref" ] || fail "no chathistory batch for $1"
    grep -F "batch=$ref" "$tmp/history.log" | grep -F " PRIVMSG " | while IFS= read -r l; do
        [[ $l =~ [@\;]msgid=[^\;\ ]+ ]] || fail "history line without msgid: $l"
        [[ $l =~ [@\;]time=20[0-9-]+T[0-9:.]+Z ]] || fail "history line without time: $l"
        printf '%s\n' "${l#* PRIVMSG * :}"
    done
}
chan_hist=$(history_texts "$CHANNEL")
want_chan=$'hello weechat, from a raw socket\nhello raw client, from weechat'
[ "$chan_hist" = "$want_chan" ] || fail "channel history after kill -9 is $(printf '%q' "$chan_hist"), want $(printf '%q' "$want_chan")"
priv_hist=$(history_texts wee)
want_priv=$'psst, privately\nprivate reply'
[ "$priv_hist" = "$want_priv" ] || fail "private history after kill -9 is $(printf '%q' "$priv_hist"), want $(printf '%q' "$want_priv")"
say "after kill -9 and a restart with $SHARDS_AFTER shard(s), CHATHISTORY returned the channel and private messages in order"

# A second weechat, on the restarted server: SASL PLAIN as weep, whose account
# was made before the kill.
wdir2="$tmp/weechat2"
mkdir -p "$wdir2"
weechat-headless --dir "$wdir2" -P irc,logger,fifo -s -r "/set logger.file.flush_delay 0;\
/server add plainsrv 127.0.0.1/$port;/set irc.server.plainsrv.ssl off;\
/set irc.server.plainsrv.tls off;/set irc.server.plainsrv.nicks weep;\
/set irc.server.plainsrv.username weep;/set irc.server.plainsrv.sasl_mechanism plain;\
/set irc.server.plainsrv.sasl_username weep;/set irc.server.plainsrv.sasl_password $PLAIN_PW;\
/set irc.server.plainsrv.sasl_fail disconnect;/connect plainsrv" \
    </dev/null >"$tmp/weechat2.out" 2>&1 &
weechat_pid=$!
plainlog="$wdir2/logs/irc.server.plainsrv.weechatlog"
wait_grep "weechat (plainsrv) to log in with SASL PLAIN" -F "SASL authentication successful" "$plainlog"
grep -F "You are now logged in as weep" "$plainlog" >/dev/null || fail "weechat plainsrv: no 900 (logged in as weep)"
fifo=$(ls "$wdir2"/weechat_fifo_* 2>/dev/null | head -n 1 || true)
[ -p "$fifo" ] || fail "the second weechat's fifo pipe is missing"
weechat_cmd "irc.server.plainsrv */quit plain-bye"
timeout "$WAIT" tail --pid="$weechat_pid" -f /dev/null || fail "the second weechat did not exit after /quit"
weechat_pid=""
say "after the restart a second weechat logged in as weep (SASL PLAIN)"

kill -TERM "$server_pid"
timeout "$WAIT" tail --pid="$server_pid" -f /dev/null || fail "server did not stop"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "server exited with status $status"

# --- transcript ---------------------------------------------------------------------
echo "--- server log (shards and clients)"
grep -E "server started|client leaving" "$tmp/server.log" | sed -E 's/^[0-9T:.-]+Z +//; s/\x1b\[[0-9;]*m//g'
echo "--- weechat $CHANNEL log"
sed 's/^[0-9-]* //' "$chanlog"
echo "--- weechat private buffer log"
sed 's/^[0-9-]* //' "$wdir/logs/irc.shardline.raw.weechatlog"
echo "--- weechat server buffers (SASL)"
grep -hE "SASL|logged in as" "$srvlog" "$plainlog" | sed 's/^[0-9-]* //'
echo "--- raw client before the kill (>> sent, << received)"
grep -vE '^<< :[^ ]+ (00[2-5]|25[1-5]|26[56]|37[256]|422) ' "$tmp/raw-before.log"
echo "--- after kill -9 and a restart with $SHARDS_AFTER shard(s): CHATHISTORY"
grep -E '^(>> CHATHISTORY|<< (@[^ ]+ )?:[^ ]+ (BATCH|PRIVMSG) )' "$tmp/history.log"
echo "---"
say "PASS: weechat (SASL SCRAM-SHA-256, shard $wee_shard) and the raw client (SASL PLAIN, shard $raw_shard) of $SHARDS exchanged channel and private messages; after kill -9 and a restart with $SHARDS_AFTER shard(s) CHATHISTORY returned them in order ($((SECONDS - start_time)) s)"
