# Shared by the upgrade demos (sourced, not run): scratch directory and
# cleanup, TCP resets counted, bounded waits on logs and processes, the verdict.
#
# The sourcing script sets DEMO (its name, for messages) and NETNS (non-empty
# when it runs in a network namespace of its own, so resets are counted
# exactly) before sourcing; it adds the processes it starts to `pids`, and sets
# `fail=1` for anything that went wrong.

work=$(mktemp -d)
sock=$work/upgrade.sock
pids=()
cleanup() {
    for p in "${pids[@]}" $(pgrep -f "$sock" 2>/dev/null || true); do
        kill -9 "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# TCP resets this kernel (or namespace) has sent so far.
out_rsts() { awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "OutRsts") c = i; h = 1 } else print $c }' /proc/net/snmp; }

# Waits (bounded) until file $1 has a line matching $2.
wait_log() { # file, pattern
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$DEMO: no \"$2\" in $1:" >&2
    tail -20 "$1" >&2
    exit 1
}

# Waits (bounded) for process $1 to exit (not necessarily our child).
wait_gone() { # pid
    for _ in $(seq 1 300); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$DEMO: process $1 still running after 30 s" >&2
    exit 1
}

# Prints the resets sent across the upgrades ($1); in a private namespace any
# is a failure.
report_resets() { # count
    if [ -n "$NETNS" ]; then
        echo "resets     $1 (TCP RSTs sent in this network namespace across the upgrades)"
        [ "$1" -eq 0 ] || fail=1
    else
        echo "resets     $1 (machine-wide TCP RSTs sent, for information: not a private namespace)"
    fi
}

# Exits 1 with the processes' warnings if anything failed, else says $1.
verdict() { # ok message
    if [ "$fail" -ne 0 ]; then
        echo "$DEMO: FAILED" >&2
        for l in "$work"/gen*.log; do
            echo "== $l" >&2
            grep -E "WARN|ERROR" "$l" | tail -5 >&2 || true
        done
        exit 1
    fi
    echo "$DEMO: OK ($1)"
}
