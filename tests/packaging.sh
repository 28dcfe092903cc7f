#!/usr/bin/env bash
# Packaging checks that need tools besides cargo: systemd-analyze for the
# unit, Nix (Debian's nix-bin, offline) for the flake. A missing tool skips
# its checks with a note, except under CI=true, where it is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
passed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${CI:-}" = true ]; then echo "error: $1 is not installed" >&2; exit 1; fi
  echo "skip: $1 is not installed"
  return 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if have systemd-analyze; then
  # verify needs the ExecStart binary to exist: point it at the one built here.
  cargo build --quiet --bin image-bouncer
  sed "s|/usr/local/bin/image-bouncer|$PWD/target/debug/image-bouncer|" \
    systemd/image-bouncer.service >"$tmp/image-bouncer.service"
  out=$(systemd-analyze verify "$tmp/image-bouncer.service" 2>&1)
  if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
  pass "systemd-analyze verify systemd/image-bouncer.service"
  score=$(systemd-analyze security --offline=true "$tmp/image-bouncer.service" | tail -n 1)
  echo "$score"
  case "$score" in
    *" OK "* | *" SAFE "*) pass "systemd-analyze security: exposure OK or better" ;;
    *) echo "error: exposure is higher than OK" >&2; exit 1 ;;
  esac
  # With the lookups drop-in (outbound HTTPS for verifyImages/mutateDigest).
  mkdir -p "$tmp/image-bouncer.service.d"
  cp systemd/lookups.conf "$tmp/image-bouncer.service.d/"
  out=$(systemd-analyze verify "$tmp/image-bouncer.service" 2>&1)
  if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
  score=$(systemd-analyze security --offline=true "$tmp/image-bouncer.service" | tail -n 1)
  echo "with systemd/lookups.conf: $score"
  case "$score" in
    *" OK "* | *" SAFE "*) pass "systemd-analyze verify and security with the lookups drop-in: exposure OK or better" ;;
    *) echo "error: with the lookups drop-in, exposure is higher than OK" >&2; exit 1 ;;
  esac
  rm -r "$tmp/image-bouncer.service.d"
  # The trusted root's updater and its timer.
  sed "s|/usr/local/bin/image-bouncer|$PWD/target/debug/image-bouncer|" \
    systemd/image-bouncer-trust.service >"$tmp/image-bouncer-trust.service"
  cp systemd/image-bouncer-trust.timer "$tmp/"
  out=$(systemd-analyze verify "$tmp/image-bouncer-trust.service" "$tmp/image-bouncer-trust.timer" 2>&1)
  if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
  score=$(systemd-analyze security --offline=true "$tmp/image-bouncer-trust.service" | tail -n 1)
  echo "image-bouncer-trust.service: $score"
  case "$score" in
    *" OK "* | *" SAFE "*) pass "systemd-analyze verify image-bouncer-trust.service and .timer, security: exposure OK or better" ;;
    *) echo "error: image-bouncer-trust.service's exposure is higher than OK" >&2; exit 1 ;;
  esac
fi

if have nix; then
  export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters ='
  for f in flake.nix nix/*.nix tests/nix-stub/flake.nix; do
    nix-instantiate --parse "$f" >/dev/null
  done
  pass "nix-instantiate --parse: every .nix file"
  # Every input is locked (a missing one would send Nix to the network).
  nix flake metadata --no-update-lock-file . >/dev/null
  pass "nix flake metadata --no-update-lock-file: flake.lock covers every input"
  grep -q '"rev": "d7a713c0b7e47c908258e71cba7a2d77cc8d71d5"' flake.lock
  pass "flake.lock pins the nixos-25.11 revision"
  stub=(--no-write-lock-file --override-input nixpkgs path:./tests/nix-stub)
  nix flake show "${stub[@]}" 2>/dev/null | sed "s/\x1b\[[0-9;]*m//g" | tee "$tmp/show"
  for attr in "default: package" "static: package" "image: package" "image-aarch64: package" \
    "static-aarch64: package" "image-bouncer-aarch64: package" "tests: derivation" "nixos: derivation" \
    "clippy: derivation" "fmt: derivation" "default: app" "NixOS module"; do
    grep -q "$attr" "$tmp/show" || { echo "error: flake show lacks $attr" >&2; exit 1; }
  done
  pass "nix flake show: packages (cached and static), images, apps, checks (tests, lints, every package, a NixOS system) and the module for both systems"
  nix flake check --no-build "${stub[@]}" 2>&1 | grep -v '^warning: ' || true
  nix flake check --no-build "${stub[@]}" >/dev/null 2>&1
  pass "nix flake check --no-build against the stand-in nixpkgs"
fi
if have promtool; then
  promtool check rules deploy/monitoring/rules.yaml >/dev/null
  pass "promtool check rules deploy/monitoring/rules.yaml"
  (cd deploy/monitoring && promtool test rules rules.test.yaml >/dev/null)
  pass "promtool test rules deploy/monitoring/rules.test.yaml"
  promtool check config deploy/monitoring/scrape.yaml >/dev/null
  pass "promtool check config deploy/monitoring/scrape.yaml"
fi
echo "packaging: $passed passed, 0 failed"
