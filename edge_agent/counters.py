"""Cumulative counters (parts, scrap, energy meters) to deltas: source-time order, duplicates, wraps, resets, jumps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

Event = Literal["wrap", "reset", "jump", "duplicate", "late"]


@dataclass
class CounterTracker:
    """A decrease is a wrap when the previous value was in the top tenth of the range, else a reset.

    With the sample times and the ideal cycle time known, a delta above
    max(`jump_min`, `jump_factor` x elapsed / cycle) is impossible for the machine: it is rejected
    (no parts) and the new value becomes the baseline.
    """

    bits: int
    jump_factor: float = 3.0
    jump_min: int = 10
    last: int | None = None
    last_t: datetime | None = None
    event: Event | None = None  # what the latest update detected
    wraps: int = 0
    resets: int = 0
    jumps: int = 0

    def update(self, value: float, t: datetime | None = None, cycle_s: float | None = None) -> int:
        current = int(value)
        previous, previous_t = self.last, self.last_t
        self.last, self.last_t, self.event = current, t, None
        if previous is None or current == previous:
            return 0
        if current > previous:
            delta = current - previous
        elif previous >= (1 << self.bits) * 0.9:
            self.event, delta = "wrap", current + (1 << self.bits) - previous
        else:
            self.event, delta = "reset", current
        if t is not None and previous_t is not None and cycle_s:
            limit = max(self.jump_min, self.jump_factor * (t - previous_t).total_seconds() / cycle_s)
            if delta > limit:
                self.event = "jump"
                delta = 0
        if self.event == "wrap":
            self.wraps += 1
        elif self.event == "reset":
            self.resets += 1
        elif self.event == "jump":
            self.jumps += 1
        return delta


@dataclass
class MeterTracker:
    """A cumulative meter reading (e.g. active energy): the increase since the previous reading.

    A decrease is a reset or a replaced meter: the new value becomes the baseline and nothing is
    counted, since what the meter read after it restarted is unknown. Never negative.
    """

    last: float | None = None
    last_t: datetime | None = None
    event: Event | None = None

    def update(self, value: float, t: datetime | None = None, cycle_s: float | None = None) -> float:
        """`cycle_s` is not used: a meter's increase has no plausibility limit from a cycle time."""
        current, previous = float(value), self.last
        self.last, self.last_t, self.event = current, t, None
        if previous is None:
            return 0.0
        if current < previous:
            self.event = "reset"
            return 0.0
        return current - previous


class Tracker(Protocol):
    """What a CounterStream needs of the tracker it feeds in time order: a part counter's or a meter's."""

    last_t: datetime | None
    event: Event | None

    def update(self, value: float, t: datetime | None = None, cycle_s: float | None = None) -> float: ...


@dataclass(frozen=True)
class Step:
    """One processed counter sample: its time, the parts (or meter units) it adds, the program then active."""

    t: datetime
    delta: float
    program: str | None
    event: Event | None


@dataclass
class CounterStream:
    """Samples of one counter, processed in time order once older than the allowed lateness.

    A sample's time is the source's timestamp when it gave one (OPC UA SourceTimestamp), else the
    agent's read time; the engine chooses it (PlantEngine.ingest) and the lateness is measured on
    the agent's evaluation instants. A second sample with a time already seen is a duplicate and
    ignored; a sample older than the last one processed arrived too late to be put in order and is
    ignored (the counter is cumulative, so the parts it saw are counted by the next sample). Both
    are reported.
    """

    tracker: Tracker
    lateness: timedelta = timedelta(0)
    _pending: dict[datetime, tuple[float, str | None]] = field(default_factory=dict)
    _seen: set[datetime] = field(default_factory=set)  # processed times still within the lateness

    def push(self, t: datetime, value: float, program: str | None) -> Event | None:
        if t in self._pending or t in self._seen:
            return "duplicate"
        if self.tracker.last_t is not None and t < self.tracker.last_t:
            return "late"
        self._pending[t] = (value, program)
        return None

    def release(self, upto: datetime, cycle_of: Callable[[str | None], float | None]) -> list[Step]:
        """Process pending samples with time <= upto; `cycle_of` maps a program to its ideal cycle."""
        steps = []
        for t in sorted(t for t in self._pending if t <= upto):
            value, program = self._pending.pop(t)
            delta = self.tracker.update(value, t, cycle_of(program))
            steps.append(Step(t, delta, program, self.tracker.event))
            self._seen.add(t)
        horizon = upto - self.lateness
        self._seen = {t for t in self._seen if t >= horizon}
        return steps
