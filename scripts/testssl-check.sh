#!/usr/bin/env bash
# testssl.sh against shardline-proxy's TLS listener: fails (exit 1) when it
# offers a protocol below TLS 1.2, any cipher suite that is not AEAD, or when a
# vulnerability check says anything but OK or INFO.
#
#   scripts/testssl-check.sh                   build shardline-proxy (release), start it
#                                              on a loopback port with a certificate
#                                              made now and one backend, scan it
#   scripts/testssl-check.sh --debug           the same with a debug build
#   scripts/testssl-check.sh --proxy-exe PATH  that binary instead of building one
#   scripts/testssl-check.sh --target H:PORT   scan a TLS server already running
#                                              (HAProxy, nginx, …); nothing is started
#   scripts/testssl-check.sh --full            testssl.sh's whole default scan
#
# What it runs: Debian's testssl.sh (package testssl.sh, installed with apt-get if
# missing) with the checks the verdict reads: -p (protocols), -s (cipher
# categories), -e (every cipher the server accepts), -U (vulnerabilities); with
# --jsonfile, --nodns none (no DNS lookup at all: the target is a loopback
# address) and no --phone-out (no CRL or OCSP fetched). --full adds what the
# verdict ignores (server defaults and certificate, headers, forward secrecy
# details, client simulations).
# Run time on the 2-core development machine (testssl.sh 3.0.8, loopback, other
# builds running, load average ~5): against shardline-proxy the selected checks
# take 35-40 s and --full 84 s; against HAProxy (TLS 1.2+1.3) 42 s and 79 s, but
# --full took 194 s beside a cargo release build, hence the selection. The scan
# is bounded at 600 s either way.
#
# The verdict reads the JSON file:
# - protocols: SSLv2, SSLv3, TLS 1.0 or TLS 1.1 offered fails;
# - cipher suites: every suite the server accepts (testssl's per-cipher
#   findings, cipher_x…) must be AEAD (AES-GCM, ChaCha20-Poly1305, AES-CCM):
#   rustls offers no other kind, so a CBC suite is a failure too, in TLS 1.2 as
#   elsewhere; and the NULL, aNULL, EXPORT, LOW, 3DES/IDEA and AVERAGE (CBC)
#   categories must be "not offered". A scan that lists no suite at all fails
#   (nothing was checked);
# - vulnerabilities (Heartbleed, CCS, Ticketbleed, ROBOT, renegotiation, CRIME,
#   BREACH, POODLE, TLS_FALLBACK_SCSV, SWEET32, FREAK, DROWN, LOGJAM, BEAST,
#   LUCKY13, RC4): each must be reported, with severity OK or INFO (WARN, a check
#   that could not run, fails too);
# - a FATAL finding (testssl.sh could not scan) fails.
# Ignored on purpose, because they are about the throwaway self-signed
# certificate or about the HTTP application behind the proxy, not the TLS
# stack: chain of trust (self-signed), certificate validity and expiry,
# revocation (no CRL/OCSP URI), OCSP stapling, Certificate Transparency, the CAA
# DNS record, HSTS absence and the other security headers, the server banner,
# the client simulations (informational), and local problems of testssl's own
# OpenSSL (engine_problem).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 2
}

target="" profile="release" proxy_exe="" checks=(-p -s -e -U)
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="${2:?--target HOST:PORT}"; shift 2 ;;
        --debug) profile="debug"; shift ;;
        --release) profile="release"; shift ;;
        --proxy-exe) proxy_exe="${2:?--proxy-exe PATH}"; shift 2 ;;
        --full) checks=(); shift ;;
        -h|--help) usage ;;
        *) echo "testssl-check: unknown argument $1" >&2; usage ;;
    esac
done

die() { echo "testssl-check: $*" >&2; exit 2; }

# testssl.sh (the Debian package installs /usr/bin/testssl).
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
if [ -z "$TESTSSL" ]; then
    echo "testssl-check: installing the Debian package testssl.sh" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends testssl.sh >/dev/null
    TESTSSL=$(command -v testssl || command -v testssl.sh || true)
    [ -n "$TESTSSL" ] || die "testssl.sh is still missing after apt-get install"
fi
command -v python3 >/dev/null || die "python3 is needed to read testssl.sh's JSON"

work=$(mktemp -d -t testssl-check.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 15 s for a TCP listener on 127.0.0.1:$1; fails if process $2 exits.
wait_listening() {
    local port=$1 pid=$2 i
    for i in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

if [ -z "$target" ]; then
    if [ -z "$proxy_exe" ]; then
        flag=()
        [ "$profile" = "release" ] && flag=(--release)
        echo "testssl-check: cargo build ${flag[*]} -p shardline-proxy" >&2
        cargo build "${flag[@]}" -q -p shardline-proxy
        proxy_exe="${CARGO_TARGET_DIR:-target}/$profile/shardline-proxy"
    fi
    [ -x "$proxy_exe" ] || die "no shardline-proxy binary at $proxy_exe"
    if ! "$proxy_exe" --help 2>/dev/null | grep -q -- '--tls-cert'; then
        die "$proxy_exe does not take --tls-cert: this shardline-proxy has no TLS termination yet (scan another TLS server with --target HOST:PORT)"
    fi

    # A certificate made now: ECDSA P-256, self-signed, 30 days.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$work/key.pem" -out "$work/cert.pem" -days 30 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null \
        || die "openssl could not make a certificate"

    # One tiny backend: python's http.server on a directory with one page.
    mkdir -p "$work/www"
    echo "testssl-check backend" >"$work/www/index.html"
    backend_port=$(free_port)
    python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$work/www" \
        >"$work/backend.log" 2>&1 &
    pids+=($!)
    wait_listening "$backend_port" "${pids[-1]}" || die "the backend did not start: $(cat "$work/backend.log")"

    port=$(free_port)
    RUST_LOG=warn "$proxy_exe" --listen "127.0.0.1:$port" --backend "127.0.0.1:$backend_port" \
        --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --shards 1 --no-pin \
        >"$work/proxy.log" 2>&1 &
    pids+=($!)
    wait_listening "$port" "${pids[-1]}" || die "shardline-proxy did not start: $(cat "$work/proxy.log")"
    target="127.0.0.1:$port"
    echo "testssl-check: shardline-proxy ($proxy_exe) on $target, backend 127.0.0.1:$backend_port" >&2
fi

echo "testssl-check: $("$TESTSSL" --version 2>/dev/null | grep -o 'testssl *[0-9][^ ]*' | tr -s ' ' | head -1) ${checks[*]:-(full scan)} against $target" >&2
start=$(date +%s)
rc=0
timeout 600 "$TESTSSL" --quiet --color 0 --warnings off --nodns none --openssl-timeout 10 \
    "${checks[@]}" --jsonfile "$work/testssl.json" "$target" >"$work/testssl.txt" 2>&1 || rc=$?
secs=$(( $(date +%s) - start ))
if [ "$rc" -eq 124 ]; then
    die "testssl.sh ran past 600 s and was stopped"
fi
if [ "$rc" -ge 240 ] || [ ! -s "$work/testssl.json" ]; then
    tail -20 "$work/testssl.txt" >&2
    die "testssl.sh failed (exit $rc) without a usable JSON report"
fi
echo "testssl-check: scan took ${secs} s" >&2
[ -z "${TESTSSL_CHECK_KEEP:-}" ] || cp "$work/testssl.json" "$TESTSSL_CHECK_KEEP"

python3 - "$work/testssl.json" <<'EOF'
import json, re, sys

findings = json.load(open(sys.argv[1]))
if isinstance(findings, dict):  # --jsonfile-pretty shape, in case
    findings = [f for s in findings.get("scanResult", []) for v in s.values()
                if isinstance(v, list) for f in v]
by_id = {}
for f in findings:
    by_id.setdefault(f.get("id", ""), []).append(f)

failures = []

def offered(finding):
    text = finding.get("finding", "").strip().lower()
    return text.startswith("offered") or (" offered" in text and "not offered" not in text)

# Protocols.
names = {"SSLv2": "SSLv2", "SSLv3": "SSLv3", "TLS1": "TLS 1.0", "TLS1_1": "TLS 1.1",
         "TLS1_2": "TLS 1.2", "TLS1_3": "TLS 1.3"}
protocols = []
for pid, name in names.items():
    fs = by_id.get(pid)
    if not fs:
        failures.append(f"testssl.sh reported nothing on {name}")
        continue
    if any(offered(f) for f in fs):
        protocols.append(name)
        if pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            failures.append(f"{name} is offered: {fs[0]['finding']}")

# Cipher suites: every one the server accepted must be AEAD.
AEAD_ENC = {"AESGCM", "CHACHA20", "AESCCM", "AESCCM8"}
suites = []
for fid, fs in by_id.items():
    if not re.match(r"^cipher[-_](tls1[-_0-9]*[-_])?x[0-9a-f]+$", fid, re.I):
        continue
    for f in fs:
        cols = f.get("finding", "").split()
        # hexcode, OpenSSL name, kx, kx bits, encryption, bits, IANA name
        if len(cols) < 7:
            failures.append(f"cannot read the cipher finding {fid}: {f.get('finding')!r}")
            continue
        name, enc, iana = cols[1], cols[4], cols[-1]
        aead = enc.upper() in AEAD_ENC or re.search(r"GCM|CHACHA20.POLY1305|CCM", iana, re.I)
        suites.append(iana)
        if not aead:
            failures.append(f"non-AEAD cipher suite offered: {iana} ({name}, {enc})")
if not suites:
    failures.append("testssl.sh listed no cipher suite (nothing was checked)")
for cat in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):
    for f in by_id.get(f"cipherlist_{cat}", []):
        if not f.get("finding", "").strip().lower().startswith("not offered"):
            failures.append(f"cipher category {cat}: {f['finding']}")
# Vulnerabilities.
VULNS = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego",
         "secure_client_renego", "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV",
         "SWEET32", "FREAK", "DROWN", "LOGJAM", "LOGJAM-common_primes", "BEAST",
         "LUCKY13", "RC4"]
optional = {"LOGJAM-common_primes"}  # only reported when DH is offered
extra = re.compile(r"^(BEAST_CBC_.*|DROWN_hint|winshock|opossum|GREASE)$")
severities = {}
for vid in VULNS + sorted(i for i in by_id if extra.match(i)):
    fs = by_id.get(vid)
    if not fs:
        if vid not in optional:
            failures.append(f"testssl.sh did not report the {vid} check")
        continue
    for f in fs:
        sev = f.get("severity", "")
        severities[sev] = severities.get(sev, 0) + 1
        if sev not in ("OK", "INFO"):
            failures.append(f"{vid}: {sev}: {f.get('finding', '')}")

for f in findings:
    if f.get("severity") == "FATAL":
        failures.append(f"testssl.sh could not scan: {f.get('id')}: {f.get('finding')}")

print(f"protocols offered: {', '.join(protocols) or 'none'}")
print(f"cipher suites ({len(suites)}): {' '.join(suites) or 'none'}")
print("vulnerabilities: " + ", ".join(
    f"{n} {sev}" for sev, n in sorted(severities.items(), key=lambda kv: kv[0] != "OK")))
if failures:
    print(f"FAIL: {len(failures)} problem(s):")
    for p in failures:
        print(f"  - {p}")
    sys.exit(1)
print("PASS: TLS 1.2+ only, AEAD suites only, no vulnerability above INFO "
      "(certificate trust, validity, revocation, OCSP, CT, CAA, HSTS and headers ignored)")
EOF
