"""Ed25519 signatures over the exact bytes of a package's package.json.

Keys are the ones people already have: an OpenSSH key pair from ``ssh-keygen -t ed25519``
(private ``id_ed25519``, public ``id_ed25519.pub``) or PEM files from
``openssl genpkey -algorithm ed25519``. ``cryptography`` (the ``sign`` extra) is imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from edge_sdk.errors import DeployError, IntegrityError, RuntimeUnavailableError

SIG_NAME = "package.sig"
ALGORITHM = "ed25519"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise RuntimeUnavailableError("signing and signature checks need the 'cryptography' package",
                                      hint="pip install 'edge-sdk[sign]'") from None
    return serialization, ed25519, InvalidSignature


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DeployError(f"cannot read {what} {path}: {e.strerror}") from None


def load_private_key(path: str | Path):
    """An Ed25519 private key from an OpenSSH or PEM file (unencrypted)."""
    serialization, ed25519, _ = _crypto()
    data = _read_key_file(Path(path), "signing key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise DeployError(f"signing key {path} cannot be read: {e}",
                          hint="use an unencrypted ed25519 key: ssh-keygen -t ed25519 -N '' -f KEY") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DeployError(f"signing key {path} is not an ed25519 key", hint="ssh-keygen -t ed25519 -N '' -f KEY")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from an OpenSSH ``.pub`` line, a PEM file, or a private key file."""
    serialization, ed25519, _ = _crypto()
    data = _read_key_file(Path(path), "verify key")
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip().split(b"\n")[0])
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, IndexError) as e:
        raise DeployError(f"verify key {path} cannot be read: {e}",
                          hint="give the .pub file of an ed25519 key (ssh-keygen) or a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise DeployError(f"verify key {path} is not an ed25519 key")
    return key


def key_id(public_key) -> str:
    """A short fingerprint of a public key: sha256 of its raw 32 bytes, first 16 hex digits."""
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(data: bytes, private_key) -> bytes:
    """The package.sig document for ``data``: JSON with the algorithm, key id and signature."""
    doc = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
           "signature": base64.b64encode(private_key.sign(data)).decode("ascii")}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def verify(data: bytes, sig_doc: bytes | None, public_key, *, where: str) -> str:
    """Check ``sig_doc`` signs ``data`` with ``public_key``; return the key id. Raise IntegrityError."""
    _, _, InvalidSignature = _crypto()
    want = key_id(public_key)
    if sig_doc is None:
        raise IntegrityError(f"{where}: the package is not signed, and a verify key was given",
                             hint="sign it with `edge-sdk package --sign-key KEY`")
    try:
        doc: dict[str, Any] = json.loads(sig_doc)
        if doc.get("algorithm") != ALGORITHM:
            raise IntegrityError(f"{where}: signature algorithm {doc.get('algorithm')!r} is not {ALGORITHM}")
        signature = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"{where}: {SIG_NAME} is malformed",
                             hint="the package was altered; package it again") from None
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        signer = doc.get("key_id")
        why = (f"it was signed by key {signer}, not by the verify key {want}" if signer != want
               else "package.json was altered after signing")
        raise IntegrityError(f"{where}: the signature does not verify: {why}",
                             hint="refusing to install; get the package from its publisher again") from None
    return want
