#!/usr/bin/env bash
# Renewal and CA rotation through a real kube-apiserver (ImagePolicyWebhook)
# while pods are created without pause: counts every pod the apiserver
# refused. Not part of CI (a kube-apiserver takes ~15 minutes to build);
# run by hand on a development machine, as root:
#
#   KUBE_APISERVER=/path/to/kube-apiserver bash tests/apiserver/run.sh [scenario...]
#
# Scenarios:
#   files  the kubeconfig names the client certificate's files (as `config
#          apiserver` wrote it before 2026-12-07); `certs --force` alone:
#          shows what refused pods (expect refusals)
#   guide  the renewal and rotation blocks of docs/operations.md, run as printed
#          (expect none)
# Needs etcd (Debian's etcd-server), openssl, curl, python3, util-linux's
# unshare and a release build of image-bouncer (BIN to use another).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KUBE_APISERVER:?set KUBE_APISERVER to a kube-apiserver 1.32 binary}"
BIN=${BIN:-$PWD/target/release/image-bouncer}
LOAD_THREADS=${LOAD_THREADS:-4}
if [ $# -eq 0 ]; then set -- files guide; fi

# The guide's paths (/etc/image-bouncer, /etc/kubernetes, /etc/hosts,
# /etc/group) are private to this script (a mount namespace, tmpfs and
# bind mounts), so its commands run as printed without touching the
# machine's own.
if [ -z "${IN_NAMESPACE:-}" ]; then
    export IN_NAMESPACE=1 KUBE_APISERVER BIN LOAD_THREADS
    exec unshare --mount --propagation private -- bash "$0" "$@"
fi
work=$(mktemp -d /tmp/apiserver-e2e.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
say() { printf '== %s\n' "$*"; }

for d in /etc/kubernetes /etc/image-bouncer; do mkdir -p "$d" && mount -t tmpfs tmpfs "$d"; done
mkdir -p /etc/kubernetes/manifests
cp /etc/hosts "$work/hosts" && echo '127.0.0.1 image-bouncer.local' >>"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
cp /etc/group "$work/group"
grep -q '^image-bouncer:' "$work/group" || echo 'image-bouncer:x:990:' >>"$work/group"
mount --bind "$work/group" /etc/group
vault="$work/vault"
mkdir -p "$vault"
# `scp` to and from the admin's vault host: a folder here.
scp() { cp "${1/admin@vault:/$vault/}" "${2/admin@vault:/$vault/}"; }
export PATH="$(dirname "$BIN"):$PATH"

# --- etcd and the apiserver's own certificates -----------------------------
etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    >"$work/etcd.log" 2>&1 &
pids+=($!)
k="$work/kube-pki"
mkdir -p "$k"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=kube-ca -keyout "$k/ca.key" -out "$k/ca.crt" 2>/dev/null
leaf() { # name subject [san]
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
        -keyout "$k/$1.key" -out "$k/$1.csr" 2>/dev/null
    if [ -n "${3:-}" ]; then printf 'subjectAltName=%s\n' "$3" >"$k/$1.ext"; else : >"$k/$1.ext"; fi
    openssl x509 -req -in "$k/$1.csr" -CA "$k/ca.crt" -CAkey "$k/ca.key" -CAcreateserial -days 2 \
        -extfile "$k/$1.ext" -out "$k/$1.crt" 2>/dev/null
}
leaf serving /CN=kube-apiserver IP:127.0.0.1
leaf admin "/O=system:masters/CN=admin"
openssl ecparam -name prime256v1 -genkey -noout -out "$k/sa.key" 2>/dev/null
openssl ec -in "$k/sa.key" -pubout -out "$k/sa.pub" 2>/dev/null

# --- image-bouncer as the guide sets it up (steps 3, 4 and 6) ---------------
mkdir -p /etc/image-bouncer/policy.d
printf '%s\n' '{"mode": "enforce", "allowedRegistries": ["registry.example"]}' \
    >/etc/image-bouncer/policy.d/base.json
image-bouncer certs --out /etc/image-bouncer/pki --host image-bouncer.local --ip 127.0.0.1 --group image-bouncer >/dev/null
# The unit's ExecStart (systemd/image-bouncer.service), as root here, with
# any extra flags a scenario gives.
exec_start=$(sed -n '/^ExecStart=/,/[^\\]$/p' systemd/image-bouncer.service | sed 's/^ExecStart=//; s/\\$//' | tr -s ' \n' ' ')
read -r -a serve_argv <<<"$exec_start"
serve_argv[0]=image-bouncer
bouncer=
bouncer_start() {
    if [ -n "$bouncer" ]; then kill "$bouncer" && wait "$bouncer" 2>/dev/null || true; fi
    "${serve_argv[@]}" "$@" >>"$work/bouncer.log" 2>&1 &
    bouncer=$!
    pids+=("$bouncer")
    for _ in $(seq 1 100); do
        if curl -sf --cacert /etc/image-bouncer/pki/ca-bundle.crt --cert /etc/image-bouncer/pki/apiserver-client.crt \
            --key /etc/image-bouncer/pki/apiserver-client.key https://image-bouncer.local:8443/readyz >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "image-bouncer did not become ready" >&2
    exit 1
}
bouncer_start
config_apiserver() {
    image-bouncer config apiserver --url https://image-bouncer.local:8443/image_policy \
        --pki /etc/image-bouncer/pki --out /etc/kubernetes/image-bouncer --force >/dev/null
}

# --- the kube-apiserver, as a kubelet would run its static pod ---------------
printf 'kube-apiserver static pod\n' >/etc/kubernetes/manifests/kube-apiserver.yaml
apiserver_up() {
    "$KUBE_APISERVER" --etcd-servers=http://127.0.0.1:23790 \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=16443 \
        --tls-cert-file="$k/serving.crt" --tls-private-key-file="$k/serving.key" \
        --client-ca-file="$k/ca.crt" --authorization-mode=AlwaysAllow \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$k/sa.pub" --service-account-signing-key-file="$k/sa.key" \
        --service-cluster-ip-range=10.96.0.0/24 \
        --enable-admission-plugins=ImagePolicyWebhook \
        --admission-control-config-file=/etc/kubernetes/image-bouncer/admission-config.yaml \
        --v=1 >>"$work/apiserver.log" 2>&1 &
    apiserver=$!
    pids+=("$apiserver")
    for _ in $(seq 1 240); do
        if api GET /readyz >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "apiserver did not become ready; tail of its log:" >&2
    tail -20 "$work/apiserver.log" >&2
    exit 1
}
apiserver_down() { kill "$apiserver" 2>/dev/null && wait "$apiserver" 2>/dev/null || true; }
# The guide restarts the apiserver with
#   mv /etc/kubernetes/manifests/kube-apiserver.yaml /tmp/ && sleep 20 && mv /tmp/kube-apiserver.yaml /etc/kubernetes/manifests/
# and the kubelet stops the static pod when the manifest leaves and starts
# it when it is back. Here `mv` does the kubelet's part too.
mv() {
    command mv "$@"
    if [ "${1:-}" = /etc/kubernetes/manifests/kube-apiserver.yaml ]; then
        apiserver_down
    elif [ "${2:-}" = /etc/kubernetes/manifests/ ]; then
        apiserver_up
    fi
}
api() { # METHOD PATH [BODY]
    curl -sf --cacert "$k/ca.crt" --cert "$k/admin.crt" --key "$k/admin.key" \
        -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "https://127.0.0.1:16443$2"
}

load_start() {
    rm -f "$work/stop"
    python3 tests/apiserver/load.py https://127.0.0.1:16443 "$k/ca.crt" "$k/admin.crt" "$k/admin.key" \
        "$work/stop" "$LOAD_THREADS" >"$work/load-$1.json" &
    load=$!
    conns_start "$1"
}
# The apiserver's connections to the webhook, sampled: how many it opened.
conns_start() {
    (while [ ! -e "$work/stop" ]; do
        ss -Htn state established '( sport = :8443 )' | awk '{print $4}'
        sleep 0.2
    done | sort -u >"$work/conns-$1") &
    sampler=$!
}
load_stop() {
    touch "$work/stop"
    wait "$sampler" 2>/dev/null || true
    wait "$load"
    cat "$work/load-$1.json"
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/load-$1.json" "$2"; }
rotations() { grep -c 'certificate rotation detected' "$work/apiserver.log" || true; }

# --- scenarios --------------------------------------------------------------
scenario_files() {
    say "files: the kubeconfig names the client certificate's files; renew with certs --force"
    config_apiserver
    python3 - /etc/kubernetes/image-bouncer/kubeconfig.yaml /etc/image-bouncer/pki <<'EOF'
import re, sys
path, pki = sys.argv[1:]
text = open(path).read()
text = re.sub(r"client-certificate-data: .*", f'client-certificate: "{pki}/apiserver-client.crt"', text)
text = re.sub(r"client-key-data: .*", f'client-key: "{pki}/apiserver-client.key"', text)
open(path, "w").write(text)
EOF
    grep -q 'client-certificate: ' /etc/kubernetes/image-bouncer/kubeconfig.yaml
    # Idle connections closed after 1 s instead of 120: the apiserver opens
    # new connections (new handshakes, where client-go rereads the files)
    # all the time, as over hours in a cluster, instead of once in 40 s.
    bouncer_start --idle-timeout 1s
    apiserver_down && apiserver_up
    local before
    before=$(rotations)
    load_start files
    sleep 20
    image-bouncer certs --out /etc/image-bouncer/pki --host image-bouncer.local --ip 127.0.0.1 \
        --group image-bouncer --force >/dev/null
    sleep 20
    load_stop files
    echo "files: $(field files created) created, $(field files refused) refused," \
        "$(wc -l <"$work/conns-files") webhook connections seen;" \
        "client-go's 'certificate rotation detected': $(($(rotations) - before))"
}

scenario_guide() {
    say "guide: the renewal and rotation of docs/operations.md, as printed"
    python3 - docs/operations.md "$work" <<'EOF'
import re, sys
readme, out = sys.argv[1:]
text = open(readme).read()
for name in ("renew", "rotate-begin", "rotate-switch", "rotate-finish"):
    m = re.search(r"<!-- %s -->\n *```sh\n(.*?)\n *```" % re.escape(name), text, re.S)
    if not m:
        sys.exit(f"{readme} has no <!-- {name} --> shell block")
    lines = m.group(1).split("\n")
    indent = len(lines[0]) - len(lines[0].lstrip())
    open(f"{out}/{name}.sh", "w").write("\n".join(l[indent:] for l in lines) + "\n")
EOF
    config_apiserver
    # The unit as shipped (idle connections kept 120 s, longer than the
    # apiserver's 90 s: it is always the apiserver that closes an idle one).
    bouncer_start
    apiserver_down && apiserver_up
    # The apiserver's client certificate before the rotation: the server
    # must refuse it once the old CA is gone.
    cp /etc/image-bouncer/pki/apiserver-client.crt "$work/old-client.crt"
    cp /etc/image-bouncer/pki/apiserver-client.key "$work/old-client.key"
    # Step 7 of the guide: the CA key leaves the node.
    scp /etc/image-bouncer/pki/ca.key admin@vault:image-bouncer-ca.key && shred -u /etc/image-bouncer/pki/ca.key
    local before
    before=$(rotations)
    load_start guide
    sleep 5
    for step in renew rotate-begin rotate-switch rotate-finish; do
        say "$step"
        sed 's/^/    /' "$work/$step.sh"
        # shellcheck disable=SC1090
        source "$work/$step.sh" >>"$work/steps.log"
        sleep 5
    done
    load_stop guide
    # After the last step a pod is admitted through the new CA's
    # certificates, and the old client certificate is refused.
    api POST /api/v1/namespaces/default/pods \
        '{"metadata":{"name":"after-rotation"},"spec":{"automountServiceAccountToken":false,"containers":[{"name":"a","image":"registry.example/app:1"}]}}' >/dev/null
    curl -sf --cacert /etc/image-bouncer/pki/ca-bundle.crt --cert /etc/image-bouncer/pki/apiserver-client.crt \
        --key /etc/image-bouncer/pki/apiserver-client.key https://image-bouncer.local:8443/readyz >/dev/null
    if curl -sf --cacert /etc/image-bouncer/pki/ca-bundle.crt --cert "$work/old-client.crt" \
        --key "$work/old-client.key" https://image-bouncer.local:8443/readyz >/dev/null 2>&1; then
        echo "guide: the old CA's client certificate is still accepted after the rotation" >&2
        return 1
    fi
    echo "guide: $(field guide created) created, $(field guide refused) refused," \
        "$(field guide unanswered) unanswered while the apiserver restarted;" \
        "client-go's 'certificate rotation detected': $(($(rotations) - before))"
    [ "$(field guide refused)" = 0 ]
}

config_apiserver
apiserver_up
api POST /api/v1/namespaces/default/serviceaccounts '{"metadata":{"name":"default"}}' >/dev/null || true
status=0
for s in "$@"; do
    "scenario_$s" || status=1
done
echo "logs in $work"
exit $status
