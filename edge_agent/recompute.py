"""`edgeproof kpi`: recompute every indicator from the raw event log, as the agent computed it.

The log is replayed through the same `PlantEngine` the agent runs, at the same evaluation
instants, so each bucket's time elements and counts equal the agent's. Buckets are then summed
into periods (hour, shift, day or the whole window): elements and counts are added, ratios are
computed from the sums, never averaged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, Field

from edge_agent.config import AgentConfig, Calendar, load_config
from edge_agent.engine import PlantEngine, config_fingerprint
from edge_agent.eventlog import (
    Event,
    EventLogError,
    StartLine,
    TickLine,
    event_files,
    iso,
    read_event_files,
)
from edge_agent.kpi import ClosedBucket, ClosedInterval
from edgeproof.configfile import ConfigError
from edgeproof.contract import MachineState
from edgeproof.indicators import Oee, SiteRatios, TimeElements, oee, site_ratios, total
from edgeproof.rollup import BucketRecord, rollup, within

Grouping = Literal["bucket", "hour", "shift", "day", "window"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONFIG_DIFFERS = "config_differs_from_logged"
MISSING_FILE = "log_file_missing"


@dataclass
class Replay:
    """Closed buckets per machine (and state intervals, if asked), in the order the agent would have published them."""

    buckets: dict[str, list[ClosedBucket]] = field(default_factory=dict)
    samples: int = 0
    ticks: int = 0
    starts: list[StartLine] = field(default_factory=list)
    intervals: list[tuple[str, ClosedInterval]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def replay(
    config: AgentConfig, events: Iterable[Event], until: datetime | None = None, intervals: bool = False
) -> Replay:
    """Feed the events to a PlantEngine; a start line begins a new engine, as an agent restart does.

    A start line with part n > 1 right after part n - 1 of the same boot only says the log went on
    in a new file (rotation): it changes nothing, so a rotated set replays as the one file would.
    Without its predecessor (files missing, or a rotated file read alone) it starts the accounting
    like an agent start, and is reported.

    With `intervals`, the closed state intervals are collected too. Stops once every machine has
    closed its buckets up to `until` (closing may lag the tick that passes a bucket's end: counts
    wait for their lateness, short stops for their classification), and with `intervals` also a
    state interval ending at or after `until`.
    """
    out = Replay(buckets={m.id: [] for m in config.machines})
    interval_ends: dict[str, datetime] = {}
    engine: PlantEngine | None = None
    run: tuple[str, int] | None = None  # boot id and part of the file being replayed
    for event in events:
        if isinstance(event, TickLine):
            if engine is None:
                raise ValueError("the event log has a tick before its first start line")
            out.ticks += 1
            evaluation = engine.evaluate(event.tick)
            if intervals:  # only when asked: a long log has many of them
                out.intervals += evaluation.intervals
                interval_ends.update((m, iv.end) for m, iv in evaluation.intervals)
            for machine_id, closed in evaluation.buckets.items():
                out.buckets[machine_id] += closed
            if until is None or not all(bs and bs[-1].end >= until for bs in out.buckets.values()):
                continue
            if not intervals or (len(interval_ends) == len(out.buckets) and min(interval_ends.values()) >= until):
                break
        elif isinstance(event, StartLine):
            if event.part > 1 and run == (event.boot_id, event.part - 1):
                run = (event.boot_id, event.part)
                continue  # the same run goes on in the next file
            if event.part > 1:
                out.warnings.append(
                    f"{MISSING_FILE}: boot {event.boot_id} goes on in file part {event.part} at {iso(event.start)}"
                    f" without part {event.part - 1} before it: accounting restarts there"
                )
            run = (event.boot_id, event.part)
            engine = PlantEngine(config, event.speed)  # what the old run left open was never published
            engine.start(event.start)
            out.starts.append(event)
        else:
            if engine is None:
                raise ValueError("the event log has a sample before its first start line")
            out.samples += 1
            engine.ingest([event.sample()])
    return out


# --- periods ----------------------------------------------------------------------------------
class MachinePeriod(BaseModel):
    machine_id: str
    elements: TimeElements
    coverage: float | None = Field(description="observed_s / window_s")
    ratios: Oee


class SitePeriod(BaseModel):
    elements: TimeElements = Field(description="sum over every machine of the register")
    ratios: Oee
    site_ratios: SiteRatios


class PeriodKpi(BaseModel):
    label: str
    shift: str | None = Field(None, description="shift name for --by shift; null: buckets outside every shift")
    start: AwareDatetime = Field(description="start of the period's first bucket")
    end: AwareDatetime = Field(description="end of the period's last bucket")
    buckets: int
    window_s: float = Field(description="time the period's buckets cover (may be less than end - start)")
    machines: list[MachinePeriod]
    site: SitePeriod


class IntervalRecord(BaseModel):
    """A closed state interval, as the agent published it (`state` message)."""

    machine_id: str
    state: MachineState
    start: AwareDatetime
    end: AwareDatetime
    reason: str | None


class ReplayInfo(BaseModel):
    samples: int
    ticks: int
    starts: int
    config_sha256: str


class KpiReport(BaseModel):
    events: str
    config: str
    start: AwareDatetime = Field(description="--from")
    end: AwareDatetime = Field(description="--to")
    by: Grouping
    replay: ReplayInfo
    warnings: list[str]
    periods: list[PeriodKpi]
    intervals: list[IntervalRecord] | None = Field(
        None, description="with --intervals: closed state intervals overlapping [start, end), with their reasons"
    )


def _shift_of(calendar: Calendar, tz: ZoneInfo, t: datetime) -> tuple[str, datetime] | None:
    """(shift name, shift start) of the shift instance containing t, if any."""
    local = t.astimezone(tz)
    for day in (local.date() - timedelta(days=1), local.date()):
        for shift in calendar.shifts:
            if _WEEKDAYS[day.weekday()] not in shift.days:
                continue
            start = datetime.combine(day, shift.start, tzinfo=tz)
            end_day = day if shift.end > shift.start else day + timedelta(days=1)
            if start <= local < datetime.combine(end_day, shift.end, tzinfo=tz):
                return shift.name, start
    return None


def _period_key(config: AgentConfig, by: Grouping) -> Callable[[datetime], tuple[str, str | None]]:
    """Bucket start -> (period label, shift name)."""
    tz = ZoneInfo(config.site.timezone)

    def key(start: datetime) -> tuple[str, str | None]:
        local = start.astimezone(tz)
        if by == "window":
            return "window", None
        if by == "day":
            return local.date().isoformat(), None
        if by == "hour":
            return local.replace(minute=0, second=0, microsecond=0).isoformat(timespec="minutes"), None
        if by == "bucket":
            return local.isoformat(), None
        found = _shift_of(config.calendar, tz, start)
        if found is None:
            return f"{local.date().isoformat()} off-shift", None
        name, shift_start = found
        return f"{shift_start.isoformat()} {name}", name

    return key


def _machine_period(machine_id: str, elements: TimeElements) -> MachinePeriod:
    coverage = elements.observed_s / elements.window_s if elements.window_s > 0 else None
    return MachinePeriod(machine_id=machine_id, elements=elements, coverage=coverage, ratios=oee(elements))


def periods(config: AgentConfig, result: Replay, by: Grouping, start: datetime, end: datetime) -> list[PeriodKpi]:
    """Buckets lying wholly in [start, end), summed per period; ratios from the sums."""
    if by == "hour" and config.kpi.bucket_minutes > 60:
        raise ValueError(f"buckets of {config.kpi.bucket_minutes} minutes cannot be summed into hours")
    key = _period_key(config, by)
    records = within(
        (
            BucketRecord(machine_id=m, start=b.start, end=b.end, elements=b.elements)
            for m, bs in result.buckets.items()
            for b in bs
        ),
        start,
        end,
    )
    sums = rollup(records, lambda r: (key(r.start), r.machine_id))  # elements and counts added, never ratios
    windows: dict[tuple[str, str | None], set[tuple[datetime, datetime]]] = {}
    for r in records:
        windows.setdefault(key(r.start), set()).add((r.start, r.end))
    by_period: dict[tuple[str, str | None], list[MachinePeriod]] = {}
    for (k, machine_id), elements in sums.items():
        by_period.setdefault(k, []).append(_machine_period(machine_id, elements))
    engine = PlantEngine(config)  # the register and processes, built as the agent builds them
    out = []
    for k in sorted(windows, key=lambda k: min(windows[k])):
        spans = windows[k]
        window_s = sum((e - s).total_seconds() for s, e in spans)
        machines = by_period[k]
        site_elements = total(m.elements for m in machines)
        observed = {m.machine_id: m.elements.observed_s for m in machines}
        ratios = site_ratios(engine.register, engine.processes, observed, window_s, config.kpi.networked_min_coverage)
        out.append(
            PeriodKpi(
                label=k[0],
                shift=k[1],
                start=min(s for s, _ in spans),
                end=max(e for _, e in spans),
                buckets=len(spans),
                window_s=window_s,
                machines=machines,
                site=SitePeriod(elements=site_elements, ratios=oee(site_elements), site_ratios=ratios),
            )
        )
    return out


def recompute(
    config_path: Path,
    events: Path | Sequence[Path],
    start: datetime,
    end: datetime,
    by: Grouping,
    intervals: bool = False,
) -> KpiReport:
    """`events`: one log file, or files, directories and glob patterns naming a rotated set (event_files)."""
    config = load_config(config_path)
    specs = [events] if isinstance(events, Path) else list(events)
    result = replay(config, read_event_files(event_files(specs)), until=end, intervals=intervals)
    fingerprint = config_fingerprint(config)
    warnings = []
    if any(s.config_sha256 != fingerprint for s in result.starts):
        warnings.append(f"{CONFIG_DIFFERS}: the agent logged another configuration fingerprint than {config_path}'s")
    warnings += result.warnings
    return KpiReport(
        events=" ".join(str(p) for p in specs),
        config=str(config_path),
        start=start,
        end=end,
        by=by,
        replay=ReplayInfo(
            samples=result.samples, ticks=result.ticks, starts=len(result.starts), config_sha256=fingerprint
        ),
        warnings=warnings,
        periods=periods(config, result, by, start, end),
        intervals=[
            IntervalRecord(machine_id=m, state=iv.state, start=iv.start, end=iv.end, reason=iv.reason)
            for m, iv in result.intervals
            if iv.start < end and iv.end > start
        ]
        if intervals
        else None,
    )


# --- command line -----------------------------------------------------------------------------
def _time(text: str) -> datetime:
    """ISO-8601 with an offset: the plant's zone is never guessed."""
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. {text}+08:00 or {text}Z")
    return t


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the agent YAML file the log was recorded with")
    parser.add_argument(
        "--events",
        required=True,
        type=Path,
        nargs="+",
        help="the agent's event log (docs/event-log.md): a file, or the files, directory or glob of a rotated set",
    )
    parser.add_argument("--from", dest="start", required=True, type=_time, help="ISO-8601 time with offset")
    parser.add_argument("--to", dest="end", required=True, type=_time, help="ISO-8601 time with offset")
    parser.add_argument("--by", default="window", choices=["bucket", "hour", "shift", "day", "window"])
    parser.add_argument(
        "--intervals", action="store_true", help="also list the closed state intervals in the window, with reasons"
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = recompute(args.config, args.events, args.start, args.end, args.by, args.intervals)
    except ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
    except (EventLogError, ValueError) as e:
        print(f"cannot recompute: {e}", file=sys.stderr)
        return 2
    print(report.model_dump_json(indent=2, exclude=None if args.intervals else {"intervals"}))
    return 0
