"""`edgeproof kpi`: the replay of the agent's event log gives exactly the numbers the agent published."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bench.kpi_bench import bench_config, engine_buckets, per_shift, synthesize, vectorized_buckets
from connectors.sample import Sample
from edge_agent.config import AgentConfig, EventLogSettings
from edge_agent.engine import STALE_REASON, PlantEngine, config_fingerprint
from edge_agent.eventlog import Event, EventLogWriter, SampleLine, StartLine, TickLine, read_events
from edge_agent.recompute import periods, replay
from edge_agent.runtime import Agent
from edgeproof.cli import main
from edgeproof.clock import ClockSpec, ScaledClock
from edgeproof.contract import MachineKpi, SiteKpi, StateInterval, parse_sequenced
from edgeproof.demo import agent_config_for
from edgeproof.indicators import TimeElements, total
from edgeproof.netutil import free_port, free_port_block
from simulators.plant import build_plant
from simulators.scenario import load_scenario

SPEED = 600.0  # plant seconds per wall second: a 5-minute bucket closes every 0.5 s
RUN_PLANT_S = 75 * 60


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, AgentConfig]]:
    """The post-retrofit demo plant served by the real simulator, watched by the real agent in-process."""
    out = tmp_path_factory.mktemp("recompute")
    port_base = free_port_block(12)
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--phase", "post", "--port-base", str(port_base), "--speed", str(SPEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        ready = json.loads(sim.stdout.readline())
        clock = ClockSpec.model_validate(ready["clock"]).build()
        assert isinstance(clock, ScaledClock)
        raw = agent_config_for("post", port_base, free_port(), out / "agent")  # nothing listens on the MQTT port
        raw["agent"]["event_log"] = str(out / "events.jsonl")
        raw["kpi"]["bucket_minutes"] = 5
        # calendar stops with reason codes inside the 05:58-07:13 run (the day shift starts at 06:00)
        raw["calendar"]["shifts"][0]["breaks"][0]["name"] = "tea"
        raw["calendar"]["planned_downtime"] = [
            {"start": "2026-09-07T06:30", "end": "2026-09-07T06:40", "reason": "tool change"}
        ]
        config_path = out / "agent.yaml"
        config_path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        config = AgentConfig.model_validate(raw)
        agent = Agent(config, clock)

        async def run() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(RUN_PLANT_S / SPEED, stop.set)
            await agent.run(stop, drain_timeout_s=0.1)

        asyncio.run(run())
    finally:
        sim.terminate()
        sim.wait(20)
    yield out / "events.jsonl", out / "agent" / "outbox.sqlite", config


def outbox_messages(path: Path) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        return [parse_sequenced(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    finally:
        db.close()


def test_replay_reproduces_every_bucket_the_agent_published_exactly(recorded: tuple[Path, Path, AgentConfig]) -> None:
    events, outbox, config = recorded
    published = outbox_messages(outbox)
    agent_kpis = {(m.machine_id, m.bucket_start): m for m in published if isinstance(m, MachineKpi)}
    agent_sites = {m.bucket_start: m for m in published if isinstance(m, SiteKpi)}
    result = replay(config, read_events(events))
    replayed = {(m, b.start): b for m, buckets in result.buckets.items() for b in buckets}

    assert len(agent_kpis) >= 10 * len(config.machines)  # 75 plant minutes of 5-minute buckets, every machine
    assert set(replayed) == set(agent_kpis)
    for key, message in agent_kpis.items():
        assert replayed[key].end == message.bucket_end
        # the wire form went through JSON; so does the replayed one: equal means equal to the last bit
        assert TimeElements.model_validate_json(replayed[key].elements.model_dump_json()) == message.elements, key
    # the data really moved: parts were counted, machines ran and stood, the start was not observed
    summed = total(m.elements for m in agent_kpis.values())
    assert summed.pq > 0 and summed.apt_s > 0 and summed.idle_s + summed.fault_s + summed.setup_s > 0
    assert summed.observed_s < summed.window_s  # the first bucket is accounted from before the first sample
    # the PLCs' meters were read (equal above includes energy_kwh); the other machines have none
    for machine in config.machines:
        energy = [m.elements.energy_kwh for (mid, _), m in agent_kpis.items() if mid == machine.id]
        if machine.id.startswith("PLC"):
            assert None not in energy and sum(e for e in energy if e is not None) > 0, machine.id
        else:
            assert set(energy) == {None}, machine.id

    by_bucket = periods(config, result, "bucket", datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
    assert {p.start for p in by_bucket} == set(agent_sites)
    for p in by_bucket:
        assert p.site.site_ratios == agent_sites[p.start].ratios


def test_replay_gives_the_state_intervals_the_agent_published_with_their_reasons(
    recorded: tuple[Path, Path, AgentConfig],
) -> None:
    events, outbox, config = recorded
    published = [
        (m.machine_id, m.state, m.start, m.end, m.reason)
        for m in outbox_messages(outbox)
        if isinstance(m, StateInterval)
    ]
    result = replay(config, read_events(events), intervals=True)
    replayed = [(m, iv.state, iv.start, iv.end, iv.reason) for m, iv in result.intervals]
    assert published == replayed
    tz = ZoneInfo(config.site.timezone)
    for machine in config.machines:  # every machine, acquired or not: the calendar decides these two
        mine = [
            (s, a.astimezone(tz).strftime("%H:%M"), b.astimezone(tz).strftime("%H:%M"), r)
            for m, s, a, b, r in published
            if m == machine.id
        ]
        assert ("NOT_SCHEDULED", "05:55", "06:00", "no_shift") in mine
        assert ("PLANNED_STOP", "06:30", "06:40", "planned_downtime:tool change") in mine


def test_metered_energy_per_bucket_matches_the_simulators_power_model(
    recorded: tuple[Path, Path, AgentConfig],
) -> None:
    """The PLCs' energy registers, read by the agent, give each bucket the plant's energy within a derived bound.

    A bucket [s, e) gets the meter's increase from the last reading P before s to the last reading L
    in it: E(L) - E(P) against the truth E(e) - E(s). Each reading shows the energy at its read time
    t minus its staleness d (the served value is from the simulator's latest refresh, floored to whole
    Wh), d >= 0. So the error lies within [-(E(e) - E(t_L)) - d_L, E(s) - E(t_P) + d_P]: at most one
    gap between readings at the highest power, plus the largest staleness.
    """
    events, outbox, config = recorded
    scenario = load_scenario()
    plants = build_plant(scenario, "post")
    metered = {m.device: m for m in config.machines if m.counters.energy}
    assert sorted(m.id for m in metered.values()) == ["PLC-01", "PLC-02", "PLC-03"]
    readings: dict[str, list[tuple[datetime, float]]] = {m.id: [] for m in metered.values()}
    for e in read_events(events):
        if isinstance(e, SampleLine) and e.device in metered and e.tag == "energy_wh" and e.good:
            assert isinstance(e.value, int)
            readings[metered[e.device].id].append((e.at, e.value * metered[e.device].counters.energy_scale))
    kpis = [m for m in outbox_messages(outbox) if isinstance(m, MachineKpi) and m.machine_id in readings]
    checked = 0
    for machine_id, series in readings.items():
        plant = plants[machine_id]
        times = [t for t, _ in series]
        run = range(int(times[0].timestamp()), int(times[-1].timestamp()) + 1)
        p_max = max(plant.power_kw_at(datetime.fromtimestamp(x, UTC)) for x in run)
        gap = max(b - a for a, b in itertools.pairwise(times)).total_seconds()
        staleness = [plant.energy_kwh_at(t) - kwh for t, kwh in series]
        assert min(staleness) >= -1e-9  # a reading never shows energy the plant has not drawn yet
        bound = p_max * gap / 3600 + max(staleness)
        measured_total = truth_total = 0.0
        for k in sorted((m for m in kpis if m.machine_id == machine_id), key=lambda m: m.bucket_start):
            s, e = k.bucket_start, k.bucket_end
            if not times[0] < s or e > times[-1]:
                continue  # the baseline reading is inside the first bucket; the last may have no reading after it
            truth = plant.energy_kwh_at(e) - plant.energy_kwh_at(s)
            assert k.elements.energy_kwh is not None
            assert abs(k.elements.energy_kwh - truth) <= bound, (machine_id, s, k.elements.energy_kwh, truth, bound)
            measured_total += k.elements.energy_kwh
            truth_total += truth
            checked += 1
        # the errors of inner edges cancel: over the run, one bound for the whole
        assert abs(measured_total - truth_total) <= bound, (machine_id, measured_total, truth_total)
        assert bound < 0.05 * truth_total  # the bound says something: a few percent of the run's energy at most
    assert checked >= 3 * 10


def test_periods_add_elements_and_never_average_ratios(recorded: tuple[Path, Path, AgentConfig]) -> None:
    events, _, config = recorded
    result = replay(config, read_events(events))
    starts = sorted({b.start for bs in result.buckets.values() for b in bs})
    start, end = starts[1], starts[-1]  # an inner range: the first and the last bucket stay out
    (window,) = periods(config, result, "window", start, end)
    hours = periods(config, result, "hour", start, end)
    assert window.buckets == len(starts) - 2
    assert window.window_s == 300.0 * window.buckets
    for m in window.machines:
        inside = [b.elements for b in result.buckets[m.machine_id] if start <= b.start and b.end <= end]
        assert m.elements == total(inside)
        per_hour = total(next(x for x in h.machines if x.machine_id == m.machine_id).elements for h in hours)
        assert per_hour.apt_s == pytest.approx(m.elements.apt_s, abs=1e-6) and per_hour.pq == m.elements.pq
        if m.ratios.availability.value is not None:
            assert m.ratios.availability.value == m.elements.apt_s / m.elements.observed_pbt_s
    site = window.site
    assert site.elements == total(m.elements for m in window.machines)
    assert site.ratios.oee.value == site.elements.ideal_good_s / site.elements.observed_pbt_s
    networked = [c for c in site.site_ratios.coverage if c.networked]
    assert site.site_ratios.networking_rate.numerator == len(networked) == len(config.machines)


def test_the_command_prints_the_same_numbers(
    recorded: tuple[Path, Path, AgentConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    events, _, config = recorded
    config_path = events.parent / "agent.yaml"
    result = replay(config, read_events(events), intervals=True)
    first = min(b.start for bs in result.buckets.values() for b in bs)
    last = max(b.end for bs in result.buckets.values() for b in bs)
    rc = main(
        [
            "kpi",
            "--config",
            str(config_path),
            "--events",
            str(events),
            "--from",
            first.isoformat(),
            "--to",
            last.isoformat(),
            "--by",
            "shift",
            "--intervals",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(i["machine_id"], i["state"], i["reason"]) for i in doc["intervals"]] == [
        (m, iv.state, iv.reason) for m, iv in result.intervals if iv.start < last and iv.end > first
    ]
    assert doc["warnings"] == [] and doc["replay"]["starts"] == 1 and doc["replay"]["samples"] > 1000
    expected = periods(config, result, "shift", first, last)
    assert [p["label"] for p in doc["periods"]] == [p.label for p in expected]
    assert "day 白班" in {p["shift"] for p in doc["periods"]}
    for got, want in zip(doc["periods"], expected, strict=True):
        for gm, wm in zip(got["machines"], want.machines, strict=True):
            assert TimeElements.model_validate(gm["elements"]) == wm.elements
            assert gm["ratios"]["oee"]["value"] == wm.ratios.oee.value


def test_a_different_configuration_is_flagged(
    recorded: tuple[Path, Path, AgentConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events, _, _ = recorded
    raw = yaml.safe_load((events.parent / "agent.yaml").read_text(encoding="utf-8"))
    raw["machines"][0]["ideal_cycle_s"] = 1.0
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    rc = main(
        [
            "kpi",
            "--config",
            str(other),
            "--events",
            str(events),
            "--from",
            "2020-01-01T00:00Z",
            "--to",
            "2020-01-02T00:00Z",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["periods"] == [] and doc["warnings"][0].startswith("config_differs_from_logged")


def one_machine_config() -> AgentConfig:
    return AgentConfig.model_validate(one_machine_raw())


def one_machine_raw() -> dict[str, Any]:
    """One machine on one Modbus unit: RUNNING while `run`, parts counted; planned all Monday, UTC."""
    return {
        "agent": {"id": "a"},
        "site": {"firm": {"name": "F"}, "name": "S", "timezone": "UTC"},
        "machines": [
            {
                "id": "M1",
                "name": "m",
                "type": "t",
                "digital": True,
                "device": "plc",
                "state_rules": "r",
                "counters": {"parts": "parts"},
            }
        ],
        "devices": [
            {
                "id": "plc",
                "protocol": "modbus",
                "host": "127.0.0.1",
                "port": 502,
                "poll_interval_s": 1.0,
                "timeout_s": 0.5,
                "tags": [
                    {"name": "run", "area": "discrete", "address": 0, "type": "bool"},
                    {"name": "parts", "area": "input", "address": 0},
                ],
            }
        ],
        "state_rules": {
            "r": [{"state": "RUNNING", "when": {"all": [{"tag": "run", "value": True}]}}, {"state": "IDLE"}]
        },
        "calendar": {"shifts": [{"days": ["mon"], "start": "00:00", "end": "00:00"}]},
    }


def test_staleness_depends_only_on_sample_times_and_the_evaluation_instant() -> None:
    config = one_machine_config()
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
    engine = PlantEngine(config, speed=10.0)  # lifetime (3 x 1 s + 0.5 s) x 10 = 35 plant seconds
    engine.start(t0)
    engine.ingest([Sample("plc", "run", True, True, t0), Sample("plc", "parts", 100, True, t0)])
    machine = config.machines[0]
    assert engine.machine_state(machine, t0 + timedelta(seconds=35)) == ("RUNNING", None)
    assert engine.machine_state(machine, t0 + timedelta(seconds=35, microseconds=1)) == ("UNKNOWN", STALE_REASON)
    engine.evaluate(t0)
    engine.evaluate(t0 + timedelta(seconds=30))
    engine.ingest([Sample("plc", "parts", 112, True, t0 + timedelta(seconds=40))])
    engine.evaluate(t0 + timedelta(seconds=60))
    (bucket,) = engine.evaluate(t0 + timedelta(hours=1, minutes=5)).buckets["M1"]  # past the counters' lateness
    assert (bucket.elements.apt_s, bucket.elements.unknown_s, bucket.elements.pq) == (60.0, 3540.0, 12)


@pytest.mark.parametrize("meter", [False, True])
def test_the_benchmarks_vectorized_recompute_equals_the_engine_replay(meter: bool) -> None:
    """bench/kpi_bench.py times a numpy path; it counts only because it gives the replay's numbers exactly."""
    config = bench_config(machines=6, poll_s=90.0, meter=meter)
    data = synthesize(machines=6, cycles=3000, poll_s=90.0, seed=3, meter=meter)  # Sat 00:00 to Tue 03:00, local
    replayed = engine_buckets(config, data)
    assert vectorized_buckets(config, data) == replayed
    summed = total(b.elements for bs in replayed.values() for b in bs)
    if meter:  # every reading's increase is in some bucket: the meter's rise up to the last closed bucket's end
        assert data.energy is not None
        ends = {mid: bs[-1].end for mid, bs in replayed.items()}
        assert len(set(ends.values())) == 1
        end_us = int(next(iter(ends.values())).timestamp() * 1_000_000)
        wh = data.energy.reshape(-1, 6)
        before = data.time_us[::6] < end_us
        assert summed.energy_kwh == pytest.approx(float((wh[before][-1] - wh[0]).sum()) * 0.001, rel=1e-12)
    else:
        assert summed.energy_kwh is None
    # every path of the time accounting was taken: shifts, breaks, a day off, micro-stops, parts
    assert summed.pot_s == 6 * (2 * 16 * 3600)  # Saturday and Monday: two 8-hour shifts each
    assert summed.pdot_s == 6 * 2 * 50 * 60  # their breaks: 20 + 30 minutes a day
    assert summed.micro_stop_s > 0 and summed.idle_s > 0 and summed.fault_s > 0 and summed.setup_s > 0
    assert summed.running_in_planned_stop_s > 0 and summed.pq > 0
    assert [p.shift for p in per_shift(config, replayed)][:3] == [None, "early", "late"]


def test_a_restart_in_the_log_drops_what_the_old_run_left_open_as_the_agent_did() -> None:
    config = one_machine_config()
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

    def run_line(minutes: int, value: bool) -> list[Event]:
        at = t0 + timedelta(minutes=minutes)
        return [SampleLine(device="plc", tag="run", value=value, good=True, at=at), TickLine(tick=at)]

    def start(minutes: int, boot: str) -> StartLine:
        return StartLine(start=t0 + timedelta(minutes=minutes), boot_id=boot, speed=1.0, config_sha256="x")

    log: list[Event] = [start(0, "a"), *run_line(0, True), *run_line(30, True)]  # first run: RUNNING, then gone
    log += [start(40, "b"), *run_line(40, True), *run_line(50, False), *run_line(65, False)]
    (bucket,) = replay(config, log).buckets["M1"]
    # 08:00-08:40 was never published by the first run; the second accounts it as UNKNOWN
    assert (bucket.start, bucket.elements.unknown_s, bucket.elements.apt_s, bucket.elements.idle_s) == (
        t0,
        2400.0,
        600.0,
        600.0,
    )


def write_two_runs(target: Path | EventLogSettings, fingerprint: str) -> None:
    """Two agent runs of one machine, polled and evaluated every 30 s, as the agent's writer logs them.

    Running 08:00-10:00 with a part a minute (counter 1000 at 08:00, 1120 from 10:00 on), then
    stopped; the agent restarts at 10:30 (boot-2) and logs until 11:10.
    """

    def poll(log: EventLogWriter, t: datetime) -> None:
        minutes = int((t - T8).total_seconds() // 60)
        log.samples(
            [
                Sample("plc", "run", minutes < 120, True, t),
                Sample("plc", "parts", 1000 + min(minutes, 120), True, t),
            ]
        )
        log.tick(t)

    for boot, first, last in (("boot-1", 0, 299), ("boot-2", 300, 380)):
        log = EventLogWriter(target)
        log.start(T8 + timedelta(seconds=30 * first), boot, 1.0, fingerprint)
        for k in range(first, last + 1):
            poll(log, T8 + timedelta(seconds=30 * k))
        log.close()


T8 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


def test_a_rotated_log_recomputes_exactly_as_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = one_machine_raw()
    raw["calendar"]["shifts"][0]["breaks"] = [{"start": "09:00", "end": "09:15", "name": "tea"}]
    config = AgentConfig.model_validate(raw)
    single, rotated = tmp_path / "single", tmp_path / "rotated"
    for where in (single, rotated):
        where.mkdir()
        (where / "agent.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    write_two_runs(single / "log", config_fingerprint(config))
    write_two_runs(EventLogSettings(path=rotated / "log" / "events.jsonl", max_bytes=4096), config_fingerprint(config))
    files = sorted((rotated / "log").iterdir())
    assert len(files) > 2
    for f in files:  # each file names its run: it can be read alone
        assert isinstance(next(iter(read_events(f))), StartLine)

    outputs = []
    for where in (single, rotated):  # the same command, where `log` is one file, then a directory of files
        monkeypatch.chdir(where)
        argv = ["kpi", "--config", "agent.yaml", "--events", "log", "--from", "2026-03-02T08:00Z"]
        assert main([*argv, "--to", "2026-03-02T11:00Z", "--by", "bucket", "--intervals"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]

    doc = json.loads(outputs[0])
    assert doc["warnings"] == [] and doc["replay"]["starts"] == 2
    elements = [TimeElements.model_validate(p["machines"][0]["elements"]) for p in doc["periods"]]
    # 08: running, 59 parts (1000 at 08:00 is the baseline); 09: the tea break, 60 parts;
    # 10: the first run's bucket was never published, the second accounts 10:00-10:30 as UNKNOWN
    assert [(e.apt_s, e.pdot_s, e.running_in_planned_stop_s, e.pq) for e in elements] == [
        (3600, 0, 0, 59),
        (2700, 900, 900, 60),
        (0, 0, 0, 0),
    ]
    assert (elements[2].unknown_s, elements[2].idle_s) == (1800, 1800)
    assert [(i["state"], i["start"], i["end"], i["reason"]) for i in doc["intervals"]] == [
        ("RUNNING", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", None),
        ("PLANNED_STOP", "2026-03-02T09:00:00Z", "2026-03-02T09:15:00Z", "break:tea"),
        ("RUNNING", "2026-03-02T09:15:00Z", "2026-03-02T10:00:00Z", None),
        ("UNKNOWN", "2026-03-02T10:00:00Z", "2026-03-02T10:30:00Z", None),
    ]

    # a file of the set read alone: accounting starts at its first line, and the missing part is reported
    alone = replay(config, read_events(files[1]))
    assert len(alone.starts) == 1 and alone.warnings[0].startswith(
        "log_file_missing: boot boot-1 goes on in file part 2"
    )


def test_counter_source_times_are_logged_and_replayed_in_source_order(tmp_path: Path) -> None:
    config = one_machine_config()
    log = EventLogWriter(tmp_path / "events.jsonl")
    log.start(T8, "boot-1", 1.0, "x")
    # 1005 was stamped at 08:00:10 but reached the agent after 1012 (stamped 08:00:20): in source order
    # 1000 -> 1005 -> 1012, no reset; in arrival order 1012 -> 1005 would be a reset counting 1005 parts
    for read, source, value in ((1, 0, 1000), (21, 20, 1012), (22, 10, 1005)):
        log.samples([Sample("plc", "parts", value, True, T8 + timedelta(seconds=read), T8 + timedelta(seconds=source))])
    for t in (T8 + timedelta(seconds=30), T8 + timedelta(hours=1, seconds=15)):
        log.tick(t)
    log.close()
    (bucket,) = replay(config, read_events(tmp_path / "events.jsonl")).buckets["M1"]
    assert (bucket.elements.pq, bucket.elements.counter_resets, bucket.elements.counter_late) == (12, 0, 0)
