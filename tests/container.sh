#!/usr/bin/env bash
# The image under a real container runtime: Debian's containerd and runc,
# started here with their own root, state and socket in a temporary folder.
#
# - a fully static binary: glibc's static-pie (`-C target-feature=+crt-static`)
#   stands in for the musl build of the Nix image (the musl target cannot be
#   installed on these machines);
# - an OCI image built with umoci from nix/image-config.json, the file
#   nix/image.nix reads too (user, ports, labels), so the two cannot drift;
#   the Containerfile (for docker, podman or buildah) is checked to say the
#   same;
# - run as deploy/deployment.yaml runs it: read-only root, the image's user
#   65534, all capabilities dropped, the default seccomp profile, the
#   certificates and the policy mounted read-only;
# - checked: /healthz, a review over TLS, JSON log lines, a policy change in
#   the mounted folder (the ConfigMap `..data` symlink swap) picked up by
#   reload, `serve --self-signed` refusing clearly on a read-only root, and
#   SIGTERM as PID 1 draining and exiting 0.
#
# Skips (exit 0, saying why) only where containerd cannot run at all; in CI
# (CI=true) a missing tool is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  if [ -n "${CI:-}" ]; then
    echo "error: $*" >&2
    exit 1
  fi
  echo "container: skip: $*"
  exit 0
}
for t in containerd ctr runc umoci curl python3; do
  command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
done
[ "$(id -u)" = 0 ] || skip "containerd needs root"

pass() { echo "ok: $*"; passed=$((passed + 1)); }
passed=0
tmp=$(mktemp -d /tmp/ib-container.XXXXXX)
containerd_pid=
run_pid=
cleanup() {
  [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
  if [ -n "$containerd_pid" ]; then
    ctr -a "$tmp/c.sock" -n ibtest task kill -s SIGKILL ib >/dev/null 2>&1 || true
    kill "$containerd_pid" 2>/dev/null || true
    wait "$containerd_pid" 2>/dev/null || true
  fi
  # Snapshots may hold mounts: undo them before removing the folder.
  grep " $tmp" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# 1. A fully static binary.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
  --target x86_64-unknown-linux-gnu --target-dir target/static --bin image-bouncer
bin=target/static/x86_64-unknown-linux-gnu/release/image-bouncer
if ldd "$bin" 2>&1 | grep -q "=>"; then
  echo "error: $bin is dynamically linked" >&2
  exit 1
fi
pass "static binary (glibc static-pie): $(du -h "$bin" | cut -f1)"

# 2. The OCI image, configured from nix/image-config.json.
umoci init --layout "$tmp/oci" >/dev/null
umoci new --image "$tmp/oci:test" >/dev/null
mkdir -p "$tmp/layer"
cp "$bin" "$tmp/layer/image-bouncer"
umoci insert --image "$tmp/oci:test" "$tmp/layer/image-bouncer" /image-bouncer >/dev/null
mapfile -t config_args < <(python3 - nix/image-config.json <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
print("--config.entrypoint=/image-bouncer")
print(f"--config.user={c['User']}")
for p in c["ExposedPorts"]:
    print(f"--config.exposedports={p}")
for k, v in c["Labels"].items():
    print(f"--config.label={k}={v}")
EOF
)
umoci config --image "$tmp/oci:test" "${config_args[@]}" >/dev/null
tar -C "$tmp/oci" -cf "$tmp/image.tar" .
pass "OCI image from nix/image-config.json (${#config_args[@]} settings)"
# The Containerfile (docker/podman/buildah without Nix) builds the same
# image: the same settings, as its instructions write them.
python3 - nix/image-config.json Containerfile <<'EOF'
import json, shlex, sys
c = json.load(open(sys.argv[1]))
want = {("ENTRYPOINT", '["/image-bouncer"]'), ("USER", c["User"]), ("FROM", "scratch")}
want |= {("EXPOSE", p) for p in c["ExposedPorts"]}
want |= {("LABEL", f'{k}={json.dumps(v)}') for k, v in c["Labels"].items()}
got = set()
for line in open(sys.argv[2]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    op, _, rest = line.partition(" ")
    got.add((op, rest.strip()))
missing = want - got
extra = {(op, rest) for op, rest in got - want if op not in ("ARG", "COPY")}
copies = [rest for op, rest in got if op == "COPY"]
if missing or extra or copies != ["${BIN} /image-bouncer"]:
    sys.exit(f"Containerfile disagrees with {sys.argv[1]}: missing {sorted(missing)}, extra {sorted(extra)}, COPY {copies}")
EOF
pass "Containerfile agrees with nix/image-config.json (FROM scratch, user, port, labels, entrypoint)"

# 3. containerd, our own.
cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/c.sock"
EOF
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
containerd_pid=$!
ctr=(ctr -a "$tmp/c.sock" -n ibtest)
for _ in $(seq 50); do
  "${ctr[@]}" version >/dev/null 2>&1 && break
  sleep 0.1
done
"${ctr[@]}" version >/dev/null 2>&1 || skip "containerd does not start here: $(tail -3 "$tmp/containerd.log")"
"${ctr[@]}" images import --base-name localhost/image-bouncer "$tmp/image.tar" >/dev/null
image=$("${ctr[@]}" images ls -q | grep '^localhost/image-bouncer' | head -1)
[ -n "$image" ] || { echo "error: the image was not imported" >&2; exit 1; }
pass "containerd $(containerd --version | awk '{print $3}') imported $image"

# 4. Certificates and the policy, as the Secret and ConfigMap volumes hold
# them: readable by the pod's user, the policy behind a `..data` symlink.
"$bin" certs --out "$tmp/pki" --host localhost --ip 127.0.0.1 >/dev/null
chmod 0755 "$tmp/pki"
chmod 0644 "$tmp/pki"/*
mkdir -p "$tmp/policy/..2026_01"
echo '{"mode": "enforce"}' >"$tmp/policy/..2026_01/policy.json"
ln -s ..2026_01 "$tmp/policy/..data"
ln -s ..data/policy.json "$tmp/policy/policy.json"
chmod -R a+rX "$tmp/policy"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# 5. Run it as the Deployment does.
run_flags=(--read-only --seccomp --net-host
  --mount "type=bind,src=$tmp/pki,dst=/pki,options=rbind:ro"
  --mount "type=bind,src=$tmp/policy,dst=/policy,options=rbind:ro")
# Every capability of the default set dropped (ctr takes no ALL).
for c in CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP \
  NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE; do
  run_flags+=(--cap-drop "CAP_$c")
done
"${ctr[@]}" run --rm "${run_flags[@]}" "$image" ib \
  /image-bouncer serve --listen "127.0.0.1:$port" --cert /pki/tls.crt --key /pki/tls.key \
  --policy /policy/policy.json --log-format json >"$tmp/out.log" 2>&1 &
run_pid=$!
curl_tls=(curl -sS --max-time 5 --cacert "$tmp/pki/ca.crt")
for _ in $(seq 100); do
  "${curl_tls[@]}" "https://localhost:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
[ "$("${curl_tls[@]}" "https://localhost:$port/healthz")" = ok ] || {
  echo "error: /healthz did not answer" >&2
  cat "$tmp/out.log" >&2
  exit 1
}
pass "/healthz over TLS from the container"
pid=$("${ctr[@]}" task ls | awk '$1 == "ib" {print $2}')
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")$(awk '/^CapBnd:/ {print $2}' "/proc/$pid/status")
seccomp=$(awk '/^Seccomp:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 65534 ] && [ "$caps" = 00000000000000000000000000000000 ] && [ "$seccomp" = 2 ] || {
  echo "error: uid $uid, capabilities $caps, seccomp mode $seccomp" >&2
  exit 1
}
pass "PID 1 runs as the image's user 65534, no capabilities (effective and bounding), seccomp filter on"

review() {
  python3 - "$1" <<'EOF'
import json, sys
v = json.load(open("tests/fixtures/admission/pod-create-allowed.request.json"))
v["request"]["object"]["spec"]["containers"][0]["image"] = sys.argv[1]
print(json.dumps(v))
EOF
}
allowed() {
  review "$1" | "${curl_tls[@]}" -H 'Content-Type: application/json' --data-binary @- \
    "https://localhost:$port/validate" | python3 -c 'import json,sys; print(json.load(sys.stdin)["response"]["allowed"])'
}
[ "$(allowed docker.io/library/nginx:1.27)" = True ] || { echo "error: review not allowed" >&2; exit 1; }
pass "a review over TLS"

# The ConfigMap update: a new folder, the ..data symlink swapped.
mkdir -p "$tmp/policy/..2026_02"
echo '{"mode": "enforce", "deniedRegistries": ["docker.io"]}' >"$tmp/policy/..2026_02/policy.json"
chmod -R a+rX "$tmp/policy/..2026_02"
ln -s ..2026_02 "$tmp/policy/..data_tmp"
mv -T "$tmp/policy/..data_tmp" "$tmp/policy/..data"
for _ in $(seq 100); do
  [ "$(allowed docker.io/library/nginx:1.27)" = False ] && break
  sleep 0.1
done
[ "$(allowed docker.io/library/nginx:1.27)" = False ] || { echo "error: the new policy was not picked up" >&2; exit 1; }
pass "a policy change in the mounted folder (..data swap) picked up by reload"

python3 - "$tmp/out.log" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines, "no log lines"
for l in lines:
    v = json.loads(l)
    assert "level" in v and "msg" in v, l
assert any(json.loads(l).get("verdict") for l in lines), "no decision line"
EOF
pass "log lines are JSON ($(wc -l <"$tmp/out.log") lines, decisions in their own keys)"

# --self-signed has no writable folder on a read-only root: a clear refusal.
if "${ctr[@]}" run --rm "${run_flags[@]}" "$image" ib-self-signed \
  /image-bouncer serve --self-signed --listen 127.0.0.1:0 >"$tmp/self.log" 2>&1; then
  echo "error: --self-signed started on a read-only root" >&2
  exit 1
fi
grep -q "TMPDIR" "$tmp/self.log" || { echo "error: unclear refusal:" >&2; cat "$tmp/self.log" >&2; exit 1; }
pass "serve --self-signed on a read-only root refuses, naming TMPDIR"

# SIGTERM to PID 1: drains and exits 0.
"${ctr[@]}" task kill -s SIGTERM ib
status=0
wait "$run_pid" || status=$?
run_pid=
[ "$status" = 0 ] || { echo "error: exit status $status after SIGTERM" >&2; tail -5 "$tmp/out.log" >&2; exit 1; }
pass "SIGTERM as PID 1: drained, exit status 0"
echo "container: $passed passed, 0 failed"
