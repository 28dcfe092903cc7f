#!/usr/bin/env bash
# The full fault suite against the release build: 1,000 idle connections,
# 200 slowloris connections, and the rest (see bench/faults.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin image-bouncer --example faults
# Each connection costs the server two descriptors; make room for 1,000+.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
target/release/examples/faults --bin target/release/image-bouncer "$@"
