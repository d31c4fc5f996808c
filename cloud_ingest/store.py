"""Idempotent store of contract messages, with the rows the evaluation reads.

One SQLite file in WAL mode, or a PostgreSQL database (cloud_ingest/dialect.py: same schema, same
SQL, the same results). `ingest()` validates one MQTT message against the contract and
either stores it (plus its derived rows, in the same transaction), counts it as a duplicate,
records the agent's retained status, or files it as a dead letter with a reason. Invalid input
never raises; only a failing database does, so the caller can leave the message unacknowledged.
An agent's eviction declarations are kept with their ranges, so that `gap_report()` can tell a
declared loss from a message that went missing.

Every sequenced message gets a verification status (docs/messages.md, "Signatures"): `verified`
and `unsigned` messages are stored and used; `pending` (signed by a key not enrolled for the agent)
and `rejected` (bad signature, revoked key) ones are held apart in `held`, never used, and shown
with their reason. Enrolling a key (`enroll_key`) verifies the pending messages it signed and moves
them in; revoking one (`revoke_key`) moves the stored messages it signed from the revocation on out.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from cloud_ingest.dialect import (
    Connection,
    PgConnection,
    StoreTarget,
    connect,
    has_table,
    is_postgres,
    mask,
    message_errors,
    pg_schema,
    sqlite_path,
)
from edgeproof.contract import (
    SEQUENCED_KINDS,
    AnySequenced,
    BirthMessage,
    EvictionDeclaration,
    EvictionReason,
    HealthMessage,
    MachineKpi,
    SiteKpi,
    StateInterval,
    StatusMessage,
    parse_sequenced,
    parse_topic,
)
from edgeproof.indicators import TimeElements
from edgeproof.signing import decode_public_key, fingerprint, key_id, verify

log = logging.getLogger(__name__)

IngestResult = Literal["stored", "duplicate", "dead_letter", "status", "health", "pending", "rejected"]
Verification = Literal["verified", "unsigned", "pending", "rejected"]
VERIFICATIONS: tuple[Verification, ...] = ("verified", "unsigned", "pending", "rejected")
SequencedMessage = AnySequenced

DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20
# A dead letter keeps this much of an oversized payload: enough to identify it, not to fill the disk.
DEAD_LETTER_KEEP_BYTES = 64 << 10
# 2: eviction declarations (evictions, evicted_ranges); 3: health, messages.historical;
# 4: signatures (agent_keys, held, messages.verification and messages.key_id).
# SQLite keeps it in PRAGMA user_version, PostgreSQL in the one row of schema_version.
SCHEMA_VERSION = 4
# states that only data can give; the calendar's (planned stop, not scheduled) and UNKNOWN cannot
DATA_STATES = ("RUNNING", "SETUP", "MICRO_STOP", "IDLE", "FAULT")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    produced_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    historical INTEGER NOT NULL DEFAULT 0,
    verification TEXT NOT NULL DEFAULT 'unsigned',
    key_id TEXT,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS duplicates (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kpi (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    machine_id TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    bucket_end TEXT NOT NULL,
    elements TEXT NOT NULL,
    availability REAL,
    performance REAL,
    quality REAL,
    oee REAL,
    flags TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS kpi_window ON kpi (agent_id, bucket_start, bucket_end);
CREATE TABLE IF NOT EXISTS states (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    machine_id TEXT NOT NULL,
    state TEXT NOT NULL,
    start TEXT NOT NULL,
    "end" TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS states_window ON states (agent_id, machine_id, start);
CREATE TABLE IF NOT EXISTS site (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    bucket_start TEXT NOT NULL,
    bucket_end TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS site_window ON site (agent_id, bucket_end);
CREATE TABLE IF NOT EXISTS births (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    produced_at TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS health (
    agent_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS status (
    agent_id TEXT PRIMARY KEY,
    online INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    at TEXT,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evictions (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    produced_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    kinds TEXT NOT NULL,
    oldest_produced_at TEXT,
    newest_produced_at TEXT,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS evicted_ranges (
    agent_id TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    declared_by INTEGER NOT NULL,
    PRIMARY KEY (agent_id, first, declared_by)
);
CREATE TABLE IF NOT EXISTS agent_keys (
    agent_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    revoked_at TEXT,
    PRIMARY KEY (agent_id, key_id)
);
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    produced_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    historical INTEGER NOT NULL DEFAULT 0,
    key_id TEXT,
    sig TEXT,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS held_copy ON held (agent_id, seq, sig);
CREATE INDEX IF NOT EXISTS held_key ON held (agent_id, key_id, status);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    agent_id TEXT,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL
);
"""


def iso(t: datetime) -> str:
    """Fixed-width ISO 8601 UTC text, so that SQL string comparison orders it like time."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: a timezone is required")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


# Errors caused by one message's data; any other sqlite3.Error (I/O, locked, corrupt) is the
# database's and propagates, so the message stays unacknowledged.
_MESSAGE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    ValueError,
    TypeError,
    OverflowError,
    KeyError,
    AttributeError,
)
SQLITE_MAX_INT = 2**63 - 1


class StoreUnavailable(RuntimeError):
    """`Store.open_readonly`: no store there, or one the ingest has not created or upgraded yet; str() is for a user."""


class Rejected(Exception):
    """A message that cannot be stored; str() is the dead-letter reason."""


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: datetime
    topic: str
    agent_id: str | None
    payload: bytes
    reason: str


@dataclass(frozen=True)
class KpiRow:
    agent_id: str
    seq: int
    machine_id: str
    bucket_start: datetime
    bucket_end: datetime
    elements: TimeElements
    flags: list[str]


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    online: bool
    boot_id: str
    at: datetime | None
    received_at: datetime


class EnrolledKey(BaseModel):
    """A public key registered for an agent at the cloud."""

    agent_id: str
    key_id: str
    public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key")
    fingerprint: str
    enrolled_at: AwareDatetime
    revoked_at: AwareDatetime | None = Field(description="messages produced from this time on are rejected")


class EnrollResult(BaseModel):
    """What `Store.enroll_key` did."""

    agent_id: str
    key_id: str
    public_key: str
    fingerprint: str
    enrolled_at: AwareDatetime
    already_enrolled: bool
    pending_stored: int = Field(description="held pending messages verified and stored now")
    pending_duplicates: int = Field(description="held pending copies of messages already stored")
    pending_rejected: int = Field(description="held pending messages whose signature failed")


class HeldMessage(BaseModel):
    """A sequenced message kept apart from the evidence: pending an enrolled key, or rejected."""

    id: int
    agent_id: str
    seq: int
    kind: str
    produced_at: AwareDatetime
    received_at: AwareDatetime
    key_id: str | None
    status: Literal["pending", "rejected"]
    reason: str
    decided_at: AwareDatetime


class AnnouncedKey(BaseModel):
    """The public key an agent announced in its latest birth message, stored or held."""

    agent_id: str
    public_key: str
    key_id: str
    fingerprint: str
    birth_seq: int
    produced_at: AwareDatetime
    status: Verification = Field(description="the birth message's own verification status")
    self_signed: bool = Field(description="the birth is validly signed by the key it announces")


class Neighbour(BaseModel):
    """A stored message next to a gap: when it was produced and when it arrived."""

    seq: int
    produced_at: AwareDatetime
    received_at: AwareDatetime


class EvictionRecord(BaseModel):
    """One stored eviction declaration of an agent's outbox."""

    seq: int = Field(description="the declaration's own sequence number")
    boot_id: str
    produced_at: AwareDatetime
    received_at: AwareDatetime
    reason: EvictionReason
    count: int
    bytes: int
    kinds: dict[str, int]
    oldest_produced_at: AwareDatetime | None
    newest_produced_at: AwareDatetime | None
    ranges: list[tuple[int, int]]


class GapSegment(BaseModel):
    """Part of a gap: either declared evicted by one declaration, or missing without explanation."""

    first: int
    last: int
    count: int
    status: Literal["evicted", "missing", "pending", "rejected"] = Field(
        description="evicted: declared; missing: unexplained; pending / rejected: received but held apart"
    )
    declared_by: int | None = Field(description="seq of the eviction declaration covering it")
    reason: EvictionReason | None = Field(description="the declaration's reason: bytes or age")
    after: Neighbour | None = Field(description="the stored message just before the gap; none when it starts at 1")
    before: Neighbour | None = Field(
        description="the stored message just after the gap; none after the highest stored (only held ones there)"
    )
    held: str | None = Field(
        None, description="for pending and rejected: 'held: pending key <key_id>' or 'rejected: <reason>'"
    )


class GapReport(BaseModel):
    """Every missing sequence number of an agent, split into declared-evicted and missing parts."""

    agent_id: str
    received: int = Field(description="messages stored")
    highest_seq: int | None
    gaps: list[GapSegment]
    evicted: int = Field(description="numbers in evicted segments")
    missing: int = Field(description="numbers in missing segments: lost without a declaration, or still on the way")
    pending: int = Field(0, description="numbers received but held until the key that signed them is enrolled")
    rejected: int = Field(0, description="numbers received but rejected (bad signature, revoked key)")
    declarations: list[EvictionRecord]
    declared_but_received: int = Field(
        description="numbers a declaration names that were stored anyway (in flight when the outbox evicted them)"
    )


def _split_gap(
    first: int, last: int, declared: list[tuple[int, int, int, str]], start: int
) -> list[tuple[int, int, int | None, str | None]]:
    """(first, last, declaration seq or None, reason or None) parts of one gap, ascending.

    `declared` is (first, last, declared_by, reason) sorted by first; `start` is the index of its
    first range that can reach this gap.
    """
    parts: list[tuple[int, int, int | None, str | None]] = []
    pos = first
    for lo, hi, by, reason in declared[start:]:
        if lo > last:
            break
        if hi < pos:
            continue  # ends before the uncovered rest (overlapping declarations)
        if lo > pos:
            parts.append((pos, lo - 1, None, None))
        end = min(hi, last)
        parts.append((max(lo, pos), end, by, reason))
        pos = end + 1
        if pos > last:
            break
    if pos <= last:
        parts.append((pos, last, None, None))
    return parts


def _carve(segment: GapSegment, held: list[tuple[int, str, str]]) -> list[GapSegment]:
    """Split a gap segment where held (pending or rejected) sequence numbers lie in it.

    `held` is (seq, status, detail) sorted by seq; consecutive held numbers with the same status
    and detail form one segment, the rest keep the segment's own status.
    """
    lo = bisect.bisect_left(held, (segment.first,))
    hi = bisect.bisect_right(held, (segment.last, "\uffff"))
    inside = held[lo:hi]
    if not inside:
        return [segment]
    out: list[GapSegment] = []

    def part(first: int, last: int, status: str | None = None, detail: str | None = None) -> None:
        fields: dict[str, Any] = {"first": first, "last": last, "count": last - first + 1}
        if status is not None:
            fields |= {"status": status, "declared_by": None, "reason": None, "held": detail}
        out.append(segment.model_copy(update=fields))

    pos = segment.first
    i = 0
    while i < len(inside):
        seq, status, detail = inside[i]
        j = i
        while j + 1 < len(inside) and inside[j + 1] == (inside[j][0] + 1, status, detail):
            j += 1
        if seq > pos:
            part(pos, seq - 1)
        part(seq, inside[j][0], status, detail)
        pos = inside[j][0] + 1
        i = j + 1
    if pos <= segment.last:
        part(pos, segment.last)
    return out


def _same_but_transport(stored: str, message: AnySequenced) -> bool:
    """The same message, sent once live and once again from the backlog (`historical` differs)."""
    try:
        first = parse_sequenced(stored)
    except ValidationError:
        return False
    return first.model_copy(update={"historical": False}) == message.model_copy(update={"historical": False})


@functools.lru_cache(maxsize=256)
def _raw_key(public_key: str) -> bytes:
    return decode_public_key(public_key)


def _revoked_reason(kid: str, revoked_at: str, m: SequencedMessage) -> str:
    return f"key {kid} revoked from {revoked_at}; message produced at {iso(m.produced_at)}"


def _check(m: SequencedMessage, public_key: str, revoked_at: str | None) -> tuple[Verification, str | None]:
    """Verify a signed message against its enrolled key and the key's revocation."""
    if not verify(_raw_key(public_key), m):
        return "rejected", f"signature invalid for key {m.key_id}"
    if revoked_at is not None and iso(m.produced_at) >= revoked_at:
        return "rejected", _revoked_reason(str(m.key_id), revoked_at, m)
    return "verified", None


def _safe_text(text: str) -> str:
    """Text SQLite can store: lone surrogates (possible in a Python str) become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _describe(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for e in error.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{loc}: {e['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class Store:
    """The ingest's SQLite file or PostgreSQL database. Thread-safe: one connection guarded by a lock.

    The MQTT consumer writes from paho's network thread while it is created and closed by the
    caller's thread, so the connection is opened with check_same_thread=False and every use of it
    holds `_lock`. Readers in other processes open their own Store; WAL lets them read while the
    ingest writes.

    `target` is a path (or `sqlite:///path`) for SQLite, a `postgresql://` URL for PostgreSQL; on
    PostgreSQL `path` is the URL with its password masked, for messages.
    """

    def __init__(self, target: StoreTarget, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._lock = threading.RLock()
        self._conn: Connection
        self._message_errors = _MESSAGE_ERRORS
        if is_postgres(target):
            self.path: Path | str = mask(target)
            self._message_errors += message_errors()
            self._conn = PgConnection(str(target))
            self._open_postgres()
            log.debug("store open url=%s", self.path)
            return
        self.path = sqlite_path(target)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        with self._lock:
            # Several workers opening a new file at once: the switch to WAL answers "locked" at once
            # instead of waiting on the busy timeout while another connection makes it, so try again.
            for attempt in range(200):
                try:
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 199:
                        raise
                    time.sleep(0.05)
            # A message is acknowledged to the broker only after its commit: FULL makes the commit
            # survive a power cut, not just a process crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:  # only a new or older file is written to here; readers stay readers
                if not 0 <= version <= SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path}: store schema version {version}, expected {SCHEMA_VERSION}")
                columns = {row[1] for row in self._conn.execute("PRAGMA table_info(messages)")}
                if columns and "historical" not in columns:  # before schema 3
                    self._conn.execute("ALTER TABLE messages ADD COLUMN historical INTEGER NOT NULL DEFAULT 0")
                if columns and "verification" not in columns:  # before schema 4: every stored message was unsigned
                    self._conn.execute("ALTER TABLE messages ADD COLUMN verification TEXT NOT NULL DEFAULT 'unsigned'")
                    self._conn.execute("ALTER TABLE messages ADD COLUMN key_id TEXT")
                # every other change so far only adds tables, which the idempotent script creates
                self._conn.executescript(_SCHEMA)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        log.debug("store open path=%s", self.path)

    @classmethod
    def open_readonly(cls, target: StoreTarget) -> Store:
        """The store's reading methods over a connection that cannot write: SQLite `mode=ro` (no journal
        switch, no DDL), or a PostgreSQL session whose transactions are all READ ONLY. Never creates or
        upgrades the schema: raises StoreUnavailable when there is no store or its version differs."""
        store = cls.__new__(cls)
        store.max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
        store._lock = threading.RLock()
        store._message_errors = _MESSAGE_ERRORS
        store.path = mask(target) if is_postgres(target) else sqlite_path(target)
        if not is_postgres(target) and not Path(store.path).is_file():
            raise StoreUnavailable(f"no store at {store.path}")
        try:
            store._conn = connect(target, readonly=True)
        except ConnectionError as exc:  # already masked
            raise StoreUnavailable(str(exc)) from None
        try:
            version = store._schema_version()
        except BaseException:
            store._conn.close()
            raise
        if version != SCHEMA_VERSION:
            store._conn.close()
            raise StoreUnavailable(
                f"{store.path}: store schema version {version}, expected {SCHEMA_VERSION} "
                "(run the ingest once to create or upgrade it)"
            )
        return store

    def _schema_version(self) -> int:
        if isinstance(self._conn, PgConnection):
            if not has_table(self._conn, "schema_version"):
                return 0
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            return int(row[0]) if row else 0
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def connection(self) -> Connection:
        """The store's connection, for a reader's own queries: SQLite-dialect SQL runs on both back-ends
        (dialect.translate). Not for writing: `Store`'s methods keep the rows consistent."""
        return self._conn

    def _open_postgres(self) -> None:
        """Create or upgrade the schema: the same steps as for SQLite, in one transaction, one process at a time."""
        # workers starting together: the first creates the tables, the others wait on the lock and find them
        with self._transaction(" schema") as db:  # agent ids have no spaces: no agent shares this lock
            db.executescript("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if version == SCHEMA_VERSION:
                return
            if not 0 <= version <= SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: store schema version {version}, expected {SCHEMA_VERSION}")
            columns = {
                str(r[0])
                for r in db.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'messages'"
                )
            }
            if columns and "historical" not in columns:  # before schema 3
                db.execute("ALTER TABLE messages ADD COLUMN historical BIGINT NOT NULL DEFAULT 0")
            if columns and "verification" not in columns:  # before schema 4: every stored message was unsigned
                db.execute("ALTER TABLE messages ADD COLUMN verification TEXT NOT NULL DEFAULT 'unsigned'")
                db.execute('ALTER TABLE messages ADD COLUMN key_id TEXT COLLATE "C"')
            # every other change so far only adds tables, which the idempotent script creates
            db.executescript(pg_schema(_SCHEMA))
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    # -- writing -----------------------------------------------------------------------------

    def ingest(self, topic: str, payload: bytes, received_at: datetime | None = None) -> IngestResult:
        """Validate and store one message; never raises for bad input (sqlite3.Error only)."""
        received = iso(received_at if received_at is not None else datetime.now(UTC))
        raw = bytes(payload) if not isinstance(payload, str) else payload.encode("utf-8", "surrogatepass")
        topic = _safe_text(topic) if isinstance(topic, str) else repr(topic)
        parsed = parse_topic(topic)
        agent_id = parsed[0] if parsed else None
        try:
            message = self._validate(topic, parsed, raw)
            if isinstance(message, StatusMessage):
                self._store_status(message, received)
                return "status"
            if isinstance(message, HealthMessage):
                self._store_health(message, received)
                return "health"
            return self._store_sequenced(message, topic, raw.decode("utf-8"), received)
        except Rejected as exc:
            return self._dead_letter(received, topic, agent_id, raw, str(exc))
        except self._message_errors as exc:
            # The database refused this message's data (or a bug met an odd input): file it, so that
            # one message cannot stop the ingest or come back forever as a redelivery.
            log.exception("message could not be stored topic=%s", topic)
            return self._dead_letter(received, topic, agent_id, raw, f"internal error: {type(exc).__name__}: {exc}")

    def _validate(
        self, topic: str, parsed: tuple[str, str] | None, raw: bytes
    ) -> StatusMessage | HealthMessage | SequencedMessage:
        if len(raw) > self.max_payload_bytes:
            raise Rejected(f"payload too large: {len(raw)} bytes > limit {self.max_payload_bytes}")
        if parsed is None:
            raise Rejected(f"topic not in contract: {topic!r}")
        agent_id, kind = parsed
        if kind not in ("status", "health") and kind not in SEQUENCED_KINDS:
            raise Rejected(f"unknown message kind in topic: {kind!r}")
        if not raw:
            raise Rejected("empty payload")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise Rejected(f"payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Rejected(f"schema violation: payload is a JSON {_json_type(body)}, not an object")
        if "kind" in body and body["kind"] != kind:
            raise Rejected(f"kind mismatch: topic says {kind!r}, payload says {body['kind']!r}")
        message: StatusMessage | HealthMessage | SequencedMessage
        try:
            if kind == "status":
                message = StatusMessage.model_validate_json(text)
            elif kind == "health":
                message = HealthMessage.model_validate_json(text)
            else:
                message = parse_sequenced(text)
        except ValidationError as exc:
            raise Rejected(f"schema violation: {_describe(exc)}") from None
        if message.agent_id != agent_id:
            raise Rejected(f"agent mismatch: topic says {agent_id!r}, payload says {message.agent_id!r}")
        return message

    @contextmanager
    def _transaction(self, agent_id: str | None = None) -> Iterator[Connection]:
        """One write transaction. SQLite: BEGIN IMMEDIATE, every writer in turn. PostgreSQL: writers of
        one agent in turn (an advisory lock), so two racing on one (agent_id, seq) store it once, and
        an enrollment sees every message verified before it or is seen by it."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if agent_id is not None and isinstance(self._conn, PgConnection):
                    self._conn.lock(agent_id)
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _dead_letter(self, received: str, topic: str, agent_id: str | None, raw: bytes, reason: str) -> IngestResult:
        kept = raw if len(raw) <= self.max_payload_bytes else raw[:DEAD_LETTER_KEEP_BYTES]
        with self._transaction() as db:
            db.execute(
                "INSERT INTO dead_letters (received_at, topic, agent_id, payload, reason) VALUES (?, ?, ?, ?, ?)",
                (received, topic, agent_id, kept, reason),
            )
        log.warning("dead letter topic=%s bytes=%d reason=%s", topic, len(raw), reason)
        return "dead_letter"

    def _store_health(self, message: HealthMessage, received: str) -> None:
        """Only the latest reading per agent: health is live state, not evidence."""
        with self._transaction(message.agent_id) as db:
            db.execute(
                "INSERT INTO health (agent_id, at, received_at, payload) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET at = excluded.at, received_at = excluded.received_at, "
                "payload = excluded.payload WHERE excluded.at >= health.at",
                (message.agent_id, iso(message.at), received, message.model_dump_json()),
            )

    def _store_status(self, message: StatusMessage, received: str) -> None:
        with self._transaction(message.agent_id) as db:
            db.execute(
                "INSERT INTO status (agent_id, online, boot_id, at, received_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET online = excluded.online, boot_id = excluded.boot_id, "
                "at = excluded.at, received_at = excluded.received_at",
                (
                    message.agent_id,
                    int(message.online),
                    message.boot_id,
                    iso(message.at) if message.at else None,
                    received,
                ),
            )
        log.info("status agent=%s online=%s boot=%s", message.agent_id, message.online, message.boot_id)

    def _verification(self, db: Connection, m: SequencedMessage) -> tuple[Verification, str | None]:
        """The message's verification status and, unless verified or unsigned, why.

        Read inside the caller's write transaction, so an enrollment committed by another process
        is either seen here or sees this message among the pending ones.
        """
        if m.sig is None and m.key_id is None:
            # Unsigned is what agents older than signing send. Once a key is enrolled for the agent,
            # its messages come signed: an unsigned one is not from it, or was stripped on the way.
            if db.execute("SELECT 1 FROM agent_keys WHERE agent_id = ? LIMIT 1", (m.agent_id,)).fetchone():
                return "rejected", f"unsigned, but agent {m.agent_id} has an enrolled key"
            return "unsigned", None
        if m.sig is None or m.key_id is None:
            return "rejected", "malformed signature: key_id and sig must be present together"
        row = db.execute(
            "SELECT public_key, revoked_at FROM agent_keys WHERE agent_id = ? AND key_id = ?", (m.agent_id, m.key_id)
        ).fetchone()
        if row is None:
            return "pending", f"pending key {m.key_id}: not enrolled for agent {m.agent_id}"
        return _check(m, str(row[0]), row[1])

    def _store_sequenced(self, m: SequencedMessage, topic: str, text: str, received: str) -> IngestResult:
        with self._transaction(m.agent_id) as db:
            status, why = self._verification(db, m)
            if status in ("pending", "rejected"):
                self._hold(db, m, topic, text, received, status, why or status, received)
                outcome = "held"
            else:
                outcome = self._admit(db, m, topic, text, received, status)
        if outcome == "held":
            log.log(
                logging.WARNING if status == "rejected" else logging.INFO,
                "%s agent=%s seq=%d kind=%s reason=%s",
                status,
                m.agent_id,
                m.seq,
                m.kind,
                why,
            )
            return "pending" if status == "pending" else "rejected"
        if outcome == "stored":
            log.debug("stored agent=%s seq=%d kind=%s verification=%s", m.agent_id, m.seq, m.kind, status)
            return "stored"
        if outcome == "duplicate":
            log.info("duplicate agent=%s seq=%d kind=%s", m.agent_id, m.seq, m.kind)
            return "duplicate"
        # Same (agent, seq), different content: the agent reused a sequence number. Keep the first,
        # file the second: silently choosing either would falsify the evidence.
        return self._dead_letter(
            received,
            topic,
            m.agent_id,
            text.encode(),
            f"sequence conflict: seq {m.seq} of agent {m.agent_id!r} already stored with a different payload",
        )

    def _admit(
        self,
        db: Connection,
        m: SequencedMessage,
        topic: str,
        text: str,
        received: str,
        status: Verification,
        historical: bool | None = None,
    ) -> Literal["stored", "duplicate", "conflict"]:
        """Store a verified or unsigned message with its derived rows, inside the caller's transaction."""
        flag = m.historical if historical is None else historical
        inserted = db.execute(
            "INSERT OR IGNORE INTO messages (agent_id, seq, boot_id, kind, produced_at, received_at, topic, "
            "payload, historical, verification, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.agent_id,
                m.seq,
                m.boot_id,
                m.kind,
                iso(m.produced_at),
                received,
                topic,
                text,
                int(flag),
                status,
                m.key_id if status == "verified" else None,
            ),
        ).rowcount
        if inserted:
            self._store_derived(db, m, received)
            return "stored"
        (stored,) = db.execute(
            "SELECT payload FROM messages WHERE agent_id = ? AND seq = ?", (m.agent_id, m.seq)
        ).fetchone()
        if stored == text or _same_but_transport(stored, m):
            db.execute(
                "INSERT INTO duplicates (agent_id, seq, received_at) VALUES (?, ?, ?)", (m.agent_id, m.seq, received)
            )
            return "duplicate"
        return "conflict"

    @staticmethod
    def _hold(
        db: Connection,
        m: SequencedMessage,
        topic: str,
        text: str,
        received: str,
        status: Literal["pending", "rejected"],
        reason: str,
        decided: str,
        historical: bool | None = None,
    ) -> None:
        """Keep a pending or rejected message apart; a redelivered copy (same seq and sig) is not kept twice."""
        db.execute(
            "INSERT OR IGNORE INTO held (agent_id, seq, boot_id, kind, produced_at, received_at, topic, payload, "
            "historical, key_id, sig, status, reason, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.agent_id,
                m.seq,
                m.boot_id,
                m.kind,
                iso(m.produced_at),
                received,
                topic,
                text,
                int(m.historical if historical is None else historical),
                m.key_id,
                m.sig,
                status,
                reason,
                decided,
            ),
        )

    @staticmethod
    def _delete_derived(db: Connection, agent_id: str, seq: int) -> None:
        for table in ("kpi", "states", "site", "births", "evictions"):
            db.execute(f"DELETE FROM {table} WHERE agent_id = ? AND seq = ?", (agent_id, seq))
        db.execute("DELETE FROM evicted_ranges WHERE agent_id = ? AND declared_by = ?", (agent_id, seq))

    # -- keys --------------------------------------------------------------------------------

    def enroll_key(self, agent_id: str, public_key: str, at: datetime | None = None) -> EnrollResult:
        """Register a public key for an agent, then verify the messages held pending for it.

        A valid pending message is stored (verified) as if it had just arrived, keeping its
        received_at; an invalid one becomes rejected. Enrolling a key that is already enrolled
        changes nothing but retries its pending messages. ValueError for a malformed key or a
        key_id already taken by another key of the agent.
        """
        raw = decode_public_key(public_key)
        kid, b64 = key_id(raw), public_key.strip()
        now = iso(at if at is not None else datetime.now(UTC))
        stored = rejected = duplicates = 0
        with self._transaction(agent_id) as db:
            row = db.execute(
                "SELECT public_key, revoked_at, enrolled_at FROM agent_keys WHERE agent_id = ? AND key_id = ?",
                (agent_id, kid),
            ).fetchone()
            if row is not None and decode_public_key(str(row[0])) != raw:
                raise ValueError(f"key id {kid} of agent {agent_id!r} is already taken by a different key")
            already = row is not None
            if not already:
                db.execute(
                    "INSERT INTO agent_keys (agent_id, key_id, public_key, enrolled_at) VALUES (?, ?, ?, ?)",
                    (agent_id, kid, b64, now),
                )
            revoked_at = row[1] if row is not None else None
            pending = db.execute(
                "SELECT id, payload, topic, received_at, historical FROM held "
                "WHERE agent_id = ? AND key_id = ? AND status = 'pending' ORDER BY seq, id",
                (agent_id, kid),
            ).fetchall()
            for held_id, text, topic, received, historical in pending:
                m = parse_sequenced(str(text))
                status, why = _check(m, b64, revoked_at)
                if status == "verified":
                    outcome = self._admit(db, m, str(topic), str(text), str(received), status, bool(historical))
                    if outcome == "conflict":
                        status, why = "rejected", f"sequence conflict: seq {m.seq} already stored with other content"
                    else:
                        db.execute("DELETE FROM held WHERE id = ?", (held_id,))
                        stored += outcome == "stored"
                        duplicates += outcome == "duplicate"
                        continue
                db.execute(
                    "UPDATE held SET status = 'rejected', reason = ?, decided_at = ? WHERE id = ?",
                    (why, now, held_id),
                )
                rejected += 1
            enrolled_at = str(row[2]) if row is not None else now
        log.info(
            "key enrolled agent=%s key_id=%s pending_stored=%d pending_rejected=%d", agent_id, kid, stored, rejected
        )
        return EnrollResult(
            agent_id=agent_id,
            key_id=kid,
            public_key=b64,
            fingerprint=fingerprint(raw),
            enrolled_at=parse_iso(enrolled_at),
            already_enrolled=already,
            pending_stored=stored,
            pending_duplicates=duplicates,
            pending_rejected=rejected,
        )

    def revoke_key(self, agent_id: str, kid: str, at: datetime) -> int:
        """Mark a key revoked from `at` (the messages' produced_at); returns how many stored messages
        it signed from then on were moved out as rejected. KeyError if the key is not enrolled."""
        when = iso(at)
        now = iso(datetime.now(UTC))
        with self._transaction(agent_id) as db:
            row = db.execute(
                "SELECT revoked_at FROM agent_keys WHERE agent_id = ? AND key_id = ?", (agent_id, kid)
            ).fetchone()
            if row is None:
                raise KeyError(f"key {kid} is not enrolled for agent {agent_id!r}")
            if row[0] is not None and str(row[0]) < when:
                when = str(row[0])  # an earlier revocation stands
            db.execute("UPDATE agent_keys SET revoked_at = ? WHERE agent_id = ? AND key_id = ?", (when, agent_id, kid))
            moved = db.execute(
                "SELECT seq, payload, topic, received_at, historical FROM messages WHERE agent_id = ? AND key_id = ? "
                "AND verification = 'verified' AND produced_at >= ? ORDER BY seq",
                (agent_id, kid, when),
            ).fetchall()
            for seq, text, topic, received, historical in moved:
                m = parse_sequenced(str(text))
                reason = _revoked_reason(kid, when, m)
                self._hold(db, m, str(topic), str(text), str(received), "rejected", reason, now, bool(historical))
                db.execute("DELETE FROM messages WHERE agent_id = ? AND seq = ?", (agent_id, seq))
                self._delete_derived(db, agent_id, int(seq))
        log.warning("key revoked agent=%s key_id=%s from=%s moved_out=%d", agent_id, kid, when, len(moved))
        return len(moved)

    @staticmethod
    def _store_derived(db: Connection, m: SequencedMessage, received: str) -> None:
        if isinstance(m, MachineKpi):
            db.execute(
                "INSERT INTO kpi (agent_id, seq, machine_id, bucket_start, bucket_end, elements, availability, "
                "performance, quality, oee, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.agent_id,
                    m.seq,
                    m.machine_id,
                    iso(m.bucket_start),
                    iso(m.bucket_end),
                    m.elements.model_dump_json(),
                    m.availability,
                    m.performance,
                    m.quality,
                    m.oee,
                    json.dumps(m.flags),
                ),
            )
        elif isinstance(m, StateInterval):
            db.execute(
                'INSERT INTO states (agent_id, seq, machine_id, state, start, "end", reason) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m.agent_id, m.seq, m.machine_id, m.state, iso(m.start), iso(m.end), m.reason),
            )
        elif isinstance(m, SiteKpi):
            db.execute(
                "INSERT INTO site (agent_id, seq, bucket_start, bucket_end, payload) VALUES (?, ?, ?, ?, ?)",
                (m.agent_id, m.seq, iso(m.bucket_start), iso(m.bucket_end), m.model_dump_json()),
            )
        elif isinstance(m, EvictionDeclaration):
            db.execute(
                "INSERT INTO evictions (agent_id, seq, boot_id, produced_at, received_at, reason, count, bytes, "
                "kinds, oldest_produced_at, newest_produced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.agent_id,
                    m.seq,
                    m.boot_id,
                    iso(m.produced_at),
                    received,
                    m.reason,
                    m.count,
                    m.bytes,
                    json.dumps(m.kinds, sort_keys=True),
                    iso(m.oldest_produced_at) if m.oldest_produced_at else None,
                    iso(m.newest_produced_at) if m.newest_produced_at else None,
                ),
            )
            db.executemany(
                "INSERT INTO evicted_ranges (agent_id, first, last, declared_by) VALUES (?, ?, ?, ?)",
                [(m.agent_id, first, last, m.seq) for first, last in m.ranges],
            )
        else:
            db.execute(
                "INSERT INTO births (agent_id, seq, boot_id, produced_at, agent_version, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (m.agent_id, m.seq, m.boot_id, iso(m.produced_at), m.agent_version, m.model_dump_json()),
            )

    # -- reading -----------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def agents(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT DISTINCT agent_id FROM messages ORDER BY agent_id")]

    def has_agent(self, agent_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM messages WHERE agent_id = ? LIMIT 1", (agent_id,)))

    def has_held(self, agent_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM held WHERE agent_id = ? LIMIT 1", (agent_id,)))

    def verification(self, agent_id: str, seq: int) -> Verification | None:
        """The stored message's status (verified / unsigned), else the first held copy's, else None."""
        rows = self._query("SELECT verification FROM messages WHERE agent_id = ? AND seq = ?", (agent_id, seq))
        if not rows:
            rows = self._query("SELECT status FROM held WHERE agent_id = ? AND seq = ? ORDER BY id", (agent_id, seq))
        return rows[0][0] if rows else None

    def verification_counts(self, agent_id: str) -> dict[Verification, int]:
        """Messages per verification status: stored (verified, unsigned) and held (pending, rejected)."""
        counts: dict[Verification, int] = dict.fromkeys(VERIFICATIONS, 0)
        for status, n in self._query(
            "SELECT verification, COUNT(*) FROM messages WHERE agent_id = ?1 GROUP BY verification "
            "UNION ALL SELECT status, COUNT(*) FROM held WHERE agent_id = ?1 GROUP BY status",
            (agent_id,),
        ):
            counts[status] += int(n)
        return counts

    def held_messages(self, agent_id: str, status: Literal["pending", "rejected"] | None = None) -> list[HeldMessage]:
        """Messages kept apart from the evidence, with why, by seq."""
        sql = (
            "SELECT id, agent_id, seq, kind, produced_at, received_at, key_id, status, reason, decided_at FROM held "
            "WHERE agent_id = ?"
        )
        rows = (
            self._query(sql + " AND status = ? ORDER BY seq, id", (agent_id, status))
            if status
            else self._query(sql + " ORDER BY seq, id", (agent_id,))
        )
        names = ("id", "agent_id", "seq", "kind", "produced_at", "received_at", "key_id", "status", "reason")
        return [HeldMessage(**dict(zip(names, r[:-1], strict=True)), decided_at=r[-1]) for r in rows]

    def held_payload(self, held_id: int) -> str | None:
        rows = self._query("SELECT payload FROM held WHERE id = ?", (held_id,))
        return str(rows[0][0]) if rows else None

    def agent_keys(self, agent_id: str) -> list[EnrolledKey]:
        rows = self._query(
            "SELECT key_id, public_key, enrolled_at, revoked_at FROM agent_keys WHERE agent_id = ? "
            "ORDER BY enrolled_at, key_id",
            (agent_id,),
        )
        return [
            EnrolledKey(
                agent_id=agent_id,
                key_id=str(kid),
                public_key=str(pk),
                fingerprint=fingerprint(_raw_key(str(pk))),
                enrolled_at=parse_iso(str(enrolled)),
                revoked_at=parse_iso(str(revoked)) if revoked else None,
            )
            for kid, pk, enrolled, revoked in rows
        ]

    def announced_key(self, agent_id: str) -> AnnouncedKey | None:
        """The public key in the agent's latest birth message (highest seq) that announces one,
        stored or held pending; rejected births are not considered."""
        rows = self._query(
            "SELECT seq, payload, verification FROM messages WHERE agent_id = ?1 AND kind = 'birth' "
            "UNION ALL SELECT seq, payload, status FROM held WHERE agent_id = ?1 AND kind = 'birth' "
            "AND status = 'pending' ORDER BY seq DESC",
            (agent_id,),
        )
        for _seq, payload, status in rows:
            birth = parse_sequenced(str(payload))
            if not isinstance(birth, BirthMessage) or birth.public_key is None:
                continue
            try:
                raw = decode_public_key(birth.public_key)
            except ValueError:
                continue
            return AnnouncedKey(
                agent_id=agent_id,
                public_key=birth.public_key,
                key_id=key_id(raw),
                fingerprint=fingerprint(raw),
                birth_seq=birth.seq,
                produced_at=birth.produced_at,
                status=status,
                self_signed=birth.key_id == key_id(raw) and verify(raw, birth),
            )
        return None

    def sequence_numbers(self, agent_id: str) -> list[int]:
        rows = self._query("SELECT seq FROM messages WHERE agent_id = ? ORDER BY seq", (agent_id,))
        return [int(r[0]) for r in rows]

    def gaps(self, agent_id: str) -> list[tuple[int, int]]:
        """Missing sequence ranges (first, last), inclusive, from seq 1 up to the highest received.

        Sequence numbers start at 1, so a first received seq above 1 is a gap too. What is missing
        after the highest received number cannot be known here.
        """
        rows = self._query(
            "SELECT prev + 1, seq - 1 FROM (SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) AS prev "
            "FROM messages WHERE agent_id = ?) AS g WHERE seq - prev > 1 ORDER BY seq",
            (agent_id,),
        )
        return [(int(a), int(b)) for a, b in rows]

    def evictions(self, agent_id: str) -> list[EvictionRecord]:
        """The agent's eviction declarations, by seq, each with its ranges."""
        ranges: dict[int, list[tuple[int, int]]] = {}
        for first, last, by in self._query(
            "SELECT first, last, declared_by FROM evicted_ranges WHERE agent_id = ? ORDER BY declared_by, first",
            (agent_id,),
        ):
            ranges.setdefault(int(by), []).append((int(first), int(last)))
        rows = self._query(
            "SELECT seq, boot_id, produced_at, received_at, reason, count, bytes, kinds, oldest_produced_at, "
            "newest_produced_at FROM evictions WHERE agent_id = ? ORDER BY seq",
            (agent_id,),
        )
        return [
            EvictionRecord(
                seq=int(seq),
                boot_id=str(boot),
                produced_at=parse_iso(str(produced)),
                received_at=parse_iso(str(received)),
                reason=reason,
                count=int(count),
                bytes=int(size),
                kinds=json.loads(str(kinds)),
                oldest_produced_at=parse_iso(str(oldest)) if oldest else None,
                newest_produced_at=parse_iso(str(newest)) if newest else None,
                ranges=ranges.get(int(seq), []),
            )
            for seq, boot, produced, received, reason, count, size, kinds, oldest, newest in rows
        ]

    def gap_report(self, agent_id: str) -> GapReport:
        """`gaps()` with the neighbours of each gap and which parts the agent declared evicted.

        A gap covered by eviction declarations is "evicted" (split at each declaration), whatever
        no declaration covers is "missing". Numbers received but held apart (pending an enrolled key,
        or rejected) are gaps too, split out as "pending" / "rejected" with `held` saying why; held
        numbers above the highest stored one form a last gap with no stored message after it.
        """
        with self._lock:  # one snapshot while the ingest may be writing
            self._conn.execute("BEGIN")
            try:
                holes = self._conn.execute(
                    "SELECT prev + 1, seq - 1, prev, prev_produced, prev_received, seq, produced_at, received_at "
                    "FROM (SELECT seq, produced_at, received_at, LAG(seq, 1, 0) OVER w AS prev, "
                    "LAG(produced_at) OVER w AS prev_produced, LAG(received_at) OVER w AS prev_received "
                    "FROM messages WHERE agent_id = ? WINDOW w AS (ORDER BY seq)) AS g "
                    "WHERE seq - prev > 1 ORDER BY seq",
                    (agent_id,),
                ).fetchall()
                declared = [
                    (int(a), int(b), int(by), str(reason))
                    for a, b, by, reason in self._conn.execute(
                        "SELECT r.first, r.last, r.declared_by, e.reason FROM evicted_ranges r JOIN evictions e "
                        "ON e.agent_id = r.agent_id AND e.seq = r.declared_by WHERE r.agent_id = ? "
                        "ORDER BY r.first, r.declared_by",
                        (agent_id,),
                    )
                ]
                received, highest = self._conn.execute(
                    "SELECT COUNT(*), MAX(seq) FROM messages WHERE agent_id = ?", (agent_id,)
                ).fetchone()
                (overlap,) = self._conn.execute(
                    "SELECT COUNT(*) FROM evicted_ranges r JOIN messages m ON m.agent_id = r.agent_id "
                    "AND m.seq BETWEEN r.first AND r.last WHERE r.agent_id = ?",
                    (agent_id,),
                ).fetchone()
                # held numbers that nothing stored fills; of several held copies of one number, the first
                held = [
                    (int(seq), str(status), f"held: pending key {kid}" if status == "pending" else f"rejected: {why}")
                    for seq, status, kid, why in self._conn.execute(
                        "SELECT h.seq, h.status, h.key_id, h.reason FROM held h WHERE h.agent_id = ?1 "
                        "AND h.id = (SELECT MIN(id) FROM held WHERE agent_id = ?1 AND seq = h.seq) "
                        "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.agent_id = ?1 AND m.seq = h.seq) "
                        "ORDER BY h.seq",
                        (agent_id,),
                    )
                ]
                last_row = (
                    self._conn.execute(
                        "SELECT seq, produced_at, received_at FROM messages WHERE agent_id = ? ORDER BY seq DESC "
                        "LIMIT 1",
                        (agent_id,),
                    ).fetchone()
                    if held and highest is not None and held[-1][0] > int(highest)
                    else None
                )
            finally:
                self._conn.execute("COMMIT")
        stored_top = int(highest) if highest is not None else 0
        if held and held[-1][0] > stored_top:
            # received but held beyond the highest stored number: a gap without a stored message after it
            holes = [
                *holes,
                (
                    stored_top + 1,
                    held[-1][0],
                    last_row[0] if last_row else 0,
                    last_row[1] if last_row else None,
                    last_row[2] if last_row else None,
                    None,
                    None,
                    None,
                ),
            ]
        segments: list[GapSegment] = []
        start = 0
        for first, last, prev, prev_produced, prev_received, nxt, produced, arrived in holes:
            after = (
                Neighbour(seq=prev, produced_at=parse_iso(prev_produced), received_at=parse_iso(prev_received))
                if prev
                else None
            )
            before = (
                Neighbour(seq=nxt, produced_at=parse_iso(produced), received_at=parse_iso(arrived))
                if nxt is not None
                else None
            )
            while start < len(declared) and declared[start][1] < first:
                start += 1
            for a, b, by, reason in _split_gap(int(first), int(last), declared, start):
                segment = GapSegment(
                    first=a,
                    last=b,
                    count=b - a + 1,
                    status="missing" if by is None else "evicted",
                    declared_by=by,
                    reason=reason,
                    after=after,
                    before=before,
                )
                segments.extend(_carve(segment, held))
        return GapReport(
            agent_id=agent_id,
            received=int(received),
            highest_seq=int(highest) if highest is not None else None,
            gaps=segments,
            evicted=sum(g.count for g in segments if g.status == "evicted"),
            missing=sum(g.count for g in segments if g.status == "missing"),
            pending=sum(g.count for g in segments if g.status == "pending"),
            rejected=sum(g.count for g in segments if g.status == "rejected"),
            declarations=self.evictions(agent_id),
            declared_but_received=int(overlap),
        )

    @property
    def duplicate_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM duplicates")[0][0])

    def duplicates_of(self, agent_id: str) -> int:
        rows = self._query("SELECT COUNT(*) FROM duplicates WHERE agent_id = ?", (agent_id,))
        return int(rows[0][0])

    def dead_letters(self, agent_id: str | None = None) -> list[DeadLetter]:
        sql = "SELECT id, received_at, topic, agent_id, payload, reason FROM dead_letters"
        rows = (
            self._query(sql + " WHERE agent_id = ? ORDER BY id", (agent_id,))
            if agent_id
            else self._query(sql + " ORDER BY id")
        )
        return [
            DeadLetter(int(i), parse_iso(str(r)), str(t), a if a is None else str(a), bytes(p), str(why))
            for i, r, t, a, p, why in rows
        ]

    def produced_at(self, agent_id: str, seq: int) -> datetime | None:
        rows = self._query("SELECT produced_at FROM messages WHERE agent_id = ? AND seq = ?", (agent_id, seq))
        return parse_iso(str(rows[0][0])) if rows else None

    def message_count(self, agent_id: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM messages WHERE agent_id = ?", (agent_id,))[0][0])

    def message_counts(self, agent_id: str, start: datetime, end: datetime) -> dict[str, int]:
        """Stored messages per kind whose subject time lies in [start, end).

        The subject time is what the message is about (a KPI or site bucket's start, a state
        interval's start, a birth's production time), not when it was sent: a bucket is published
        after it closes, possibly after the window.
        """
        a, b = iso(start), iso(end)
        rows = self._query(
            "SELECT 'birth', COUNT(*) FROM births WHERE agent_id = ?1 AND produced_at >= ?2 AND produced_at < ?3"
            " UNION ALL SELECT 'kpi', COUNT(*) FROM kpi"
            " WHERE agent_id = ?1 AND bucket_start >= ?2 AND bucket_start < ?3"
            " UNION ALL SELECT 'site', COUNT(*) FROM site"
            " WHERE agent_id = ?1 AND bucket_start >= ?2 AND bucket_start < ?3"
            " UNION ALL SELECT 'state', COUNT(*) FROM states WHERE agent_id = ?1 AND start >= ?2 AND start < ?3",
            (agent_id, a, b),
        )
        return {str(k): int(n) for k, n in rows if n}

    def kpi_rows(self, agent_id: str, start: datetime, end: datetime) -> list[KpiRow]:
        """MachineKpi buckets that overlap [start, end), by machine then bucket, in seq order."""
        rows = self._query(
            "SELECT agent_id, seq, machine_id, bucket_start, bucket_end, elements, flags FROM kpi "
            "WHERE agent_id = ? AND bucket_end > ? AND bucket_start < ? ORDER BY machine_id, bucket_start, seq",
            (agent_id, iso(start), iso(end)),
        )
        return [
            KpiRow(
                str(a),
                int(s),
                str(mid),
                parse_iso(str(bs)),
                parse_iso(str(be)),
                TimeElements.model_validate_json(str(el)),
                json.loads(str(fl)),
            )
            for a, s, mid, bs, be, el, fl in rows
        ]

    def seen(
        self, agent_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> dict[str, tuple[datetime, datetime]]:
        """Per machine, (first, last) time it was seen with data: the earliest start and latest end of
        its state intervals that need data (RUNNING, SETUP, MICRO_STOP, IDLE, FAULT), clipped to
        [start, end) when given. Calendar states (planned stop, not scheduled) and UNKNOWN do not count."""
        lo, hi = iso(start) if start else "", iso(end) if end else "~"
        rows = self._query(
            'SELECT machine_id, MIN(start), MAX("end") FROM states WHERE agent_id = ? AND state IN '
            f"({', '.join(repr(s) for s in DATA_STATES)}) "
            'AND "end" > ? AND start < ? GROUP BY machine_id',
            (agent_id, lo, hi),
        )
        out = {}
        for machine, first, last in rows:
            a, b = parse_iso(str(first)), parse_iso(str(last))
            out[str(machine)] = (max(a, start) if start else a, min(b, end) if end else b)
        return out

    def latest_site(self, agent_id: str, start: datetime, end: datetime) -> SiteKpi | None:
        """The SiteKpi with the latest bucket lying inside [start, end]."""
        rows = self._query(
            "SELECT payload FROM site WHERE agent_id = ? AND bucket_start >= ? AND bucket_end <= ? "
            "ORDER BY bucket_end DESC, seq DESC LIMIT 1",
            (agent_id, iso(start), iso(end)),
        )
        return SiteKpi.model_validate_json(str(rows[0][0])) if rows else None

    def latest_birth(self, agent_id: str, produced_before: datetime | None = None) -> BirthMessage | None:
        """The agent's latest BirthMessage (by seq), optionally only those produced before a time."""
        if produced_before is None:
            rows = self._query("SELECT payload FROM births WHERE agent_id = ? ORDER BY seq DESC LIMIT 1", (agent_id,))
        else:
            rows = self._query(
                "SELECT payload FROM births WHERE agent_id = ? AND produced_at < ? ORDER BY seq DESC LIMIT 1",
                (agent_id, iso(produced_before)),
            )
        return BirthMessage.model_validate_json(str(rows[0][0])) if rows else None

    def status(self, agent_id: str) -> AgentStatus | None:
        rows = self._query(
            "SELECT agent_id, online, boot_id, at, received_at FROM status WHERE agent_id = ?", (agent_id,)
        )
        if not rows:
            return None
        a, online, boot, at, received = rows[0]
        return AgentStatus(
            str(a), bool(online), str(boot), parse_iso(str(at)) if at else None, parse_iso(str(received))
        )

    def health(self, agent_id: str) -> HealthMessage | None:
        """The agent's latest health reading, if one arrived."""
        rows = self._query("SELECT payload FROM health WHERE agent_id = ?", (agent_id,))
        return HealthMessage.model_validate_json(str(rows[0][0])) if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
