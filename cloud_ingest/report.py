"""Build the before/after evidence of one agent from the store (docs: shared indicators §4).

All maths is `edgeproof.indicators`: per window, the KPI buckets lying inside it are summed per
machine and for the plant with `total()`, then `oee()`; the site ratios come from `site_ratios()`
over the window's asset register and the observed time summed from those buckets.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cloud_ingest.evidence import (
    FRACTION_LABELS,
    LABELS,
    NO_KPI,
    NO_REGISTER,
    NOTES,
    BasisUnit,
    DataQuality,
    EvidenceReport,
    Indicator,
    MachineComparison,
    MachineWindow,
    Provenance,
    SeqGap,
    Side,
    StatusSnapshot,
    Window,
    WindowQuality,
    definitions,
)
from cloud_ingest.render import render_html, write_report
from cloud_ingest.store import KpiRow, Store
from edgeproof.contract import CONTRACT_VERSION, BirthMessage
from edgeproof.indicators import (
    DEFAULT_NETWORKED_MIN_COVERAGE,
    Oee,
    ProcessInfo,
    ProcessNc,
    Ratio,
    RegisteredMachine,
    ScoredRatio,
    SiteRatios,
    TimeElements,
    oee,
    site_ratios,
    total,
)

__all__ = ["ReportError", "UnknownAgent", "build_report", "render_html", "write_report"]

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """The report cannot be built as asked (bad windows); str() is ready for a user."""


class UnknownAgent(LookupError):
    """The store has no message from that agent."""


@dataclass
class _Register:
    machines: list[RegisteredMachine]
    processes: list[ProcessInfo]
    min_coverage: float
    source: Literal["site", "birth"]
    bucket: tuple[datetime, datetime] | None = None


@dataclass
class _WindowData:
    """Everything computed for one window."""

    window: Window
    per_machine: dict[str, TimeElements]
    buckets: dict[str, int]
    plant: TimeElements
    plant_oee: Oee
    register: _Register | None
    ratios: SiteRatios | None
    quality: WindowQuality
    flags: dict[str, list[str]] = field(default_factory=dict)


def _check_window(name: str, window: tuple[datetime, datetime]) -> Window:
    start, end = window
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportError(f"{name} window needs timezone-aware times (ISO 8601 with an offset)")
    if end <= start:
        raise ReportError(f"{name} window must end after it starts (start {start.isoformat()}, end {end.isoformat()})")
    return Window(start=start, end=end, length_s=(end - start).total_seconds())


def _inside(rows: list[KpiRow], w: Window) -> tuple[list[KpiRow], int, int, int]:
    """Buckets wholly inside the window, one per (machine, bucket) — the latest seq wins.

    Returns (kept, partial, superseded, overlapping). A bucket re-sent under a later seq is a
    correction by the agent; counting both would double the time.
    """
    inside: dict[tuple[str, datetime, datetime], KpiRow] = {}
    partial = superseded = 0
    for r in rows:
        if r.bucket_start < w.start or r.bucket_end > w.end:
            partial += 1
            continue
        key = (r.machine_id, r.bucket_start, r.bucket_end)
        if key in inside:
            superseded += 1
            if r.seq < inside[key].seq:
                continue
        inside[key] = r
    kept = sorted(inside.values(), key=lambda r: (r.machine_id, r.bucket_start, r.bucket_end))
    overlapping = 0
    reach: dict[str, datetime] = {}  # per machine, the latest bucket end seen so far
    for r in kept:
        if r.machine_id in reach and r.bucket_start < reach[r.machine_id]:
            overlapping += 1
        reach[r.machine_id] = max(r.bucket_end, reach.get(r.machine_id, r.bucket_end))
    return kept, partial, superseded, overlapping


def _register(store: Store, agent_id: str, w: Window) -> _Register | None:
    """The window's asset register: its latest SiteKpi's, else the latest birth before its end."""
    site = store.latest_site(agent_id, w.start, w.end)
    if site is not None:
        return _Register(
            machines=list(site.machines),
            processes=list(site.processes),
            min_coverage=site.ratios.networked_min_coverage,
            source="site",
            bucket=(site.bucket_start, site.bucket_end),
        )
    birth = store.latest_birth(agent_id, produced_before=w.end) or store.latest_birth(agent_id)
    if birth is None:
        return None
    machines = [
        RegisteredMachine(
            machine_id=a.machine_id, process=a.process, digital=a.digital, nc_capable=a.nc_capable, acquired=a.acquired
        )
        for a in birth.assets
    ]
    return _Register(machines, list(birth.processes), DEFAULT_NETWORKED_MIN_COVERAGE, "birth")


def _window_data(store: Store, agent_id: str, w: Window) -> _WindowData:
    rows, partial, superseded, overlapping = _inside(store.kpi_rows(agent_id, w.start, w.end), w)
    by_machine: dict[str, list[TimeElements]] = defaultdict(list)
    flags: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_machine[r.machine_id].append(r.elements)
        flags[r.machine_id].extend(f for f in r.flags if f not in flags[r.machine_id])
    per_machine = {m: total(els) for m, els in by_machine.items()}
    plant = total(per_machine.values())
    register = _register(store, agent_id, w)
    ratios = None
    if register is not None:
        observed = {m: te.observed_s for m, te in per_machine.items()}
        ratios = site_ratios(register.machines, register.processes, observed, w.length_s, register.min_coverage)
    quality = WindowQuality(
        message_counts=store.message_counts(agent_id, w.start, w.end),
        kpi_buckets=len(rows),
        partial_buckets_excluded=partial,
        superseded_buckets=superseded,
        overlapping_buckets=overlapping,
        register_source=register.source if register else "none",
        register_bucket=register.bucket if register else None,
        networked_min_coverage=register.min_coverage if register else None,
    )
    return _WindowData(
        window=w,
        per_machine=per_machine,
        buckets={m: len(els) for m, els in by_machine.items()},
        plant=plant,
        plant_oee=oee(plant),
        register=register,
        ratios=ratios,
        quality=quality,
        flags=dict(flags),
    )


# -- indicators --------------------------------------------------------------------------------


def _side(
    ratio: Ratio,
    provenance: Provenance,
    coverage: float | None = None,
    elements: TimeElements | None = None,
    processes: list[ProcessNc] | None = None,
    flags: list[str] | None = None,
) -> Side:
    return Side(
        value=ratio.value,
        null_reason=ratio.null_reason,
        numerator=ratio.numerator,
        denominator=ratio.denominator,
        band_points=ratio.band_points if isinstance(ratio, ScoredRatio) else None,
        provenance=provenance,
        coverage=coverage,
        elements=elements,
        processes=processes,
        flags=flags or [],
    )


def _no_register(provenance: Provenance) -> Side:
    return Side(value=None, null_reason=NO_REGISTER, provenance=provenance)


def _acquired_coverage(d: _WindowData) -> float | None:
    """Good-data share of the window over the register's acquired machines (sum, then divide)."""
    if d.ratios is None or d.register is None or d.window.length_s <= 0:
        return None
    acquired = {m.machine_id for m in d.register.machines if m.acquired}
    if not acquired:
        return None
    seen = sum(c.observed_s for c in d.ratios.coverage if c.machine_id in acquired)
    return seen / (len(acquired) * d.window.length_s)


def _nc_provenance(d: _WindowData) -> Provenance:
    """Bases of the key processes' NC status; a non-NC process is measured if it has an acquired NC machine."""
    assert d.ratios is not None and d.register is not None
    by_id = {m.machine_id: m for m in d.register.machines}
    bases: set[Provenance] = set()
    for p in d.ratios.key_processes:
        if p.basis in ("measured", "declared"):
            bases.add("measured" if p.basis == "measured" else "declared")
        elif any(by_id[m].nc_capable and by_id[m].acquired for m in p.machines if m in by_id):
            bases.add("measured")
        else:
            bases.add("declared")
    if not bases:
        return "none"
    return "measured+declared" if len(bases) > 1 else bases.pop()


def _site_side(key: str, d: _WindowData) -> Side:
    provenance: Provenance = "declared" if key == "digitalisation_rate" else "measured"
    if d.ratios is None:
        return _no_register(provenance)
    if key == "networking_rate":
        return _side(d.ratios.networking_rate, provenance, coverage=_acquired_coverage(d))
    if key == "digitalisation_rate":
        return _side(d.ratios.digitalisation_rate, provenance)
    if key == "networked_over_digital":
        return _side(d.ratios.networked_over_digital, provenance, coverage=_acquired_coverage(d))
    return _side(
        d.ratios.nc_rate_key_processes,
        _nc_provenance(d),
        coverage=_acquired_coverage(d),
        processes=d.ratios.key_processes,
    )


def _oee_side(key: str, d: _WindowData) -> Side:
    ratio: Ratio = getattr(d.plant_oee, "quality" if key == "pass_rate" else key)
    pbt = d.plant.pbt_s
    side = _side(
        ratio,
        "measured",
        coverage=d.plant.observed_pbt_s / pbt if pbt > 0 else None,
        elements=d.plant,
        flags=d.plant_oee.flags,
    )
    if not d.per_machine:
        side = side.model_copy(update={"value": None, "null_reason": NO_KPI})
    return side


def _indicator(key: str, base: Side, post: Side, threshold: str) -> Indicator:
    num_label, den_label = FRACTION_LABELS[key]
    unit: BasisUnit = "seconds"
    if key == "nc_rate_key_processes":
        unit = "processes"
    elif key in SITE_KEYS:
        unit = "machines"
    elif key in ("quality", "pass_rate"):
        unit = "parts"
    change = post.value - base.value if post.value is not None and base.value is not None else None
    change_points = (
        post.band_points - base.band_points if post.band_points is not None and base.band_points is not None else None
    )
    return Indicator(
        key=key,
        label=LABELS[key],
        official=key != "networked_over_digital",
        scored=key in ("networking_rate", "digitalisation_rate"),
        definition=definitions(threshold)[key],
        numerator_label=num_label,
        denominator_label=den_label,
        unit=unit,
        baseline=base,
        post=post,
        change=change,
        change_points=change_points,
    )


def _threshold_text(base: _WindowData, post: _WindowData) -> str:
    values = sorted({d.register.min_coverage for d in (base, post) if d.register is not None}) or [
        DEFAULT_NETWORKED_MIN_COVERAGE
    ]
    return " / ".join(f"{v * 100:.1f}%" for v in values)


# -- machines ----------------------------------------------------------------------------------


def _machine_window(machine_id: str, d: _WindowData) -> MachineWindow:
    te = d.per_machine.get(machine_id, TimeElements())
    reg = {m.machine_id: m for m in d.register.machines} if d.register else {}
    cov = {c.machine_id: c for c in d.ratios.coverage} if d.ratios else {}
    entry = reg.get(machine_id)
    result = oee(te)
    ratios = {"availability": result.availability, "performance": result.performance, "quality": result.quality,
              "oee": result.oee}
    if machine_id not in d.per_machine:
        ratios = {k: Ratio(numerator=0, denominator=0, value=None, null_reason=NO_KPI) for k in ratios}
    coverage = cov[machine_id].coverage if machine_id in cov else (
        te.observed_s / d.window.length_s if d.window.length_s > 0 else None
    )
    return MachineWindow(
        in_register=entry is not None,
        digital=entry.digital if entry else None,
        nc_capable=entry.nc_capable if entry else None,
        acquired=entry.acquired if entry else None,
        buckets=d.buckets.get(machine_id, 0),
        observed_s=te.observed_s,
        coverage=coverage,
        networked=cov[machine_id].networked if machine_id in cov else None,
        elements=te,
        flags=sorted(set(d.flags.get(machine_id, [])) | set(result.flags)),
        **ratios,
    )


def _machines(birth: BirthMessage | None, base: _WindowData, post: _WindowData) -> list[MachineComparison]:
    assets = {a.machine_id: a for a in birth.assets} if birth else {}
    ids: list[str] = list(assets)
    for d in (base, post):
        extra = [m.machine_id for m in d.register.machines] if d.register else []
        for m in [*extra, *sorted(d.per_machine)]:
            if m not in ids:
                ids.append(m)
    registered = {m.machine_id: m for d in (post, base) if d.register for m in d.register.machines}
    out = []
    for m in ids:
        a = assets.get(m)
        process = a.process if a else (registered[m].process if m in registered else None)
        out.append(
            MachineComparison(
                machine_id=m,
                name=a.name if a else None,
                machine_type=a.machine_type if a else None,
                process=process,
                baseline=_machine_window(m, base),
                post=_machine_window(m, post),
            )
        )
    return out


# -- data quality ------------------------------------------------------------------------------


def _data_quality(store: Store, agent_id: str, base: _WindowData, post: _WindowData) -> DataQuality:
    seqs = store.sequence_numbers(agent_id)
    gaps = []
    for first, last in store.gaps(agent_id):
        gaps.append(
            SeqGap(
                first=first,
                last=last,
                count=last - first + 1,
                after=store.produced_at(agent_id, first - 1),
                before=store.produced_at(agent_id, last + 1),
            )
        )
    status = store.status(agent_id)
    return DataQuality(
        messages_received=len(seqs),
        highest_seq=seqs[-1] if seqs else None,
        sequence_gaps=gaps,
        missing_messages=sum(g.count for g in gaps),
        duplicates_received=store.duplicates_of(agent_id),
        dead_letters=len(store.dead_letters(agent_id)),
        baseline=base.quality,
        post=post.quality,
        last_status=StatusSnapshot(
            online=status.online, boot_id=status.boot_id, at=status.at, received_at=status.received_at
        ) if status else None,
    )


# -- entry point -------------------------------------------------------------------------------

SITE_KEYS = ("networking_rate", "digitalisation_rate", "networked_over_digital", "nc_rate_key_processes")
OEE_KEYS = ("oee", "availability", "performance", "quality", "pass_rate")


def build_report(
    store: Store,
    agent_id: str,
    baseline: tuple[datetime, datetime],
    post: tuple[datetime, datetime],
    generated_at: datetime | None = None,
) -> EvidenceReport:
    """The before/after evidence of `agent_id`; raises ReportError or UnknownAgent."""
    base_w = _check_window("baseline", baseline)
    post_w = _check_window("post", post)
    if base_w.start < post_w.end and post_w.start < base_w.end:
        raise ReportError("baseline and post windows overlap")
    if not store.has_agent(agent_id):
        known = ", ".join(store.agents()) or "none"
        raise UnknownAgent(f"no messages from agent {agent_id!r} in {store.path} (agents: {known})")

    base_d = _window_data(store, agent_id, base_w)
    post_d = _window_data(store, agent_id, post_w)
    threshold = _threshold_text(base_d, post_d)
    indicators = [_indicator(k, _site_side(k, base_d), _site_side(k, post_d), threshold) for k in SITE_KEYS]
    indicators += [_indicator(k, _oee_side(k, base_d), _oee_side(k, post_d), threshold) for k in OEE_KEYS]
    birth = store.latest_birth(agent_id)
    report = EvidenceReport(
        contract_version=CONTRACT_VERSION,
        agent_id=agent_id,
        agent_version=birth.agent_version if birth else None,
        site=birth.site if birth else None,
        generated_at=generated_at or datetime.now(UTC),
        baseline=base_w,
        post=post_w,
        indicators=indicators,
        machines=_machines(birth, base_d, post_d),
        data_quality=_data_quality(store, agent_id, base_d, post_d),
        notes=NOTES,
    )
    log.info(
        "evidence built agent=%s baseline=%s/%s post=%s/%s machines=%d gaps=%d",
        agent_id, base_w.start.isoformat(), base_w.end.isoformat(), post_w.start.isoformat(),
        post_w.end.isoformat(), len(report.machines), len(report.data_quality.sequence_gaps),
    )
    return report
