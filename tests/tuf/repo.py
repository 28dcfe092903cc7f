"""A TUF repository made with python-tuf's Metadata API, for tests/tuf.rs.

    repo.py init DIR TARGET_FILE      root v1 (two Ed25519 root keys, threshold 1),
                                      ECDSA timestamp/snapshot/targets keys,
                                      consistent snapshots, TARGET_FILE as
                                      trusted_root.json
    repo.py target DIR TARGET_FILE    a new trusted_root.json: targets,
                                      snapshot and timestamp versions + 1
    repo.py rotate DIR                the next root: v2 adds an ECDSA root key
                                      and needs 2 of 3; v3 drops the first
                                      key, new timestamp/snapshot keys, needs
                                      2 of 2 (each signed by the old root's
                                      threshold and its own)
    repo.py timestamp DIR [EXPIRES]   a new timestamp (version + 1), expiring
                                      at EXPIRES (ISO 8601) if given

Files: metadata at DIR/ (N.root.json, timestamp.json, N.snapshot.json,
N.targets.json), targets at DIR/targets/<sha256>.trusted_root.json, keys
in DIR/keys (private, PEM). The expiry of everything but an explicit
timestamp is a year ahead.
"""

import datetime
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

YEAR = datetime.timedelta(days=365)


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def save_key(d, name, signer):
    pem = signer._private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(d, "keys", name), "wb") as f:
        f.write(pem)


def load_key(d, name):
    with open(os.path.join(d, "keys", name), "rb") as f:
        private = serialization.load_pem_private_key(f.read(), None)
    public = SSlibKey.from_crypto(private.public_key())
    return CryptoSigner(private, public)


def write(d, name, md):
    with open(os.path.join(d, name), "wb") as f:
        f.write(md.to_bytes(JSONSerializer(compact=False)))


def read(d, name):
    return Metadata.from_file(os.path.join(d, name))


def latest(d, role):
    versions = [int(f.split(".")[0]) for f in os.listdir(d) if f.endswith("." + role + ".json")]
    return max(versions)


def publish_target(d, target_file, version):
    data = open(target_file, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(d, "targets"), exist_ok=True)
    with open(os.path.join(d, "targets", digest + ".trusted_root.json"), "wb") as f:
        f.write(data)
    targets = Metadata(Targets(version=version, expires=now() + YEAR))
    targets.signed.targets["trusted_root.json"] = TargetFile.from_data("trusted_root.json", data, ["sha256"])
    targets.sign(load_key(d, "targets"))
    write(d, f"{version}.targets.json", targets)
    return version


def publish_snapshot(d, targets_version, version):
    snapshot = Metadata(Snapshot(version=version, expires=now() + YEAR))
    snapshot.signed.meta["targets.json"] = MetaFile(version=targets_version)
    snapshot.sign(load_key(d, snapshot_key(d)))
    write(d, f"{version}.snapshot.json", snapshot)


def publish_timestamp(d, snapshot_version, version, expires=None):
    timestamp = Metadata(Timestamp(version=version, expires=expires or now() + YEAR))
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot_version)
    timestamp.sign(load_key(d, snapshot_key(d, "timestamp")))
    write(d, "timestamp.json", timestamp)


def snapshot_key(d, role="snapshot"):
    """The key name the newest root gives this role (rotated in v3)."""
    return role + ("3" if os.path.exists(os.path.join(d, "keys", role + "3")) else "")


def init(d, target_file):
    os.makedirs(os.path.join(d, "keys"), exist_ok=True)
    root = Metadata(Root(expires=now() + YEAR, consistent_snapshot=True))
    for name in ["root-a", "root-b"]:
        s = CryptoSigner.generate_ed25519()
        save_key(d, name, s)
        root.signed.add_key(s.public_key, "root")
    for role in ["timestamp", "snapshot", "targets"]:
        s = CryptoSigner.generate_ecdsa()
        save_key(d, role, s)
        root.signed.add_key(s.public_key, role)
    root.signed.roles["root"].threshold = 1
    root.sign(load_key(d, "root-a"))
    write(d, "1.root.json", root)
    write(d, "root.json", root)
    publish_target(d, target_file, 1)
    publish_snapshot(d, 1, 1)
    publish_timestamp(d, 1, 1)


def target(d, target_file):
    t = publish_target(d, target_file, latest(d, "targets") + 1)
    s = latest(d, "snapshot") + 1
    publish_snapshot(d, t, s)
    publish_timestamp(d, s, read(d, "timestamp.json").signed.version + 1)


def rotate(d):
    old = read(d, f"{latest(d, 'root')}.root.json")
    new = Metadata(Root.from_dict(old.signed.to_dict()))
    new.signed.version = old.signed.version + 1
    new.signed.expires = now() + YEAR
    signers = []
    if new.signed.version == 2:
        s = CryptoSigner.generate_ecdsa()
        save_key(d, "root-c", s)
        new.signed.add_key(s.public_key, "root")
        new.signed.roles["root"].threshold = 2
        old_signers = ["root-a"]
        signers = ["root-a", "root-b", "root-c"]
    elif new.signed.version == 3:
        new.signed.revoke_key(load_key(d, "root-a").public_key.keyid, "root")
        new.signed.roles["root"].threshold = 2
        for role in ["timestamp", "snapshot"]:
            new.signed.revoke_key(load_key(d, role).public_key.keyid, role)
            s = CryptoSigner.generate_ecdsa()
            save_key(d, role + "3", s)
            new.signed.add_key(s.public_key, role)
        old_signers = ["root-a", "root-b"]
        signers = ["root-b", "root-c"]
    else:
        raise SystemExit("rotate: only to versions 2 and 3")
    for name in sorted(set(old_signers + signers)):
        new.sign(load_key(d, name), append=True)
    write(d, f"{new.signed.version}.root.json", new)
    write(d, "root.json", new)
    # Fresh timestamp and snapshot under the (maybe new) keys.
    s = latest(d, "snapshot") + 1
    publish_snapshot(d, latest(d, "targets"), s)
    publish_timestamp(d, s, read(d, "timestamp.json").signed.version + 1)


def timestamp(d, expires=None):
    when = datetime.datetime.fromisoformat(expires) if expires else None
    publish_timestamp(d, latest(d, "snapshot"), read(d, "timestamp.json").signed.version + 1, when)


if __name__ == "__main__":
    cmd, d, *rest = sys.argv[1:]
    {"init": init, "target": target, "rotate": rotate, "timestamp": timestamp}[cmd](d, *rest)
