#!/usr/bin/env bash
# shardline-chat over TLS with real clients. Makes a CA and a certificate for
# localhost with the openssl CLI, starts the server (release build) with a
# plaintext listener and --tls-listen on free loopback ports, and on each I/O
# backend (--io uring, --io epoll):
#   - registers with `openssl s_client` (certificate verified against the CA,
#     -verify_return_error) and checks that 001 arrives, that WHOIS shows 671 and
#     that CAP LS 302 carries sts=duration= over TLS;
#   - checks that a plaintext client's CAP LS 302 carries sts=port=<tls port>;
#   - if weechat-headless is installed, has weechat connect over TLS (verifying
#     the certificate against the CA) and join a channel, where the openssl
#     client sees it and WHOIS shows it is on a secure connection.
#
#   scripts/chat-tls-demo.sh                     # both backends, 2 shards
#   IOS=epoll SHARDS=4 scripts/chat-tls-demo.sh
#   CHAT_BIN=target/release/shardline-chat scripts/chat-tls-demo.sh   # no build
#   WEECHAT=0 scripts/chat-tls-demo.sh           # skip the weechat part
#
# Every wait is bounded (WAIT seconds, default 20); the server and the clients
# are stopped and the temporary directory removed on exit (kept on failure).
# Exits non-zero on any failure, after printing what each side saw.
set -euo pipefail
cd "$(dirname "$0")/.."

IOS=${IOS:-uring epoll}
SHARDS=${SHARDS:-2}
WAIT=${WAIT:-20}
WEECHAT=${WEECHAT:-1}
CHANNEL='#tls'
start_time=$SECONDS

say() { printf 'tls-demo: %s\n' "$*"; }
fail() {
    printf 'tls-demo: FAIL: %s\n' "$*" >&2
    if [ -n "${tmp:-}" ]; then
        for f in "$tmp"/server-*.log "$tmp"/*.out "$tmp"/*.err "$tmp"/plain-*.log; do
            [ -s "$f" ] || continue
            echo "--- $(basename "$f") (tail)" >&2
            tail -n 25 "$f" >&2
        done
        [ -d "$tmp/weechat/logs" ] && { echo "--- weechat logs" >&2; tail -n 20 "$tmp"/weechat/logs/*.weechatlog >&2 || true; }
        keep=1
        echo "tls-demo: files kept in $tmp" >&2
    fi
    exit 1
}

command -v openssl >/dev/null || fail "the openssl command is needed"
command -v timeout >/dev/null || fail "timeout (coreutils) is needed"
have_weechat=0
if [ "$WEECHAT" = 1 ] && command -v weechat-headless >/dev/null &&
    dpkg-query -W -f='${Status}' weechat-plugins 2>/dev/null | grep -q "install ok installed"; then
    have_weechat=1
fi

bin=${CHAT_BIN:-}
if [ -z "$bin" ]; then
    ./x deps
    timeout 1800 cargo build --release -q -p shardline-chat || fail "build failed"
    bin=${CARGO_TARGET_DIR:-target}/release/shardline-chat
fi
[ -x "$bin" ] || fail "no server binary at $bin"

# --- processes, cleanup -----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-tls-demo.XXXXXX")
keep=0
server_pid=""
client_pid=""
weechat_pid=""
stop_pid() { # pid seconds
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    timeout "$2" tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
    exec 4>&- 2>/dev/null || true
    stop_pid "$weechat_pid" 5
    stop_pid "$client_pid" 5
    stop_pid "$server_pid" 10
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

# --- a CA and a certificate for localhost ------------------------------------------
(
    cd "$tmp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=shardline-chat demo CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        "extendedKeyUsage=serverAuth" "basicConstraints=CA:FALSE" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem 2>/dev/null
) || fail "openssl could not make the certificates"
openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem" >/dev/null || fail "certificate does not verify"
fingerprint=$(openssl x509 -in "$tmp/server.pem" -noout -fingerprint -sha256 | cut -d= -f2)
say "CA and certificate for localhost made (SHA-256 $fingerprint)"

# A free loopback port (nothing listening on it right now).
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 30000))
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || { echo "$port"; return 0; }
    done
    fail "no free port"
}

# --- one TLS client: openssl s_client, fed through a fifo on fd 4 --------------------
client_start() { # name
    local name=$1
    rm -f "$tmp/$name.in"
    mkfifo "$tmp/$name.in"
    timeout "$((WAIT * 3))" openssl s_client -quiet -connect "127.0.0.1:$tls_port" \
        -CAfile "$tmp/ca.pem" -servername localhost -verify_return_error \
        <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    client_pid=$!
    exec 4>"$tmp/$name.in"
}
client_send() { printf '%s\r\n' "$1" >&4; }
client_stop() {
    exec 4>&-
    timeout "$WAIT" tail --pid="$client_pid" -f /dev/null || fail "openssl s_client did not exit"
    client_pid=""
}

# --- weechat over TLS ----------------------------------------------------------------
weechat_join() { # io
    local wdir="$tmp/weechat"
    rm -rf "$wdir"
    mkdir -p "$wdir"
    # `ssl*` are weechat 3.x's names, `tls*` 4.x's (the unknown ones are only
    # warned about); the CA file is weechat.network.gnutls_ca_file in 3.x and
    # gnutls_ca_user in 4.x. The certificate is verified (ssl_verify on).
    weechat-headless --dir "$wdir" -P irc,logger,fifo -s -r "/set logger.file.flush_delay 0;\
/set weechat.network.gnutls_ca_file $tmp/ca.pem;/set weechat.network.gnutls_ca_user $tmp/ca.pem;\
/server add tlsdemo localhost/$tls_port;/set irc.server.tlsdemo.ssl on;/set irc.server.tlsdemo.tls on;\
/set irc.server.tlsdemo.ssl_verify on;/set irc.server.tlsdemo.tls_verify on;\
/set irc.server.tlsdemo.nicks wee;/set irc.server.tlsdemo.username wee;\
/set irc.server.tlsdemo.realname weechat;/set irc.server.tlsdemo.autojoin $CHANNEL;\
/set irc.server.tlsdemo.anti_flood_prio_high 0;/set irc.server.tlsdemo.anti_flood_prio_low 0;\
/set irc.server.tlsdemo.anti_flood 0;/connect tlsdemo" \
        </dev/null >"$tmp/weechat.out" 2>&1 &
    weechat_pid=$!
    wait_grep "weechat to join $CHANNEL over TLS ($1)" -E "wee (\[[^]]*\] )?(\([^)]*\) )?\(~wee@127\.0\.0\.1\) has joined $CHANNEL" \
        "$wdir/logs/irc.tlsdemo.$CHANNEL.weechatlog"
}

weechat_quit() {
    local fifo
    fifo=$(ls "$tmp"/weechat/weechat_fifo_* 2>/dev/null | head -n 1 || true)
    [ -p "$fifo" ] || fail "weechat's fifo pipe is missing"
    printf '%s\n' "irc.server.tlsdemo */quit weechat-bye" >"$fifo"
    timeout "$WAIT" tail --pid="$weechat_pid" -f /dev/null || fail "weechat did not exit after /quit"
    weechat_pid=""
}

# --- each backend ----------------------------------------------------------------------
for io in $IOS; do
    for attempt in 1 2 3 4 5; do
        plain_port=$(free_port)
        tls_port=$(free_port)
        [ "$plain_port" != "$tls_port" ] || continue
        log="$tmp/server-$io.log"
        RUST_LOG=info "$bin" --listen "127.0.0.1:$plain_port" --tls-listen "127.0.0.1:$tls_port" \
            --tls-cert "$tmp/server.pem" --tls-key "$tmp/server.key" \
            --shards "$SHARDS" --io "$io" --no-pin --data-dir "$tmp/data-$io" >"$log" 2>&1 &
        server_pid=$!
        deadline=$((SECONDS + WAIT))
        while kill -0 "$server_pid" 2>/dev/null && ! grep -q "server started" "$log"; do
            [ "$SECONDS" -lt "$deadline" ] || fail "server did not start ($io)"
            sleep 0.1
        done
        grep -q "server started" "$log" && break
        grep -q "already in use" "$log" || fail "server did not start ($io)"
        server_pid=""
        [ "$attempt" -lt 5 ] || fail "server did not start ($io): ports taken"
    done
    say "--io $io: $(grep -o 'server started.*' "$log" | sed 's/\x1b\[[0-9;]*m//g')"

    # A plaintext client is told where TLS is.
    exec 3<>"/dev/tcp/127.0.0.1/$plain_port"
    printf 'CAP LS 302\r\n' >&3
    IFS= read -r -t "$WAIT" -u 3 line || fail "no CAP LS reply on the plaintext port ($io)"
    exec 3>&-
    line=${line%$'\r'}
    printf '%s\n' "$line" >"$tmp/plain-$io.log"
    [[ $line == *" LS :"*"sts=port=$tls_port"* ]] || fail "plaintext CAP LS lacks sts=port=$tls_port: $line"
    say "--io $io: plaintext CAP LS 302: ${line#*LS :}"

    # openssl s_client registers over TLS.
    nick="tls${io}"
    client_start "client-$io"
    out="$tmp/client-$io.out"
    client_send "CAP LS 302"
    client_send "NICK $nick"
    client_send "USER $nick 0 * :openssl s_client"
    client_send "CAP END"
    wait_grep "001 over TLS ($io)" -E "^:[^ ]+ 001 $nick " "$out"
    grep -q "sts=duration=0" "$out" || fail "TLS CAP LS lacks sts=duration=0 ($io)"
    client_send "WHOIS $nick"
    wait_grep "WHOIS 671 ($io)" -E "^:[^ ]+ 671 $nick $nick :is using a secure connection" "$out"
    client_send "JOIN $CHANNEL"
    wait_grep "JOIN over TLS ($io)" -E "^:[^ ]+ 366 $nick " "$out"
    grep -Eq "verify error|Verify return code: [1-9]" "$tmp/client-$io.err" && fail "certificate verification failed ($io)"
    say "--io $io: openssl s_client (CA-verified) got $(grep -E "^:[^ ]+ 001 " "$out" | tr -d '\r' | cut -d' ' -f2-)"

    if [ "$have_weechat" = 1 ]; then
        weechat_join "$io"
        wait_grep "the openssl client to see weechat join ($io)" -E "^:wee!~wee@127\.0\.0\.1 JOIN $CHANNEL" "$out"
        client_send "WHOIS wee"
        wait_grep "WHOIS wee 671 ($io)" -E "^:[^ ]+ 671 $nick wee :is using a secure connection" "$out"
        client_send "PRIVMSG $CHANNEL :hello weechat, over TLS"
        wait_grep "weechat to log the message ($io)" -F "$(printf '%s\thello weechat, over TLS' "$nick")" \
            "$tmp/weechat/logs/irc.tlsdemo.$CHANNEL.weechatlog"
        weechat_quit
        wait_grep "the openssl client to see weechat quit ($io)" -F "QUIT :Quit: weechat-bye" "$out"
        say "--io $io: weechat joined $CHANNEL over TLS (CA-verified), got a message, quit"
    fi
    client_send "QUIT :bye"
    wait_grep "ERROR after QUIT ($io)" -E "^ERROR " "$out"
    client_stop

    echo "--- openssl s_client ($io), welcome and replies (trimmed)"
    grep -vE '^:[^ ]+ (00[2-5]|25[1-5]|26[56]|37[256]|422|353) ' "$out" | tr -d '\r'
    echo "---"

    kill -TERM "$server_pid"
    timeout "$WAIT" tail --pid="$server_pid" -f /dev/null || fail "server did not stop ($io)"
    status=0
    wait "$server_pid" || status=$?
    server_pid=""
    [ "$status" -eq 0 ] || fail "server exited with status $status ($io)"
done

weechat_note="weechat not installed: skipped"
[ "$have_weechat" = 1 ] && weechat_note="weechat too"
[ "$WEECHAT" = 1 ] || weechat_note="weechat skipped (WEECHAT=0)"
say "PASS: TLS registration, sts and WHOIS 671 on --io ${IOS// /, --io }; $weechat_note ($((SECONDS - start_time)) s)"
