"""Per-machine integration of states and counts into time-element buckets.

Time between two observations is credited to the state seen at the earlier one, split where the
shift calendar or the bucket changes. Planned status comes from the calendar; UNKNOWN (no good
data) is kept apart so it is never counted as running or stopped. Time is credited once its final
state is known (see edge_agent/intervals.py) and counts once their lateness has passed, so a
bucket closes only when both have moved past its end. After a hold (planned work resumed, no
sample read since), the held time goes to the state of the next observation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connectors.sample import Sample
from edge_agent.calendar import Buckets, Planned, ShiftCalendar
from edge_agent.config import Kpi, Loss, Machine
from edge_agent.counters import CounterStream, CounterTracker, MeterTracker, Step
from edge_agent.intervals import ClosedInterval, IntervalClassifier, Piece
from edgeproof.indicators import TimeElements

_MICROSECOND = timedelta(microseconds=1)
_IN_PBT_FIELD = {
    "RUNNING": "apt_s",
    "SETUP": "setup_s",
    "IDLE": "idle_s",
    "MICRO_STOP": "micro_stop_s",
    "FAULT": "fault_s",
    "UNKNOWN": "unknown_s",
}
_EVENT_FIELD = {
    "wrap": "counter_wraps",
    "reset": "counter_resets",
    "jump": "counter_jumps",
    "duplicate": "counter_duplicates",
    "late": "counter_late",
}

__all__ = ["ClosedBucket", "ClosedInterval", "MachineAccumulator", "effective_state"]


@dataclass
class ClosedBucket:
    start: datetime
    end: datetime
    elements: TimeElements


@dataclass
class _OpenBucket:
    """Time in whole microseconds, so sums are exact; converted to seconds when the bucket closes.

    Parts are kept per ideal cycle time (None: unknown) and multiplied once at the end, so the
    result does not depend on the order the counts came in.
    """

    micros: Counter[str] = field(default_factory=Counter)
    parts: Counter[float | None] = field(default_factory=Counter)
    scrap: Counter[float | None] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    energy: float = 0.0  # meter units (before energy_scale), summed in time order

    def elements(self, cycle_configured: bool, energy_scale: float | None) -> TimeElements:
        seconds = {name: us / 1_000_000 for name, us in self.micros.items()}
        ideal_run = sum(c * n for c, n in sorted(self.parts.items(), key=_by_cycle) if c is not None)
        ideal_scrap = sum(c * n for c, n in sorted(self.scrap.items(), key=_by_cycle) if c is not None)
        pq, sq = sum(self.parts.values()), sum(self.scrap.values())
        return TimeElements(
            **seconds,
            **self.events,
            pq=pq,
            sq=sq,
            ideal_run_s=ideal_run,
            ideal_good_s=ideal_run - ideal_scrap,
            ideal_known=cycle_configured and not (self.parts[None] or self.scrap[None]),
            energy_kwh=None if energy_scale is None else self.energy * energy_scale,
        )


def _by_cycle(item: tuple[float | None, int]) -> float:
    return item[0] or 0.0


def effective_state(raw: str, planned: Planned) -> str:
    if planned == "off":
        return "NOT_SCHEDULED"
    if planned == "break":
        return "PLANNED_STOP"
    return raw


@dataclass
class MachineAccumulator:
    machine_id: str
    ideal_cycle_s: float | None
    calendar: ShiftCalendar
    buckets: Buckets
    counter_bits: int = 32
    ideal_cycle_by_program: dict[str, float] = field(default_factory=dict)
    micro_stop_s: float = 0.0
    min_running_s: float = 0.0
    micro_stop_loss: Loss = "availability"
    setup_loss: Loss = "availability"
    max_lateness_s: float = 0.0
    jump_factor: float = 3.0
    jump_min: int = 10
    program_tag: str | None = None
    energy_scale: float | None = None  # kWh per unit of the energy meter's reading; None: no meter
    last_t: datetime | None = None
    raw_state: str = "UNKNOWN"
    reason: str | None = None
    held: bool = False  # the state since last_t is not known yet: the next advance decides it (see hold)
    _buckets: dict[datetime, _OpenBucket] = field(default_factory=dict)
    _closed_until: datetime | None = None
    # scrap counted in a bucket beyond that bucket's parts (per cycle time): the parts were made in an
    # earlier bucket; it is booked in the next bucket that has parts, so good quantity is never negative
    _scrap_carry: Counter[float | None] = field(default_factory=Counter)

    @classmethod
    def for_machine(cls, machine: Machine, kpi: Kpi, calendar: ShiftCalendar, buckets: Buckets) -> MachineAccumulator:
        return cls(
            machine.id,
            machine.ideal_cycle_s,
            calendar,
            buckets,
            machine.counters.bits,
            ideal_cycle_by_program=machine.ideal_cycle_by_program,
            program_tag=machine.program,
            energy_scale=machine.counters.energy_scale if machine.counters.energy else None,
            micro_stop_s=kpi.micro_stop_s,
            min_running_s=kpi.min_running_s,
            micro_stop_loss=kpi.micro_stop_loss,
            setup_loss=kpi.setup_loss,
            max_lateness_s=kpi.max_lateness_s,
            jump_factor=kpi.counter_jump_factor,
            jump_min=kpi.counter_jump_min,
        )

    def __post_init__(self) -> None:
        self._lateness = timedelta(seconds=self.max_lateness_s)
        self._intervals = IntervalClassifier(
            timedelta(seconds=self.micro_stop_s), timedelta(seconds=self.min_running_s)
        )
        self._streams: dict[str, CounterStream] = {
            kind: CounterStream(CounterTracker(self.counter_bits, self.jump_factor, self.jump_min), self._lateness)
            for kind in ("parts", "scrap")
        }
        if self.energy_scale is not None:
            self._streams["energy"] = CounterStream(MeterTracker(), self._lateness)
        self._extra_apt = {
            s for s, loss in (("MICRO_STOP", self.micro_stop_loss), ("SETUP", self.setup_loss)) if loss == "performance"
        }

    def program_in(self, latest: Mapping[str, Sample]) -> str | None:
        """The active program, as text, from the device's latest samples (None: no program tag or no good value)."""
        s = latest.get(self.program_tag) if self.program_tag else None
        return str(s.value) if s is not None and s.good and s.value is not None else None

    def cycle_of(self, program: str | None) -> float | None:
        """Ideal cycle time of the program active when a part was counted; the machine's one otherwise."""
        if program is not None and program in self.ideal_cycle_by_program:
            return self.ideal_cycle_by_program[program]
        return self.ideal_cycle_s

    def start(self, t: datetime) -> None:
        """Account the current bucket from its start: time before the agent ran is UNKNOWN."""
        self.last_t = self.buckets.start_of(t)
        # a count stamped before that (a source timestamp of a value unchanged since) goes to the first bucket
        self._closed_until = self.last_t

    def _bucket(self, t: datetime) -> _OpenBucket:
        if self._closed_until is not None and t < self._closed_until:  # too late for its own bucket: the next open one
            t = self._closed_until
        return self._buckets.setdefault(self.buckets.start_of(t), _OpenBucket())

    def advance(self, t: datetime, raw_state: str, reason: str | None) -> list[ClosedInterval]:
        """Credit [last_t, t) to the previous state, then adopt the new one; after a hold, all of it to the new one."""
        if self.last_t is None:
            self.start(t)
        if self.held:
            self.held = False
            self._adopt(raw_state, reason)
        self._credit_until(t)
        self._adopt(raw_state, reason)
        return self._take()

    def hold(self, since: datetime) -> list[ClosedInterval]:
        """The state from `since` on is not known yet: credit the time up to it, the rest waits for the next advance."""
        if self.last_t is None:
            self.start(since)
        if not self.held:
            self._credit_until(since)
            self.held = True
        return self._take()

    def _credit_until(self, t: datetime) -> None:
        assert self.last_t is not None
        cursor = self.last_t
        while cursor < t:
            bucket_end = min(t, self.buckets.end_of(self.buckets.start_of(cursor)))
            for a, b, planned, cause in self.calendar.spans(cursor, bucket_end):
                piece = Piece(a, b, planned, self.raw_state, effective_state(self.raw_state, planned), cause)
                self._intervals.feed(piece, self._reason(piece))
            cursor = bucket_end
        self.last_t = max(self.last_t, t)

    def _adopt(self, raw_state: str, reason: str | None) -> None:
        """The state beginning at last_t."""
        assert self.last_t is not None
        self.raw_state, self.reason = raw_state, reason
        planned, cause = self.calendar.at(self.last_t)
        marker = Piece(self.last_t, self.last_t, planned, raw_state, effective_state(raw_state, planned), cause)
        self._intervals.feed(marker, self._reason(marker))

    def _take(self) -> list[ClosedInterval]:
        pieces, closed = self._intervals.take()
        for p in pieces:
            self._credit(self._bucket(p.start), p)
        return closed

    def _reason(self, piece: Piece) -> str | None:
        # where the calendar decides the state (break, planned downtime, no shift, holiday), its reason is the reason
        return self.reason if piece.planned == "work" else piece.cause

    def _credit(self, bucket: _OpenBucket, p: Piece) -> None:
        micros = (p.end - p.start) // _MICROSECOND
        us = bucket.micros
        us["window_s"] += micros
        if p.raw != "UNKNOWN":
            us["observed_s"] += micros
        if p.planned == "off":
            return
        us["pot_s"] += micros
        if p.state == "PLANNED_STOP":
            us["pdot_s"] += micros
            if p.raw == "RUNNING":
                us["running_in_planned_stop_s"] += micros
            return
        us[_IN_PBT_FIELD[p.state]] += micros
        if p.state in self._extra_apt:  # a loss booked against performance is operating time
            us["apt_s"] += micros

    def count(self, t: datetime, parts: float | None, scrap: float | None, program: str | None = None) -> None:
        """Counter samples at source time t (None: not read this time), with the program then active."""
        for kind, value in (("parts", parts), ("scrap", scrap)):
            if value is not None:
                event = self._streams[kind].push(t, value, program)
                if event is not None:
                    self._bucket(t).events[_EVENT_FIELD[event]] += 1

    def meter(self, t: datetime, energy: float) -> None:
        """An energy meter reading at source time t; duplicates and late readings are dropped like counts.

        They are not booked in the `counter_*` elements, which describe the part and scrap counters.
        """
        self._streams["energy"].push(t, energy, None)

    def _release_counts(self, upto: datetime) -> None:
        for kind, stream in self._streams.items():
            for step in stream.release(upto, self.cycle_of):
                self._add(kind, step)

    def _add(self, kind: str, step: Step) -> None:
        if kind == "energy":
            if step.delta:  # the increase since the previous reading goes to the bucket of this reading
                self._bucket(step.t).energy += step.delta
            return
        if step.event is None and not step.delta:
            return  # nothing to book: no bucket is opened for it
        bucket = self._bucket(step.t)
        if step.event is not None:
            bucket.events[_EVENT_FIELD[step.event]] += 1
        if step.delta:
            (bucket.parts if kind == "parts" else bucket.scrap)[self.cycle_of(step.program)] += step.delta

    def _carry_excess_scrap(self, bucket: _OpenBucket) -> None:
        bucket.scrap.update(self._scrap_carry)
        self._scrap_carry.clear()
        for cycle, scrap in list(bucket.scrap.items()):
            excess = scrap - bucket.parts[cycle]
            if excess > 0:
                bucket.scrap[cycle] -= excess
                self._scrap_carry[cycle] += excess

    def close_buckets(self, upto: datetime) -> list[ClosedBucket]:
        """Buckets whose time and counts are final: credited, classified and past the lateness."""
        settled = min(upto, self.last_t or upto) - self._lateness
        self._release_counts(settled)
        held = self._intervals.held_since
        if held is not None:
            settled = min(settled, held)
        cycle_configured = self.ideal_cycle_s is not None or bool(self.ideal_cycle_by_program)
        done = []
        for start in sorted(self._buckets):
            end = self.buckets.end_of(start)
            if end <= settled:
                bucket = self._buckets.pop(start)
                self._carry_excess_scrap(bucket)
                done.append(ClosedBucket(start, end, bucket.elements(cycle_configured, self.energy_scale)))
                self._closed_until = max(self._closed_until or end, end)
        return done
