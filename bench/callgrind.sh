#!/usr/bin/env bash
# Instructions per request, image-bouncer and the floor server, counted by
# valgrind's callgrind: unlike CPU time on a shared VM, the same build gives
# the same count run after run (within 0.1 %), so two builds can be compared
# by a few thousand instructions. User-space only: the kernel's part (the
# system calls) is not counted.
#
#   bench/callgrind.sh [REQUESTS]                    (default 1000)
#   IMAGE_BOUNCER=/tmp/old/image-bouncer bench/callgrind.sh
#   KEEP=/tmp/cg bench/callgrind.sh    (keeps each 2N-request profile there,
#                                       for callgrind_annotate)
#
# Per body: one keep-alive client, 200 requests to warm up; then the count
# of REQUESTS requests and that of 2 x REQUESTS, each on a new connection:
# their difference is REQUESTS requests without the handshake.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind" >&2; exit 1; }
cargo build --release --quiet --bin image-bouncer --example loadgen --example floor
bin=${IMAGE_BOUNCER:-target/release/image-bouncer}
load=target/release/examples/loadgen
floor=target/release/examples/floor
work=$(mktemp -d)
vg=
trap '[ -n "$vg" ] && kill "$vg" 2>/dev/null; rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/ca.key" -out "$work/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/tls.key" \
  -out "$work/tls.csr" -subj /CN=localhost 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/tls.crt" -days 2 -extfile "$work/ext" 2>/dev/null

count() { # label, body, path, command...
  local label=$1 body=$2 path=$3
  shift 3
  rm -f "$work"/cg.* "$work/out"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$@" \
    --cert "$work/tls.crt" --key "$work/tls.key" >"$work/out" 2>"$work/valgrind.log" &
  vg=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.05; done
  local addr
  addr=$(sed -n 's/^listening on //p' "$work/out")
  [ -n "$addr" ] || { cat "$work/valgrind.log" >&2; exit 1; }
  "$load" --addr "$addr" --ca "$work/ca.crt" --path "$path" --body "$body" -c 1 -n 200 >/dev/null
  # Each load run opens a connection (a TLS handshake, about 1.5k
  # instructions a request over 1,000): counted over N and over 2N
  # requests, the difference is N requests with no connection cost in it.
  local runs=0
  for requests in "$n" $((2 * n)); do
    callgrind_control -z "$vg" >/dev/null 2>&1
    "$load" --addr "$addr" --ca "$work/ca.crt" --path "$path" --body "$body" -c 1 -n "$requests" >/dev/null
    callgrind_control -d "$vg" >/dev/null 2>&1
    runs=$((runs + 1))
    for _ in $(seq 100); do [ -s "$work"/cg.*."$runs" ] && break; sleep 0.05; done
  done
  kill "$vg"
  wait "$vg" 2>/dev/null || true
  vg=
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cat "$work"/cg.*.2 >"$KEEP/$label.callgrind"
  fi
  local once twice
  once=$(awk '/^summary:/ {s += $2} END {print s}' "$work"/cg.*.1)
  twice=$(awk '/^summary:/ {s += $2} END {print s}' "$work"/cg.*.2)
  awk -v a="$once" -v b="$twice" -v n="$n" 'BEGIN {printf "%.1fk", (b - a) / n / 1000}'
}

echo "instructions per request (callgrind, keep-alive at c1: $((2 * n)) requests less $n, user space only)"
echo
echo "| body | image-bouncer | floor | ratio |"
echo "| --- | ---: | ---: | ---: |"
for spec in imagereview-allowed:/image_policy admission-v1-allowed:/validate; do
  name=${spec%%:*}
  body=tests/fixtures/bench/$name.json
  ib=$(count "$name.image-bouncer" "$body" "${spec#*:}" "$bin" serve --listen 127.0.0.1:0)
  fl=$(count "$name.floor" "$body" "${spec#*:}" "$floor")
  echo "| $name | $ib | $fl | $(awk -v a="${ib%k}" -v b="${fl%k}" 'BEGIN {printf "%.2f×", a / b}') |"
done
