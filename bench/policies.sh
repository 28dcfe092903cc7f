#!/usr/bin/env bash
# The per-review cost of a policy set: ten policies of ten rules each (all
# applying, all enforcing, all admitting the image) against one policy of
# the same ten rules, for a pod of one image, with bench/run.sh (paired
# with the floor that checks the body is JSON). Prints both runs' tables.
#
#   bench/policies.sh [SECONDS_PER_RUN]        (default 3; REPEATS, CONCURRENCY as run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/one" "$work/ten"
# Ten rules: four allowed registries, two denied, two exempt images, two
# exempt namespaces (and denyLatest, the default).
policy() {
  printf '{"allowedRegistries": ["docker.io/library", "docker.io/fluent", "ghcr.io/acme", "quay.io/team%s"],
  "deniedRegistries": ["ghcr.io/acme/experimental", "evil%s.example.com"],
  "exemptImages": ["registry.k8s.io/pause:3.10", "ghcr.io/acme/tools%s"],
  "exemptNamespaces": ["kube-system", "sandbox-%s"], "mode": "enforce"}\n' "$1" "$1" "$1" "$1"
}
policy 0 >"$work/one/base.json"
for i in $(seq 0 9); do policy "$i" >"$work/ten/p$i.json"; done
export FLOOR_FLAGS="--check-json" BODIES="admission-one-image imagereview-one-image"
export CONCURRENCY=${CONCURRENCY:-"1 8"} REPEATS=${REPEATS:-5} COUNT=${COUNT:-2000}
echo "## one policy of ten rules"
SERVER_FLAGS="--policy $work/one" bash bench/run.sh "$secs"
echo
echo "## ten policies of ten rules each"
SERVER_FLAGS="--policy $work/ten" bash bench/run.sh "$secs"
