"""The plant model, the calendar, the scenario file and the ground truth (pure, no sockets)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproof.clock import ClockSpec
from edgeproof.configfile import ConfigError
from simulators.modbus_server import io_discrete_inputs, plc_discrete_inputs, plc_holding
from simulators.opcua_server import cnc_values
from simulators.plant import MIN_STATE_S, Interval, MachinePlant, State, build_plant, machine_seed
from simulators.scenario import Calendar, MicroStops, Scenario, demo_scenario_path, load_scenario
from simulators.shifts import Plan, Segment, calendar_segments, epoch
from simulators.truth import build_truth, write_truth

REPO = Path(__file__).resolve().parents[1]
SCENARIO = load_scenario()
Z = UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=Z)


def test_demo_scenario_is_shipped_and_copied_identically() -> None:
    packaged = demo_scenario_path()
    assert packaged.is_file()
    assert (REPO / "configs" / "demo-scenario.yaml").read_bytes() == packaged.read_bytes()


def test_demo_scenario_shape() -> None:
    s = SCENARIO
    assert [m.id for m in s.machines] == [
        "CNC-01", "CNC-02", "CNC-03", "CNC-04", "PLC-01", "PLC-02", "PLC-03", "LEG-01", "LEG-02", "LEG-03"
    ]  # fmt: skip
    assert [m.interface for m in s.machines] == ["opcua"] * 4 + ["modbus"] * 3 + ["none"] * 3
    assert [m.io_unit for m in s.machines[7:]] == [1, 2, 3]
    assert all(30 <= m.ideal_cycle_s <= 120 for m in s.machines)
    assert s.timezone == "Asia/Shanghai"
    assert s.phases["baseline"].exposed == ["CNC-01", "CNC-02", "PLC-01"]
    assert len(s.phases["post"].exposed) == 10
    assert s.phases["baseline"].window.start == datetime(2026, 3, 2, 6, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert s.phases["baseline"].window.start.weekday() == 0  # a Monday
    assert s.phases["post"].window.start == datetime(2026, 9, 7, 6, tzinfo=ZoneInfo("Asia/Shanghai"))
    post = s.phases["post"]
    assert (post.fault_factor, post.setup_factor) == (0.4, 0.6)
    assert post.slowdown < s.phases["baseline"].slowdown and post.scrap_factor < 1


def test_calendar_segments_of_the_baseline_horizon() -> None:
    h0, h1 = SCENARIO.horizon("baseline")  # 05:00-11:00 local, i.e. 21:00Z-03:00Z
    segments = calendar_segments(SCENARIO.calendar, SCENARIO.tz, h0, h1)
    assert segments == [
        Segment(epoch(utc(2026, 3, 1, 21)), epoch(utc(2026, 3, 1, 22)), Plan.OFF),
        Segment(epoch(utc(2026, 3, 1, 22)), epoch(utc(2026, 3, 2, 0)), Plan.BUSY),
        Segment(epoch(utc(2026, 3, 2, 0)), epoch(utc(2026, 3, 2, 0, 15)), Plan.BREAK),
        Segment(epoch(utc(2026, 3, 2, 0, 15)), epoch(utc(2026, 3, 2, 3)), Plan.BUSY),
    ]


def test_calendar_is_in_local_time_across_daylight_saving_and_skips_sundays() -> None:
    cal = Calendar.model_validate(
        {"shifts": [{"name": "day", "days": ["sat", "mon"], "start": "06:00", "end": "14:00", "breaks": []}]}
    )
    berlin = ZoneInfo("Europe/Berlin")  # DST starts Sunday 2026-03-29
    segs = calendar_segments(cal, berlin, utc(2026, 3, 28), utc(2026, 3, 31))
    busy = [(s.start, s.end) for s in segs if s.plan is Plan.BUSY]
    assert busy == [
        (epoch(utc(2026, 3, 28, 5)), epoch(utc(2026, 3, 28, 13))),  # Saturday, CET (+1)
        (epoch(utc(2026, 3, 30, 4)), epoch(utc(2026, 3, 30, 12))),  # Monday, CEST (+2); no Sunday
    ]


def test_night_shift_with_break_after_midnight() -> None:
    cal = Calendar.model_validate(
        {"shifts": [{"name": "night", "days": ["mon"], "start": "22:00", "end": "06:00",
                     "breaks": [{"start": "02:00", "end": "02:30"}]}]}
    )  # fmt: skip
    segs = calendar_segments(cal, ZoneInfo("UTC"), utc(2026, 3, 2, 20), utc(2026, 3, 3, 8))
    assert [(s.plan, s.end - s.start) for s in segs] == [
        (Plan.OFF, 7200), (Plan.BUSY, 4 * 3600), (Plan.BREAK, 1800), (Plan.BUSY, 3.5 * 3600), (Plan.OFF, 7200)
    ]  # fmt: skip


def _timelines(scenario: Scenario, phase: str) -> dict[str, list[tuple[int, int, State, int, str]]]:
    return {
        mid: [(iv.start, iv.end, iv.state, iv.fault_code, iv.program) for iv in p.intervals]
        for mid, p in build_plant(scenario, phase).items()
    }


def test_same_seed_gives_identical_timelines_and_counters() -> None:
    a, b = build_plant(SCENARIO, "baseline"), build_plant(load_scenario(), "baseline")
    assert _timelines(SCENARIO, "baseline") == _timelines(load_scenario(), "baseline")
    t = utc(2026, 3, 2, 0, 47, 13)
    for mid in a:
        assert (a[mid].parts_at(t), a[mid].scrap_at(t), a[mid].power_kw_at(t)) == (
            b[mid].parts_at(t), b[mid].scrap_at(t), b[mid].power_kw_at(t)
        )  # fmt: skip


def test_machine_order_and_company_do_not_change_a_machine() -> None:
    reordered = SCENARIO.model_copy(update={"machines": list(reversed(SCENARIO.machines))})
    alone = SCENARIO.model_copy(
        update={
            "machines": [SCENARIO.machine("PLC-02")],
            "phases": {k: v.model_copy(update={"exposed": []}) for k, v in SCENARIO.phases.items()},
        }
    )
    base = _timelines(SCENARIO, "post")
    assert _timelines(reordered, "post") == base
    assert _timelines(alone, "post")["PLC-02"] == base["PLC-02"]


def test_seed_and_phase_change_the_timeline() -> None:
    other_seed = SCENARIO.model_copy(update={"seed": SCENARIO.seed + 1})
    base = _timelines(SCENARIO, "baseline")
    assert _timelines(other_seed, "baseline")["CNC-01"] != base["CNC-01"]
    post = MachinePlant(SCENARIO, "CNC-01", "post").intervals
    assert [(iv.end - iv.start, iv.state) for iv in post] != [(e - s, st_) for s, e, st_, _, _ in base["CNC-01"]]


def _check_plant_invariants(plant: MachinePlant) -> None:
    ivs = plant.intervals
    assert ivs[0].start == plant.start and ivs[-1].end == plant.end
    assert all(a.end == b.start for a, b in pairwise(ivs))
    for seg in plant.segments:
        inside = [iv for iv in ivs if iv.start < seg.end and iv.end > seg.start]
        assert all(seg.start <= iv.start and iv.end <= seg.end for iv in inside)  # states never cross the plan
        if seg.plan is Plan.BREAK:
            assert [(iv.start, iv.end, iv.state) for iv in inside] == [(seg.start, seg.end, State.PLANNED_STOP)]
        elif seg.plan is Plan.OFF:
            assert [(iv.start, iv.end, iv.state) for iv in inside] == [(seg.start, seg.end, State.NOT_SCHEDULED)]
        else:
            states = {State.RUNNING, State.IDLE, State.MICRO_STOP, State.SETUP, State.FAULT}
            assert {iv.state for iv in inside} <= states
            assert inside[0].state is State.RUNNING
            assert all(iv.end - iv.start >= MIN_STATE_S for iv in inside if iv.state is not State.MICRO_STOP)
    micro = plant.machine.stops.micro
    for i, iv in enumerate(ivs):
        if iv.state is State.MICRO_STOP:
            # inside a running stretch, with at least MIN_STATE_S of running on both sides
            assert micro is not None and micro.min_s <= iv.duration_s <= micro.max_s
            before, after = ivs[i - 1], ivs[i + 1]
            assert before.state is after.state is State.RUNNING and before.program == iv.program == after.program
            assert min(before.duration_s, after.duration_s) >= MIN_STATE_S
    for a, b in pairwise(ivs):
        # The program changes only when a setup ends, to the next one in the list.
        if a.program != b.program:
            progs = plant.machine.programs
            assert a.state is State.SETUP and b.program == progs[(progs.index(a.program) + 1) % len(progs)]
    assert all((iv.fault_code in range(101, 106)) == (iv.state is State.FAULT) for iv in ivs)
    assert all(iv.fault_code == 0 for iv in ivs if iv.state is not State.FAULT)


@pytest.mark.parametrize("phase", ["baseline", "post"])
def test_demo_plants_respect_calendar_and_rules(phase: str) -> None:
    for plant in build_plant(SCENARIO, phase).values():
        _check_plant_invariants(plant)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    machine=st.sampled_from([m.id for m in SCENARIO.machines]),
    phase=st.sampled_from(["baseline", "post"]),
)
def test_any_seed_respects_calendar_and_rules(seed: int, machine: str, phase: str) -> None:
    plant = MachinePlant(SCENARIO.model_copy(update={"seed": seed}), machine, phase)
    _check_plant_invariants(plant)
    running = sum(iv.end - iv.start for iv in plant.intervals if iv.state is State.RUNNING)
    assert plant.parts_made(datetime.fromtimestamp(plant.end, Z)) == math.floor(running / plant.actual_cycle_s)


def test_counters_power_and_program_follow_the_state() -> None:
    plant = MachinePlant(SCENARIO, "PLC-01", "baseline")
    rated = plant.machine.rated_kw
    for iv in plant.intervals:
        t0, t1 = datetime.fromtimestamp(iv.start, Z), datetime.fromtimestamp(iv.end, Z)
        made = plant.parts_at(t1) - plant.parts_at(t0)
        if iv.state is State.RUNNING:
            assert abs(made - (iv.end - iv.start) / plant.actual_cycle_s) <= 1
        else:
            assert made == 0 and plant.scrap_at(t1) == plant.scrap_at(t0)
        mid = t0 + (t1 - t0) / 2
        power = plant.power_kw_at(mid)
        expected = {State.RUNNING: rated, State.NOT_SCHEDULED: 0.0}.get(iv.state, 0.25 * rated)
        assert power == pytest.approx(expected, rel=0.1, abs=1e-12)
        assert plant.program_at(mid) == iv.program and plant.state_at(mid) is iv.state
    # Frozen outside the horizon.
    first = datetime.fromtimestamp(plant.start, Z)
    assert plant.parts_at(first - timedelta(days=3)) == plant.parts_at(first) == plant.machine.counter_start


def test_energy_is_the_integral_of_power_and_frozen_outside_the_horizon() -> None:
    plant = MachinePlant(SCENARIO, "PLC-02", "post")
    start, end = datetime.fromtimestamp(plant.start, Z), datetime.fromtimestamp(plant.end, Z)
    # power changes only on whole plant seconds (state edges, noise steps): a sum per second is the integral
    seconds = range(plant.start, plant.end)
    riemann = math.fsum(plant.power_kw_at(datetime.fromtimestamp(x, Z)) for x in seconds) / 3600
    assert plant.energy_kwh_at(end) == pytest.approx(riemann, rel=1e-12)
    assert plant.energy_kwh_at(start) == 0.0
    # inside a second the meter advances at the power of that second
    x = datetime.fromtimestamp(plant.start + 4 * 3600 + 17, Z)
    half = plant.energy_kwh_at(x + timedelta(seconds=0.5)) - plant.energy_kwh_at(x)
    assert half == pytest.approx(plant.power_kw_at(x) / 7200, rel=1e-9)
    assert plant.snapshot(x).energy_kwh == plant.energy_kwh_at(x)
    assert plant.energy_kwh_at(end + timedelta(days=1)) == plant.energy_kwh_at(end)


@pytest.mark.parametrize(("machine", "bits"), [("LEG-02", 16), ("PLC-03", 32)])
def test_counters_monotone_except_one_wrap_inside_the_post_window(machine: str, bits: int) -> None:
    plant = MachinePlant(SCENARIO, machine, "post")
    window = SCENARIO.phases["post"].window
    times = [window.start + timedelta(seconds=s) for s in range(0, 14401, 20)]
    unwrapped = [plant.parts_at(t) for t in times]
    register = [v % 2**bits for v in unwrapped]
    assert all(a <= b for a, b in pairwise(unwrapped))
    drops = [(a, b) for a, b in pairwise(register) if b < a]
    assert len(drops) == 1
    before, after = drops[0]
    assert before > 2**bits - 20 and after < 20  # a wrap, not a reset
    assert unwrapped[0] < 2**bits < unwrapped[-1]


@pytest.mark.parametrize("phase", ["baseline", "post"])
def test_truth_is_consistent_with_the_model(phase: str) -> None:
    plants = build_plant(SCENARIO, phase)
    doc = build_truth(SCENARIO, phase, plants)
    w = SCENARIO.phases[phase].window
    assert doc.exposed == SCENARIO.phases[phase].exposed
    for mid, m in doc.machines.items():
        e = m.elements
        assert sum(m.states_s.values()) == e.window_s == e.observed_s == 14400
        assert (e.pot_s, e.pdot_s, e.pbt_s) == (14400, 900, 13500)
        assert m.states_s[State.PLANNED_STOP] == 900 and m.states_s[State.NOT_SCHEDULED] == 0
        assert [iv for iv in m.intervals if iv[0] is State.PLANNED_STOP] == [
            (State.PLANNED_STOP, _z(w.start + timedelta(hours=2)), _z(w.start + timedelta(hours=2, minutes=15)))
        ]
        assert e.apt_s == m.states_s[State.RUNNING]
        assert (e.setup_s, e.idle_s, e.fault_s) == (
            m.states_s[State.SETUP], m.states_s[State.IDLE], m.states_s[State.FAULT]
        )  # fmt: skip
        assert e.micro_stop_s == m.states_s[State.MICRO_STOP] == 0  # the demo plant has no micro-stops
        assert m.pq == plants[mid].parts_at(w.end) - plants[mid].parts_at(w.start) > 0
        assert m.sq == plants[mid].scrap_at(w.end) - plants[mid].scrap_at(w.start) >= 0
        assert e.ideal_run_s == m.ideal_cycle_s * m.pq
        o = m.oee
        a, p, q = (o[k]["value"] for k in ("availability", "performance", "quality"))
        assert a * p * q == pytest.approx(o["oee"]["value"], abs=1e-9)
        assert o["oee"]["value"] == pytest.approx(m.ideal_cycle_s * (m.pq - m.sq) / 13500, abs=1e-12)
        assert p == pytest.approx(1 / (1 + SCENARIO.phases[phase].slowdown), abs=0.03)
        if m.interface == "modbus":  # a PLC serves the meter: the window's energy, exactly the model's
            energy = plants[mid].energy_kwh_at(w.end) - plants[mid].energy_kwh_at(w.start)
            assert e.energy_kwh == energy
            # 13 500 s of planned busy time at standby (25 %) to full power, 900 s of break at standby, ±10 % noise
            rated = plants[mid].machine.rated_kw
            assert 0.9 * rated * 0.25 * 14400 / 3600 < energy < 1.1 * rated * 14400 / 3600
        else:
            assert e.energy_kwh is None


def _z(t: datetime) -> str:
    return t.astimezone(Z).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_truth_file_format(tmp_path: Path) -> None:
    spec = ClockSpec(sim_origin=utc(2026, 3, 1, 21, 58), wall_origin=1000.0, speed=600)
    path = tmp_path / "truth.json"
    write_truth(path, build_truth(SCENARIO, "baseline", build_plant(SCENARIO, "baseline"), spec, 15020))
    doc = json.loads(path.read_text())
    assert set(doc) == {"scenario", "seed", "phase", "window", "clock", "port_base", "exposed", "machines"}
    assert doc["window"] == {"start": "2026-03-01T22:00:00Z", "end": "2026-03-02T02:00:00Z"}
    assert doc["clock"] == {"sim_origin": "2026-03-01T21:58:00Z", "wall_origin": 1000.0, "speed": 600.0}
    assert (doc["scenario"], doc["seed"], doc["phase"], doc["port_base"]) == ("demo-plant", 20260302, "baseline", 15020)
    assert doc["exposed"] == ["CNC-01", "CNC-02", "PLC-01"]
    leg = doc["machines"]["LEG-02"]
    assert (leg["interface"], leg["exposed"], leg["ideal_cycle_s"]) == ("none", False, 50.0)
    assert set(leg["states_s"]) == {s.value for s in State}
    assert leg["intervals"][0][1] == "2026-03-01T22:00:00Z" and leg["intervals"][-1][2] == "2026-03-02T02:00:00Z"
    assert set(leg["oee"]) == {"availability", "performance", "quality", "oee", "flags"}
    assert "energy_kwh" not in leg["elements"]  # no meter behind an IO module
    assert doc["machines"]["PLC-01"]["elements"]["energy_kwh"] > 0


def _write_variant(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    text = demo_scenario_path().read_text()
    assert text.count(old) >= 1
    line = text[: text.index(old)].count("\n") + 1
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new, 1))
    return path, line


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ('end: "14:00"', 'end: "14:60"', "calendar.shifts[0].end", "'HH:MM' time"),
        ("ideal_cycle_s: 45", "ideal_cycle_s: -45", "machines[0].ideal_cycle_s", "greater than 0"),
        ("    io_unit: 2\n", "", "machines[8]", "needs io_unit"),
        ("timezone: Asia/Shanghai", "timezone: Mars/Olympus", "timezone", "unknown time zone"),
    ],
)
def test_bad_scenarios_name_file_line_and_field(tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    path, line = _write_variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    text = str(err.value)
    assert f"{path}:" in text and f": {field}: " in text and message in text
    if field != "machines[8]":  # a missing key is reported at its parent's line
        assert f"{path}:{line}: {field}" in text


def test_unknown_exposed_machine_is_rejected(tmp_path: Path) -> None:
    path, _ = _write_variant(tmp_path, "exposed: [CNC-01, CNC-02, PLC-01]", "exposed: [CNC-01, CNC-99]")
    with pytest.raises(ConfigError, match=r"exposed lists unknown machines \['CNC-99'\]"):
        load_scenario(path)


# --- micro-stops -----------------------------------------------------------------------------
MICRO = MicroStops(probability=0.1, mean_s=40, min_s=20, max_s=90)


def _with_micro(scenario: Scenario, micro: MicroStops = MICRO, **machine: object) -> Scenario:
    machines = [
        m.model_copy(update={"stops": m.stops.model_copy(update={"micro": micro}), **machine})
        for m in scenario.machines
    ]
    return scenario.model_copy(update={"machines": machines})


def _without_micro_stops(intervals: list[Interval]) -> list[tuple[int, int, State, int, str]]:
    """The timeline with each micro-stop given back to the running stretch around it."""
    out: list[tuple[int, int, State, int, str]] = []
    for iv in intervals:
        state = State.RUNNING if iv.state is State.MICRO_STOP else iv.state
        if out and out[-1][2] is State.RUNNING and state is State.RUNNING:
            out[-1] = (out[-1][0], iv.end, state, 0, iv.program)
        else:
            out.append((iv.start, iv.end, state, iv.fault_code, iv.program))
    return out


@pytest.mark.parametrize("phase", ["baseline", "post"])
def test_micro_stops_only_cut_running_stretches(phase: str) -> None:
    base = _timelines(SCENARIO, phase)
    plants = build_plant(_with_micro(SCENARIO), phase)
    for mid, plant in plants.items():
        _check_plant_invariants(plant)
        # Drawn from a stream of their own: everything else is exactly the plant without them.
        assert _without_micro_stops(plant.intervals) == base[mid], mid
    micro = [iv for p in plants.values() for iv in p.intervals if iv.state is State.MICRO_STOP]
    assert len(micro) > 20 and {iv.fault_code for iv in micro} == {0}
    again = build_plant(_with_micro(load_scenario()), phase)
    assert {m: p.intervals for m, p in again.items()} == {m: p.intervals for m, p in plants.items()}


def test_micro_stop_draws_follow_the_documented_rule() -> None:
    # A machine that never stops otherwise runs through each busy stretch; micro-stops are then
    # drawn, per stretch, as: gap ~ exponential(60 / probability s), duration ~ exponential(mean_s)
    # clipped to [min_s, max_s], starting MIN_STATE_S + gap after the running stretch began.
    never = {"probability": 0.0, "mean_min": 1.0}
    stops = {"idle": never, "setup": never, "fault": never}
    machine = SCENARIO.machine("PLC-01").model_copy(
        update={"stops": SCENARIO.machine("PLC-01").stops.model_validate({**stops, "micro": MICRO.model_dump()})}
    )
    scenario = SCENARIO.model_copy(update={"machines": [machine]})
    plant = MachinePlant(scenario, "PLC-01", "baseline")
    rng = np.random.default_rng(machine_seed(scenario.seed, "PLC-01", "baseline").spawn(4)[3])
    busy = next(seg for seg in plant.segments if seg.plan is Plan.BUSY)  # 06:00-08:00 local, 7200 s
    t, expected = busy.start, []
    while True:
        start = t + MIN_STATE_S + round(float(rng.exponential(60 / MICRO.probability)))
        duration = min(MICRO.max_s, max(MICRO.min_s, round(float(rng.exponential(MICRO.mean_s)))))
        if busy.end - (start + duration) < MIN_STATE_S:
            break
        expected.append((start, start + duration))
        t = start + duration
    got = [(iv.start, iv.end) for iv in plant.intervals if iv.state is State.MICRO_STOP and iv.end <= busy.end]
    assert got == expected and len(got) >= 5
    # 7200 s of planned busy time: all of it running or in micro-stops
    inside = [iv for iv in plant.intervals if busy.start <= iv.start < busy.end]
    assert sum(iv.duration_s for iv in inside) == 7200
    assert {iv.state for iv in inside} == {State.RUNNING, State.MICRO_STOP}


def test_truth_counts_micro_stops_as_an_availability_loss() -> None:
    scenario = _with_micro(SCENARIO)
    plants = build_plant(scenario, "post")
    doc = build_truth(scenario, "post", plants)
    w = scenario.phases["post"].window
    a, b = epoch(w.start), epoch(w.end)
    for mid, m in doc.machines.items():
        e = m.elements
        assert sum(m.states_s.values()) == e.window_s == 14400
        micro = [iv for iv in plants[mid].intervals if iv.state is State.MICRO_STOP]
        in_window = sum(max(0, min(iv.end, b) - max(iv.start, a)) for iv in micro)
        assert e.micro_stop_s == m.states_s[State.MICRO_STOP] == in_window > 0, mid
        assert all(iv.duration_s <= MICRO.max_s < 120 for iv in micro)  # below the agent's default threshold
        assert e.apt_s == m.states_s[State.RUNNING]
        # ISO 22400 (the agent's default): micro-stop time is not operating time, it lowers A
        assert e.apt_s + e.setup_s + e.idle_s + e.micro_stop_s + e.fault_s + e.unknown_s + e.pdot_s == e.pot_s
        assert m.oee["availability"]["numerator"] == e.apt_s
        assert m.oee["availability"]["denominator"] == 13500
        assert m.pq == plants[mid].parts_at(w.end) - plants[mid].parts_at(w.start)
        # parts are made only while running: none in a micro-stop
        for iv in micro:
            t0, t1 = datetime.fromtimestamp(iv.start, Z), datetime.fromtimestamp(iv.end, Z)
            assert plants[mid].parts_at(t0) == plants[mid].parts_at(t1)
    # the plain demo plant: the same machines, more running time, no micro-stop time
    plain = build_truth(SCENARIO, "post", build_plant(SCENARIO, "post"))
    for mid, m in doc.machines.items():
        p = plain.machines[mid]
        assert m.states_s[State.RUNNING] + m.states_s[State.MICRO_STOP] == p.states_s[State.RUNNING]
        assert {s: v for s, v in m.states_s.items() if s not in (State.RUNNING, State.MICRO_STOP)} == {
            s: v for s, v in p.states_s.items() if s not in (State.RUNNING, State.MICRO_STOP)
        }


def test_a_micro_stop_is_served_exactly_like_idle() -> None:
    plant = MachinePlant(_with_micro(SCENARIO), "PLC-01", "baseline")
    iv = next(iv for iv in plant.intervals if iv.state is State.MICRO_STOP)
    t = datetime.fromtimestamp(iv.start + iv.duration_s // 2, Z)
    snap = plant.snapshot(t)
    assert plant.state_at(t) is snap.interval.state is State.MICRO_STOP  # the truth
    assert snap.state is State.IDLE  # what the signals show
    idle = snap.__class__(snap.at, Interval(iv.start, iv.end, State.IDLE, 0, iv.program), snap.parts, snap.scrap, 1.0)
    assert plc_holding(snap)[:3] == plc_holding(idle)[:3] == [0, 0, 0]
    assert plc_discrete_inputs(snap) == [False, False] and io_discrete_inputs(snap) == [False]
    assert cnc_values(snap, 90.0) == cnc_values(idle, 90.0)
    assert snap.power_kw == pytest.approx(0.25 * plant.machine.rated_kw, rel=0.1)


@pytest.mark.parametrize(
    ("micro", "message"),
    [
        ({"probability": 0.1, "mean_s": 40, "min_s": 60, "max_s": 30}, "max_s must be at least min_s"),
        ({"probability": 1.5, "mean_s": 40, "max_s": 90}, "less than or equal to 1"),
        ({"probability": 0.1, "mean_s": 40}, "Field required"),
        ({"probability": 0.1, "mean_s": 40, "max_s": 90, "reason": "x"}, "Extra inputs"),
    ],
)
def test_bad_micro_stops_are_rejected(tmp_path: Path, micro: dict[str, object], message: str) -> None:
    text = demo_scenario_path().read_text()
    old = "      fault: {probability: 0.30, mean_min: 14}\n"
    assert text.count(old) >= 1
    line = text[: text.index(old)].count("\n") + 2
    entry = ", ".join(f"{k}: {v}" for k, v in micro.items())
    path = tmp_path / "micro.yaml"
    path.write_text(text.replace(old, old + f"      micro: {{{entry}}}\n", 1))
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert f"{path}:{line}: machines[0].stops.micro" in str(err.value) and message in str(err.value)
