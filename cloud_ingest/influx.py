"""Time series of the stored messages, also written to InfluxDB (v2 write API) for dashboards.

The SQLite store stays the record of truth; InfluxDB is a convenience copy for Grafana. The ingest
hands every message the store has just stored (and every health reading) to `InfluxSink.offer`,
which only appends it to a bounded in-memory buffer; a background thread turns messages into
points and writes them in batches through influxdb-client's synchronous WriteApi, retrying with
back-off while the server is unreachable. When the buffer is full the oldest message is dropped
and counted, so an InfluxDB outage never stops or slows SQLite ingestion; `edgeproof influx
backfill` re-exports what the store holds (docs/influx.md).

A point's identity (measurement, tags, timestamp) depends only on what the message is about, never
on its sequence number or arrival, so a re-sent bucket overwrites its earlier point in InfluxDB.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cloud_ingest.store import Store
from edgeproof.contract import (
    AnySequenced,
    BirthMessage,
    EvictionDeclaration,
    HealthMessage,
    MachineKpi,
    SiteKpi,
    StateInterval,
    parse_sequenced,
    parse_topic,
)
from edgeproof.indicators import Ratio, ScoredRatio

log = logging.getLogger(__name__)

TOKEN_ENV = "EDGEPROOF_INFLUX_TOKEN"  # not an option: command lines are visible to every local user

KPI = "edgeproof_kpi"
SITE = "edgeproof_site"
STATE = "edgeproof_state"
BIRTH = "edgeproof_birth"
EVICTED = "edgeproof_evicted"
HEALTH = "edgeproof_health"
DEVICE = "edgeproof_device"

# Fixed numbers for Grafana's value mappings; never renumber (stored points keep their codes).
STATE_CODES: dict[str, int] = {
    "UNKNOWN": 0,
    "RUNNING": 1,
    "SETUP": 2,
    "MICRO_STOP": 3,
    "IDLE": 4,
    "FAULT": 5,
    "PLANNED_STOP": 6,
    "NOT_SCHEDULED": 7,
}
DEVICE_STATUS_CODES: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}
SITE_RATIOS = ("networking_rate", "digitalisation_rate", "networked_over_digital", "nc_rate_key_processes")
DROP_WARNING_EVERY_S = 60.0


class InfluxSettings(BaseModel):
    """Where and how to write; the token is read from the environment variable `token_env`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="e.g. http://influxdb:8086")
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token_env: str = Field(TOKEN_ENV, description="name of the environment variable holding the API token")
    batch_size: int = Field(500, ge=1, description="points per write request")
    flush_interval_s: float = Field(1.0, gt=0, description="longest a point waits for its batch to fill")
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one write request")
    max_buffered: int = Field(10_000, ge=1, description="messages waiting to be written; past it the oldest is dropped")
    retry_max_s: float = Field(30.0, gt=0, description="longest back-off between retries of a failed write")

    def token(self) -> SecretStr:
        return SecretStr(os.environ.get(self.token_env, ""))


class InfluxStats(BaseModel):
    offered: int = 0
    written_points: int = 0
    dropped_messages: int = Field(0, description="buffer overflow, unreadable, or unwritten at close")
    dropped_points: int = Field(0, description="in batches the server refused (4xx) or left at close")
    failed_writes: int = 0
    buffered: int = 0
    first_dropped_at: datetime | None = Field(None, description="arrival of the first dropped message, UTC")


# -- messages → points -----------------------------------------------------------------------------

Register = Mapping[str, str | None]  # machine_id → process, from the agent's birth


def _ratio_fields(point: Point, name: str, ratio: Ratio) -> None:
    point.field(f"{name}_numerator", float(ratio.numerator)).field(f"{name}_denominator", float(ratio.denominator))
    if ratio.value is not None:
        point.field(name, float(ratio.value))
    if isinstance(ratio, ScoredRatio) and ratio.band_points is not None:
        point.field(f"{name}_points", float(ratio.band_points))


def _machine_point(measurement: str, agent_id: str, machine_id: str, register: Register) -> Point:
    point = Point(measurement).tag("agent_id", agent_id).tag("machine_id", machine_id)
    process = register.get(machine_id)
    return point.tag("process", process) if process else point


def _bucket_s(start: datetime, end: datetime) -> str:
    # a tag, so that hourly buckets and roll-ups ending at the same instant stay different points
    return f"{(end - start).total_seconds():g}"


def register_of(birth: BirthMessage | None) -> dict[str, str | None]:
    return {} if birth is None else {a.machine_id: a.process for a in birth.assets}


def to_points(message: AnySequenced | HealthMessage, register: Register) -> list[Point]:
    """The points of one stored message (or health reading); every number a float except codes and counts.

    Timestamps: KPI and site buckets at `bucket_end` (when the bucket's numbers became known, and
    where Flux's aggregateWindow puts a window's value); state intervals at `start`; births,
    declarations and health readings at the time they were produced.
    """
    ns = WritePrecision.NS
    if isinstance(message, MachineKpi):
        point = _machine_point(KPI, message.agent_id, message.machine_id, register)
        point.tag("bucket_s", _bucket_s(message.bucket_start, message.bucket_end))
        for name, value in message.elements.model_dump().items():
            point.field(name, value if isinstance(value, bool) else float(value))
        for name in ("availability", "performance", "quality", "oee"):
            value = getattr(message, name)
            if value is not None:
                point.field(name, float(value))
        return [point.time(message.bucket_end, ns)]
    if isinstance(message, SiteKpi):
        point = Point(SITE).tag("agent_id", message.agent_id)
        point.tag("bucket_s", _bucket_s(message.bucket_start, message.bucket_end))
        for name in SITE_RATIOS:
            _ratio_fields(point, name, getattr(message.ratios, name))
        point.field("machines", len(message.machines))
        point.field("networked_machines", sum(c.networked for c in message.ratios.coverage))
        return [point.time(message.bucket_end, ns)]
    if isinstance(message, StateInterval):
        point = _machine_point(STATE, message.agent_id, message.machine_id, register).tag("state", message.state)
        point.field("duration_s", (message.end - message.start).total_seconds())
        point.field("state_code", STATE_CODES[message.state])
        return [point.time(message.start, ns)]
    if isinstance(message, BirthMessage):
        point = Point(BIRTH).tag("agent_id", message.agent_id)
        point.field("assets", len(message.assets)).field("acquired", sum(a.acquired for a in message.assets))
        point.field("digital", sum(a.digital for a in message.assets))
        point.field("nc_capable", sum(a.nc_capable for a in message.assets))
        return [point.time(message.produced_at, ns)]
    if isinstance(message, EvictionDeclaration):
        # declared_by: one eviction may write several declarations with the same produced_at
        point = Point(EVICTED).tag("agent_id", message.agent_id).tag("reason", message.reason)
        point.tag("declared_by", str(message.seq)).field("count", message.count).field("bytes", message.bytes)
        return [point.time(message.produced_at, ns)]
    health = Point(HEALTH).tag("agent_id", message.agent_id)
    health.field("uptime_s", float(message.uptime_s)).field("connected", message.connected)
    health.field("published", message.published).field("publish_rate_per_s", float(message.publish_rate_per_s))
    health.field("samples_read", message.samples_read)
    for name, value in message.outbox.model_dump().items():
        if value is not None:
            health.field(f"outbox_{name}", float(value) if name == "oldest_age_s" else value)
    points = [health.time(message.at, ns)]
    for d in message.devices:
        device = Point(DEVICE).tag("agent_id", message.agent_id).tag("device_id", d.device_id)
        device.tag("protocol", d.protocol).field("status_code", DEVICE_STATUS_CODES[d.status])
        device.field("tags", d.tags).field("bad_tags", d.bad_tags).field("good_samples", d.good_samples)
        points.append(device.field("poll_overruns", d.poll_overruns).time(message.at, ns))
    return points


def parse(topic: str, payload: bytes | str) -> AnySequenced | HealthMessage | None:
    """The message a stored payload holds; None for kinds that have no points (status)."""
    parsed = parse_topic(topic)
    kind = parsed[1] if parsed else None
    if kind == "health":
        return HealthMessage.model_validate_json(payload)
    if kind == "status":
        return None
    return parse_sequenced(payload)


class RegisterLookup:
    """machine → process of an agent as its latest birth produced before a message said (from the store).

    The same rule live and in a backfill, so both write the same `process` tag.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def __call__(self, message: AnySequenced | HealthMessage) -> Register:
        if isinstance(message, BirthMessage):
            return register_of(message)
        if isinstance(message, MachineKpi | StateInterval):
            return register_of(self._store.latest_birth(message.agent_id, produced_before=message.produced_at))
        return {}


# -- writing ----------------------------------------------------------------------------------------


def open_client(settings: InfluxSettings) -> InfluxDBClient:
    # retries=False: the sink retries itself, without holding up close() or the buffer bound
    return InfluxDBClient(
        url=settings.url,
        token=settings.token().get_secret_value(),
        org=settings.org,
        timeout=int(settings.timeout_s * 1000),
        retries=False,
    )


def _permanent(exc: Exception) -> bool:
    """A refusal that a retry cannot cure (bad data, auth): 4xx other than 408/429."""
    status = exc.status if isinstance(exc, ApiException) else None
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}: {(exc.body or '')[:300]!r}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


class InfluxSink:
    """Bounded, non-blocking copy of stored messages to InfluxDB, written by one background thread.

    `offer()` is called on the ingest's MQTT thread and only appends to a deque under a lock; it
    never waits for the network. `store_path` (the ingest's SQLite file) gives the `process` tag.
    """

    def __init__(self, settings: InfluxSettings, store_path: str | Path | None = None) -> None:
        self.settings = settings
        self._store_path = store_path
        self._buffer: deque[tuple[datetime, str, bytes]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._stats = InfluxStats()
        self._last_drop_warning = -DROP_WARNING_EVERY_S
        self._thread: threading.Thread | None = None

    def start(self) -> InfluxSink:
        if self._thread is not None:
            raise RuntimeError("InfluxSink already started")
        self._thread = threading.Thread(target=self._run, name="influx-sink", daemon=True)
        self._thread.start()
        log.info("influx sink started url=%s org=%s bucket=%s", self.settings.url, self.settings.org,
                 self.settings.bucket)
        if not self.settings.token().get_secret_value():
            log.warning("influx sink: $%s is empty; a server that needs a token will refuse every write",
                        self.settings.token_env)
        return self

    def offer(self, topic: str, payload: bytes) -> None:
        """Queue one stored message; drops (and counts) the oldest queued one when the buffer is full."""
        now = datetime.now(UTC)
        with self._cond:
            self._stats.offered += 1
            if len(self._buffer) >= self.settings.max_buffered:
                dropped_at, _topic, _payload = self._buffer.popleft()
                self._dropped_locked(dropped_at, messages=1)
            self._buffer.append((now, topic, bytes(payload)))
            self._cond.notify()

    def stats(self) -> InfluxStats:
        with self._cond:
            return self._stats.model_copy(update={"buffered": len(self._buffer)})

    def close(self, timeout_s: float | None = None) -> InfluxStats:
        """Write what is buffered (one attempt per batch), then stop; what cannot be written is counted."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else 2 * self.settings.timeout_s + 5)
            self._thread = None
        stats = self.stats()
        lost = stats.dropped_messages or stats.dropped_points
        log.log(
            logging.WARNING if lost else logging.INFO,
            "influx sink closed %s%s",
            stats.model_dump(exclude_none=True),
            "; run edgeproof influx backfill to write what is missing" if lost else "",
        )
        return stats

    # -- worker thread -------------------------------------------------------------------------------

    def _dropped_locked(self, at: datetime, messages: int = 0, points: int = 0) -> None:
        s = self._stats
        s.dropped_messages += messages
        s.dropped_points += points
        if s.first_dropped_at is None:
            s.first_dropped_at = at
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_EVERY_S:  # a counted warning, not one per message
            self._last_drop_warning = now
            since = (s.first_dropped_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            log.warning(
                "influx sink dropping: %d message(s) and %d point(s) not written to InfluxDB so far; the SQLite "
                "store has them: edgeproof influx backfill --since %s", s.dropped_messages, s.dropped_points, since,
            )

    def _take(self, deadline: float, room: int) -> list[tuple[datetime, str, bytes]] | None:
        """Up to `room` buffered messages, waiting until `deadline` for the first; None once closing and empty."""
        with self._cond:
            while not self._buffer and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            if not self._buffer:
                return None
            return [self._buffer.popleft() for _ in range(min(room, len(self._buffer)))]

    def _run(self) -> None:
        store = Store(self._store_path) if self._store_path is not None else None
        lookup: Callable[[AnySequenced | HealthMessage], Register] = (
            RegisterLookup(store) if store is not None else (lambda _m: {})
        )
        client = open_client(self.settings)
        try:
            self._loop(client, lookup)
        finally:
            client.close()
            if store is not None:
                store.close()

    def _loop(self, client: InfluxDBClient, lookup: Callable[[AnySequenced | HealthMessage], Register]) -> None:
        write_api = client.write_api(write_options=SYNCHRONOUS)
        s = self.settings
        batch: list[Point] = []
        first_at = datetime.now(UTC)  # arrival of the batch's first message: where a backfill would start
        due = time.monotonic() + s.flush_interval_s
        backoff = 1.0
        while True:
            closing = False
            if len(batch) < s.batch_size:
                taken = self._take(due, s.batch_size - len(batch))
                closing = taken is None
                for at, topic, payload in taken or []:
                    try:
                        message = parse(topic, payload)
                        points = to_points(message, lookup(message)) if message is not None else []
                    except (ValidationError, ValueError, KeyError) as exc:  # the store accepted it: a bug
                        log.error("influx sink cannot convert topic=%s: %s", topic, exc)
                        with self._cond:
                            self._dropped_locked(at, messages=1)
                        continue
                    if not batch and points:
                        first_at, due = at, time.monotonic() + s.flush_interval_s
                    batch.extend(points)
                if not closing and batch and len(batch) < s.batch_size and time.monotonic() < due:
                    continue
            if not batch:
                if closing:
                    return
                due = time.monotonic() + s.flush_interval_s
                continue
            try:
                write_api.write(bucket=s.bucket, org=s.org, record=batch, write_precision=WritePrecision.NS)
            except Exception as exc:  # urllib3 / HTTP errors of every kind: the server's problem, never the ingest's
                with self._cond:
                    self._stats.failed_writes += 1
                    if _permanent(exc):
                        log.warning("influx refused %d point(s), dropped: %s", len(batch), describe_error(exc))
                        self._dropped_locked(first_at, points=len(batch))
                        batch = []
                        continue
                    if self._closing:  # one attempt at close: the store keeps everything for a backfill
                        log.warning("influx unreachable at close: %s", describe_error(exc))
                        self._dropped_locked(first_at, messages=len(self._buffer), points=len(batch))
                        self._buffer.clear()
                        return
                    log.warning("influx write of %d point(s) failed, retrying in %.0f s: %s",
                                len(batch), backoff, describe_error(exc))
                    self._cond.wait_for(lambda: self._closing, backoff)
                backoff = min(backoff * 2, s.retry_max_s)
                continue
            with self._cond:
                self._stats.written_points += len(batch)
            batch, backoff = [], 1.0
            due = time.monotonic() + s.flush_interval_s


def write_points(client: InfluxDBClient, settings: InfluxSettings, points: Iterable[Point]) -> int:
    """Write synchronously in batches of `settings.batch_size`; raises on the first failure. Returns the count."""
    write_api = client.write_api(write_options=SYNCHRONOUS)
    batch: list[Point] = []
    written = 0
    for point in points:
        batch.append(point)
        if len(batch) >= settings.batch_size:
            write_api.write(bucket=settings.bucket, org=settings.org, record=batch, write_precision=WritePrecision.NS)
            written, batch = written + len(batch), []
    if batch:
        write_api.write(bucket=settings.bucket, org=settings.org, record=batch, write_precision=WritePrecision.NS)
        written += len(batch)
    return written
