"""What the web app reads from the ingest's store, through read-only connections only.

Every read opens the store with `Store.open_readonly`: SQLite (`mode=ro`) or PostgreSQL (a READ ONLY
session) itself refuses any write, so no page can alter the store; WAL, or PostgreSQL's MVCC, lets
the pages read while the ingest writes. The records are built by the
same functions as `edgeproof report --project` (`record.build_project_reports`); the summaries of
the firm list are taken from those records. Records are cached per project and rebuilt when the
store's data changed and the cached one is older than `max_age_s` (a busy fleet changes the store
every few seconds; rebuilding hundreds of records on every page would not keep up). Exports never
use the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from cloud_ingest.declared import DeclaredImport, store_imports
from cloud_ingest.dialect import Connection, PgConnection, StoreTarget, has_table
from cloud_ingest.evidence import EvidenceReport, site_zone
from cloud_ingest.projects import Project, UnknownProject
from cloud_ingest.record import build_project_reports
from cloud_ingest.report import ReportError, UnknownAgent, asset_register, build_report
from cloud_ingest.store import Store, iso, parse_iso
from edgeproof.indicators import oee, site_ratios
from edgeproof.rollup import BucketRecord, by_local_day, rollup

log = logging.getLogger(__name__)

Status = Literal["complete", "insufficient", "offline", "rejected", "gaps"]
STATUS_ORDER: tuple[Status, ...] = ("insufficient", "rejected", "offline", "gaps", "complete")  # most serious first
SUMMARY_KEYS = ("networking_rate", "nc_rate_key_processes", "oee")

def read_projects(conn: Connection) -> list[Project]:
    if not has_table(conn, "projects"):
        return []
    return [Project.model_validate_json(r[0]) for r in conn.execute("SELECT data FROM projects ORDER BY project_id")]


def read_imports(store: Store, project_id: str) -> list[DeclaredImport]:
    return store_imports(store.connection, str(store.path), project_id)


def project_reports(store: Store, project: Project) -> dict[str, EvidenceReport | str]:
    """Per agent, its record exactly as `edgeproof report --project` builds it, or why there is none."""
    imported = read_imports(store, project.id)
    try:
        return {r.agent_id: r for r in build_project_reports(store, project, imported=imported)}
    except (ReportError, UnknownAgent):
        pass  # an agent without data yet: the others still have their records, built the same way
    out: dict[str, EvidenceReport | str] = {}
    for agent in project.agents:
        try:
            report = build_report(store, agent, project.baseline.pair(), project.post.pair(), imported=imported)
            out[agent] = report.model_copy(update={"project": project})
        except (ReportError, UnknownAgent) as exc:
            out[agent] = str(exc)
    return out


# -- summaries of the firm list ---------------------------------------------------------------------


class Pair(BaseModel):
    baseline: float | None
    post: float | None


class AgentSummary(BaseModel):
    agent_id: str
    has_data: bool
    error: str | None = Field(None, description="why there is no record (no messages from the agent yet)")
    networking_rate: Pair
    nc_rate_key_processes: Pair
    oee: Pair
    newest_seq: int | None = Field(description="highest stored sequence number")
    newest_received_at: AwareDatetime | None = Field(description="when the newest stored message arrived")
    age_s: float | None = Field(description="seconds since then, at the request")
    online: bool | None = Field(description="the agent's latest retained status; None: never received")
    status_at: AwareDatetime | None
    rejected: int = Field(description="messages rejected: bad signature / revoked key, or dead letters")
    missing: int = Field(description="sequence numbers missing (declared evicted or lost)")
    statuses: list[Status]


class ProjectSummary(BaseModel):
    project_id: str
    firm_name: str
    credit_code: str
    provider: str
    agents: list[AgentSummary]
    age_s: float | None = Field(description="the stalest agent's age_s; None if an agent has no data")
    status: Status = Field(description="the most serious of `statuses`")
    statuses: list[Status]


def _pair(report: EvidenceReport, key: str) -> Pair:
    i = report.indicator(key)
    return Pair(baseline=i.baseline.value, post=i.post.value)


def _newest(conn: Connection, agent_id: str) -> tuple[int, datetime] | None:
    row = conn.execute(
        "SELECT seq, received_at FROM messages WHERE agent_id = ? ORDER BY seq DESC LIMIT 1", (agent_id,)
    ).fetchone()
    return (int(row[0]), parse_iso(str(row[1]))) if row else None


def agent_summary(store: Store, agent_id: str, record: EvidenceReport | str, now: datetime) -> AgentSummary:
    newest = _newest(store.connection, agent_id)
    status = store.status(agent_id)
    empty = Pair(baseline=None, post=None)
    statuses: list[Status] = []
    if isinstance(record, str):
        statuses.append("insufficient")
        pairs = {k: empty for k in SUMMARY_KEYS}
        rejected = missing = 0
    else:
        pairs = {k: _pair(record, k) for k in SUMMARY_KEYS}
        q = record.data_quality
        rejected = sum(1 for h in q.held if h.status == "rejected") + q.dead_letters
        missing = q.missing_messages
        if (
            any(v is None for k in ("networking_rate", "oee") for v in (pairs[k].baseline, pairs[k].post))
            or q.baseline.kpi_buckets == 0
            or q.post.kpi_buckets == 0
        ):
            statuses.append("insufficient")
    if rejected:
        statuses.append("rejected")
    if status is not None and not status.online:
        statuses.append("offline")
    if missing:
        statuses.append("gaps")
    return AgentSummary(
        agent_id=agent_id,
        has_data=not isinstance(record, str),
        error=record if isinstance(record, str) else None,
        newest_seq=newest[0] if newest else None,
        newest_received_at=newest[1] if newest else None,
        age_s=(now - newest[1]).total_seconds() if newest else None,
        online=status.online if status else None,
        status_at=status.received_at if status else None,
        rejected=rejected,
        missing=missing,
        statuses=statuses or ["complete"],
        **pairs,
    )


def project_summary(store: Store, project: Project, records: dict[str, EvidenceReport | str]) -> ProjectSummary:
    now = datetime.now(UTC)
    agents = [agent_summary(store, a, records[a], now) for a in project.agents]
    found = {s for a in agents for s in a.statuses if s != "complete"}
    statuses = [s for s in STATUS_ORDER if s in found] or ["complete"]
    ages = [a.age_s for a in agents]
    return ProjectSummary(
        project_id=project.id,
        firm_name=project.firm.name,
        credit_code=project.firm.credit_code,
        provider=project.provider,
        agents=agents,
        age_s=None if any(a is None for a in ages) else max(a for a in ages if a is not None),
        status=statuses[0],
        statuses=statuses,
    )


# -- time series, states ---------------------------------------------------------------------------


class DayPoint(BaseModel):
    """One plant-local day of an agent: its buckets summed per machine, then divided (never averaged)."""

    day: date
    start: AwareDatetime = Field(description="earliest bucket start of the day")
    end: AwareDatetime = Field(description="latest bucket end of the day: the span the networking rate is over")
    buckets: int
    networking_rate: float | None
    networked: int | None
    machines: int | None
    oee: float | None
    availability: float | None
    performance: float | None
    quality: float | None


class DailySeries(BaseModel):
    agent_id: str
    timezone: str
    days: list[DayPoint]
    superseded_buckets: int = Field(description="re-sent buckets (same machine and bucket): the latest seq is used")
    overlapping_buckets: int = Field(description="longer buckets (roll-ups) covering finer ones: left out")


def _pick_buckets(rows: list[BucketRecord], seqs: list[int]) -> tuple[list[BucketRecord], int, int]:
    """One bucket per (machine, span) — the latest seq — and, where buckets of one machine overlap,
    the finest ones (a daily roll-up next to hourly buckets would count the same time twice)."""
    latest: dict[tuple[str, datetime, datetime], tuple[int, BucketRecord]] = {}
    superseded = 0
    for seq, b in zip(seqs, rows, strict=True):
        key = (b.machine_id, b.start, b.end)
        if key in latest:
            superseded += 1
            if seq < latest[key][0]:
                continue
        latest[key] = (seq, b)
    kept: list[BucketRecord] = []
    taken: dict[str, list[tuple[datetime, datetime]]] = {}
    overlapping = 0
    for _, b in sorted(latest.values(), key=lambda x: (x[1].end - x[1].start, x[1].start)):
        spans = taken.setdefault(b.machine_id, [])
        if any(b.start < e and s < b.end for s, e in spans):
            overlapping += 1
            continue
        spans.append((b.start, b.end))
        kept.append(b)
    return kept, superseded, overlapping


def daily_series(store: Store, agent_id: str, start: datetime | None, end: datetime | None) -> DailySeries:
    """Networking rate and OEE per plant-local day over the stored KPI buckets (in [start, end) when given)."""
    birth = store.latest_birth(agent_id)
    zone: tzinfo = site_zone(birth.site.timezone if birth else None)
    conn = store.connection
    lo, hi = conn.execute(
        "SELECT MIN(bucket_start), MAX(bucket_end) FROM kpi WHERE agent_id = ?", (agent_id,)
    ).fetchone()
    if lo is None:
        return DailySeries(agent_id=agent_id, timezone=str(zone), days=[], superseded_buckets=0, overlapping_buckets=0)
    a = max(parse_iso(str(lo)), start) if start else parse_iso(str(lo))
    b = min(parse_iso(str(hi)), end) if end else parse_iso(str(hi))
    rows = [r for r in store.kpi_rows(agent_id, a, b) if a <= r.bucket_start and r.bucket_end <= b]
    records = [
        BucketRecord(machine_id=r.machine_id, start=r.bucket_start, end=r.bucket_end, elements=r.elements) for r in rows
    ]
    kept, superseded, overlapping = _pick_buckets(records, [r.seq for r in rows])
    day_of = by_local_day(zone)  # type: ignore[arg-type]
    per_day: dict[date, list[BucketRecord]] = {}
    for bucket in kept:
        per_day.setdefault(day_of(bucket), []).append(bucket)
    days = []
    for day in sorted(per_day):
        buckets = per_day[day]
        first, last = min(x.start for x in buckets), max(x.end for x in buckets)
        plant = rollup(buckets, lambda _: "plant")["plant"]
        per_machine = rollup(buckets, lambda x: x.machine_id)
        r = oee(plant)
        register = asset_register(store, agent_id, first, last)
        networking = networked = machines = None
        if register is not None:
            ratios = site_ratios(
                register.machines,
                register.processes,
                {m: te.observed_s for m, te in per_machine.items()},
                (last - first).total_seconds(),
                register.min_coverage,
            )
            networking = ratios.networking_rate.value
            networked, machines = int(ratios.networking_rate.numerator), int(ratios.networking_rate.denominator)
        days.append(
            DayPoint(
                day=day,
                start=first,
                end=last,
                buckets=len(buckets),
                networking_rate=networking,
                networked=networked,
                machines=machines,
                oee=r.oee.value,
                availability=r.availability.value,
                performance=r.performance.value,
                quality=r.quality.value,
            )
        )
    return DailySeries(
        agent_id=agent_id,
        timezone=str(zone),
        days=days,
        superseded_buckets=superseded,
        overlapping_buckets=overlapping,
    )


class StateRow(BaseModel):
    seq: int
    machine_id: str
    state: str
    start: AwareDatetime
    end: AwareDatetime
    reason: str | None


def state_intervals(store: Store, agent_id: str, start: datetime, end: datetime) -> list[StateRow]:
    """The stored state intervals overlapping [start, end), clipped to it, by machine and start."""
    rows = store.connection.execute(
        'SELECT seq, machine_id, state, start, "end", reason FROM states '
        'WHERE agent_id = ? AND "end" > ? AND start < ? '
        "ORDER BY machine_id, start, seq",
        (agent_id, iso(start), iso(end)),
    ).fetchall()
    return [
        StateRow(
            seq=int(seq),
            machine_id=str(m),
            state=str(state),
            start=max(parse_iso(str(s)), start),
            end=min(parse_iso(str(e)), end),
            reason=reason,
        )
        for seq, m, state, s, e, reason in rows
    ]


# -- the catalogue: stores, cache ----------------------------------------------------------------------


@dataclass
class _Cached:
    project_json: str
    version: tuple[object, ...]
    built: float
    records: dict[str, EvidenceReport | str]


class Catalog:
    """The app's access to one store file: read-only stores, projects, cached records."""

    def __init__(self, db_path: StoreTarget, max_age_s: float = 30.0) -> None:
        self.db_path = db_path
        self.max_age_s = max_age_s
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[Store]:
        store = Store.open_readonly(self.db_path)
        try:
            yield store
        finally:
            store.close()

    def check(self) -> None:
        """Raise StoreUnavailable unless the store can be read."""
        with self.store():
            pass

    @staticmethod
    def version(conn: Connection) -> tuple[object, ...]:
        """Cheap (index-only) numbers that change whenever something a record shows changes."""
        if isinstance(conn, PgConnection):
            # no rowid: the next transaction id moves with every write to the cluster (more often than
            # needed, never less), while a quiet store keeps it and its cached records
            return (conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0],)
        parts = [
            "SELECT MAX(rowid) FROM messages",
            "SELECT MAX(rowid) FROM duplicates",
            "SELECT MAX(id) FROM dead_letters",
            "SELECT COUNT(*) || '/' || MAX(id) FROM held",
            "SELECT COUNT(*) || '/' || COUNT(revoked_at) FROM agent_keys",
            "SELECT MAX(received_at) FROM status",
        ]
        if has_table(conn, "projects"):
            parts.append("SELECT MAX(updated_at) FROM projects")
        if has_table(conn, "declared_imports"):
            parts.append("SELECT MAX(import_id) || '/' || COUNT(withdrawn_at) FROM declared_imports")
        return tuple(conn.execute(sql).fetchone()[0] for sql in parts)

    def projects(self, store: Store) -> list[Project]:
        return read_projects(store.connection)

    def project(self, store: Store, project_id: str) -> Project:
        for p in read_projects(store.connection):
            if p.id == project_id:
                return p
        raise UnknownProject(f"no project {project_id!r}")

    def records(self, store: Store, project: Project) -> dict[str, EvidenceReport | str]:
        version = self.version(store.connection)
        data = project.model_dump_json()
        with self._lock:
            hit = self._cache.get(project.id)
        if (
            hit is not None
            and hit.project_json == data
            and (hit.version == version or time.monotonic() - hit.built < self.max_age_s)
        ):
            return hit.records
        started = time.perf_counter()
        records = project_reports(store, project)
        log.debug(
            "records built project=%s agents=%d ms=%.1f",
            project.id,
            len(records),
            (time.perf_counter() - started) * 1e3,
        )
        with self._lock:
            self._cache[project.id] = _Cached(data, version, time.monotonic(), records)
        return records

    def summaries(self, store: Store) -> list[ProjectSummary]:
        return [project_summary(store, p, self.records(store, p)) for p in self.projects(store)]
