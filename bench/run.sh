#!/usr/bin/env bash
# Performance of image-bouncer over TLS, with the load generator on the same
# machine. Prints Markdown tables.
#
#   bench/run.sh [SECONDS_PER_RUN]                  (default 5)
#   CONCURRENCY="1 8" BODIES="admission-v1-allowed" bench/run.sh 3
#
# Keep-alive runs: every body at every concurrency. Handshake runs: a new TLS
# connection per request, with an ECDSA P-256 and an RSA-2048 certificate.
# Then idle and peak RSS, threads, cold start and the binary size. Bodies:
# tests/fixtures/bench/*.json and a ~1 MB UPDATE review made here (a name
# with "denied" must be denied; the load generator checks every answer).
# The server logs one line per decision to a file, as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conc=${CONCURRENCY:-"1 8 64 256"}
bodies=${BODIES:-"imagereview-allowed imagereview-denied admission-v1-allowed admission-v1-denied admission-update-1mb"}

cargo build --release --quiet --bin image-bouncer --example loadgen
bin=target/release/image-bouncer
load=target/release/examples/loadgen
work=$(mktemp -d)
pid=
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A CA and two leaves for localhost (rustls refuses a CA certificate as leaf).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext"
leaf() { # name, key options
  # shellcheck disable=SC2086
  openssl req -newkey $2 -nodes -keyout "$work/$1.key" -out "$work/$1.csr" -subj /CN=localhost 2>/dev/null
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/$1.crt" -days 2 -extfile "$work/ext" 2>/dev/null
}
leaf ecdsa "ec -pkeyopt ec_paramgen_curve:prime256v1"
leaf rsa "rsa:2048"

# A large UPDATE review: a Pod with ~500 KB of annotations, in object and oldObject.
python3 - "$work/admission-update-1mb.json" <<'PY'
import json, sys
r = json.load(open("tests/fixtures/bench/admission-v1-allowed.json"))
req = r["request"]
req["operation"] = "UPDATE"
req["object"]["metadata"].setdefault("annotations", {})["example.com/blob"] = "x" * 500_000
req["oldObject"] = json.loads(json.dumps(req["object"]))
req["oldObject"]["spec"]["containers"][0]["image"] = "nginx:1.25.2"
json.dump(r, open(sys.argv[1], "w"))
PY

status() { awk -v k="$1:" '$1==k {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

start_server() { # cert name
  "$bin" serve --cert "$work/$1.crt" --key "$work/$1.key" --listen 127.0.0.1:0 --max-connections 8192 \
    >"$work/out" 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.01; done
  addr=$(sed -n 's/^listening on //p' "$work/out")
  [ -n "$addr" ] || { cat "$work/server.log"; exit 1; }
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# Peak threads during a run, sampled every 100 ms.
sample_threads() {
  while :; do status Threads >>"$work/threads"; sleep 0.1; done
}

run() { # body-file, path, concurrency, extra loadgen flags
  : >"$work/threads"
  sample_threads &
  sampler=$!
  local before after out
  before=$(cpu_ticks)
  # shellcheck disable=SC2086
  out=$("$load" --addr "$addr" --ca "$work/ca.crt" --path "$2" --body "$1" -c "$3" -d "$secs" ${4:-} || true)
  after=$(cpu_ticks)
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
  python3 - "$(basename "$1" .json)" "$3" "$out" "$before" "$after" "$hz" "$(sort -n "$work/threads" | tail -1)" <<'PY'
import json, sys
body, c, out, before, after, hz, threads = sys.argv[1:]
r = json.loads(out)
cpu_us = (int(after) - int(before)) / int(hz) * 1e6 / max(r["requests"], 1)
print(f"| {body} | {c} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.2f} | {cpu_us:.0f} | {threads} | {r['errors']} |")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), kernel $(uname -r); load generator on the same machine"
echo "server: $("$bin" --version) (release build), default workers; $secs s per run"
echo
start_server ecdsa
echo "idle: RSS $(status VmRSS) kB, $(status Threads) threads"
echo
echo "### Keep-alive (ECDSA P-256 certificate)"
echo
echo "| body | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | server threads | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for body in $bodies; do
  case $body in
    imagereview*) path=/image_policy ;;
    *) path=/validate ;;
  esac
  file=tests/fixtures/bench/$body.json
  [ -f "$file" ] || file=$work/$body.json
  for c in $conc; do
    # The 1 MB body at high concurrency only measures the loopback copy.
    if [ "$body" = admission-update-1mb ] && [ "$c" -gt 64 ]; then continue; fi
    run "$file" "$path" "$c"
  done
done
echo
echo "after the keep-alive runs: peak RSS $(status VmHWM) kB, RSS $(status VmRSS) kB, $(status Threads) threads"
stop_server

echo
echo "### A new TLS connection per request (ImageReview, allowed)"
echo
echo "| certificate | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/req | server threads | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for cert in ecdsa rsa; do
  start_server "$cert"
  for c in 1 8; do
    run tests/fixtures/bench/imagereview-allowed.json /image_policy "$c" --new-connection | sed "s/^| imagereview-allowed /| $cert, full handshake /"
  done
  if [ "$cert" = ecdsa ]; then
    run tests/fixtures/bench/imagereview-allowed.json /image_policy 8 "--new-connection --resume" | sed "s/^| imagereview-allowed /| $cert, resumed session /"
  fi
  stop_server
done

echo
# Cold start: from exec to the first answered /healthz, over TLS.
python3 - "$bin" "$work" <<'PY'
import os, socket, ssl, subprocess, sys, time
binary, work = sys.argv[1:]
ctx = ssl.create_default_context(cafile=f"{work}/ca.crt")
times = []
for port in range(18900, 18910):
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve", "--cert", f"{work}/ecdsa.crt", "--key", f"{work}/ecdsa.key",
                          "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    t.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if t.recv(64).startswith(b"HTTP/1.1 200"):
                        break
        except OSError:
            time.sleep(0.0005)
    times.append((time.perf_counter() - t0) * 1000)
    p.terminate(); p.wait()
times.sort()
print(f"cold start to the first answered request: median {times[len(times)//2]:.1f} ms, max {times[-1]:.1f} ms (10 starts)")
PY
echo "release binary: $(stat -c %s "$bin") bytes ($(awk -v b="$(stat -c %s "$bin")" 'BEGIN {printf "%.2f MB", b/1048576}'))"
