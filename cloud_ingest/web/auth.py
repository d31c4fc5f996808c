"""HTTP Basic authentication against the store's `web_users` table (cloud_ingest/users.py).

Basic rather than a login form: every route stays a GET (a login form needs a POST), and browsers,
curl and scripts all speak it. The credentials travel with every request, so the app must sit
behind TLS (a reverse proxy) anywhere but on loopback (docs/web.md). Checking scrypt on every
request would cost ~0.1 s each, so a success is remembered under an HMAC of name and password with
a key that lives only in this process; it counts only while the stored hash is unchanged, so a
removed account or a new password takes effect at the next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading

from cloud_ingest.dialect import StoreTarget
from cloud_ingest.users import User, check_password, check_unknown, read_users

log = logging.getLogger(__name__)

REALM = "edgeproof"
_CACHE_LIMIT = 1024


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(name, password) of an `Authorization: Basic …` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class BasicAuth:
    def __init__(self, db_path: StoreTarget) -> None:
        self.db_path = db_path
        self._key = secrets.token_bytes(32)
        self._ok: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def users(self) -> dict[str, User]:
        return read_users(self.db_path)

    def check(self, header: str | None, client: str) -> User | None:
        """The account the header authenticates, or None (logged without the password)."""
        creds = parse_basic(header)
        if creds is None:
            return None
        name, password = creds
        user = self.users().get(name)
        token = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        if user is not None:
            with self._lock:
                remembered = self._ok.get(token)
            if remembered is not None and hmac.compare_digest(remembered, user.password):
                return user
            if check_password(password, user.password):
                with self._lock:
                    if len(self._ok) >= _CACHE_LIMIT:
                        self._ok.clear()
                    self._ok[token] = user.password
                log.info("web login user=%s role=%s client=%s", name, user.role, client)
                return user
        else:
            check_unknown(password)  # a wrong name costs as long as a wrong password
        log.warning("web login refused user=%s client=%s", name[:64], client)
        return None
