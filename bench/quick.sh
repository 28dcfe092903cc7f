#!/usr/bin/env bash
# The quick versions of the fault suite and the soak run, as CI runs them:
# the debug build (what `cargo test` just built), fewer connections, 30 s of
# soak. The full versions: bench/faults.sh and bench/soak.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin image-bouncer --example faults --example soak
target/debug/examples/faults --bin target/debug/image-bouncer --idle 300 --slowloris 50
target/debug/examples/soak --bin target/debug/image-bouncer --seconds 30 --rotate-every 5 --reload-every 4
