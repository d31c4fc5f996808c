"""The deterministic plant model: one machine in one phase, pre-generated, pure, no I/O.

Everything is drawn up front from a seed derived from (scenario seed, machine id, phase name), so
a machine behaves the same whatever else is in the scenario, and the servers only look values up
(bisect over precomputed arrays) at the current plant time.
"""

from __future__ import annotations

import hashlib
import math
import struct
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np

from simulators.scenario import Machine, MicroStops, Phase, Scenario
from simulators.shifts import Plan, Segment, calendar_segments, epoch

MIN_STATE_S = 60  # no state but a micro-stop lasts less than this (plant seconds), except in a shorter calendar gap
FAULT_CODES = (101, 102, 103, 104, 105)
STANDBY_SHARE = 0.25  # power drawn in shift while not running, as a share of rated power
POWER_NOISE = 0.02  # relative standard deviation of the power noise
NOISE_STEP_S = 60  # the noise changes once per plant minute


class State(StrEnum):
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    MICRO_STOP = "MICRO_STOP"
    SETUP = "SETUP"
    FAULT = "FAULT"
    PLANNED_STOP = "PLANNED_STOP"
    NOT_SCHEDULED = "NOT_SCHEDULED"


_STOPS = (State.IDLE, State.SETUP, State.FAULT)
# A micro-stop has no signal of its own: the machine is simply not running, as in an unreasoned IDLE.
SERVED_AS: dict[State, State] = {State.MICRO_STOP: State.IDLE}


@dataclass(frozen=True, slots=True)
class Interval:
    start: int  # Unix seconds
    end: int
    state: State
    fault_code: int  # nonzero only in FAULT
    program: str

    @property
    def duration_s(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the servers publish about one machine at one plant time."""

    at: datetime
    interval: Interval
    parts: int  # unwrapped counter value (counter_start + parts made)
    scrap: int  # unwrapped scrap counter value
    power_kw: float
    energy_kwh: float = 0.0  # active energy since the start of the horizon: the integral of power_kw

    @property
    def state(self) -> State:
        """The state as the served signals show it (a micro-stop looks like IDLE); the truth is interval.state."""
        return SERVED_AS.get(self.interval.state, self.interval.state)


def machine_seed(seed: int, machine_id: str, phase: str) -> np.random.SeedSequence:
    """A seed that depends only on the scenario seed, the machine id and the phase name.

    A stable hash (not Python's salted hash()) keeps it identical across runs and processes.
    """
    digest = hashlib.sha256(f"{machine_id}\x00{phase}".encode()).digest()
    return np.random.SeedSequence([seed, *struct.unpack("<4I", digest[:16])])


def _timeline(machine: Machine, phase: Phase, segments: list[Segment], rng: np.random.Generator) -> list[Interval]:
    stops = machine.stops
    weights = np.array([stops.idle.probability, stops.setup.probability, stops.fault.probability * phase.fault_factor])
    can_stop = weights.sum() > 0
    p = weights / weights.sum() if can_stop else weights
    stop_means_s = (stops.idle.mean_min * 60, stops.setup.mean_min * 60 * phase.setup_factor, stops.fault.mean_min * 60)
    run_mean_s = machine.mean_run_min * 60
    programs = machine.programs
    program = 0
    out: list[Interval] = []
    for seg in segments:
        if seg.plan is not Plan.BUSY:
            state = State.PLANNED_STOP if seg.plan is Plan.BREAK else State.NOT_SCHEDULED
            out.append(Interval(seg.start, seg.end, state, 0, programs[program]))
            continue
        # Each stretch of planned busy time starts running, then alternates run / stop.
        t, running = seg.start, True
        while t < seg.end:
            if running:
                state, mean = State.RUNNING, run_mean_s
            else:
                k = int(rng.choice(3, p=p))
                state, mean = _STOPS[k], stop_means_s[k]
            duration = max(MIN_STATE_S, round(float(rng.exponential(mean))))
            if not can_stop or seg.end - (t + duration) < MIN_STATE_S:
                duration = seg.end - t  # never leave a sliver shorter than the minimum
            code = int(rng.choice(FAULT_CODES)) if state is State.FAULT else 0
            out.append(Interval(t, t + duration, state, code, programs[program]))
            if state is State.SETUP:
                program = (program + 1) % len(programs)  # a setup changes over to the next program
            t += duration
            running = not running
    return out


def _with_micro_stops(intervals: list[Interval], micro: MicroStops, rng: np.random.Generator) -> list[Interval]:
    """Cut micro-stops into the RUNNING intervals, from a stream of their own.

    In each RUNNING interval, after MIN_STATE_S of running the next micro-stop starts an
    exponential gap (mean 1 / probability minutes) later; it is dropped, and the interval keeps
    running to its end, when it would leave less than MIN_STATE_S of running after it. So every
    running stretch, on both sides of every micro-stop, lasts at least MIN_STATE_S.
    """
    mean_gap_s = 60 / micro.probability
    out: list[Interval] = []
    for iv in intervals:
        if iv.state is not State.RUNNING:
            out.append(iv)
            continue
        t = iv.start  # start of the running stretch not yet emitted
        while True:
            start = t + MIN_STATE_S + round(float(rng.exponential(mean_gap_s)))
            duration = min(micro.max_s, max(micro.min_s, round(float(rng.exponential(micro.mean_s)))))
            if iv.end - (start + duration) < MIN_STATE_S:
                break
            out.append(Interval(t, start, State.RUNNING, 0, iv.program))
            out.append(Interval(start, start + duration, State.MICRO_STOP, 0, iv.program))
            t = start + duration
        out.append(Interval(t, iv.end, State.RUNNING, 0, iv.program))
    return out


class MachinePlant:
    """One machine in one phase over the model horizon (the phase window widened by lead and tail).

    Outside the horizon the plant is frozen: the first or last state holds and counters stop.
    """

    def __init__(self, scenario: Scenario, machine_id: str, phase: str) -> None:
        self.machine = scenario.machine(machine_id)
        self.phase_name = phase
        self.phase = scenario.phase(phase)
        self.actual_cycle_s = self.machine.ideal_cycle_s * (1 + self.phase.slowdown)
        h0, h1 = scenario.horizon(phase)
        self.start, self.end = epoch(h0), epoch(h1)
        self.segments = calendar_segments(scenario.calendar, scenario.tz, h0, h1)
        # A fourth stream for micro-stops: the first three (and so a scenario without micro-stops) are unchanged.
        timeline_ss, scrap_ss, noise_ss, micro_ss = machine_seed(scenario.seed, machine_id, phase).spawn(4)
        intervals = _timeline(self.machine, self.phase, self.segments, np.random.default_rng(timeline_ss))
        if self.machine.stops.micro is not None:
            intervals = _with_micro_stops(intervals, self.machine.stops.micro, np.random.default_rng(micro_ss))
        self.intervals = intervals
        self._starts = [iv.start for iv in self.intervals]
        run_before, acc = [], 0
        for iv in self.intervals:
            run_before.append(acc)
            acc += iv.duration_s if iv.state is State.RUNNING else 0
        self._run_before = run_before
        made_max = math.floor(acc / self.actual_cycle_s) + 1
        scrap_rate = self.machine.scrap_rate * self.phase.scrap_factor
        is_scrap = np.random.default_rng(scrap_ss).random(made_max) < scrap_rate
        # _scrap_cum[n] = scrap among the first n parts made.
        self._scrap_cum: list[int] = [0, *np.cumsum(is_scrap).tolist()]
        steps = (self.end - self.start) // NOISE_STEP_S + 1
        self._noise: list[float] = (1 + POWER_NOISE * np.random.default_rng(noise_ss).standard_normal(steps)).tolist()
        # Power is constant between state changes and noise steps: the energy at each such edge, summed exactly.
        self._edges = sorted({*self._starts, *range(self.start, self.end, NOISE_STEP_S)})
        self._edge_power = [self._power(a, self.intervals[self._index(a)].state) for a in self._edges]
        self._edge_kwh = [0.0]
        for a, b, kw in zip(self._edges, [*self._edges[1:], self.end], self._edge_power, strict=True):
            self._edge_kwh.append(self._edge_kwh[-1] + kw * (b - a) / 3600)

    @property
    def machine_id(self) -> str:
        return self.machine.id

    def _seconds(self, t: datetime) -> float:
        return min(max(t.timestamp(), self.start), self.end)

    def _index(self, x: float) -> int:
        return max(0, min(bisect_right(self._starts, x) - 1, len(self._starts) - 1))

    def _made(self, x: float, i: int) -> int:
        iv = self.intervals[i]
        run = self._run_before[i] + (x - iv.start if iv.state is State.RUNNING else 0.0)
        return math.floor(run / self.actual_cycle_s)

    def _power(self, x: float, state: State) -> float:
        if state is State.NOT_SCHEDULED:
            return 0.0
        base = self.machine.rated_kw * (1.0 if state is State.RUNNING else STANDBY_SHARE)
        return base * self._noise[int((x - self.start) // NOISE_STEP_S)]

    def interval_at(self, t: datetime) -> Interval:
        return self.intervals[self._index(self._seconds(t))]

    def state_at(self, t: datetime) -> State:
        return self.interval_at(t).state

    def fault_code_at(self, t: datetime) -> int:
        return self.interval_at(t).fault_code

    def program_at(self, t: datetime) -> str:
        return self.interval_at(t).program

    def parts_made(self, t: datetime) -> int:
        """Parts completed since the start of the horizon (not wrapped, without counter_start)."""
        x = self._seconds(t)
        return self._made(x, self._index(x))

    def parts_at(self, t: datetime) -> int:
        return self.machine.counter_start + self.parts_made(t)

    def scrap_at(self, t: datetime) -> int:
        return self.machine.counter_start_scrap + self._scrap_cum[self.parts_made(t)]

    def power_kw_at(self, t: datetime) -> float:
        x = self._seconds(t)
        return self._power(x, self.intervals[self._index(x)].state)

    def _energy(self, x: float) -> float:
        k = max(0, bisect_right(self._edges, x) - 1)
        return self._edge_kwh[k] + self._edge_power[k] * (x - self._edges[k]) / 3600

    def energy_kwh_at(self, t: datetime) -> float:
        """Active energy (kWh) drawn since the start of the horizon: the exact integral of power_kw_at."""
        return self._energy(self._seconds(t))

    def snapshot(self, t: datetime) -> Snapshot:
        """All published values at plant time t, from one lookup."""
        x = self._seconds(t)
        i = self._index(x)
        iv = self.intervals[i]
        made = self._made(x, i)
        return Snapshot(
            at=t,
            interval=iv,
            parts=self.machine.counter_start + made,
            scrap=self.machine.counter_start_scrap + self._scrap_cum[made],
            power_kw=self._power(x, iv.state),
            energy_kwh=self._energy(x),
        )


def build_plant(scenario: Scenario, phase: str) -> dict[str, MachinePlant]:
    """Every machine of the scenario (in scenario order) for one phase."""
    return {m.id: MachinePlant(scenario, m.id, phase) for m in scenario.machines}
