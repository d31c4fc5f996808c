"""Recompute benchmark: per-shift indicators of 100 machines from 10 million raw samples.

Three passes over the same synthetic arrays, in one run:

- `vectorized`: the recompute's numbers (micro-stops, shift calendar with breaks and days off,
  hourly buckets, counter deltas, per-shift roll-up with `edge_agent.recompute.periods`) computed
  with numpy; tests/test_recompute.py proves it equal to the engine replay, bucket by bucket;
- `numpy_baseline`: a plain pass, state durations by `np.bincount` over machine x shift x state;
- `engine_replay`: the event-log replay through `PlantEngine` (what `edgeproof kpi` runs), on the
  first `--engine-samples` rows only (it runs at Python speed), checked equal to `vectorized` there.

Prints one JSON document on stdout; never asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/kpi_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from connectors.sample import Sample  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402
from edge_agent.engine import PlantEngine, config_fingerprint  # noqa: E402
from edge_agent.eventlog import Event, SampleLine, StartLine, TickLine  # noqa: E402
from edge_agent.intervals import real_reason  # noqa: E402
from edge_agent.kpi import ClosedBucket  # noqa: E402
from edge_agent.recompute import PeriodKpi, Replay, periods, replay  # noqa: E402
from edgeproof.indicators import TimeElements  # noqa: E402

T0 = datetime(2026, 3, 7, 0, 0, tzinfo=UTC) - timedelta(hours=8)  # Saturday 00:00 Asia/Shanghai
STATES = ("RUNNING", "SETUP", "MICRO_STOP", "IDLE", "FAULT", "PLANNED_STOP", "NOT_SCHEDULED", "UNKNOWN")
_CODE = {s: i for i, s in enumerate(STATES)}
_PLANNED = ("work", "break", "off")
_FIELD = {"RUNNING": "apt_s", "SETUP": "setup_s", "MICRO_STOP": "micro_stop_s", "IDLE": "idle_s", "FAULT": "fault_s"}
_FIELD["UNKNOWN"] = "unknown_s"
IDEAL_CYCLE_S = 30.0


def bench_config(machines: int, poll_s: float, meter: bool = False) -> AgentConfig:
    """One Modbus unit per machine with a state register and a parts counter (and, with `meter`, an
    energy meter in Wh); two shifts, Mon-Sat."""
    weekdays = ["mon", "tue", "wed", "thu", "fri", "sat"]
    counters: dict[str, object] = {"parts": "parts"}
    tags = [
        {"name": "state", "area": "holding", "address": 0},
        {"name": "parts", "area": "holding", "address": 1, "type": "uint32"},
    ]
    if meter:
        counters |= {"energy": "energy_wh", "energy_scale": 0.001}
        tags.append({"name": "energy_wh", "area": "holding", "address": 3, "type": "uint32"})
    return AgentConfig.model_validate(
        {
            "agent": {"id": "kpi-bench"},
            "site": {"firm": {"name": "Bench"}, "name": "S", "timezone": "Asia/Shanghai"},
            "machines": [
                {
                    "id": f"M{i:03d}",
                    "name": f"machine {i}",
                    "type": "cnc_lathe",
                    "digital": True,
                    "ideal_cycle_s": IDEAL_CYCLE_S,
                    "device": f"u{i:03d}",
                    "state_rules": "state_register",
                    "counters": counters,
                }
                for i in range(machines)
            ],
            "devices": [
                {
                    "id": f"u{i:03d}",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "unit": 1 + i % 247,
                    "poll_interval_s": poll_s,
                    "tags": tags,
                }
                for i in range(machines)
            ],
            "state_rules": {
                "state_register": [
                    {"state": "FAULT", "when": {"all": [{"tag": "state", "value": 3}]}, "reason": "fault"},
                    {"state": "SETUP", "when": {"all": [{"tag": "state", "value": 2}]}},
                    {"state": "RUNNING", "when": {"all": [{"tag": "state", "value": 1}]}},
                ]
            },
            "calendar": {
                "shifts": [
                    {
                        "name": "early",
                        "days": weekdays,
                        "start": "06:00",
                        "end": "14:00",
                        "breaks": [{"start": "10:00", "end": "10:20"}],
                    },
                    {
                        "name": "late",
                        "days": weekdays,
                        "start": "14:00",
                        "end": "22:00",
                        "breaks": [{"start": "18:00", "end": "18:30"}],
                    },
                ]
            },
            "kpi": {"bucket_minutes": 60, "micro_stop_s": 120.0},
        }
    )


@dataclass
class Samples:
    """Rows of one poll of one machine (state register and parts counter), every machine polled each cycle."""

    machine: np.ndarray  # int32 machine index
    time_us: np.ndarray  # int64 agent time, microseconds since the epoch
    state: np.ndarray  # int8 state register value
    parts: np.ndarray  # int64 parts counter
    machines: int
    energy: np.ndarray | None = None  # int64 energy meter (Wh), when synthesized with a meter

    @property
    def cycles(self) -> int:
        return len(self.time_us) // self.machines


def synthesize(machines: int, cycles: int, poll_s: float, seed: int = 1, meter: bool = False) -> Samples:
    """State register runs of random length (0 idle, 1 running, 2 setup, 3 fault); parts while running.

    With `meter`, an energy meter in Wh: 40 kW while running, 10 kW otherwise, drawn after everything
    else, so the other columns are those of a run without it."""
    rng = np.random.default_rng(seed)
    runs = rng.geometric(1 / 12, size=(cycles // 2 + 2, machines))  # cycles per run, mean 12
    values = rng.choice(np.array([0, 1, 1, 1, 2, 3], dtype=np.int8), size=runs.shape)
    state = np.empty((cycles, machines), dtype=np.int8)
    for m in range(machines):
        state[:, m] = np.repeat(values[:, m], runs[:, m])[:cycles]
    made = (state == 1) & (rng.random((cycles, machines)) < poll_s / IDEAL_CYCLE_S)
    parts = rng.integers(0, 1_000_000, size=machines) + np.cumsum(made, axis=0, dtype=np.int64)
    t0_us = int(T0.timestamp()) * 1_000_000
    period_us = round(poll_s * 1_000_000)
    energy = None
    if meter:
        kw = np.where(state == 1, 40.0, 10.0) * (1 + 0.05 * rng.standard_normal((cycles, machines)))
        energy = rng.integers(0, 10**7, size=machines) + np.floor(np.cumsum(kw * poll_s / 3.6, axis=0)).astype(np.int64)
    return Samples(
        machine=np.tile(np.arange(machines, dtype=np.int32), cycles),
        time_us=np.repeat(t0_us + np.arange(cycles, dtype=np.int64) * period_us, machines),
        state=state.ravel(),
        parts=parts.ravel(),
        machines=machines,
        energy=None if energy is None else energy.ravel(),
    )


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(us))


def _us(t: datetime) -> int:
    return (t - datetime.fromtimestamp(0, UTC)) // timedelta(microseconds=1)


# --- the engine replay: what `edgeproof kpi` does with an event log -----------------------------
def events(config: AgentConfig, data: Samples) -> Iterator[Event]:
    """The event log the agent would have written, one cycle of polls then one tick."""
    ids = [d.id for d in config.devices]
    start = _dt(data.time_us[0])
    yield StartLine.model_construct(start=start, boot_id="bench", speed=1.0, config_sha256=config_fingerprint(config))
    m = data.machines
    for k in range(data.cycles):
        at = _dt(data.time_us[k * m])
        for i in range(m):
            row = k * m + i
            yield SampleLine.model_construct(device=ids[i], tag="state", value=int(data.state[row]), good=True, at=at)
            yield SampleLine.model_construct(device=ids[i], tag="parts", value=int(data.parts[row]), good=True, at=at)
            if data.energy is not None:
                wh = int(data.energy[row])
                yield SampleLine.model_construct(device=ids[i], tag="energy_wh", value=wh, good=True, at=at)
        yield TickLine.model_construct(tick=at)


def engine_buckets(config: AgentConfig, data: Samples) -> dict[str, list[ClosedBucket]]:
    return replay(config, events(config, data)).buckets


# --- the vectorized recompute ----------------------------------------------------------------------
def vectorized_buckets(config: AgentConfig, data: Samples) -> dict[str, list[ClosedBucket]]:
    """Every bucket the engine replay closes, with the same elements, for this benchmark's shape of data.

    Handles what the synthetic plant exercises: state rules on one register, micro-stops, the shift
    calendar, a parts counter without wraps, resets or jumps, all samples good, one tick per cycle.
    """
    kpi = config.kpi
    if kpi.min_running_s or kpi.micro_stop_loss != "availability" or kpi.setup_loss != "availability":
        raise NotImplementedError("the vectorized path covers min_running_s 0 and losses against availability")
    engine = PlantEngine(config)  # its calendar, buckets and rules are the very objects the replay uses
    m, k = data.machines, data.cycles
    ticks = data.time_us[::m]
    state = data.state.reshape(k, m)
    parts = data.parts.reshape(k, m)

    # raw state per register value, by the configured rules themselves
    rules = engine.rules[config.machines[0].state_rules or ""]
    values = np.unique(state)
    lut = np.full(int(values.max()) + 1, _CODE["UNKNOWN"], dtype=np.int8)
    for v in values:
        name, reason = rules.evaluate({"state": Sample("", "state", int(v), True, T0)})
        if name == "IDLE" and real_reason(reason):
            raise NotImplementedError("an IDLE with a reason is never a micro-stop; not vectorized")
        lut[v] = _CODE[name]
    raw_ticks = lut[state]

    # the elementary timeline: every tick, bucket edge and calendar edge from the first bucket's start
    first, last = _dt(ticks[0]), _dt(ticks[-1])
    bucket_starts = [engine.buckets.start_of(first)]
    while bucket_starts[-1] < last:
        bucket_starts.append(engine.buckets.end_of(bucket_starts[-1]))
    calendar = engine.calendar.segments(bucket_starts[0], last)
    cal_starts = np.array([_us(a) for a, _, _ in calendar], dtype=np.int64)
    cal_planned = np.array([_PLANNED.index(p) for _, _, p in calendar], dtype=np.int8)
    b_starts = np.array([_us(b) for b in bucket_starts], dtype=np.int64)
    points = np.union1d(np.union1d(ticks, b_starts[b_starts <= ticks[-1]]), cal_starts)
    seg, dur = points[:-1], np.diff(points)
    tick_of = np.searchsorted(ticks, seg, side="right") - 1  # -1: before the first tick, UNKNOWN
    # where planned work resumes after a tick, the next tick's state (all its samples read since) holds
    # from the resumption on (docs/indicators.md); none before the first tick
    work = cal_planned == 0
    resumes = cal_starts[1:][work[1:] & ~work[:-1]]
    resumes = resumes[resumes > ticks[0]]
    if resumes.size:
        since = np.searchsorted(resumes, seg, side="right") - 1
        late = (tick_of >= 0) & (since >= 0) & (ticks[np.maximum(tick_of, 0)] < resumes[np.maximum(since, 0)])
        tick_of = np.where(late, tick_of + 1, tick_of)
    planned = cal_planned[np.searchsorted(cal_starts, seg, side="right") - 1]
    bucket = np.searchsorted(b_starts, seg, side="right") - 1
    raw = np.where((tick_of >= 0)[:, None], raw_ticks[np.maximum(tick_of, 0)], np.int8(_CODE["UNKNOWN"]))
    eff = np.where(planned[:, None] == 2, np.int8(_CODE["NOT_SCHEDULED"]), raw)
    eff = np.where(planned[:, None] == 1, np.int8(_CODE["PLANNED_STOP"]), eff)

    # micro-stops: a whole run of IDLE shorter than micro_stop_s that has ended; a short IDLE still
    # going at the last tick is held by the engine, and so are the buckets from its start on
    settled = np.full(m, ticks[-1] - round(kpi.max_lateness_s * 1_000_000), dtype=np.int64)
    if kpi.micro_stop_s:
        j = len(seg)
        flat = eff.T.ravel()  # machine after machine
        new_run = np.ones(flat.size, dtype=bool)
        new_run[1:] = flat[1:] != flat[:-1]
        new_run[::j] = True
        run_id = np.cumsum(new_run) - 1
        length = np.bincount(run_id, weights=np.tile(dur, m).astype(np.float64))  # exact: sums stay below 2**53
        run_state, run_start = flat[new_run], np.tile(seg, m)[new_run]
        short_idle = (run_state == _CODE["IDLE"]) & (length < kpi.micro_stop_s * 1_000_000)
        last_run = run_id[np.arange(1, m + 1) * j - 1]
        ended = np.ones(run_state.size, dtype=bool)
        ended[last_run] = False
        flat = np.where((short_idle & ended)[run_id], np.int8(_CODE["MICRO_STOP"]), flat)
        eff = flat.reshape(m, j).T
        held = short_idle[last_run]
        settled[held] = np.minimum(settled[held], run_start[last_run][held])

    # microseconds per (machine, bucket, planned, raw, effective), then the elements of each bucket
    nb, nstate = len(b_starts), len(STATES)
    key = ((np.arange(m)[None, :] * nb + bucket[:, None]) * 3 + planned[:, None]) * nstate + raw
    key = key * nstate + eff
    micros = (
        np.bincount(
            key.ravel(),
            weights=np.broadcast_to(dur[:, None], key.shape).ravel().astype(np.float64),
            minlength=m * nb * 3 * nstate * nstate,
        )
        .astype(np.int64)
        .reshape(m, nb, 3, nstate, nstate)
    )
    deltas = np.diff(parts, axis=0, prepend=parts[:1])
    if deltas.min() < 0 or deltas.max() > kpi.counter_jump_min:
        raise NotImplementedError("counter wraps, resets and jumps are not vectorized")
    tick_bucket = np.searchsorted(b_starts, ticks, side="right") - 1
    pq = np.zeros((m, nb), dtype=np.int64)
    np.add.at(
        pq, (np.broadcast_to(np.arange(m), deltas.shape), np.broadcast_to(tick_bucket[:, None], deltas.shape)), deltas
    )
    fields = _fields(micros)
    # energy per bucket: the meter's increase booked at each reading's time, as for parts; integer Wh
    # sums are exact, so they equal the replay's float sums in any order
    counters = config.machines[0].counters
    metered = counters.energy is not None
    wh = np.zeros((m, nb), dtype=np.int64)  # a meter never read has counted nothing
    if metered and data.energy is not None:
        meter = data.energy.reshape(k, m)
        rises = np.diff(meter, axis=0, prepend=meter[:1])
        if rises.min() < 0:
            raise NotImplementedError("meter resets are not vectorized")
        np.add.at(
            wh, (np.broadcast_to(np.arange(m), rises.shape), np.broadcast_to(tick_bucket[:, None], rises.shape)), rises
        )

    out: dict[str, list[ClosedBucket]] = {}
    for i, machine in enumerate(config.machines):
        closed = []
        for b in range(nb - 1):
            if b_starts[b + 1] > settled[i]:
                break
            seconds = {name: int(us[i, b]) / 1_000_000 for name, us in fields.items() if us[i, b]}
            n = int(pq[i, b])
            ideal = IDEAL_CYCLE_S * n if n else 0
            energy = int(wh[i, b]) * counters.energy_scale if metered else None
            elements = TimeElements(
                **seconds, pq=n, sq=0, ideal_run_s=ideal, ideal_good_s=ideal, ideal_known=True, energy_kwh=energy
            )
            closed.append(ClosedBucket(bucket_starts[b], bucket_starts[b + 1], elements))
        out[machine.id] = closed
    return out


def _fields(micros: np.ndarray) -> dict[str, np.ndarray]:
    """Time elements (machine x bucket microseconds) from microseconds by planned x raw x effective state."""
    unknown = _CODE["UNKNOWN"]
    out = {
        "window_s": micros.sum(axis=(2, 3, 4)),
        "observed_s": micros.sum(axis=(2, 4)).sum(axis=2) - micros[:, :, :, unknown, :].sum(axis=(2, 3)),
    }
    planned = micros[:, :, :2]  # work and break: inside a shift
    out["pot_s"] = planned.sum(axis=(2, 3, 4))
    stop = _CODE["PLANNED_STOP"]
    out["pdot_s"] = planned[:, :, :, :, stop].sum(axis=(2, 3))
    out["running_in_planned_stop_s"] = planned[:, :, :, _CODE["RUNNING"], stop].sum(axis=2)
    for state, name in _FIELD.items():
        out[name] = planned[:, :, :, :, _CODE[state]].sum(axis=(2, 3))
    return out


# --- the plain numpy pass ----------------------------------------------------------------------------
def numpy_baseline(data: Samples, shift_starts_us: np.ndarray) -> np.ndarray:
    """Seconds per machine x shift x state value: each sample's value held until the machine's next sample."""
    m = data.machines
    dt = np.zeros(data.time_us.size, dtype=np.int64)
    dt[:-m] = data.time_us[m:] - data.time_us[:-m]
    shift = np.searchsorted(shift_starts_us, data.time_us, side="right") - 1
    ns, nv = len(shift_starts_us), int(data.state.max()) + 1
    key = (data.machine.astype(np.int64) * ns + shift) * nv + data.state
    return np.bincount(key, weights=dt, minlength=m * ns * nv).reshape(m, ns, nv) / 1e6


def shift_edges(config: AgentConfig, data: Samples) -> np.ndarray:
    engine = PlantEngine(config)
    first, last = _dt(data.time_us[0]), _dt(data.time_us[-1])
    return np.array([_us(a) for a, _, _ in engine.calendar.segments(first, last)], dtype=np.int64)


def per_shift(config: AgentConfig, buckets: dict[str, list[ClosedBucket]]) -> list[PeriodKpi]:
    every = [b for bs in buckets.values() for b in bs]
    return periods(config, Replay(buckets=buckets), "shift", min(b.start for b in every), max(b.end for b in every))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000_000, help="rows (one poll of one machine: state + parts)")
    p.add_argument("--machines", type=int, default=100)
    p.add_argument("--poll-s", type=float, default=2.5, help="seconds between polls of a machine")
    p.add_argument("--engine-samples", type=int, default=200_000, help="rows replayed through the engine")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    config = bench_config(args.machines, args.poll_s)
    data = synthesize(args.machines, args.samples // args.machines, args.poll_s, args.seed)
    rows = data.time_us.size
    print(f"synthesized {rows} rows, {data.cycles} cycles", file=sys.stderr)

    t = time.perf_counter()
    edges = shift_edges(config, data)
    baseline = numpy_baseline(data, edges)
    baseline_s = time.perf_counter() - t

    t = time.perf_counter()
    fast = vectorized_buckets(config, data)
    shifts = per_shift(config, fast)
    vectorized_s = time.perf_counter() - t

    sub_cycles = max(2, args.engine_samples // args.machines)
    sub = synthesize(args.machines, sub_cycles, args.poll_s, args.seed)
    t = time.perf_counter()
    slow = engine_buckets(config, sub)
    engine_s = time.perf_counter() - t
    equal = slow == vectorized_buckets(config, sub)

    result = {
        "benchmark": "kpi_recompute",
        "rows": rows,
        "sample_values": 2 * rows,
        "machines": args.machines,
        "plant_days": round(data.cycles * args.poll_s / 86400, 2),
        "shift_periods": len(shifts),
        "buckets_per_machine": len(next(iter(fast.values()))),
        "vectorized": {"seconds": round(vectorized_s, 3), "rows_per_s": round(rows / vectorized_s)},
        "numpy_baseline": {"seconds": round(baseline_s, 3), "rows_per_s": round(rows / baseline_s)},
        "ratio_vs_baseline": round(vectorized_s / baseline_s, 2),
        "target_ratio": 10.0,
        "within_target": vectorized_s <= 10 * baseline_s,
        "engine_replay": {
            "rows": sub.time_us.size,
            "seconds": round(engine_s, 3),
            "rows_per_s": round(sub.time_us.size / engine_s),
            "equal_to_vectorized": equal,
        },
        "baseline_total_s": round(float(baseline.sum()), 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
