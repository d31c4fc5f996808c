"""Read-only accounts of the evaluator's web app (`edgeproof user add|list|remove`, docs/web.md).

Accounts live in the ingest's store (SQLite file or PostgreSQL database), in a table of their own
(`web_users`). A password is never stored: only its scrypt hash (standard library, per-user random
salt, parameters kept with the hash so that they can be raised later), compared in constant time.
Passwords are read from a prompt or from $EDGEPROOF_WEB_PASSWORD, never from the command line
(visible to every local user), and never logged. Every role can only read; the role is recorded for
later slices and the logs.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloud_ingest.dialect import (
    StoreTarget,
    connect,
    create_tables,
    has_table,
    is_postgres,
    mask,
    sqlite_path,
    store_target,
)

log = logging.getLogger(__name__)

PASSWORD_ENV = "EDGEPROOF_WEB_PASSWORD"
ROLES = ("evaluator", "office", "provider")  # 评审专家, 试点办, 服务商: all read-only in this version
MIN_PASSWORD = 10
DEFAULT_DB = Path("var/ingest.sqlite")
# scrypt cost: 2^15 × 8 × 128 B = 32 MiB and ~0.1 s per check; the web app caches a success (auth.py)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
SCRYPT_MAXMEM = 64 << 20
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_users (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    password   TEXT NOT NULL,   -- scrypt$N$r$p$salt$hash (base64), never the password
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: str  # the stored hash record
    created_at: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form: scrypt with a random 16-byte salt, parameters included."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, record: str) -> bool:
    """Whether `password` matches the stored record (constant-time comparison of the hashes)."""
    try:
        scheme, n, r, p, salt, digest = record.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


# spent on unknown names, so that a wrong name takes as long as a wrong password
_DUMMY_RECORD = hash_password("not a password", salt=b"\0" * 16)


def check_unknown(password: str) -> None:
    check_password(password, _DUMMY_RECORD)


class UserError(ValueError):
    """A refused account change; str() is ready for a user."""


def read_users(target: StoreTarget) -> dict[str, User]:
    """Every account, by name, read through a read-only connection; {} when there is no table (or no file)."""
    if not is_postgres(target) and not sqlite_path(target).is_file():
        return {}
    conn = connect(target, readonly=True)
    try:
        if not has_table(conn, "web_users"):
            return {}
        rows = conn.execute("SELECT name, role, password, created_at FROM web_users ORDER BY name").fetchall()
    finally:
        conn.close()
    return {str(r[0]): User(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}


class UserStore:
    """The `web_users` table of an ingest store, for the `edgeproof user` commands (they write; the app never does)."""

    def __init__(self, target: StoreTarget) -> None:
        self.path = mask(target)
        if not is_postgres(target):
            sqlite_path(target).parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(target)
        create_tables(self._conn, _SCHEMA)

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def add(self, name: str, password: str, role: str = "evaluator") -> None:
        if not NAME_PATTERN.match(name):
            raise UserError(f"user name {name!r}: letters, digits, '.', '_', '@', '-', at most 64 characters")
        if role not in ROLES:
            raise UserError(f"role {role!r}: use one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
        # the primary key keeps an existing name; OR IGNORE spares catching each back-end's IntegrityError
        if self._conn.execute(
            "INSERT OR IGNORE INTO web_users (name, role, password, created_at) VALUES (?, ?, ?, ?)",
            (name, role, hash_password(password), datetime.now(UTC).isoformat()),
        ).rowcount == 0:
            raise UserError(f"user {name!r} already exists (remove it first to change its password)")
        log.info("web user added name=%s role=%s db=%s", name, role, self.path)

    def remove(self, name: str) -> None:
        if self._conn.execute("DELETE FROM web_users WHERE name = ?", (name,)).rowcount == 0:
            raise UserError(f"no user {name!r} in {self.path}")
        log.info("web user removed name=%s db=%s", name, self.path)


# -- edgeproof user ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = sub.add_parser(
        "add", help=f"add a read-only account; the password is prompted for, or read from ${PASSWORD_ENV}"
    )
    add.add_argument("name")
    add.add_argument(
        "--role", default="evaluator", choices=ROLES, help="recorded with the account (default: evaluator)"
    )
    listing = sub.add_parser("list", help="list the accounts (never their passwords)")
    listing.add_argument("--json", action="store_true", help="as JSON")
    remove = sub.add_parser("remove", help="remove an account")
    remove.add_argument("name")
    for p in (add, listing, remove):
        p.add_argument(
            "--db",
            type=store_target,
            default=DEFAULT_DB,
            help=f"the ingest's store: SQLite file or postgresql:// URL (default: ./{DEFAULT_DB})",
        )


def _read_password() -> str | None:
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("user: error: the passwords differ", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    """Exit 0 on success, 2 on a refused change, a missing store or no password, 1 on an unreachable database."""
    try:
        return _run(args)
    except ConnectionError as exc:  # a PostgreSQL store; the message has the URL masked
        print(f"user: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.user_command == "list":
        users = read_users(args.db)
        if args.json:
            print(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at} for u in users.values()]))
        else:
            for u in users.values():
                print(f"{u.name}\t{u.role}\t{u.created_at}")
            if not users:
                print(f"no accounts in {mask(args.db)}", file=sys.stderr)
        return 0
    try:
        if args.user_command == "add":
            password = _read_password()
            if password is None:
                print(f"user: error: no password: set ${PASSWORD_ENV} or run it on a terminal", file=sys.stderr)
                return 2
            with UserStore(args.db) as store:
                store.add(args.name, password, args.role)
            print(f"user {args.name} ({args.role}) added to {mask(args.db)}")
        else:
            if not is_postgres(args.db) and not Path(args.db).is_file():
                print(f"user: error: no store at {args.db}", file=sys.stderr)
                return 2
            with UserStore(args.db) as store:
                store.remove(args.name)
            print(f"user {args.name} removed from {mask(args.db)}")
    except UserError as exc:
        print(f"user: error: {exc}", file=sys.stderr)
        return 2
    return 0
