"""The agent's signing identity: an Ed25519 key pair created on first start and kept.

The private key lives in `<data_dir>/agent-key.pem` (PKCS#8 PEM, unencrypted, mode 0600). It is
created atomically (written to a temporary file, then hard-linked into place, which fails rather
than overwrite) and never replaced: a missing file is created, a present one is used, a corrupt or
wrong-type one is an error naming the file. The private key is never logged or printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edgeproof import signing

log = logging.getLogger(__name__)

KEY_FILE = "agent-key.pem"


class IdentityError(Exception):
    """The key file exists but cannot be used; str() names the file and says why."""


class AgentKey:
    """The agent's key pair. `sign` returns a signed copy of a sequenced message."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path, created: bool = False) -> None:
        self._private = private_key
        self.path = path
        self.created = created  # made by this call of load_or_create
        self.raw_public = signing.raw_public_key(private_key.public_key())
        self.public_key = signing.encode_public_key(self.raw_public)
        self.fingerprint = signing.fingerprint(self.raw_public)
        self.key_id = signing.key_id(self.raw_public)

    def sign(self, message: signing.M) -> signing.M:
        return signing.sign(self._private, message)

    def __repr__(self) -> str:  # never the private key
        return f"AgentKey(key_id={self.key_id!r}, path={str(self.path)!r})"


def load_key(path: Path) -> AgentKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IdentityError(f"{path}: cannot read the agent key: {e.strerror or e}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        # the message of cryptography's error never contains key material
        raise IdentityError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: holds a {type(key).__name__.lstrip('_')}, not an Ed25519 private key")
    return AgentKey(key, path)


def _create(path: Path) -> bool:
    """Write a new key to `path` unless one appeared meanwhile; True if this call made it."""
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            return False  # another process created it first: use theirs
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_or_create(data_dir: Path) -> AgentKey:
    """The key in `data_dir/agent-key.pem`, created (mode 0600) if the file does not exist."""
    path = Path(data_dir) / KEY_FILE
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        created = _create(path)
    key = load_key(path)
    key.created = created
    if created:
        log.info("agent key created", extra={"path": str(path), "key_id": key.key_id, "fingerprint": key.fingerprint})
    return key
