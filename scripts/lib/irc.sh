# Shared helpers for the demo scripts (sourced, not run): messages, bounded waits,
# stopping processes, and IRC clients over bash's /dev/tcp.
#
# The sourcing script sets DEMO (its name, for messages) and WAIT (seconds every
# wait may take), and may define `on_fail` (called before exiting, to print
# what it saw). `tmp` names its scratch directory once it has one.

say() { printf '%s: %s\n' "$DEMO" "$*"; }
fail() {
    printf '%s: FAIL: %s\n' "$DEMO" "$*" >&2
    if declare -F on_fail >/dev/null; then on_fail || true; fi
    if [ -n "${tmp:-}" ]; then
        keep=1
        printf '%s: files kept in %s\n' "$DEMO" "$tmp" >&2
    fi
    exit 1
}

# wait_grep WHAT GREP-ARGS...: waits (at most WAIT seconds) until `grep -q
# GREP-ARGS...` succeeds.
wait_grep() {
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT))
    until grep -q "$@" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    timeout "$2" tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true
}

# IRC clients: irc_open NAME PORT opens a connection on 127.0.0.1 and logs what
# goes both ways to $tmp/NAME.log ('>> ' sent, '<< ' received).
declare -A IRC_FD=()
irc_open() {
    local fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$2" || fail "$1: cannot connect to port $2"
    IRC_FD[$1]=$fd
    : >>"$tmp/$1.log"
}
irc_close() {
    local fd=${IRC_FD[$1]:-}
    [ -n "$fd" ] && exec {fd}>&-
    unset "IRC_FD[$1]"
}
irc_send() {
    printf '%s\r\n' "$2" >&"${IRC_FD[$1]}" || fail "$1: send failed: $2"
    printf '>> %s\n' "$2" >>"$tmp/$1.log"
}
# irc_expect NAME REGEX: reads lines until one matches the extended REGEX
# (answering PINGs meanwhile); the line is left in IRC_LINE.
irc_expect() {
    local deadline=$((SECONDS + WAIT)) line left
    while :; do
        left=$((deadline - SECONDS))
        [ "$left" -gt 0 ] || fail "$1: timed out waiting for /$2/"
        IFS= read -r -t "$left" -u "${IRC_FD[$1]}" line || fail "$1: connection closed or timed out waiting for /$2/"
        line=${line%$'\r'}
        printf '<< %s\n' "$line" >>"$tmp/$1.log"
        [[ $line == PING* ]] && irc_send "$1" "PONG ${line#PING }"
        if [[ $line =~ $2 ]]; then
            IRC_LINE=$line
            return 0
        fi
    done
}
# irc_register NAME NICK [CAPS]: registers (requesting CAPS first, if given).
irc_register() {
    if [ -n "${3:-}" ]; then
        irc_send "$1" "CAP LS 302"
        irc_send "$1" "CAP REQ :$3"
        irc_expect "$1" "^:[^ ]+ CAP [^ ]+ ACK "
        irc_send "$1" "CAP END"
    fi
    irc_send "$1" "NICK $2"
    irc_send "$1" "USER $2 0 * :$2"
    irc_expect "$1" "^:[^ ]+ 001 $2 "
}

# free_port: a loopback TCP port nobody listens on now.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || break
    done
    echo "$port"
}
