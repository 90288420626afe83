#!/usr/bin/env bash
# The chat's web client (apps/chat/web, served by `shardline-chat
# --websocket-listen`) in headless Chromium, driven by Selenium
# (scripts/lib/web_client_test.py), with a raw IRC client and weechat, on each
# I/O backend (--io uring, --io epoll) with 4 shards and round-robin accepting:
#   - a raw IRC client (scripts/lib/irc.sh) joins the channel and says
#     HISTORY_COUNT (120) messages; two browser users, alice and bob (two
#     Chromium sessions, each logging in to its account with SASL PLAIN), join
#     it: each sees the others' messages, nothing the users typed turns into
#     markup; the view holds the latest page of history on join and scrolling to
#     the top loads the rest (CHATHISTORY BEFORE), all of it, in order, once;
#   - private messages between the browsers and with the raw client (a
#     conversation window, unread mark), /me, /topic, /nick, /quit and the
#     reconnect button; a line too long for one message goes out as several;
#   - a fresh browser logging in as alice gets the channel's latest messages
#     and her conversation with bob from CHATHISTORY; no error in any
#     browser's console;
#   - weechat-headless joins and talks with alice; a screenshot of alice's
#     browser then is saved (SCREENSHOT, default bench/results/web-client.png,
#     from the first backend only);
#   - weechat and alice are on different shards (with SHARDS > 1): the
#     admin endpoint's per-shard user gauge shows where each registered (a
#     weechat landing on alice's shard is restarted: accepting is round-robin),
#     and the server's log, where each client quit, agrees.
#
#   scripts/chat-web-demo.sh
#   IOS=epoll SHARDS=2 scripts/chat-web-demo.sh
#   CHAT_BIN=target/release/shardline-chat scripts/chat-web-demo.sh   # no build
#   SCREENSHOT= scripts/chat-web-demo.sh                               # none
#
# Needs Debian's chromium, chromium-driver and python3-selenium, and
# weechat-headless and weechat-plugins: installed with apt-get if missing (no
# browser download). Every wait is bounded (WAIT seconds, default 20); the
# server, the browsers and weechat are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=web-demo
IOS=${IOS:-uring epoll}
SHARDS=${SHARDS:-4}
WAIT=${WAIT:-20}
HISTORY_COUNT=${HISTORY_COUNT:-120}
SCREENSHOT=${SCREENSHOT-bench/results/web-client.png}
CHANNEL='#web'
start_time=$SECONDS
# shellcheck source=lib/irc.sh
. scripts/lib/irc.sh

on_fail() {
    [ -n "${tmp:-}" ] || return 0
    for f in "$tmp"/server-*.log "$tmp"/driver-*.err "$tmp"/raw.log "$tmp"/weechat.out; do
        [ -s "$f" ] || continue
        echo "--- $(basename "$f") (tail)" >&2
        tail -n 30 "$f" >&2
    done
    [ -d "$tmp/weechat/logs" ] && { echo "--- weechat logs" >&2; tail -n 20 "$tmp"/weechat/logs/*.weechatlog >&2 || true; }
}

# --- dependencies -----------------------------------------------------------------
need=()
for p in chromium chromium-driver python3-selenium weechat-headless weechat-plugins; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's selenium is for Debian's python, whatever `python3` is first on PATH.
PY=/usr/bin/python3
"$PY" -c 'import selenium' 2>/dev/null || fail "python3-selenium is not importable by $PY"

bin=${CHAT_BIN:-}
if [ -z "$bin" ]; then
    ./x deps
    timeout 1800 cargo build --release -q -p shardline-chat || fail "build failed"
    bin=${CARGO_TARGET_DIR:-target}/release/shardline-chat
fi
[ -x "$bin" ] || fail "no server binary at $bin"

# --- processes, cleanup -----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-web-demo.XXXXXX")
keep=0
server_pid=""
weechat_pid=""
driver_pid=""
cleanup() {
    irc_close raw 2>/dev/null || true
    stop_pid "$driver_pid" 20 # closes its browsers on SIGTERM
    stop_pid "$weechat_pid" 5
    stop_pid "$server_pid" 10
    [ "$keep" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# Accounts for the browser users, made with the offline tool.
ALICE_PW="alice-web-secret"
BOB_PW="bob-web-secret"
# No flood control: the raw client says HISTORY_COUNT lines at once.
printf '[flood]\nenabled = false\n' >"$tmp/chat.toml"

# --- which shard a client registered on ------------------------------------------
# users_by_shard: "SHARD COUNT" lines of the gauge shardline_chat_users from the
# admin endpoint (bash's /dev/tcp: no curl needed).
users_by_shard() {
    local fd line
    exec {fd}<>"/dev/tcp/127.0.0.1/$aport" || fail "cannot reach the admin endpoint"
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&"$fd"
    while IFS= read -r -t "$WAIT" -u "$fd" line; do
        [[ $line =~ ^shardline_chat_users\{shard=\"([0-9]+)\"\}\ ([0-9]+) ]] &&
            echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
    done
    exec {fd}>&-
}
# new_user_shard BEFORE: the one shard with one registered user more now than
# in BEFORE (an earlier users_by_shard), or fails.
new_user_shard() {
    local now found
    now=$(users_by_shard)
    found=$(awk 'NR == FNR { was[$1] = $2; next } $2 == was[$1] + 1 { print $1 }' \
        <(printf '%s\n' "$1") <(printf '%s\n' "$now"))
    [ "$(printf '%s' "$found" | grep -c .)" = 1 ] || fail "cannot tell the new client's shard: before $(echo $1), now $(echo $now)"
    echo "$found"
}

# --- weechat (nick wee, no account), started when the driver asks --------------
# start_weechat: on a shard other than alice's (with SHARDS > 1). Accepting is
# round-robin, so a weechat that lands on alice's shard quits and the next try
# lands on the next shard.
start_weechat() {
    local try before
    for ((try = 1; try <= SHARDS; try++)); do
        before=$(users_by_shard)
        start_weechat_once
        wee_shard=$(new_user_shard "$before")
        [ "$SHARDS" -gt 1 ] && [ "$wee_shard" = "$alice_shard" ] || return 0
        say "weechat landed on alice's shard $wee_shard: once more"
        printf 'irc.server.shardline */quit again\n' >"$fifo"
        timeout "$WAIT" tail --pid="$weechat_pid" -f /dev/null || fail "weechat did not exit after /quit"
        weechat_pid=""
        local deadline=$((SECONDS + WAIT))
        until [ "$(users_by_shard)" = "$before" ]; do
            [ "$SECONDS" -lt "$deadline" ] || fail "weechat's quit did not show in the metrics"
            sleep 0.1
        done
    done
    fail "weechat never landed on a shard other than alice's"
}
start_weechat_once() {
    local wdir="$tmp/weechat"
    rm -rf "$wdir"
    mkdir -p "$wdir"
    weechat-headless --dir "$wdir" -P irc,logger,fifo -s -r "/set logger.file.flush_delay 0;\
/server add shardline 127.0.0.1/$port;/set irc.server.shardline.ssl off;\
/set irc.server.shardline.tls off;/set irc.server.shardline.nicks wee;\
/set irc.server.shardline.username wee;/set irc.server.shardline.realname weechat;\
/set irc.server.shardline.autojoin $CHANNEL;/set irc.server.shardline.anti_flood_prio_high 0;\
/set irc.server.shardline.anti_flood_prio_low 0;/set irc.server.shardline.anti_flood 0;\
/connect shardline" \
        </dev/null >"$tmp/weechat.out" 2>&1 &
    weechat_pid=$!
    chanlog="$wdir/logs/irc.shardline.$CHANNEL.weechatlog"
    wait_grep "weechat to join $CHANNEL" -E "wee .*has joined $CHANNEL" "$chanlog"
    fifo=$(ls "$wdir"/weechat_fifo_* 2>/dev/null | head -n 1 || true)
    [ -p "$fifo" ] || fail "weechat's fifo pipe is missing"
}

alice_shard=""
wee_shard=""
# run_backend IO: one server, the whole session.
run_backend() {
    local io=$1 attempt shot=""
    log="$tmp/server-$io.log"
    rm -rf "$tmp/data"
    for a in "alice:$ALICE_PW" "bob:$BOB_PW"; do
        printf '%s\n' "${a#*:}" | "$bin" --data-dir "$tmp/data" account add "${a%%:*}" >>"$tmp/account.out" 2>&1 \
            || { cat "$tmp/account.out" >&2; fail "account add ${a%%:*} failed"; }
    done
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        wport=$(free_port)
        aport=$(free_port)
        [ "$wport" != "$port" ] && [ "$aport" != "$port" ] && [ "$aport" != "$wport" ] || continue
        RUST_LOG=info,shardline_chat=debug "$bin" --config "$tmp/chat.toml" --listen "127.0.0.1:$port" \
            --websocket-listen "127.0.0.1:$wport" --admin "127.0.0.1:$aport" --shards "$SHARDS" --io "$io" --accept handoff \
            --no-pin --data-dir "$tmp/data" >"$log" 2>&1 &
        server_pid=$!
        local deadline=$((SECONDS + WAIT))
        while kill -0 "$server_pid" 2>/dev/null && ! grep -qs "server started" "$log"; do
            [ "$SECONDS" -lt "$deadline" ] || fail "$io: server did not start"
            sleep 0.1
        done
        grep -qs "server started" "$log" && break
        server_pid=""
    done
    [ -n "$server_pid" ] || fail "$io: server did not start"
    say "$io: $(grep -o 'server started.*' "$log" | sed -E 's/\x1b\[[0-9;]*m//g')"

    # The raw client and the channel's earlier messages.
    : >"$tmp/raw.log"
    irc_open raw "$port"
    irc_register raw raw
    irc_send raw "JOIN $CHANNEL"
    irc_expect raw "^:[^ ]+ 366 raw $CHANNEL "
    local i
    for ((i = 1; i <= HISTORY_COUNT; i++)); do
        irc_send raw "PRIVMSG $CHANNEL :history $(printf '%03d' "$i")"
    done
    irc_send raw "PING :said-all"
    irc_expect raw "PONG .*said-all"
    say "$io: raw joined $CHANNEL and said $HISTORY_COUNT messages"

    # The browsers, through the driver; it asks for what the raw client and
    # weechat do.
    [ -n "$SCREENSHOT" ] && [ "$io" = "${IOS%% *}" ] && shot="$tmp/web-client.png"
    local users_before_alice
    users_before_alice=$(users_by_shard)
    coproc DRIVER { exec "$PY" scripts/lib/web_client_test.py --url "http://127.0.0.1:$wport/" \
        --channel "$CHANNEL" --history-count "$HISTORY_COUNT" --alice-password "$ALICE_PW" \
        --bob-password "$BOB_PW" --wait "$WAIT" --screenshot "$shot" 2>"$tmp/driver-$io.err"; }
    driver_pid=$DRIVER_PID
    local out=${DRIVER[1]} in=${DRIVER[0]} req
    reply() { printf '%s\n' "$1" >&"$out"; }
    while :; do
        # A step of the driver is a few bounded waits.
        IFS= read -r -t $((WAIT * 8)) -u "$in" req || fail "$io: the browser driver stopped or stalled (see driver-$io.err)"
        case $req in
            "SEND "*) irc_send raw "${req#SEND }" && reply OK ;;
            "EXPECT "*) irc_expect raw "${req#EXPECT }" && reply "OK $IRC_LINE" ;;
            WEECHAT_START) start_weechat && reply "OK $alice_shard $wee_shard" ;;
            "WEECHAT_SAY "*) printf 'irc.shardline.%s *%s\n' "$CHANNEL" "${req#WEECHAT_SAY }" >"$fifo" && reply OK ;;
            "WEECHAT_SEEN "*) wait_grep "weechat to log ${req#WEECHAT_SEEN }" -F "${req#WEECHAT_SEEN }" "$chanlog" && reply OK ;;
            "ON_SHARD alice") alice_shard=$(new_user_shard "$users_before_alice") && reply OK ;;
            SCREENSHOT_DONE) reply OK ;;
            DONE) break ;;
            *) fail "$io: the driver asked for $req" ;;
        esac
    done
    local status=0
    wait "$driver_pid" || status=$?
    driver_pid=""
    [ "$status" -eq 0 ] || fail "$io: the browser driver failed (status $status)"
    sed 's/^/    /' "$tmp/driver-$io.err"
    if [ -n "$shot" ]; then
        [ -s "$shot" ] || fail "$io: no screenshot"
        mkdir -p "$(dirname "$SCREENSHOT")"
        cp "$shot" "$SCREENSHOT"
        say "$io: screenshot saved to $SCREENSHOT"
    fi

    # Everyone leaves; the log names each one's shard (the browsers quit with
    # alice-bye and bob-bye-2 before the driver finished).
    printf 'irc.server.shardline */quit weechat-bye\n' >"$fifo"
    timeout "$WAIT" tail --pid="$weechat_pid" -f /dev/null || fail "$io: weechat did not exit after /quit"
    weechat_pid=""
    irc_send raw "QUIT :raw-bye"
    irc_expect raw "^ERROR "
    irc_close raw
    wait_grep "$io: the server to log the clients leaving" -F "reason=Quit: raw-bye" "$log"
    shard_of() { grep -F "client leaving" "$log" | sed -E 's/\x1b\[[0-9;]*m//g' | grep -F "reason=Quit: $1" |
        sed -n 's/.*shard=\([0-9]*\).*/\1/p' | head -n 1; }
    # The log says where each client was; alice and weechat on different shards
    # (start_weechat saw to it, by the metrics).
    local who shards="" s
    for who in alice:alice-bye bob:bob-bye-2 raw:raw-bye wee:weechat-bye; do
        s=$(shard_of "${who#*:}")
        [ -n "$s" ] || fail "$io: the server log does not name the shard of ${who%%:*}"
        shards+="${who%%:*} on shard $s, "
        [ "${who%%:*}" = alice ] && [ "$s" != "$alice_shard" ] && fail "$io: alice's shard: $s in the log, $alice_shard by the metrics"
        [ "${who%%:*}" = wee ] && [ "$s" != "$wee_shard" ] && fail "$io: weechat's shard: $s in the log, $wee_shard by the metrics"
    done
    if [ "$SHARDS" -gt 1 ] && [ "$alice_shard" = "$wee_shard" ]; then
        fail "$io: alice and weechat were both on shard $alice_shard (${shards%, })"
    fi
    say "$io: ${shards%, }"

    kill -TERM "$server_pid"
    timeout "$WAIT" tail --pid="$server_pid" -f /dev/null || fail "$io: server did not stop"
    status=0
    wait "$server_pid" || status=$?
    server_pid=""
    [ "$status" -eq 0 ] || fail "$io: server exited with status $status"
}

for io in $IOS; do
    run_backend "$io"
done
say "PASS: two Chromium users, a raw IRC client and weechat across $SHARDS shards on ${IOS// /, } ($((SECONDS - start_time)) s)"
