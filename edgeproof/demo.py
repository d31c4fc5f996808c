"""`edgeproof demo`: a whole retrofit story on one machine, with nothing to set up.

It starts an embedded MQTT broker and the cloud ingest, then runs the simulated plant and the
edge agent twice on compressed plant time: a baseline phase (few machines connected) and a
post-retrofit phase (IO modules on legacy machines, all CNCs and PLCs connected, fewer faults).
It ends with the before/after evidence report and a table of measured values beside the
simulator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cloud_ingest.consumer import IngestService
from cloud_ingest.evidence import EvidenceReport
from cloud_ingest.record import PdfUnavailable, write_record
from cloud_ingest.report import build_report
from cloud_ingest.store import Store
from edge_agent.identity import load_or_create
from edge_agent.outbox import Outbox
from edgeproof.broker import EmbeddedBroker
from edgeproof.clock import ClockSpec, ScaledClock
from edgeproof.indicators import TimeElements, capacity_utilisation, energy_per_good_part, oee, total
from edgeproof.netutil import free_port, free_port_block
from simulators.scenario import load_scenario

DEFAULT_PORT_BASE = 15020  # the port base the shipped agent configs are written for
AGENT_STARTUP_S = 4.0  # wall seconds from the simulator being ready to the window opening
AGENT_STOP_S = 3.0  # wall seconds for an agent to drain and stop


def demo_file(name: str) -> Path:
    return Path(str(resources.files("edgeproof") / "demo_plant" / name))


def agent_config_for(
    phase: str, port_base: int, mqtt_port: int, data_dir: Path, event_log: Path | None = None
) -> dict[str, Any]:
    """The shipped agent config of a phase, pointed at this run's ports and folders."""
    config = yaml.safe_load(demo_file(f"agent-{phase}.yaml").read_text(encoding="utf-8"))
    config["agent"]["data_dir"] = str(data_dir)
    if event_log is not None:
        config["agent"]["event_log"] = str(event_log)
    config["mqtt"] = {**config.get("mqtt", {}), "host": "127.0.0.1", "port": mqtt_port}
    for device in config.get("devices", []):
        if "port" in device:
            device["port"] = device["port"] - DEFAULT_PORT_BASE + port_base
        if "url" in device:
            host, port = device["url"].removeprefix("opc.tcp://").rstrip("/").rsplit(":", 1)
            device["url"] = f"opc.tcp://{host}:{int(port) - DEFAULT_PORT_BASE + port_base}/"
    return config


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stop(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class PlantRun:
    """One phase of the simulated plant with an agent observing it, both as child processes.

    The simulator can be launched early with a clock pinned to a later wall time (`launch_sim`),
    so its slow start overlaps the previous phase; the agent starts when its turn comes.
    """

    def __init__(self, phase: str, out: Path, speed: float, mqtt_port: int, scenario: Path | None = None) -> None:
        self.phase = phase
        self.out = out
        self.speed = speed
        self.mqtt_port = mqtt_port
        self.scenario = scenario
        window = load_scenario(scenario).phase(phase).window
        self.window: tuple[datetime, datetime] = (window.start, window.end)
        self.truth_path = out / f"truth-{phase}.json"
        self.config_path = out / f"agent-{phase}.yaml"
        self.events_path = out / f"events-{phase}.jsonl"  # the raw samples: `edgeproof kpi` recomputes from them
        self.data_dir = out / "agent-data"
        self.port_base = 0
        self.clock: ScaledClock | None = None
        self.sim: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[str] | None = None

    def launch_sim(self, window_opens_at: float | None = None) -> None:
        """Start the simulator; plant time starts when it is ready, or as pinned by `window_opens_at`."""
        self.port_base = free_port_block(12)
        sim_args = ["-m", "simulators", "--phase", self.phase, "--port-base", str(self.port_base)]
        sim_args += ["--truth", str(self.truth_path)]
        if window_opens_at is not None:
            sim_args += [
                "--clock",
                ClockSpec(sim_origin=self.window[0], wall_origin=window_opens_at, speed=self.speed).model_dump_json(),
            ]
        else:  # the agent gets AGENT_STARTUP_S of wall time before the window opens
            sim_args += ["--speed", str(self.speed), "--lead-s", str(AGENT_STARTUP_S * self.speed)]
        if self.scenario is not None:
            sim_args += ["--scenario", str(self.scenario)]
        self.sim = _spawn(sim_args, self.out / f"sim-{self.phase}.log")

    def _wait_sim_ready(self) -> ClockSpec:
        assert self.sim is not None and self.sim.stdout is not None
        ready = self.sim.stdout.readline()
        if not ready:
            raise RuntimeError(f"simulator did not start; see {self.out / f'sim-{self.phase}.log'}")
        spec = ClockSpec.model_validate(json.loads(ready)["clock"])
        self.clock = spec.build()  # type: ignore[assignment]
        return spec

    def start_agent(self) -> None:
        spec = self._wait_sim_ready()
        assert self.clock is not None
        if self.clock.now() > self.window[0]:
            print(f"  warning: the {self.phase} simulator was ready after its window opened", file=sys.stderr)
        config = agent_config_for(self.phase, self.port_base, self.mqtt_port, self.data_dir, self.events_path)
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        self.agent = _spawn(
            ["-m", "edge_agent", "--config", str(self.config_path), "--clock", spec.model_dump_json()],
            self.out / f"agent-{self.phase}.log",
        )

    def wait_until(self, plant_time: datetime, extra_wall_s: float = 0.0) -> None:
        assert self.clock is not None
        time.sleep(max(0.0, self.clock.wall_time_at(plant_time) - time.time() + extra_wall_s))

    def wait_for_end(self) -> None:
        self.wait_until(self.window[1], extra_wall_s=1.0)  # the last bucket closes at the first tick past the end

    @property
    def end_wall_time(self) -> float:
        assert self.clock is not None
        return self.clock.wall_time_at(self.window[1]) + 1.0

    def stop(self) -> None:
        """Stop the agent (it drains its outbox) and the simulator; raise if the agent failed."""
        agent_rc = _stop(self.agent) if self.agent is not None else 0
        if self.sim is not None:
            _stop(self.sim)
        if agent_rc != 0:
            raise RuntimeError(f"agent exited with {agent_rc}; see {self.out / f'agent-{self.phase}.log'}")

    @property
    def truth(self) -> dict[str, Any]:
        return json.loads(self.truth_path.read_text(encoding="utf-8"))


def run_phases(out: Path, speed: float, mqtt_port: int, scenario: Path | None, say: Any) -> list[PlantRun]:
    """Baseline then post-retrofit; the post simulator starts up while the baseline runs."""
    baseline = PlantRun("baseline", out, speed, mqtt_port, scenario)
    post = PlantRun("post", out, speed, mqtt_port, scenario)
    try:
        baseline.launch_sim()
        baseline.start_agent()
        say(
            f"  baseline 改造前: plant time {baseline.window[0].isoformat()} → {baseline.window[1].isoformat()}"
            f" at {speed:g}×"
        )
        post.launch_sim(window_opens_at=baseline.end_wall_time + AGENT_STOP_S + AGENT_STARTUP_S)
        baseline.wait_for_end()
        baseline.stop()
        post.start_agent()
        say(f"  post 改造后: plant time {post.window[0].isoformat()} → {post.window[1].isoformat()} at {speed:g}×")
        post.wait_for_end()
    finally:
        baseline.stop()
        post.stop()
    return [baseline, post]


def _figure(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    return f"{v:.3f}kWh" if unit == "kWh/part" else f"{v * 100:.1f}%"


def truth_summary(truth: dict[str, Any], machine_ids: list[str]) -> dict[str, float | None]:
    """True plant OEE, capacity utilisation and energy per good part over the machines the agent
    measured (energy: those with a meter in the truth), and the true networking rate."""
    machines = truth["machines"]
    te = total(TimeElements(**machines[m]["elements"]) for m in machine_ids if m in machines)
    metered = total(
        e
        for e in (TimeElements(**machines[m]["elements"]) for m in machine_ids if m in machines)
        if e.energy_kwh is not None
    )
    result = oee(te)
    return {
        "networking_rate": len(truth["exposed"]) / len(machines),
        "oee": result.oee.value,
        "availability": result.availability.value,
        "performance": result.performance.value,
        "quality": result.quality.value,
        "capacity_utilisation": capacity_utilisation(te).value,
        "energy_per_good_part": energy_per_good_part(metered).value if metered.energy_kwh is not None else None,
    }


def enroll_agent(db: Path, agent_id: str, data_dir: Path) -> str:
    """Both operator roles at once: the agent's key (created in its data dir as on first start) is
    enrolled at the store, so its signed messages are verified; returns the key's fingerprint."""
    key = load_or_create(data_dir)
    with Store(db) as store:
        store.enroll_key(agent_id, key.public_key)
    return key.fingerprint


def wait_until_stored(store_path: Path, agent_id: str, last_seq: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        with Store(store_path) as store:
            count = len(store.sequence_numbers(agent_id))
        if count >= last_seq:
            break
        time.sleep(0.2)
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="folder for the report and logs (default: ./edgeproof-demo-<time>)")
    parser.add_argument("--speed", type=float, default=480.0, help="plant seconds per wall second (default 480)")
    parser.add_argument("--scenario", type=Path, help="simulator scenario YAML (default: the packaged demo plant)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out or Path(f"edgeproof-demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"edgeproof demo → {out.resolve()}")
    broker = EmbeddedBroker(free_port())
    broker.start()
    db = out / "ingest.sqlite"
    demo_agent = yaml.safe_load(demo_file("agent-post.yaml").read_text(encoding="utf-8"))["agent"]["id"]
    enroll_agent(db, demo_agent, out / "agent-data")
    ingest = IngestService(db, broker.host, broker.port)
    ingest.start()
    say(f"  embedded MQTT broker on {broker.host}:{broker.port}; cloud ingest → {db}")
    try:
        results = run_phases(out, args.speed, broker.port, args.scenario, say)
        agent_id = yaml.safe_load(results[-1].config_path.read_text(encoding="utf-8"))["agent"]["id"]
        outbox = Outbox(out / "agent-data" / "outbox.sqlite")
        produced, left = outbox.last_seq(), outbox.depth()
        outbox.close()
        stored = wait_until_stored(db, agent_id, produced)
    finally:
        ingest.stop()
        broker.stop()
    with Store(db) as store:
        report = build_report(store, agent_id, results[0].window, results[1].window)
    try:
        paths = write_record(report, out)
    except PdfUnavailable as e:  # the demo must run where Pango is missing; the PDF is the only loss
        paths = write_record(report, out, pdf=False)
        say(f"  no PDF: {e}")
    print_table(report, results, say)
    say(f"\n  messages produced by the agent: {produced}; stored by the ingest: {stored}; left in outbox: {left}")
    for p in paths:
        say(f"  wrote {p}")
    say(f"  finished in {time.monotonic() - started:.0f} s")
    return 0 if stored == produced else 1


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(text: str, width: int, right: bool = False) -> str:
    pad = " " * max(0, width - _width(text))
    return pad + text if right else text + pad


def print_table(report: EvidenceReport, results: list[PlantRun], say: Any) -> None:
    measured = {
        "baseline": [m.machine_id for m in report.machines if m.baseline.oee.value is not None],
        "post": [m.machine_id for m in report.machines if m.post.oee.value is not None],
    }
    truths = {r.phase: truth_summary(r.truth, measured[r.phase]) for r in results}
    say("")
    say("  " + _cell("indicator 指标", 40) + _cell("source 来源", 19) + _cell("baseline 改造前", 22) + "post 改造后")
    say("  " + " " * 59 + "measured    truth     measured    truth")
    for ind in report.indicators:
        key = "quality" if ind.key == "pass_rate" else ind.key
        tb, tp = truths["baseline"].get(key), truths["post"].get(key)
        row = (
            _cell(ind.label.zh, 40)
            + _cell(ind.post.provenance, 19)
            + _cell(_figure(ind.baseline.value, ind.unit), 8, True)
            + _cell(_figure(tb, ind.unit), 9, True)
            + "  "
            + _cell(_figure(ind.post.value, ind.unit), 8, True)
            + _cell(_figure(tp, ind.unit), 9, True)
        )
        say("  " + row)
    say("  truth 真值: the simulator's ground truth over the machines the agent measured (— where it has none);")
    say("  English labels, definitions and the numbers behind each value are in the report.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproof demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
