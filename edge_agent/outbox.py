"""Durable, bounded outbox: every message gets its sequence number and hits disk in one transaction.

A row is deleted after the broker acknowledged it (PUBACK), or when the outbox has to evict it to
stay within its bounds (`outbox.max_bytes`, `outbox.max_age_s`). An eviction is never silent: the
transaction that deletes the rows also appends an `evicted` declaration naming them, so the cloud
can tell a declared loss from a message that went missing. The sequence counter lives in the same
database and survives restarts, which lets the cloud prove completeness per agent.

Eviction policy: lowest class first, oldest (lowest seq) first within a class. Classes by kind:
`samples` (0) < `state` (1) < `kpi`, `site` (2). `birth`, `evicted` and any other kind are
protected and never evicted. The age bound applies to every class alike. An eviction frees down to
`low_water` x the bound, so that one declaration covers many appends.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict

from edge_agent.config import OutboxSettings
from edgeproof.contract import EvictionDeclaration, EvictionReason, encode, topic

log = logging.getLogger(__name__)

PRIORITY: dict[str, int] = {"samples": 0, "state": 1, "kpi": 2, "site": 2}
PROTECTED = 3  # birth, eviction declarations and unknown kinds: never evicted
# keeps one declaration near 20 KB, far below the ingest's payload limit
MAX_RANGES_PER_DECLARATION = 1000
SCHEMA_VERSION = 2

_TABLES = (
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL DEFAULT '',
        produced_at TEXT,
        priority INTEGER NOT NULL DEFAULT 3
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0)",
)
# Partial indexes hold only evictable rows; the queries repeat their condition literally so that
# SQLite can use them (a bound parameter would not prove the condition).
_EVICTABLE = f"priority < {PROTECTED}"
_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS outbox_evict_order ON outbox (priority, seq) WHERE {_EVICTABLE}",
    f"CREATE INDEX IF NOT EXISTS outbox_evict_age ON outbox (created_at) WHERE {_EVICTABLE}",
)
# running totals, updated in the transaction that changes the rows, so no append scans the table
_COUNTERS = ("bytes", "depth", "evicted_messages", "evicted_bytes", "declarations")


def _utc_text(t: datetime) -> str:
    """Fixed-width UTC text: compares like the time it names."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def priority_of(kind: str) -> int:
    return PRIORITY.get(kind, PROTECTED)


class OutboxStats(BaseModel):
    """One consistent reading of the outbox, for health metrics."""

    model_config = ConfigDict(frozen=True)

    depth: int
    bytes: int
    oldest_created_at: AwareDatetime | None
    last_seq: int
    evicted_messages: int
    evicted_bytes: int
    declarations: int
    max_bytes: int
    max_age_s: float


@dataclass(frozen=True)
class _Victim:
    seq: int
    size: int
    kind: str
    produced_at: str | None


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Ascending numbers as compact inclusive runs."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class Outbox:
    def __init__(
        self,
        path: Path,
        settings: OutboxSettings | None = None,
        clock: Callable[[], float] = time.time,
        signer: Callable[[EvictionDeclaration], EvictionDeclaration] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.settings = settings or OutboxSettings()
        self._clock = clock  # wall clock of created_at and the age bound
        self._signer = signer  # signs the eviction declarations the outbox writes itself (the agent's key)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._open_schema()
        self.appended = 0  # messages appended by this process; lets a reader skip an unchanged table
        # who declares evictions: taken from the messages appended, which all carry it
        self._identity: tuple[str, str] | None = None
        self._warned_protected = False

    # -- schema ------------------------------------------------------------------------------

    def _open_schema(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql in _TABLES:
                db.execute(sql)
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(outbox)")}
            if "priority" not in columns:
                self._migrate_from_v1()
            for sql in _INDEXES:
                db.execute(sql)
            present = {str(r[0]) for r in db.execute("SELECT key FROM meta")}
            if "bytes" not in present:  # a new file, or one just migrated: the only full scan
                n, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
                initial = {"bytes": int(size), "depth": int(n)}
                db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [(key, initial.get(key, 0)) for key in _COUNTERS],
                )
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _migrate_from_v1(self) -> None:
        """Add kind, produced_at and priority to an outbox written before bounds existed; keep its rows."""
        db = self._db
        db.execute("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE outbox ADD COLUMN produced_at TEXT")
        db.execute(f"ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT {PROTECTED}")
        last, migrated = 0, 0
        while True:
            rows = db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT 500", (last,)
            ).fetchall()
            if not rows:
                break
            updates = []
            for seq, name, payload in rows:
                kind, produced = str(name).rsplit("/", 1)[-1], None
                try:
                    body = json.loads(bytes(payload))
                    kind = str(body.get("kind") or kind)
                    if body.get("produced_at"):
                        produced = _utc_text(datetime.fromisoformat(str(body["produced_at"])))
                except (ValueError, TypeError, AttributeError):
                    pass  # not a contract payload: classed by its topic, span unknown
                updates.append((kind, produced, priority_of(kind), seq))
            db.executemany("UPDATE outbox SET kind = ?, produced_at = ?, priority = ? WHERE seq = ?", updates)
            last, migrated = int(rows[-1][0]), migrated + len(rows)
        log.info("outbox schema migrated", extra={"path": str(self.path), "rows": migrated, "to": SCHEMA_VERSION})

    # -- writing -----------------------------------------------------------------------------

    def append(self, topic: str, make: Callable[[int], BaseModel]) -> int:
        """Allocate the next sequence number, build the message with it, store both atomically."""
        return self.append_all([(topic, make)])[0]

    def append_all(self, messages: list[tuple[str, Callable[[int], BaseModel]]]) -> list[int]:
        """Several messages in one transaction: one disk sync for all of them, all or none stored.

        The bounds are enforced in the same transaction, after the new rows are in.
        """
        seqs: list[int] = []
        declared: list[EvictionDeclaration] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._meta("last_seq")
            size = 0
            latest: datetime | None = None
            now = self._clock()
            for name, make in messages:
                seq += 1
                model = make(seq)
                produced = getattr(model, "produced_at", None)
                if isinstance(produced, datetime) and (latest is None or produced > latest):
                    latest = produced
                size += self._insert(seq, name, model, now)
                seqs.append(seq)
            self._bump(last_seq=len(seqs), bytes=size, depth=len(seqs))
            declared = self._enforce(now, latest or datetime.fromtimestamp(now, UTC))
        self.appended += len(seqs) + len(declared)
        return seqs

    def evict_expired(self, produced_at: datetime | None = None) -> list[EvictionDeclaration]:
        """Apply the bounds without appending, for a periodic call when nothing is being produced.

        `produced_at` stamps a declaration (pass the plant clock's now); wall time if omitted.
        """
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            now = self._clock()
            declared = self._enforce(now, produced_at or datetime.fromtimestamp(now, UTC))
        self.appended += len(declared)
        return declared

    def _insert(self, seq: int, name: str, model: BaseModel, now: float) -> int:
        payload = encode(model)
        kind = str(getattr(model, "kind", None) or name.rsplit("/", 1)[-1])
        produced = getattr(model, "produced_at", None)
        agent, boot = getattr(model, "agent_id", None), getattr(model, "boot_id", None)
        if isinstance(agent, str) and isinstance(boot, str):
            self._identity = (agent, boot)
        self._db.execute(
            "INSERT INTO outbox (seq, topic, payload, created_at, kind, produced_at, priority) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                name,
                payload,
                now,
                kind,
                _utc_text(produced) if isinstance(produced, datetime) else None,
                priority_of(kind),
            ),
        )
        return len(payload)

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _bump(self, **deltas: int) -> None:
        self._db.executemany(
            "UPDATE meta SET value = value + ? WHERE key = ?", [(d, k) for k, d in deltas.items() if d]
        )

    def _enforce(self, now: float, produced_at: datetime) -> list[EvictionDeclaration]:
        """Evict by age, then by bytes; inside the caller's transaction."""
        s = self.settings
        declared: list[EvictionDeclaration] = []
        (oldest,) = self._db.execute(f"SELECT min(created_at) FROM outbox WHERE {_EVICTABLE}").fetchone()
        if oldest is not None and oldest < now - s.max_age_s:
            # the age index finds them; they are all evicted, so their order does not matter
            rows = self._db.execute(
                f"SELECT seq, length(payload), kind, produced_at FROM outbox WHERE {_EVICTABLE} AND created_at < ?",
                (now - s.max_age_s * s.low_water,),
            ).fetchall()
            declared += self._evict([_Victim(*r) for r in rows], "age", produced_at)
        total = self._meta("bytes")
        if total > s.max_bytes:
            declared += self._evict_bytes(total, produced_at)
        return declared

    def _evict_bytes(self, total: int, produced_at: datetime) -> list[EvictionDeclaration]:
        target = int(self.settings.max_bytes * self.settings.low_water)
        cursor = self._db.execute(
            f"SELECT seq, length(payload), kind, produced_at FROM outbox WHERE {_EVICTABLE} ORDER BY priority, seq"
        )
        candidates: Iterator[_Victim] = (_Victim(*r) for r in cursor)
        chosen: list[_Victim] = []
        freed = 0
        for victim in candidates:
            chosen.append(victim)
            freed += victim.size
            if total - freed <= target:
                break
        # the declarations are kept too: evict further until they fit under the target as well
        while chosen:
            extra = sum(len(encode(d)) for d in self._declarations(chosen, "bytes", produced_at))
            if total - freed + extra <= target:
                break
            victim = next(candidates, None)
            if victim is None:
                break
            chosen.append(victim)
            freed += victim.size
        cursor.close()
        declared = self._evict(chosen, "bytes", produced_at)
        over = self._meta("bytes") > self.settings.max_bytes
        if over and not self._warned_protected:
            log.warning(
                "outbox over its byte bound with only protected messages left",
                extra={"bytes": self._meta("bytes"), "max_bytes": self.settings.max_bytes, "path": str(self.path)},
            )
        self._warned_protected = over
        return declared

    def _declarations(
        self, victims: list[_Victim], reason: EvictionReason, produced_at: datetime
    ) -> list[EvictionDeclaration]:
        """What `_evict` will write for these victims: one declaration per MAX_RANGES_PER_DECLARATION runs."""
        if self._identity is None:
            return []
        agent_id, boot_id = self._identity
        by_seq = {v.seq: v for v in victims}
        runs = _runs(sorted(by_seq))
        seq = self._meta("last_seq")
        out = []
        for i in range(0, len(runs), MAX_RANGES_PER_DECLARATION):
            chunk = runs[i : i + MAX_RANGES_PER_DECLARATION]
            members = [by_seq[s] for first, last in chunk for s in range(first, last + 1)]
            times = sorted(v.produced_at for v in members if v.produced_at is not None)
            seq += 1
            declaration = EvictionDeclaration(
                agent_id=agent_id,
                boot_id=boot_id,
                seq=seq,
                produced_at=produced_at,
                reason=reason,
                ranges=chunk,
                count=len(members),
                bytes=sum(v.size for v in members),
                kinds=dict(sorted(Counter(v.kind for v in members).items())),
                oldest_produced_at=datetime.fromisoformat(times[0]) if times else None,
                newest_produced_at=datetime.fromisoformat(times[-1]) if times else None,
            )
            out.append(self._signer(declaration) if self._signer else declaration)
        return out

    def _evict(
        self, victims: list[_Victim], reason: EvictionReason, produced_at: datetime
    ) -> list[EvictionDeclaration]:
        if not victims:
            return []
        declarations = self._declarations(victims, reason, produced_at)
        if not declarations:
            # nobody to declare them in the name of (nothing appended yet): keep them rather than lose them silently
            log.warning("outbox eviction deferred: no message appended yet", extra={"path": str(self.path)})
            return []
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(v.seq,) for v in victims])
        freed = sum(v.size for v in victims)
        now = self._clock()
        added = sum(self._insert(d.seq, topic(d.agent_id, d.kind), d, now) for d in declarations)
        self._bump(
            last_seq=len(declarations),
            bytes=added - freed,
            depth=len(declarations) - len(victims),
            evicted_messages=len(victims),
            evicted_bytes=freed,
            declarations=len(declarations),
        )
        for d in declarations:
            log.warning(
                "outbox evicted unsent messages",
                extra={
                    "reason": reason,
                    "count": d.count,
                    "bytes": d.bytes,
                    "ranges": len(d.ranges),
                    "first_seq": d.ranges[0][0],
                    "last_seq": d.ranges[-1][1],
                    "declaration_seq": d.seq,
                    "kinds": d.kinds,
                },
            )
        return declarations

    def acknowledge(self, seqs: Iterable[int]) -> None:
        """Delete what the broker acknowledged; a seq already evicted (or acknowledged) is ignored."""
        freed = deleted = 0
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for s in seqs:
                row = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING length(payload)", (s,)).fetchone()
                if row is not None:
                    freed += int(row[0])
                    deleted += 1
            self._bump(bytes=-freed, depth=-deleted)

    # -- reading -----------------------------------------------------------------------------

    def pending(self, limit: int, exclude: Iterable[int] = ()) -> list[tuple[int, str, bytes]]:
        """Oldest unacknowledged messages, skipping those already in flight."""
        skip = set(exclude)
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit + len(skip),)
        ).fetchall()
        return [(s, t, p) for s, t, p in rows if s not in skip][:limit]

    def pending_range(self, after: int, upto: int | None, limit: int) -> list[tuple[int, str, bytes]]:
        """Unacknowledged messages with after < seq <= upto (no upper end when None), oldest first.

        A primary-key range scan, so a sender keeping a cursor never re-reads what is in flight.
        """
        if upto is None:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            )
        else:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, upto, limit),
            )
        return [(int(s), str(t), bytes(p)) for s, t, p in rows]

    def depth(self) -> int:
        return self._meta("depth")

    def last_seq(self) -> int:
        return self._meta("last_seq")

    def stats(self) -> OutboxStats:
        with self._db:
            self._db.execute("BEGIN")  # one snapshot for all the numbers
            meta = {str(k): int(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
            row = self._db.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return OutboxStats(
            depth=meta["depth"],
            bytes=meta["bytes"],
            oldest_created_at=datetime.fromtimestamp(row[0], UTC) if row else None,
            last_seq=meta["last_seq"],
            evicted_messages=meta["evicted_messages"],
            evicted_bytes=meta["evicted_bytes"],
            declarations=meta["declarations"],
            max_bytes=self.settings.max_bytes,
            max_age_s=self.settings.max_age_s,
        )

    def close(self) -> None:
        self._db.close()
