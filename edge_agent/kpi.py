"""Per-machine integration of states and counts into time-element buckets.

Time between two observations is credited to the state seen at the earlier one, split where the
shift calendar or the bucket changes. Planned status comes from the calendar; UNKNOWN (no good
data) is kept apart so it is never counted as running or stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edge_agent.calendar import Buckets, Planned, ShiftCalendar
from edge_agent.counters import CounterTracker
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
class _OpenBucket:
    """Time in whole microseconds, so sums are exact; converted to seconds when the bucket closes."""

    micros: Counter[str] = field(default_factory=Counter)
    pq: int = 0
    sq: int = 0

    def elements(self, ideal_cycle_s: float | None) -> TimeElements:
        seconds = {name: us / 1_000_000 for name, us in self.micros.items()}
        pru = ideal_cycle_s or 0.0
        return TimeElements(
            **seconds,
            pq=self.pq,
            sq=self.sq,
            ideal_run_s=pru * self.pq,
            ideal_good_s=pru * (self.pq - self.sq),
            ideal_known=ideal_cycle_s is not None,
        )


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
    _buckets: dict[datetime, _OpenBucket] = field(default_factory=dict)
    _parts: CounterTracker | None = None
    _scrap: CounterTracker | None = None

    def __post_init__(self) -> None:
        self._parts = CounterTracker(self.counter_bits)
        self._scrap = CounterTracker(self.counter_bits)

    def start(self, t: datetime) -> None:
        """Account the current bucket from its start: time before the agent ran is UNKNOWN."""
        self.last_t = self.buckets.start_of(t)

    def _bucket(self, t: datetime) -> _OpenBucket:
        return self._buckets.setdefault(self.buckets.start_of(t), _OpenBucket())

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
                self._credit(self._bucket(a), self.raw_state, planned, (b - a) // _MICROSECOND)
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
    def _credit(bucket: _OpenBucket, raw: str, planned: Planned, micros: int) -> None:
        us = bucket.micros
        us["window_s"] += micros
        if raw != "UNKNOWN":
            us["observed_s"] += micros
        if planned == "off":
            return
        us["pot_s"] += micros
        if planned == "break" or raw == "PLANNED_STOP":
            us["pdot_s"] += micros
            if raw == "RUNNING":
                us["running_in_planned_stop_s"] += micros
            return
        us[_IN_PBT_FIELD[raw]] += micros

    def count(self, t: datetime, parts: float | None, scrap: float | None) -> None:
        """Counter samples at time t (None: not read this time)."""
        assert self._parts is not None and self._scrap is not None
        bucket = self._bucket(max(t, self.last_t or t))
        bucket.pq += self._parts.update(parts) if parts is not None else 0
        bucket.sq += self._scrap.update(scrap) if scrap is not None else 0

    def close_buckets(self, upto: datetime) -> list[ClosedBucket]:
        """Buckets that end at or before `upto` (time has been credited up to there)."""
        done = []
        for start in sorted(self._buckets):
            end = self.buckets.end_of(start)
            if end <= upto:
                done.append(ClosedBucket(start, end, self._buckets.pop(start).elements(self.ideal_cycle_s)))
        return done
