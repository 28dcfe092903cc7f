#!/usr/bin/env bash
# The off-cluster guide under a real systemd. A minimal Debian (debootstrap)
# boots as a container (systemd-nspawn --boot, loopback only) and reaches
# "running"; inside it, steps 2-5 of the README's off-cluster guide run as
# the README prints them (extracted from README.md, so this fails when the
# guide drifts): the policy and its audit, the service's user, the
# certificates, the unit with `systemctl enable --now`, and /readyz with the
# apiserver's client certificate straight after it. Then: the hardening as
# systemd applied it, a restart after kill -9, a reload after a policy edit
# and after `systemctl reload`, and an ImageReview refused in enforce mode.
#
# Stand-in: `kubectl` (no cluster runs here) prints the pod of a recorded
# apiserver review, so that step 2's audit pipe reads a real object.
#
# The root file system is cached in /var/tmp between runs on one machine
# (IMAGE_BOUNCER_ROOTFS_CACHE overrides where); a fresh machine builds it
# (about a minute). Outside CI, missing tools skip the test.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "systemd: FAIL: $*" >&2; exit 1; }
for t in debootstrap systemd-nspawn nsenter curl python3; do
  if ! command -v "$t" >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && fail "$t is missing (.ci/run installs it)"
    echo "systemd: skipped: $t is not installed (Debian: debootstrap systemd-container)"
    exit 0
  fi
done
if [ "$(id -u)" != 0 ]; then
  [ "${CI:-}" = true ] && fail "needs root (systemd-nspawn)"
  echo "systemd: skipped: needs root"
  exit 0
fi

packages=systemd,systemd-sysv,dbus,curl,ca-certificates,iproute2
cache=${IMAGE_BOUNCER_ROOTFS_CACHE:-/var/tmp/image-bouncer-rootfs-bookworm-$(echo "$packages" | sha256sum | cut -c1-12)}
if [ ! -x "$cache/usr/lib/systemd/systemd" ]; then
  echo "systemd: building a minimal Debian in $cache (debootstrap)"
  rm -rf "$cache.partial"
  debootstrap --variant=minbase --include="$packages" bookworm "$cache.partial" \
    http://deb.debian.org/debian >/dev/null
  rm -rf "$cache" && mv "$cache.partial" "$cache"
fi

bin=target/debug/image-bouncer
[ -x "$bin" ] || cargo build --quiet
work=$(mktemp -d /var/tmp/image-bouncer-systemd.XXXXXX)
root=$work/rootfs
nspawn=
tuf_http=
cleanup() {
  [ -n "$tuf_http" ] && kill "$tuf_http" 2>/dev/null || true
  if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
    kill "$nspawn" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$nspawn" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cp -a --reflink=auto "$cache" "$root"
echo ib-systemd-test >"$root/etc/hostname"

# The clone as the guide's commands expect it (they run from its folder).
src=$root/root/image-bouncer
mkdir -p "$src/systemd" "$src/deploy" "$src/target/release"
cp systemd/image-bouncer.service systemd/image-bouncer.sysusers systemd/lookups.conf \
  systemd/image-bouncer-trust.service systemd/image-bouncer-trust.timer "$src/systemd/"
install -D -m 0644 tests/fixtures/cosign/keyed-p384/cosign.pub "$root/root/cosign.pub"
# The staged roll-out's key and trusted root, where the guide's commands
# (run from the clone) expect the admin's.
cp tests/fixtures/cosign/keyed-p384/cosign.pub "$src/cosign.pub"
cp tests/fixtures/sigstore/trusted-roots/public-good.json "$src/trusted_root.json"
cp deploy/policy.json "$src/deploy/"
install -m 0755 "$bin" "$src/target/release/image-bouncer"
# Step 1 builds and installs the binary; here it is built already.
install -m 0755 "$bin" "$root/usr/local/bin/image-bouncer"
python3 -c '
import json, sys
review = json.load(open("tests/fixtures/admission/pod-create-allowed.request.json"))
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [review["request"]["object"]]}))
' >"$root/root/pods.json"
printf '#!/bin/sh\n# Stands in for a cluster: the pod of a recorded apiserver review.\ncat /root/pods.json\n' \
  >"$root/usr/local/bin/kubectl"
chmod 0755 "$root/usr/local/bin/kubectl"

# Steps 2-5 of the guide, as README.md prints them.
awk '/^## Off-cluster guide/{f=1} f && /^```sh/{g=1; next} g && /^```/{exit} g{print}' README.md \
  | awk '/^# 2\./{p=1} /^# 6\./{p=0} p' >"$root/root/guide.sh"
grep -q 'systemctl daemon-reload && systemctl enable --now image-bouncer' "$root/root/guide.sh" \
  || fail "the guide's steps 2-5 were not found in README.md"
# The renewal block ("Certificates: renewal and CA rotation" in
# docs/operations.md), as printed.
awk '/^<!-- renew -->/{f=1; next} f && /^```sh/{g=1; next} g && /^```/{exit} g{print}' docs/operations.md >"$root/root/renew.sh"
grep -q 'certs --out /etc/image-bouncer/pki .*--force' "$root/root/renew.sh" \
  || fail "the renewal block was not found in docs/operations.md"
# The trusted root's updater and its timer, as README.md prints them.
awk '/^<!-- trust-update -->/{f=1; next} f && /^```sh/{g=1; next} g && /^```/{exit} g{print}' README.md >"$root/root/trust.sh"
grep -q 'systemctl enable --now image-bouncer-trust.timer' "$root/root/trust.sh" \
  || fail "the trust-update block was not found in README.md"
cp tests/fixtures/sigstore/trusted-roots/staging.json "$root/root/staging.json"
# The staged roll-out of several policies, as README.md prints it.
awk '/^<!-- policy-set -->/{f=1; next} f && /^```sh/{g=1; next} g && /^```/{exit} g{print}' README.md >"$root/root/policy-set.sh"
grep -q 'image-bouncer test /etc/image-bouncer/policy-tests.yaml' "$root/root/policy-set.sh" \
  || fail "the policy-set block was not found in README.md"

systemd-nspawn --quiet --boot --register=no --keep-unit --private-network \
  -D "$root" --machine "ib-test-$$" >"$work/console.log" 2>&1 </dev/null &
nspawn=$!
init=
for _ in $(seq 1 100); do
  init=$(cat "/proc/$nspawn/task/$nspawn/children" 2>/dev/null | awk '{print $1}') || true
  [ -n "$init" ] && break
  sleep 0.1
done
[ -n "$init" ] || fail "the container did not start: $(tail -5 "$work/console.log")"
inside() {
  nsenter -t "$init" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 bash -euo pipefail -c "$1"
}
# Runs "$@" until it succeeds, at most $1 times, 0.1 s apart.
eventually() {
  local tries=$1
  shift
  for _ in $(seq 1 "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}
# A list property of the unit, its entries sorted (systemd's order varies).
sorted_property() {
  inside "systemctl show -p $1 --value image-bouncer" | tr ' ' '\n' | LC_ALL=C sort | tr '\n' ' '
}
journal_has() { inside 'journalctl -u image-bouncer --no-pager -o cat' | grep -q "$1"; }
state=
for _ in $(seq 1 300); do
  state=$(inside 'systemctl is-system-running 2>/dev/null' || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.2
done
case "$state" in
  running) ;;
  *) fail "the container's systemd is \"$state\": $(inside 'systemctl --failed --no-legend' || true)" ;;
esac
echo "ok: a minimal Debian booted under systemd-nspawn and reached running"

out=$(inside 'cd /root/image-bouncer && bash -euo pipefail /root/guide.sh' 2>"$work/guide.err") \
  || fail "the guide's steps 2-5 failed: $(cat "$work/guide.err")"
[ "$(printf '%s\n' "$out" | tail -n 1)" = ready ] \
  || fail "step 5 did not print ready straight after enable --now: $out"
echo "ok: steps 2-5 of the guide, verbatim: the service started and /readyz answered the apiserver's certificate"

curl_in='curl -s --cacert /etc/image-bouncer/pki/ca-bundle.crt --cert /etc/image-bouncer/pki/apiserver-client.crt --key /etc/image-bouncer/pki/apiserver-client.key'
show=$(inside 'systemctl show image-bouncer -p Type,ActiveState,User,NoNewPrivileges,ProtectSystem,PrivateUsers,PrivateDevices,PrivateTmp,RestrictAddressFamilies,CapabilityBoundingSet,MemoryMax,ProtectHome')
for want in Type=notify ActiveState=active User=image-bouncer NoNewPrivileges=yes ProtectSystem=strict \
  PrivateUsers=yes PrivateDevices=yes PrivateTmp=yes ProtectHome=yes \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' CapabilityBoundingSet= MemoryMax=268435456; do
  printf '%s\n' "$show" | grep -qx -- "$want" || fail "systemctl show lacks $want: $show"
done
# Both families denied, in whichever order systemd lists them.
deny=$(sorted_property IPAddressDeny)
[ "$deny" = '0.0.0.0/0 ::/0 ' ] || fail "IPAddressDeny is \"$deny\", not any"
status=$(inside 'cat /proc/$(systemctl show -p MainPID --value image-bouncer)/status')
for want in 'NoNewPrivs:	1' 'Seccomp:	2' 'CapEff:	0000000000000000'; do
  printf '%s\n' "$status" | grep -q "^$want" || fail "the running process lacks $want"
done
# The key is the service's group's to read, nothing else of the CA's.
perms=$(inside 'stat -c "%n %a %G" /etc/image-bouncer/pki /etc/image-bouncer/pki/tls.key /etc/image-bouncer/pki/ca.key')
for want in '/etc/image-bouncer/pki 750 image-bouncer' '/etc/image-bouncer/pki/tls.key 640 image-bouncer' \
  '/etc/image-bouncer/pki/ca.key 600 root'; do
  printf '%s\n' "$perms" | grep -qx "$want" || fail "expected $want: $perms"
done
echo "ok: the hardening as systemd applied it (systemctl show, /proc status: no new privileges, seccomp, no capabilities)"

inside 'kill -9 $(systemctl show -p MainPID --value image-bouncer)'
restarted_and_ready() {
  [ "$(inside 'systemctl show -p NRestarts --value image-bouncer')" = 1 ] \
    && [ "$(inside "$curl_in https://image-bouncer.local:8443/readyz" || true)" = ready ]
}
eventually 100 restarted_and_ready || fail "no restart after kill -9"
echo "ok: restarted and ready after kill -9"

inside "sed -i 's/\"mode\": \"warn\"/\"mode\": \"enforce\"/' /etc/image-bouncer/policy.d/base.json"
eventually 100 journal_has 'policy reloaded: policy "base": mode enforce' || fail "the policy edit was not reloaded"
review='{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}],"namespace":"default"}}'
answer=$(inside "$curl_in -H 'Content-Type: application/json' -d '$review' https://image-bouncer.local:8443/image_policy")
printf '%s' "$answer" | grep -q '"allowed":false' || fail "nginx (latest) was not refused in enforce mode: $answer"
inside 'systemctl reload image-bouncer' || fail "systemctl reload failed: $(inside 'journalctl -u image-bouncer --no-pager -n 5' || true)"
# systemd 252 (bookworm) returns once the signal is sent; the server
# reloads right after it.
eventually 100 journal_has 'SIGHUP: reloading' || fail "systemctl reload did not reach the server"
[ "$(inside 'systemctl is-active image-bouncer')" = active ] || fail "not active after the reload"
echo "ok: a policy edit is reloaded by itself (enforce refuses nginx:latest), and systemctl reload works"

# The staged roll-out: a second policy in warn mode, its test table (one
# case fails while it warns), enforced, the table passes, and the server
# has reloaded the folder by itself.
out=$(inside 'cd /root/image-bouncer && bash -euo pipefail /root/policy-set.sh') \
  || fail "the policy-set block failed: $out"
printf '%s\n' "$out" | grep -q '^FAIL  unsigned in prod is refused: expected deny, got warn' \
  || fail "the warn-mode run did not report the one case that enforce would refuse: $out"
printf '%s\n' "$out" | grep -qx '3 cases: 3 passed, 0 failed' || fail "the enforced table did not pass: $out"
eventually 100 journal_has 'policy reloaded: 2 policies: "base" (mode enforce.*"signed" (mode enforce' \
  || fail "the server did not reload the folder with both policies enforced"
prod_review='{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"ghcr.io/acme/tool:1.0"}],"namespace":"prod"}}'
answer=$(inside "$curl_in -H 'Content-Type: application/json' -d '$prod_review' https://image-bouncer.local:8443/image_policy")
printf '%s' "$answer" | grep -q '"allowed":false' && printf '%s' "$answer" | grep -q 'policy \\"signed\\"' \
  || fail "an unsigned prod image was not refused by the signed policy: $answer"
echo "ok: the README's staged roll-out of a second policy (warn, tested, enforced) runs as printed"

# The lookups drop-in: a "registry" on a non-loopback address of the
# container (image-bouncer itself, plain HTTP, answering 404s). Without
# the drop-in the unit's IPAddressDeny stops the lookup (EPERM); with it
# the registry is asked and answers. systemd enforces IPAddress* with BPF
# programs on the unified (v2) cgroup hierarchy only: where the machine
# mounts cgroup v1 (as this one does), the container's systemd sets the
# properties but cannot attach them, and only the properties are checked.
inside 'ip addr add 10.9.9.9/32 dev lo && systemd-run --quiet --unit fake-registry /usr/local/bin/image-bouncer serve --insecure-http --listen 10.9.9.9:5000'
eventually 100 inside 'curl -sf http://10.9.9.9:5000/healthz >/dev/null' \
  || fail "the stand-in registry did not start"
inside 'install -m 0644 /root/cosign.pub /etc/image-bouncer/cosign.pub && cat >/etc/image-bouncer/policy.d/base.json <<POLICY
{"mode": "enforce", "registries": {"10.9.9.9:5000": {"plainHttp": true}},
 "verifyImages": [{"images": ["10.9.9.9:5000"], "keys": ["/etc/image-bouncer/cosign.pub"], "ignoreTlog": true}]}
POLICY
systemctl reload image-bouncer'
signed_review='{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"10.9.9.9:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],"namespace":"default"}}'
ask() { inside "$curl_in -H 'Content-Type: application/json' -d '$signed_review' https://image-bouncer.local:8443/image_policy"; }
allow=$(sorted_property IPAddressAllow)
[ "$allow" = '127.0.0.0/8 ::1/128 ' ] || fail "IPAddressAllow is not localhost only: $allow"
if inside 'test -e /sys/fs/cgroup/cgroup.controllers'; then
  blocked=
  for _ in $(seq 1 50); do
    answer=$(ask)
    if printf '%s' "$answer" | grep -q 'not permitted'; then blocked=yes; break; fi
    sleep 0.2
  done
  [ -n "$blocked" ] || fail "without the drop-in, a lookup was not stopped by IPAddressDeny: $answer"
  echo "ok: IPAddressDeny stops lookups under the unit as shipped"
else
  echo "note: cgroup v1 here: IPAddressDeny is set but systemd cannot enforce it (BPF needs cgroup v2); its effect is not checked"
fi
inside 'install -D -m 0644 /root/image-bouncer/systemd/lookups.conf /etc/systemd/system/image-bouncer.service.d/lookups.conf && systemctl daemon-reload && systemctl restart image-bouncer'
allow=$(sorted_property IPAddressAllow)
case " $allow " in
  *" 0.0.0.0/0 "*) ;;
  *) fail "the drop-in did not widen IPAddressAllow: $allow" ;;
esac
answer=$(ask)
printf '%s' "$answer" | grep -q '"allowed":false' || fail "an unsigned image was admitted: $answer"
if printf '%s' "$answer" | grep -q 'not permitted'; then fail "the drop-in did not open the lookup: $answer"; fi
printf '%s' "$answer" | grep -q 'no signature found' || fail "the registry was not asked: $answer"
echo "ok: with systemd/lookups.conf the unit's lookups reach a registry (IPAddressAllow=$allow)"

# Renewal, docs/operations.md's block verbatim, from the state step 7 leaves: the
# CA key in the vault (a folder here; scp stands in for the copy), and the
# apiserver's static pod manifest, which the block moves out and back.
inside 'mkdir -p /root/vault /etc/kubernetes/manifests && touch /etc/kubernetes/manifests/kube-apiserver.yaml
  cp /etc/image-bouncer/pki/ca.key /root/vault/image-bouncer-ca.key && shred -u /etc/image-bouncer/pki/ca.key
  sha256sum </etc/image-bouncer/pki/tls.crt >/root/tls-before.sum'
reloads() { inside 'journalctl -u image-bouncer --no-pager -o cat' | grep -c 'certificate reloaded' || true; }
before=$(reloads)
inside 'scp() { cp "${1/admin@vault:/\/root\/vault\/}" "${2/admin@vault:/\/root\/vault\/}"; }
  cd /root/image-bouncer && . /root/renew.sh' >"$work/renew.out" 2>&1 \
  || fail "the renewal block failed: $(tail -5 "$work/renew.out")"
grep -q 'issued from the existing CA' "$work/renew.out" || fail "the renewal made a new CA: $(cat "$work/renew.out")"
inside '! sha256sum -c --status /root/tls-before.sum </etc/image-bouncer/pki/tls.crt 2>/dev/null' \
  || fail "the renewal did not replace tls.crt"
more_reloads() { [ "$(reloads)" -gt "$before" ]; }
eventually 100 more_reloads || fail "the server did not reload the renewed certificate"
[ "$(inside "$curl_in https://image-bouncer.local:8443/readyz" || true)" = ready ] \
  || fail "not ready with the renewed certificates"
# The kubeconfig embeds the new client certificate (the apiserver takes it
# at the restart the block performs).
inside 'grep client-certificate-data: /etc/kubernetes/image-bouncer/kubeconfig.yaml | awk "{print \$2}" | base64 -d \
  | cmp -s - /etc/image-bouncer/pki/apiserver-client.crt' || fail "the kubeconfig does not embed the renewed client certificate"
inside 'test -e /etc/kubernetes/manifests/kube-apiserver.yaml && test ! -e /etc/image-bouncer/pki/ca.key' \
  || fail "after the renewal the manifest is not back or ca.key is still on the node"
perms=$(inside 'stat -c "%n %a %G" /etc/image-bouncer/pki /etc/image-bouncer/pki/tls.key')
for want in '/etc/image-bouncer/pki 750 image-bouncer' '/etc/image-bouncer/pki/tls.key 640 image-bouncer'; do
  printf '%s\n' "$perms" | grep -qx "$want" || fail "after the renewal, expected $want: $perms"
done
echo "ok: the renewal block of docs/operations.md, verbatim: new leaves from the CA brought back, reloaded, embedded for the apiserver, key gone again"

# The trusted root kept current: README's block verbatim, the updater
# pointed by a drop-in (the only change) at a TUF repository made here with
# python-tuf and served in the container's own network (the host's python
# in its network namespace). Then the repository rotates its root (1 -> 3)
# and publishes another trusted root: one run of the service fetches it,
# and the webhook, whose policy names the file, reloads by itself.
tuf=$work/tuf-repository
python3 tests/tuf/repo.py init "$tuf" tests/fixtures/sigstore/trusted-roots/public-good.json \
  || fail "python-tuf could not make the test repository (.ci/run installs it)"
cp "$tuf/1.root.json" "$root/root/tuf-root.json"
nsenter -t "$init" -n python3 -m http.server --bind 127.0.0.1 8700 --directory "$tuf" \
  >"$work/tuf-http.log" 2>&1 &
tuf_http=$!
inside 'install -m 0644 /root/tuf-root.json /etc/image-bouncer/tuf-root.json
  mkdir -p /etc/systemd/system/image-bouncer-trust.service.d
  printf "[Service]\nExecStart=\nExecStart=/usr/local/bin/image-bouncer trust update --out /etc/image-bouncer/trust/trusted_root.json --tuf-url http://127.0.0.1:8700 --tuf-root /etc/image-bouncer/tuf-root.json\n" \
    >/etc/systemd/system/image-bouncer-trust.service.d/test-repository.conf
  cat >/etc/image-bouncer/policy.d/keyless.json <<POLICY
{"verifyImages": [{"images": ["ghcr.io/keyless/*"], "trustedRoot": "/etc/image-bouncer/trusted_root.json",
  "identities": [{"issuer": "https://token.actions.githubusercontent.com", "subjectRegExp": "https://github.com/keyless/.+"}]}]}
POLICY'
served() { inside 'curl -sf -o /dev/null http://127.0.0.1:8700/1.root.json'; }
eventually 100 served || fail "the test TUF repository is not served: $(cat "$work/tuf-http.log")"
out=$(inside 'cd /root/image-bouncer && bash -euo pipefail /root/trust.sh' 2>"$work/trust.err") \
  || fail "the trust-update block failed: $(cat "$work/trust.err") $(inside 'journalctl -u image-bouncer-trust --no-pager -o cat' || true)"
printf '%s' "$out" | grep -q 'Fulcio CA        https://fulcio.sigstore.dev' || fail "trust show did not show the root: $out"
inside 'cmp /etc/image-bouncer/trusted_root.json /root/image-bouncer/trusted_root.json' \
  || fail "the first update did not write sigstore's trusted root"
[ "$(inside 'systemctl is-active image-bouncer-trust.timer')" = active ] || fail "the timer is not active"
next=$(inside 'systemctl show -p NextElapseUSecRealtime --value image-bouncer-trust.timer')
[ -n "$next" ] || fail "the timer has no next run"
policy_reloads() { inside 'journalctl -u image-bouncer --no-pager -o cat' | grep -c 'policy reloaded' || true; }
eventually 100 journal_has 'policy reloaded' || fail "the webhook did not load the new keyless policy"
before=$(policy_reloads)
python3 tests/tuf/repo.py rotate "$tuf" && python3 tests/tuf/repo.py rotate "$tuf" \
  && python3 tests/tuf/repo.py target "$tuf" tests/fixtures/sigstore/trusted-roots/staging.json \
  || fail "the test repository could not rotate"
inside 'systemctl start image-bouncer-trust.service' \
  || fail "the update after the rotation failed: $(inside 'journalctl -u image-bouncer-trust --no-pager -o cat' || true)"
inside 'cmp /etc/image-bouncer/trusted_root.json /root/staging.json' || fail "the rotated repository's trusted root was not written"
inside 'journalctl -u image-bouncer-trust --no-pager -o cat' | grep -q 'TUF root version 1 → 3' \
  || fail "the update did not follow the root rotation: $(inside 'journalctl -u image-bouncer-trust --no-pager -o cat')"
more_policy_reloads() { [ "$(policy_reloads)" -gt "$before" ]; }
eventually 100 more_policy_reloads || fail "the webhook did not reload the new trusted root"
[ "$(inside 'systemctl show -p ProtectSystem --value image-bouncer-trust')" = strict ] || fail "the updater is not ProtectSystem=strict"
echo "ok: the README's trust-update block, verbatim: timer enabled, sigstore's root written from a TUF repository, a root rotation 1 -> 3 followed, the webhook reloaded by itself"

echo "systemd: all passed"
