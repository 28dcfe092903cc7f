#!/usr/bin/env bash
# What registry lookups cost, against the real distribution registry
# (Debian's docker-registry, with htpasswd from apache2-utils): a cached
# lookup, a cold lookup's round trips, 100 concurrent lookups of one new
# tag, a 1,000-pod rollout through /mutate. Prints a Markdown table.
#
#   bench/registry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin image-bouncer --example registry
target/release/examples/registry --bin target/release/image-bouncer
