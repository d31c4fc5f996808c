"""Ed25519 message signatures, shared by the agent (signs) and the ingest (verifies).

A public key travels as base64 of its raw 32 bytes. Its fingerprint is the SHA-256 of those raw
bytes, shown as 16 groups of 4 hex digits for an operator to compare by eye; its `key_id` (carried
in every signed message) is the first 16 hex digits of the same hash. What is signed is
`contract.signing_bytes(message)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from edgeproof.contract import signing_bytes

RAW_KEY_BYTES = 32
KEY_ID_HEX = 16

M = TypeVar("M", bound=BaseModel)


def decode_public_key(text: str) -> bytes:
    """Raw 32 bytes of a base64 public key; ValueError with a user-ready message otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not valid base64") from None
    if len(raw) != RAW_KEY_BYTES:
        raise ValueError(f"public key is {len(raw)} bytes, an Ed25519 public key is {RAW_KEY_BYTES}")
    return raw


def encode_public_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def fingerprint(raw: bytes) -> str:
    """SHA-256 of the raw public key as 16 groups of 4 hex digits, e.g. `3f2a 9c01 …`."""
    digest = hashlib.sha256(raw).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private_key: Ed25519PrivateKey, message: M) -> M:
    """A copy of the message carrying `key_id` and `sig` (any previous signature is replaced)."""
    kid = key_id(raw_public_key(private_key.public_key()))
    unsigned = message.model_copy(update={"key_id": kid, "sig": None})
    sig = base64.b64encode(private_key.sign(signing_bytes(unsigned))).decode("ascii")
    return unsigned.model_copy(update={"sig": sig})


def verify(raw_public: bytes, message: BaseModel) -> bool:
    """True when the message's `sig` is a valid signature of its signing bytes under this key."""
    sig = getattr(message, "sig", None)
    if not isinstance(sig, str):
        return False
    try:
        signature = base64.b64decode(sig, validate=True)
        Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, signing_bytes(message))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
