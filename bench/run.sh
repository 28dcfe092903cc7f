#!/usr/bin/env bash
# Per-request cost of image-bouncer over TLS, against the floor server of
# bench/floor.rs (same TLS configuration and socket handling, a fixed answer,
# nothing decoded or judged), measured in the same run. Prints Markdown.
#
#   bench/run.sh [SECONDS_PER_RUN]                  (default 4)
#   CONCURRENCY="1 8" BODIES="admission-v1-allowed" REPEATS=1 bench/run.sh 2
#   SERVER_FLAGS="--workers 4" bench/run.sh        (extra flags for image-bouncer)
#   FLOOR_FLAGS="--check-json" bench/run.sh        (a floor that also checks the
#                                                   body is JSON, bench/floor.rs)
#   IMAGE_BOUNCER=/tmp/old/image-bouncer bench/run.sh   (another build, e.g. a
#                                                   before; no allocation counts)
#
# The server (image-bouncer or the floor) runs on core 0 and the load
# generator on core 1 (`taskset`), so "server CPU per review" is the
# server's own user+system time over the answered reviews. Both servers run
# at once (only one has load at a time) and their runs alternate, one of
# image-bouncer, one of the floor, REPEATS times (default 3): each figure is
# the median of its runs, and the ratio the median of the paired runs'
# ratios, so that a VM whose speed drifts from minute to minute moves both
# sides of a ratio alike. Columns per body and concurrency:
#   req/s, p50, p99          image-bouncer, keep-alive, as the load generator saw them
#   CPU µs                   image-bouncer's CPU per review
#   floor µs                 the floor server's CPU per request, same body and concurrency
#   ratio                    median of the pairs' CPU µs / floor µs
#   user + system µs         the two CPU figures split into user and kernel time
#                            (medians of their own), which says whether a gap is
#                            work of ours or time in the kernel
#   syscalls                 system calls per review (`strace -c -f` over COUNT reviews)
#   allocs                   heap allocations per review (bench/counted.rs, COUNT reviews)
# Then: a new TLS connection per request, idle and peak RSS, threads, cold
# start and the binary size. The server logs one line per decision to a
# file, as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}
repeats=${REPEATS:-3}
count=${COUNT:-3000}
conc=${CONCURRENCY:-"1 8 64"}
bodies=${BODIES:-"imagereview-allowed imagereview-denied admission-v1-allowed admission-v1-denied admission-update-1mb"}

cargo build --release --quiet --bin image-bouncer --example loadgen --example floor --example counted
bin=${IMAGE_BOUNCER:-target/release/image-bouncer}
load=target/release/examples/loadgen
floor=target/release/examples/floor
counted=target/release/examples/counted
work=$(mktemp -d)
pid=
ib_pid=
fl_pid=
cleanup() {
  for p in "$pid" "$ib_pid" "$fl_pid"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(nproc)" -ge 2 ]; then
  on_server="taskset -c 0"
  on_client="taskset -c 1"
else
  on_server=
  on_client=
fi
have_strace=$(command -v strace >/dev/null && echo yes || echo no)

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
# Pods of one image (the recorded Pod and ImageReview without their second
# container), for the per-policy cost (bench/policies.sh).
python3 - "$work" <<'PY'
import json, sys
r = json.load(open("tests/fixtures/bench/admission-v1-allowed.json"))
del r["request"]["object"]["spec"]["containers"][1:]
json.dump(r, open(sys.argv[1] + "/admission-one-image.json", "w"))
r = json.load(open("tests/fixtures/bench/imagereview-allowed.json"))
del r["spec"]["containers"][1:]
json.dump(r, open(sys.argv[1] + "/imagereview-one-image.json", "w"))
PY

status() { awk -v k="$1:" '$1==k {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; } # user, system
hz=$(getconf CLK_TCK)

start() { # what (server|floor|counted), cert name
  local cmd
  case $1 in
    # shellcheck disable=SC2206
    server) cmd=("$bin" serve --listen 127.0.0.1:0 --max-connections 8192 ${SERVER_FLAGS:-}) ;;
    # shellcheck disable=SC2206
    counted) cmd=(env "ALLOCATIONS_FILE=$work/allocations" "$counted" serve --listen 127.0.0.1:0 --max-connections 8192 ${SERVER_FLAGS:-}) ;;
    # shellcheck disable=SC2206
    floor) cmd=("$floor" ${FLOOR_FLAGS:-}) ;;
  esac
  # shellcheck disable=SC2086
  $on_server "${cmd[@]}" --cert "$work/$2.crt" --key "$work/$2.key" >"$work/out.$1" 2>"$work/server.$1.log" &
  pid=$!
  for _ in $(seq 300); do grep -q "listening on" "$work/out.$1" 2>/dev/null && break; sleep 0.01; done
  addr=$(sed -n 's/^listening on //p' "$work/out.$1")
  [ -n "$addr" ] || { cat "$work/server.$1.log"; exit 1; }
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# One timed run: prints "rps p50 p99 cpu_us errors user_us system_us".
measure() { # body-file, path, concurrency, extra loadgen flags
  local before after out
  before=$(cpu_ticks)
  # shellcheck disable=SC2086
  out=$($on_client "$load" --addr "$addr" --ca "$work/ca.crt" --path "$2" --body "$1" -c "$3" -d "$secs" ${4:-} || true)
  after=$(cpu_ticks)
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); hz = int(sys.argv[4])
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[2:4])
us = lambda ticks: ticks / hz * 1e6 / max(r["requests"], 1)
print(r["rps"], r["p50_ms"], r["p99_ms"], us(u1 + s1 - u0 - s0), r["errors"], us(u1 - u0), us(s1 - s0))
' "$out" "$before" "$after" "$hz"
}

# REPEATS pairs of runs, image-bouncer then the floor: image-bouncer's
# median figures, field by field, the floor's median CPU, the median of
# the pairs' CPU ratios, the errors of both summed, and both servers'
# median user and system CPU. Prints
# "rps p50 p99 cpu fcpu ratio errors user sys fuser fsys".
paired() { # body-file, path, concurrency
  for _ in $(seq "$repeats"); do
    pid=$ib_pid addr=$ib_addr
    echo "$(measure "$@") $(pid=$fl_pid addr=$fl_addr measure "$@" --any-verdict)"
  done | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
m = lambda i: statistics.median(r[i] for r in rows)
ratio = statistics.median(r[3] / r[10] if r[10] > 0 else 0 for r in rows)
print(m(0), m(1), m(2), m(3), m(10), ratio, int(sum(r[4] + r[11] for r in rows)), m(5), m(6), m(12), m(13))
'
}

# System calls per review: strace -c -f over COUNT reviews.
syscalls() { # body-file, path, concurrency
  [ "$have_strace" = yes ] || { echo "-"; return; }
  strace -c -f -p "$pid" -o "$work/strace" 2>/dev/null &
  local tracer=$!
  sleep 0.5
  # shellcheck disable=SC2086
  $on_client "$load" --addr "$addr" --ca "$work/ca.crt" --path "$2" --body "$1" -c "$3" -n "$count" >/dev/null 2>&1 || true
  sleep 0.2
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  awk -v n="$count" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {calls += $4} END {printf "%.2f", calls / n}' "$work/strace"
}

# Allocations per review: the counting build over COUNT reviews.
allocations() { # body-file, path, concurrency
  [ -z "${IMAGE_BOUNCER:-}" ] || { echo "-"; return; }
  sleep 0.05
  local a b
  a=$(cat "$work/allocations")
  # shellcheck disable=SC2086
  $on_client "$load" --addr "$addr" --ca "$work/ca.crt" --path "$2" --body "$1" -c "$3" -n "$count" >/dev/null 2>&1 || true
  sleep 0.05
  b=$(cat "$work/allocations")
  awk -v a="$a" -v b="$b" -v n="$count" 'BEGIN {printf "%.1f", (b - a) / n}'
}

path_of() {
  case $1 in
    imagereview*) echo /image_policy ;;
    *) echo /validate ;;
  esac
}
file_of() {
  if [ -f "tests/fixtures/bench/$1.json" ]; then echo "tests/fixtures/bench/$1.json"; else echo "$work/$1.json"; fi
}
# Every body at every concurrency, as "body:concurrency" words, except the
# 1 MB body above c8 (that only measures the loopback copy).
cases() {
  for body in $bodies; do
    for c in $conc; do
      [ "$body" = admission-update-1mb ] && [ "$c" -gt 8 ] && continue
      echo "$body:$c"
    done
  done
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), kernel $(uname -r)"
echo "server: $("$bin" --version) (release build), default workers, ${on_server:-no pinning}; load generator ${on_client:-unpinned}"
echo "floor: bench/floor.rs ${FLOOR_FLAGS:-(no flags: reads the request, writes a fixed answer)}"
echo "$secs s per run, median of $repeats runs; syscalls and allocations over $count reviews"
echo

# Pass 1: image-bouncer and the floor, timed runs in pairs (and
# image-bouncer's idle and peak memory), then image-bouncer's system calls.
declare -A ib sc al
start server ecdsa
ib_pid=$pid ib_addr=$addr
echo "idle: RSS $(status VmRSS) kB, $(status Threads) threads"
start floor ecdsa
fl_pid=$pid fl_addr=$addr
for case in $(cases); do
  body=${case%:*} c=${case#*:}
  ib[$body,$c]=$(paired "$(file_of "$body")" "$(path_of "$body")" "$c")
done
pid=$fl_pid
stop
fl_pid=
pid=$ib_pid
echo "after the keep-alive runs: peak RSS $(status VmHWM) kB, RSS $(status VmRSS) kB, $(status Threads) threads"
addr=$ib_addr
for case in $(cases); do
  body=${case%:*} c=${case#*:}
  sc[$body,$c]=$(syscalls "$(file_of "$body")" "$(path_of "$body")" "$c")
done
stop
ib_pid=

# Pass 3: allocations, with the counting build.
start counted ecdsa
for case in $(cases); do
  body=${case%:*} c=${case#*:}
  al[$body,$c]=$(allocations "$(file_of "$body")" "$(path_of "$body")" "$c")
done
stop

echo
echo "### Keep-alive (ECDSA P-256 certificate), against the floor"
echo
echo "| body | concurrency | req/s | p50 ms | p99 ms | CPU µs/review | floor µs/request | ratio | user + system µs | floor user + system µs | syscalls/review | allocations/review | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for case in $(cases); do
  body=${case%:*} c=${case#*:}
  read -r rps p50 p99 cpu fcpu ratio errors user sys fuser fsys <<<"${ib[$body,$c]}"
  python3 -c '
import sys
body, c, rps, p50, p99, cpu, fcpu, ratio, user, sys_, fuser, fsys, sc, al, errors = sys.argv[1:]
f = lambda x: f"{float(x):.1f}"
print(f"| {body} | {c} | {float(rps):,.0f} | {float(p50):.3f} | {float(p99):.3f} | {f(cpu)} | {f(fcpu)} | {float(ratio):.2f}× "
      f"| {f(user)} + {f(sys_)} | {f(fuser)} + {f(fsys)} | {sc} | {al} | {errors} |")
' "$body" "$c" "$rps" "$p50" "$p99" "$cpu" "$fcpu" "$ratio" "$user" "$sys" "$fuser" "$fsys" "${sc[$body,$c]}" "${al[$body,$c]}" "$errors"
done

echo
echo "### A new TLS connection per request (ImageReview, allowed)"
echo
echo "| certificate | concurrency | req/s | p50 ms | p99 ms | server CPU µs/request | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for cert in ecdsa rsa; do
  start server "$cert"
  for c in 1 8; do
    read -r rps p50 p99 cpu errors _ <<<"$(measure tests/fixtures/bench/imagereview-allowed.json /image_policy "$c" --new-connection)"
    printf '| %s, full handshake | %s | %.0f | %.3f | %.3f | %.0f | %s |\n' "$cert" "$c" "$rps" "$p50" "$p99" "$cpu" "$errors"
  done
  if [ "$cert" = ecdsa ]; then
    read -r rps p50 p99 cpu errors _ <<<"$(measure tests/fixtures/bench/imagereview-allowed.json /image_policy 8 "--new-connection --resume")"
    printf '| %s, resumed session | 8 | %.0f | %.3f | %.3f | %.0f | %s |\n' "$cert" "$rps" "$p50" "$p99" "$cpu" "$errors"
  fi
  stop
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
