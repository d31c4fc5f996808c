"""State intervals on the calendar-applied timeline: late reasons, run debounce and micro-stops.

Time arrives as pieces (a span with its planned status, raw and effective state, and the
calendar's reason when the calendar decides the state). An interval is a maximal run of one
effective state and calendar reason, so a break that ends where planned downtime begins is two
intervals, each with its own reason. Two rules need the future to decide a piece's final state:

- a RUNNING run that follows a stop (SETUP, IDLE, FAULT) and ends before lasting `min_running`
  belongs to that stop: it is relabelled, and the stop goes on if the same state follows;
- an IDLE interval without a reason that ends before lasting `micro_stop` is a MICRO_STOP.

So pieces are released only once their final state is known; until then they are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from edge_agent.calendar import Planned
from edge_agent.states import NO_RULE_MATCHED

STOPS = frozenset({"SETUP", "IDLE", "FAULT"})


@dataclass(frozen=True)
class Piece:
    start: datetime
    end: datetime
    planned: Planned
    raw: str
    state: str  # effective: the calendar applied; final once released
    cause: str | None = None  # the calendar's reason code outside planned work (break, no_shift, ...)


@dataclass
class ClosedInterval:
    state: str
    start: datetime
    end: datetime
    reason: str | None


def real_reason(reason: str | None) -> bool:
    return bool(reason) and reason != NO_RULE_MATCHED


def _merge_reason(old: str | None, new: str | None) -> str | None:
    """The first reason seen applies to the whole interval; 'no rule matched' yields to a real one."""
    if real_reason(old) or not new:
        return old
    return new if real_reason(new) or old is None else old


@dataclass
class _Run:
    state: str
    start: datetime
    end: datetime
    reason: str | None
    cause: str | None = None
    pieces: list[Piece] = field(default_factory=list)
    released: int = 0  # pieces[:released] have been handed out

    def add(self, piece: Piece, reason: str | None) -> None:
        self.pieces.append(piece)
        self.end = max(self.end, piece.end)
        self.reason = _merge_reason(self.reason, reason)

    @property
    def length(self) -> timedelta:
        return self.end - self.start


class IntervalClassifier:
    def __init__(self, micro_stop: timedelta = timedelta(0), min_running: timedelta = timedelta(0)) -> None:
        self.micro_stop = micro_stop
        self.min_running = min_running
        self._cur: _Run | None = None
        self._blip: _Run | None = None  # a RUNNING after a stop, not yet long enough to count
        self._out: list[Piece] = []
        self._closed: list[ClosedInterval] = []

    def feed(self, piece: Piece, reason: str | None) -> None:
        """The next piece of time, in order; a zero-length piece announces the state beginning at its start."""
        blip = self._blip
        if blip is not None:
            if piece.state == "RUNNING":
                blip.add(piece, reason)
                if blip.length >= self.min_running:
                    self._close()
                    self._cur, self._blip = blip, None
                self._release()
                return
            assert self._cur is not None
            for p in blip.pieces:  # too short to count as running: part of the stop it interrupted
                self._cur.add(replace(p, state=self._cur.state), None)
            self._blip = None
        cur = self._cur
        if cur is None or piece.state != cur.state or piece.cause != cur.cause:
            new = _Run(piece.state, piece.start, piece.end, None, piece.cause)
            new.add(piece, reason)
            if cur is not None and piece.state == "RUNNING" and cur.state in STOPS and self.min_running > timedelta(0):
                self._blip = new
            else:
                self._close()
                self._cur = new
        else:
            cur.add(piece, reason)
        self._release()

    def _final_state(self, run: _Run, ended: bool) -> str | None:
        """The run's final state, or None while it cannot be known yet."""
        if run.state != "IDLE" or not self.micro_stop or real_reason(run.reason) or run.length >= self.micro_stop:
            return run.state
        return "MICRO_STOP" if ended else None

    def _close(self) -> None:
        run = self._cur
        if run is None:
            return
        state = self._final_state(run, ended=True)
        assert state is not None
        self._out += [replace(p, state=state) for p in run.pieces[run.released :]]
        if run.end > run.start:
            self._closed.append(ClosedInterval(state, run.start, run.end, run.reason))
        self._cur = None

    def _release(self) -> None:
        run = self._cur
        if run is None or self._final_state(run, ended=False) is None:
            return
        self._out += run.pieces[run.released :]
        run.released = len(run.pieces)

    def take(self) -> tuple[list[Piece], list[ClosedInterval]]:
        """Pieces whose final state is known, and intervals that closed, since the last call."""
        out, closed = self._out, self._closed
        self._out, self._closed = [], []
        return out, closed

    @property
    def held_since(self) -> datetime | None:
        """Start of the earliest piece not yet released (None: every piece fed has been released)."""
        run = self._cur
        if run is not None and run.released < len(run.pieces):
            return run.pieces[run.released].start
        return self._blip.start if self._blip is not None else None
