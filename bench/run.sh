#!/usr/bin/env bash
# Throughput and latency of image-bouncer over TLS keep-alive, with the load
# generator on the same machine. Prints a Markdown table.
#
#   bench/run.sh [SECONDS_PER_RUN]          (default 5)
#   CONCURRENCY="1 8 64" BODIES="imagereview-allowed admission-v1-allowed" bench/run.sh 3
#
# Bodies are tests/fixtures/bench/*.json (a name with "denied" must be
# denied; the load generator checks every answer). The server logs one line
# per decision, as in production, to a file.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conc=${CONCURRENCY:-"1 8 64"}
bodies=${BODIES:-"imagereview-allowed imagereview-denied admission-v1-allowed admission-v1-denied"}
extra_args=${SERVER_ARGS:-}

cargo build --release --quiet --bin image-bouncer --example loadgen
bin=target/release/image-bouncer
load=target/release/examples/loadgen
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A CA and a leaf for localhost (rustls refuses a CA certificate as leaf).
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
# shellcheck disable=SC2086
openssl req -x509 $ec -keyout "$work/ca.key" -out "$work/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
# shellcheck disable=SC2086
openssl req $ec -keyout "$work/key.pem" -out "$work/csr.pem" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext"
openssl x509 -req -in "$work/csr.pem" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/cert.pem" -days 2 -extfile "$work/ext" 2>/dev/null

# shellcheck disable=SC2086
"$bin" serve --cert "$work/cert.pem" --key "$work/key.pem" --listen 127.0.0.1:0 $extra_args \
  >"$work/out" 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$addr" ] || { cat "$work/server.log"; exit 1; }

status() { awk -v k="$1:" '$1==k {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load generator on the same machine"
echo "server: $("$bin" --version), workers: default; idle RSS $(status VmRSS) kB, threads $(status Threads)"
echo
echo "| body | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for body in $bodies; do
  case $body in
    imagereview*) path=/image_policy ;;
    *) path=/validate ;;
  esac
  for c in $conc; do
    before=$(cpu_ticks)
    out=$("$load" --addr "$addr" --ca "$work/ca.crt" --path "$path" \
      --body "tests/fixtures/bench/$body.json" -c "$c" -d "$secs" || true)
    after=$(cpu_ticks)
    python3 - "$body" "$c" "$out" "$before" "$after" "$hz" <<'PY'
import json, sys
body, c, out, before, after, hz = sys.argv[1:]
r = json.loads(out)
cpu_us = (int(after) - int(before)) / int(hz) * 1e6 / max(r["requests"], 1)
print(f"| {body} | {c} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.2f} | {cpu_us:.0f} | {r['errors']} |")
PY
  done
done
echo
echo "server after the runs: peak RSS $(status VmHWM) kB, RSS $(status VmRSS) kB, threads $(status Threads)"
