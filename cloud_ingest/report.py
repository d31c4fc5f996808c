"""Build the before/after evidence of one agent from the store (docs: shared indicators §4).

All maths is `edgeproof.indicators`: per window, the KPI buckets lying inside it are summed per
machine and for the plant with `total()`, then `oee()`; the site ratios come from `site_ratios()`
over the window's asset register and the observed time summed from those buckets.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal

from cloud_ingest.declared import DeclaredImport
from cloud_ingest.evidence import (
    FRACTION_LABELS,
    LABELS,
    NO_KPI,
    NO_MONTH,
    NO_REGISTER,
    NOTES,
    BasisUnit,
    DataQuality,
    EvidenceReport,
    HeldSummary,
    Indicator,
    LineComparison,
    MachineComparison,
    MachineWindow,
    MonthRate,
    Performance,
    Provenance,
    SeqGap,
    Side,
    StatusSnapshot,
    Window,
    WindowQuality,
    definitions,
    site_zone,
)
from cloud_ingest.render import render_html, write_report
from cloud_ingest.store import EvictionRecord, KpiRow, Store
from edgeproof.contract import CONTRACT_VERSION, BirthMessage
from edgeproof.indicators import (
    DEFAULT_NETWORKED_MIN_COVERAGE,
    NO_METER,
    Oee,
    ProcessInfo,
    ProcessNc,
    Ratio,
    RegisteredMachine,
    ScoredRatio,
    SiteRatios,
    TimeElements,
    capacity_utilisation,
    energy_per_good_part,
    oee,
    site_ratios,
    total,
)

__all__ = ["Register", "ReportError", "UnknownAgent", "asset_register", "build_report", "render_html", "write_report"]

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """The report cannot be built as asked (bad windows); str() is ready for a user."""


class UnknownAgent(LookupError):
    """The store has no message from that agent."""


@dataclass
class Register:
    """The asset register a span of time is judged against, and where it came from."""

    machines: list[RegisteredMachine]
    processes: list[ProcessInfo]
    min_coverage: float
    source: Literal["site", "birth"]
    bucket: tuple[datetime, datetime] | None = None


@dataclass
class _WindowData:
    """Everything computed for one window."""

    window: Window
    zone: tzinfo
    rows: list[KpiRow]
    seen: dict[str, tuple[datetime, datetime]]
    per_machine: dict[str, TimeElements]
    buckets: dict[str, int]
    plant: TimeElements
    plant_oee: Oee
    register: Register | None
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


def asset_register(store: Store, agent_id: str, start: datetime, end: datetime) -> Register | None:
    """The asset register of [start, end]: its latest SiteKpi's, else the latest birth before its end."""
    site = store.latest_site(agent_id, start, end)
    if site is not None:
        return Register(
            machines=list(site.machines),
            processes=list(site.processes),
            min_coverage=site.ratios.networked_min_coverage,
            source="site",
            bucket=(site.bucket_start, site.bucket_end),
        )
    birth = store.latest_birth(agent_id, produced_before=end) or store.latest_birth(agent_id)
    if birth is None:
        return None
    machines = [
        RegisteredMachine(
            machine_id=a.machine_id, process=a.process, digital=a.digital, nc_capable=a.nc_capable, acquired=a.acquired
        )
        for a in birth.assets
    ]
    return Register(machines, list(birth.processes), DEFAULT_NETWORKED_MIN_COVERAGE, "birth")


def _window_data(
    store: Store, agent_id: str, w: Window, zone: tzinfo, gaps: list[SeqGap], evictions: list[EvictionRecord]
) -> _WindowData:
    rows, partial, superseded, overlapping = _inside(store.kpi_rows(agent_id, w.start, w.end), w)
    by_machine: dict[str, list[TimeElements]] = defaultdict(list)
    flags: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_machine[r.machine_id].append(r.elements)
        flags[r.machine_id].extend(f for f in r.flags if f not in flags[r.machine_id])
    per_machine = {m: total(els) for m, els in by_machine.items()}
    plant = total(per_machine.values())
    register = asset_register(store, agent_id, w.start, w.end)
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
        gaps=[g for g in gaps if _around(g, w)],
        evicted_messages=_evicted_in(evictions, w),
        register_source=register.source if register else "none",
        register_bucket=register.bucket if register else None,
        networked_min_coverage=register.min_coverage if register else None,
    )
    return _WindowData(
        window=w,
        zone=zone,
        rows=rows,
        seen=store.seen(agent_id, w.start, w.end),
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


def _metered(elements: Iterable[TimeElements]) -> TimeElements | None:
    """The sum over the machines with a power meter; None when none has one."""
    metered = [e for e in elements if e.energy_kwh is not None]
    return total(metered) if metered else None


def _energy(elements: Iterable[TimeElements]) -> Ratio:
    """Energy per good part over the metered machines only: an unmetered machine's parts cost no kWh."""
    metered = _metered(elements)
    if metered is None:
        return Ratio(numerator=0, denominator=0, value=None, null_reason=NO_METER)
    return energy_per_good_part(metered)


def _months(d: _WindowData) -> list[MonthRate]:
    """GQ and PQ per plant-local calendar month of the bucket start."""
    sums: dict[str, list[float]] = {}
    for r in d.rows:
        month = sums.setdefault(r.bucket_start.astimezone(d.zone).strftime("%Y-%m"), [0.0, 0.0])
        month[0] += r.elements.gq
        month[1] += r.elements.pq
    return [
        MonthRate(month=m, good=gq, produced=pq, value=gq / pq if pq > 0 else None)
        for m, (gq, pq) in sorted(sums.items())
    ]


def _pass_rate_side(d: _WindowData) -> Side:
    """The form's monthly average: the mean of the months' GQ ÷ PQ over the months with production."""
    months = _months(d)
    rates = [m.value for m in months if m.value is not None]
    pbt = d.plant.pbt_s
    coverage = d.plant.observed_pbt_s / pbt if pbt > 0 else None
    side = _side(Ratio.of(sum(rates), len(rates), NO_MONTH), "measured", coverage=coverage, elements=d.plant)
    return side.model_copy(
        update={
            "months": months,
            "value": side.value if d.per_machine else None,
            "null_reason": side.null_reason if d.per_machine else NO_KPI,
        }
    )


def _oee_side(key: str, d: _WindowData) -> Side:
    if key == "pass_rate":
        return _pass_rate_side(d)
    elements = d.plant
    if key == "capacity_utilisation":
        ratio = capacity_utilisation(d.plant)
    elif key == "energy_per_good_part":
        ratio = _energy(d.per_machine.values())
        elements = _metered(d.per_machine.values()) or TimeElements()
    else:
        ratio = getattr(d.plant_oee, key)
    pbt = elements.pbt_s
    side = _side(
        ratio,
        "measured",
        coverage=elements.observed_pbt_s / pbt if pbt > 0 else None,
        elements=elements,
        flags=d.plant_oee.flags,
    )
    if ratio.null_reason == NO_METER:  # nothing was metered: no basis to show
        side = side.model_copy(update={"numerator": None, "denominator": None})
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
    elif key == "quality":
        unit = "parts"
    elif key == "pass_rate":
        unit = "months"
    elif key == "energy_per_good_part":
        unit = "kWh/part"
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


def _performance(elements: list[TimeElements], buckets: int, coverage: float | None) -> dict[str, object]:
    """The fields of a `Performance` for the summed `elements` of one or more machines."""
    te = total(elements)
    result = oee(te)
    ratios: dict[str, Ratio] = {
        "availability": result.availability,
        "performance": result.performance,
        "quality": result.quality,
        "oee": result.oee,
        "capacity_utilisation": capacity_utilisation(te),
        "energy_per_good_part": _energy(elements),
    }
    if not elements:
        ratios = {k: Ratio(numerator=0, denominator=0, value=None, null_reason=NO_KPI) for k in ratios}
    return {
        "buckets": buckets,
        "observed_s": te.observed_s,
        "coverage": coverage,
        "elements": te,
        "flags": result.flags,
        **ratios,
    }


def _machine_window(machine_id: str, d: _WindowData) -> MachineWindow:
    te = d.per_machine.get(machine_id)
    reg = {m.machine_id: m for m in d.register.machines} if d.register else {}
    cov = {c.machine_id: c for c in d.ratios.coverage} if d.ratios else {}
    entry = reg.get(machine_id)
    observed = te.observed_s if te else 0.0
    coverage = (
        cov[machine_id].coverage
        if machine_id in cov
        else (observed / d.window.length_s if d.window.length_s > 0 else None)
    )
    fields = _performance([te] if te else [], d.buckets.get(machine_id, 0), coverage)
    fields["flags"] = sorted(set(d.flags.get(machine_id, [])) | set(fields["flags"]))  # type: ignore[call-overload]
    first, last = d.seen.get(machine_id, (None, None))
    return MachineWindow(
        in_register=entry is not None,
        digital=entry.digital if entry else None,
        nc_capable=entry.nc_capable if entry else None,
        acquired=entry.acquired if entry else None,
        networked=cov[machine_id].networked if machine_id in cov else None,
        first_seen=first,
        last_seen=last,
        **fields,  # type: ignore[arg-type]
    )


def _key_processes(*windows: _WindowData) -> dict[str, bool]:
    """process id → key flag, the later window's register first."""
    out: dict[str, bool] = {}
    for d in windows:
        for p in d.register.processes if d.register else []:
            out.setdefault(p.process_id, p.key)
    return out


def _machines(
    birth: BirthMessage | None,
    base: _WindowData,
    post: _WindowData,
    seen: dict[str, tuple[datetime, datetime]],
) -> list[MachineComparison]:
    assets = {a.machine_id: a for a in birth.assets} if birth else {}
    ids: list[str] = list(assets)
    for d in (base, post):
        extra = [m.machine_id for m in d.register.machines] if d.register else []
        for m in [*extra, *sorted(d.per_machine)]:
            if m not in ids:
                ids.append(m)
    registered = {m.machine_id: m for d in (post, base) if d.register for m in d.register.machines}
    key = _key_processes(post, base)
    out = []
    for m in ids:
        a = assets.get(m)
        process = a.process if a else (registered[m].process if m in registered else None)
        first, last = seen.get(m, (None, None))
        out.append(
            MachineComparison(
                machine_id=m,
                name=a.name if a else None,
                machine_type=a.machine_type if a else None,
                process=process,
                key_process=key.get(process) if process else None,
                digital_basis=a.digital_basis if a else None,
                protocol=a.protocol if a else None,
                first_seen=first,
                last_seen=last,
                baseline=_machine_window(m, base),
                post=_machine_window(m, post),
            )
        )
    return out


def _line_window(machines: list[str], d: _WindowData) -> Performance:
    elements = [d.per_machine[m] for m in machines if m in d.per_machine]
    te = total(elements)
    pbt = te.pbt_s
    fields = _performance(
        elements, sum(d.buckets.get(m, 0) for m in machines), te.observed_pbt_s / pbt if pbt > 0 else None
    )
    return Performance(**fields)  # type: ignore[arg-type]


def _lines(machines: list[MachineComparison], base: _WindowData, post: _WindowData) -> list[LineComparison]:
    """One line per process: its machines' time elements summed, then divided."""
    by_process: dict[str, list[str]] = {}
    for m in machines:
        if m.process:
            by_process.setdefault(m.process, []).append(m.machine_id)
    key = _key_processes(post, base)
    return [
        LineComparison(
            process=p,
            key_process=key.get(p),
            machines=ms,
            baseline=_line_window(ms, base),
            post=_line_window(ms, post),
        )
        for p, ms in by_process.items()
    ]


# -- data quality ------------------------------------------------------------------------------


def _seq_gaps(store: Store, agent_id: str) -> list[SeqGap]:
    return [
        SeqGap(
            first=first,
            last=last,
            count=last - first + 1,
            after=store.produced_at(agent_id, first - 1),
            before=store.produced_at(agent_id, last + 1),
        )
        for first, last in store.gaps(agent_id)
    ]


def _around(gap: SeqGap, w: Window) -> bool:
    """The gap's neighbours were produced around the window, so what is missing may be about it."""
    return (gap.after is None or gap.after < w.end) and (gap.before is None or gap.before > w.start)


def _evicted_in(evictions: list[EvictionRecord], w: Window) -> int:
    """Messages of the declarations whose evicted messages were produced in the window (counted whole)."""
    return sum(
        e.count
        for e in evictions
        if e.oldest_produced_at is not None
        and e.newest_produced_at is not None
        and e.oldest_produced_at < w.end
        and e.newest_produced_at >= w.start
    )


def _data_quality(store: Store, agent_id: str, gaps: list[SeqGap], base: _WindowData, post: _WindowData) -> DataQuality:
    seqs = store.sequence_numbers(agent_id)
    status = store.status(agent_id)
    counts = store.verification_counts(agent_id)
    return DataQuality(
        messages_received=len(seqs),
        verification={k: n for k, n in counts.items() if k in ("verified", "unsigned")},
        held=[
            HeldSummary(seq=h.seq, kind=h.kind, status=h.status, reason=h.reason) for h in store.held_messages(agent_id)
        ],
        highest_seq=seqs[-1] if seqs else None,
        sequence_gaps=gaps,
        missing_messages=sum(g.count for g in gaps),
        duplicates_received=store.duplicates_of(agent_id),
        dead_letters=len(store.dead_letters(agent_id)),
        baseline=base.quality,
        post=post.quality,
        last_status=StatusSnapshot(
            online=status.online, boot_id=status.boot_id, at=status.at, received_at=status.received_at
        )
        if status
        else None,
    )


def _with_imported(indicators: list[Indicator], imported: list[DeclaredImport]) -> list[Indicator]:
    """Each indicator with its change from an imported plant-wide baseline, where exactly one was declared."""
    figures: dict[str, list[float | None]] = defaultdict(list)
    for imp in imported:
        for f in imp.figures:
            if f.window == "baseline" and f.machine_id is None:
                figures[f.indicator].append(f.value)
    out = []
    for ind in indicators:
        values = figures.get(ind.key, [])
        base = values[0] if len(values) == 1 else None
        change = ind.post.value - base if base is not None and ind.post.value is not None else None
        out.append(ind.model_copy(update={"imported_baseline": base, "change_from_imported": change}))
    return out


# -- entry point -------------------------------------------------------------------------------

SITE_KEYS = ("networking_rate", "digitalisation_rate", "networked_over_digital", "nc_rate_key_processes")
OEE_KEYS = (
    "oee",
    "availability",
    "performance",
    "quality",
    "pass_rate",
    "capacity_utilisation",
    "energy_per_good_part",
)


def build_report(
    store: Store,
    agent_id: str,
    baseline: tuple[datetime, datetime],
    post: tuple[datetime, datetime],
    generated_at: datetime | None = None,
    imported: list[DeclaredImport] | None = None,
) -> EvidenceReport:
    """The before/after evidence of `agent_id`, with `imported` (declared) figures shown apart;
    raises ReportError or UnknownAgent."""
    base_w = _check_window("baseline", baseline)
    post_w = _check_window("post", post)
    if base_w.start < post_w.end and post_w.start < base_w.end:
        raise ReportError("baseline and post windows overlap")
    if not store.has_agent(agent_id):
        known = ", ".join(store.agents()) or "none"
        raise UnknownAgent(f"no messages from agent {agent_id!r} in {store.path} (agents: {known})")

    birth = store.latest_birth(agent_id)
    zone = site_zone(birth.site.timezone if birth else None)
    gaps, evictions = _seq_gaps(store, agent_id), store.evictions(agent_id)
    base_d = _window_data(store, agent_id, base_w, zone, gaps, evictions)
    post_d = _window_data(store, agent_id, post_w, zone, gaps, evictions)
    threshold = _threshold_text(base_d, post_d)
    indicators = [_indicator(k, _site_side(k, base_d), _site_side(k, post_d), threshold) for k in SITE_KEYS]
    indicators += [_indicator(k, _oee_side(k, base_d), _oee_side(k, post_d), threshold) for k in OEE_KEYS]
    indicators = _with_imported(indicators, imported or [])
    machines = _machines(birth, base_d, post_d, store.seen(agent_id))
    report = EvidenceReport(
        contract_version=CONTRACT_VERSION,
        agent_id=agent_id,
        agent_version=birth.agent_version if birth else None,
        site=birth.site if birth else None,
        generated_at=generated_at or datetime.now(UTC),
        baseline=base_w,
        post=post_w,
        indicators=indicators,
        machines=machines,
        lines=_lines(machines, base_d, post_d),
        data_quality=_data_quality(store, agent_id, gaps, base_d, post_d),
        notes=NOTES,
        imported=imported or [],
    )
    log.info(
        "evidence built agent=%s baseline=%s/%s post=%s/%s machines=%d gaps=%d",
        agent_id,
        base_w.start.isoformat(),
        base_w.end.isoformat(),
        post_w.start.isoformat(),
        post_w.end.isoformat(),
        len(report.machines),
        len(report.data_quality.sequence_gaps),
    )
    return report
