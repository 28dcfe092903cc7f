#!/usr/bin/env bash
# The soak run against the release build: 10 minutes by default, the
# certificate rotated every 30 s, the policy reloaded every 20 s (once
# broken), SIGTERM at the end. `bench/soak.sh --seconds 60` for less.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin image-bouncer --example soak
target/release/examples/soak --bin target/release/image-bouncer "$@"
