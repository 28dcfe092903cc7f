#!/usr/bin/env bash
# System calls per keep-alive review: `strace -c -f` on the server while the
# load generator sends reviews at concurrency 1 for a few seconds (release
# build, TLS 1.3, the 6.3 KB Pod AdmissionReview by default).
#
#   bench/syscalls.sh [SECONDS] [BODY]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
body=${2:-tests/fixtures/bench/admission-v1-allowed.json}
command -v strace >/dev/null || { echo "strace is needed (apt install strace)" >&2; exit 1; }
cargo build --release --quiet --bin image-bouncer --example loadgen
work=$(mktemp -d)
server=
tracer=
cleanup() {
  [ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
target/release/image-bouncer certs --out "$work/pki" --host localhost --ip 127.0.0.1 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/image-bouncer serve --listen "127.0.0.1:$port" --cert "$work/pki/tls.crt" \
  --key "$work/pki/tls.key" 2>"$work/server.log" >/dev/null &
server=$!
sleep 0.5
strace -c -f -p "$server" -o "$work/strace.txt" &
tracer=$!
sleep 0.5
target/release/examples/loadgen --addr "127.0.0.1:$port" --ca "$work/pki/ca.crt" --path /validate \
  --body "$body" -c 1 -d "$secs" >"$work/load.json" 2>/dev/null
sleep 0.3
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
tracer=
python3 - "$work/load.json" "$work/strace.txt" <<'PY'
import json, sys
load = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
n = load["requests"]
rows = []
for line in open(sys.argv[2]):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
        calls = int(parts[3])
        rows.append((parts[-1], calls))
print(f"| reviews | {n} |\n| --- | --- |")
total = 0
for name, calls in sorted(rows, key=lambda r: -r[1]):
    per = calls / n
    if per >= 0.05:
        total += per
        print(f"| {name} per review | {per:.2f} |")
print(f"| all per review | {total:.2f} |")
PY
