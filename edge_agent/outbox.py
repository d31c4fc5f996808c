"""Durable outbox: every message gets its sequence number and hits disk in one transaction.

A row is deleted only after the broker acknowledged it (PUBACK), so a crash or power loss at
any point loses nothing that was produced. The sequence counter lives in the same database and
survives restarts, which lets the cloud prove completeness per agent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel

from edgeproof.contract import encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
"""


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.appended = 0  # messages appended by this process; lets a reader skip an unchanged table

    def append(self, topic: str, make: Callable[[int], BaseModel]) -> int:
        """Allocate the next sequence number, build the message with it, store both atomically."""
        return self.append_all([(topic, make)])[0]

    def append_all(self, messages: list[tuple[str, Callable[[int], BaseModel]]]) -> list[int]:
        """Several messages in one transaction: one disk sync for all of them, all or none stored."""
        seqs = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for topic, make in messages:
                seq = int(
                    self._db.execute(
                        "UPDATE meta SET value = value + 1 WHERE key = 'last_seq' RETURNING value"
                    ).fetchone()[0]
                )
                self._db.execute(
                    "INSERT INTO outbox (seq, topic, payload, created_at) VALUES (?, ?, ?, ?)",
                    (seq, topic, encode(make(seq)), time.time()),
                )
                seqs.append(seq)
        self.appended += len(seqs)
        return seqs

    def pending(self, limit: int, exclude: Iterable[int] = ()) -> list[tuple[int, str, bytes]]:
        """Oldest unacknowledged messages, skipping those already in flight."""
        skip = set(exclude)
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit + len(skip),)
        ).fetchall()
        return [(s, t, p) for s, t, p in rows if s not in skip][:limit]

    def acknowledge(self, seqs: Iterable[int]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def last_seq(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])

    def close(self) -> None:
        self._db.close()
