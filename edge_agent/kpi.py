"""Per-machine integration of states and counts into time-element buckets.

Time between two observations is credited to the state seen at the earlier one, split where the
shift calendar or the bucket changes. Planned status comes from the calendar; UNKNOWN (no good
data) is kept apart so it is never counted as running or stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from edge_agent.calendar import Buckets, Planned, ShiftCalendar
from edge_agent.counters import CounterTracker
from edgeproof.indicators import TimeElements

_IN_PBT_FIELD = {
    "RUNNING": "apt_s",
    "SETUP": "setup_s",
    "IDLE": "idle_s",
    "MICRO_STOP": "micro_stop_s",
    "FAULT": "fault_s",
    "UNKNOWN": "unknown_s",
}


@dataclass
class ClosedInterval:
    state: str
    start: datetime
    end: datetime
    reason: str | None


@dataclass
class ClosedBucket:
    start: datetime
    end: datetime
    elements: TimeElements


@dataclass
class _Open:
    state: str
    start: datetime
    reason: str | None


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
    last_t: datetime | None = None
    raw_state: str = "UNKNOWN"
    reason: str | None = None
    _open: _Open | None = None
    _elements: dict[datetime, TimeElements] = field(default_factory=dict)
    _parts: CounterTracker | None = None
    _scrap: CounterTracker | None = None

    def __post_init__(self) -> None:
        self._parts = CounterTracker(self.counter_bits)
        self._scrap = CounterTracker(self.counter_bits)

    def start(self, t: datetime) -> None:
        """Account the current bucket from its start: time before the agent ran is UNKNOWN."""
        self.last_t = self.buckets.start_of(t)

    def _bucket(self, t: datetime) -> TimeElements:
        key = self.buckets.start_of(t)
        if key not in self._elements:
            self._elements[key] = TimeElements(ideal_known=self.ideal_cycle_s is not None)
        return self._elements[key]

    def advance(self, t: datetime, raw_state: str, reason: str | None) -> list[ClosedInterval]:
        """Credit [last_t, t) to the previous state, then adopt the new one."""
        closed: list[ClosedInterval] = []
        if self.last_t is None:
            self.start(t)
        assert self.last_t is not None
        cursor = self.last_t
        while cursor < t:
            bucket_end = min(t, self.buckets.end_of(self.buckets.start_of(cursor)))
            for a, b, planned in self.calendar.segments(cursor, bucket_end):
                self._credit(self._bucket(a), self.raw_state, planned, (b - a).total_seconds())
                closed += self._track_raw(self.raw_state, planned, a, self.reason)
            cursor = bucket_end
        self.last_t = max(self.last_t, t)
        self.raw_state, self.reason = raw_state, reason
        closed += self._track_raw(raw_state, self.calendar.status_at(t), t, reason)
        return closed

    def _track_raw(self, raw: str, planned: Planned, at: datetime, reason: str | None) -> list[ClosedInterval]:
        state = effective_state(raw, planned)
        return self._track(state, at, reason if state == raw else None)

    def _track(self, state: str, at: datetime, reason: str | None) -> list[ClosedInterval]:
        if self._open is None:
            self._open = _Open(state, at, reason)
            return []
        if state == self._open.state:
            if reason and not self._open.reason:  # a reason may arrive after the stop began
                self._open.reason = reason
            return []
        done = ClosedInterval(self._open.state, self._open.start, at, self._open.reason)
        self._open = _Open(state, at, reason)
        return [done] if done.end > done.start else []

    @staticmethod
    def _credit(te: TimeElements, raw: str, planned: Planned, seconds: float) -> None:
        te.window_s += seconds
        if raw != "UNKNOWN":
            te.observed_s += seconds
        if planned == "off":
            return
        te.pot_s += seconds
        if planned == "break" or raw == "PLANNED_STOP":
            te.pdot_s += seconds
            if raw == "RUNNING":
                te.running_in_planned_stop_s += seconds
            return
        name = _IN_PBT_FIELD[raw]
        setattr(te, name, getattr(te, name) + seconds)

    def count(self, t: datetime, parts: float | None, scrap: float | None) -> None:
        """Counter samples at time t (None: not read this time)."""
        assert self._parts is not None and self._scrap is not None
        te = self._bucket(max(t, self.last_t or t))
        pq = self._parts.update(parts) if parts is not None else 0
        sq = self._scrap.update(scrap) if scrap is not None else 0
        te.pq += pq
        te.sq += sq
        if self.ideal_cycle_s is not None:
            te.ideal_run_s += self.ideal_cycle_s * pq
            te.ideal_good_s += self.ideal_cycle_s * (pq - sq)

    def close_buckets(self, upto: datetime) -> list[ClosedBucket]:
        """Buckets that end at or before `upto` (time has been credited up to there)."""
        done = []
        for start in sorted(self._elements):
            end = self.buckets.end_of(start)
            if end <= upto:
                done.append(ClosedBucket(start, end, self._elements.pop(start)))
        return done
