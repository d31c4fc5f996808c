"""Fault injection with real processes: broker outages, a SIGKILLed agent, a SIGKILLed ingest, a full outbox.

One simulator (the demo plant's post phase at SPEED x) serves the whole module; each scenario runs
its own Mosquitto, ingest and agent (`python -m edge_agent`, the demo's agent configuration with
BUCKET_MINUTES-minute buckets, so that it produces a KPI bucket per machine and a site bucket every
BUCKET_MINUTES x 60 / SPEED wall seconds, plus the state intervals). Every scenario ends with the
same accounting, after the agent stopped and drained: the outbox's `last_seq` is the number of
sequence numbers the agent allocated, and each of 1..last_seq is stored by the ingest exactly once
or named by an eviction declaration that reached the store (docs/messages.md). A number both
stored and declared is allowed only for a message that was already sent when it was evicted, and
each scenario says which ones those can be.

Scenarios (numbered as in issue #6): 4 the outbox bound reached in a long outage, 1 repeated
broker outages, 2 the agent SIGKILLed and restarted, 3 the ingest SIGKILLed and restarted. The
eviction scenario runs first: the simulated plant is modelled for six plant hours (after that it
freezes and no state changes any more, 64 s wall here), and that scenario needs state intervals.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import EvictionRecord, GapReport, Store, iso
from edge_agent.outbox import Outbox, OutboxStats
from edgeproof.clock import Clock, ClockSpec
from edgeproof.demo import agent_config_for, enroll_agent
from tests.netutil import Mosquitto, free_port_block

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
AGENT = "demo-plant-agent"  # the demo configuration's agent id
SPEED = 300.0  # plant seconds per wall second
LEAD_S = 1200.0  # plant time starts at 05:40, 20 plant minutes before the phase window
BUCKET_MINUTES = 3  # a bucket closes every 0.6 s wall: 10 kpi + 1 site message
OUTAGE_S = 2.0  # wall seconds the broker is down in each outage of the outage scenario
OUTAGES = 3
PROTECTED_KINDS = {"birth", "evicted"}


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    port_base: int
    clock_json: str
    clock: Clock


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    """A Python child running the checkout's code (cwd = the repository), stderr to `log`."""
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _end(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    out = tmp_path_factory.mktemp("plant")
    port_base = free_port_block(12)
    args = ["-m", "simulators", "--phase", "post", "--port-base", str(port_base)]
    sim = _spawn([*args, "--speed", str(SPEED), "--lead-s", str(LEAD_S)], out / "sim.log")
    try:
        assert sim.stdout is not None
        ready = sim.stdout.readline()
        assert ready.startswith('{"ready": true'), f"simulator did not start; see {out / 'sim.log'}"
        spec = ClockSpec.model_validate(json.loads(ready)["clock"])
        yield Plant(port_base, spec.model_dump_json(), spec.build())
    finally:
        _end(sim)


class ChildProcess:
    """A process of ours that a test starts, SIGKILLs, restarts and stops; one log file per start."""

    def __init__(self, work: Path, name: str) -> None:
        self.work = work
        self.name = name
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[str] | None = None

    def _launch(self, args: list[str]) -> Path:
        log = self.work / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.proc = _spawn(args, log)
        return log

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"the {self.name} died before it was killed"
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> int:
        """SIGTERM: the process ends cleanly (the agent drains its outbox first); its exit code."""
        assert self.proc is not None
        rc = _end(self.proc)
        self.proc = None
        return rc

    def log_text(self) -> str:
        return "".join(p.read_text(encoding="utf-8", errors="replace") for p in self.logs)


class AgentProcess(ChildProcess):
    """`python -m edge_agent` on the demo plant's configuration; start() again reuses the data dir."""

    def __init__(self, plant: Plant, work: Path, broker_port: int, outbox: dict[str, Any] | None = None) -> None:
        super().__init__(work, "agent")
        self.plant = plant
        self.data_dir = work / "agent-data"
        self.outbox_path = self.data_dir / "outbox.sqlite"
        config = agent_config_for("post", plant.port_base, broker_port, self.data_dir)
        config["kpi"]["bucket_minutes"] = BUCKET_MINUTES
        # Mosquitto speaks MQTT 5, so backlog messages also carry the `historical` user property
        config["mqtt"].update(protocol="auto", reconnect_min_s=0.1, reconnect_max_s=0.5, connect_timeout_s=2.0)
        if outbox is not None:
            config["outbox"] = outbox
        self.config_path = work / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")

    def start(self) -> None:
        args = ["-m", "edge_agent", "--config", str(self.config_path), "--clock", self.plant.clock_json]
        self._launch([*args, "--drain-timeout", "20"])

    def connects(self) -> int:
        """MQTT sessions the agent established, over all its boots."""
        return self.log_text().count("edge_agent.publisher: mqtt connected ")


class IngestProcess(ChildProcess):
    """`python -m cloud_ingest ingest` on one store and one persistent session (fixed client id)."""

    def __init__(self, work: Path, db: Path, broker_port: int, client_id: str) -> None:
        super().__init__(work, "ingest")
        self.args = ["-m", "cloud_ingest", "ingest", "--db", str(db), "--mqtt-host", "127.0.0.1"]
        self.args += ["--mqtt-port", str(broker_port), "--client-id", client_id]

    def start(self) -> None:
        log = self._launch(self.args)
        wait_for("the ingest's subscription", lambda: "subscribed topic=" in log.read_text(encoding="utf-8"))


def start_broker(work: Path) -> Mosquitto:
    (work / "broker").mkdir()
    broker = Mosquitto(work / "broker")
    broker.start()
    return broker


# --- observing from outside -------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s:g} s: {what}")
        time.sleep(0.1)


def _rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """A short read next to a live writer (WAL); an empty answer while the file does not exist yet."""
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10.0) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:  # the writer has not created its tables yet
            if "no such table" in str(e):
                return []
            raise


def stored_count(db: Path) -> int:
    rows = _rows(db, "SELECT count(*) FROM messages WHERE agent_id = ?", (AGENT,))
    return int(rows[0][0]) if rows else 0


def stored_since(db: Path, t: datetime) -> int:
    """Messages stored that the agent produced at or after plant time `t`."""
    rows = _rows(db, "SELECT count(*) FROM messages WHERE agent_id = ? AND produced_at >= ?", (AGENT, iso(t)))
    return int(rows[0][0]) if rows else 0


def outbox_meta(path: Path, key: str) -> int:
    """A running total of the agent's outbox, read while the agent writes it."""
    rows = _rows(path, "SELECT value FROM meta WHERE key = ?", (key,))
    return int(rows[0][0]) if rows else 0


@dataclass(frozen=True)
class Accounting:
    """The ingest's store against what the agent allocated; see `account`."""

    outbox: OutboxStats
    stored: set[int]
    declared: dict[int, int]  # evicted seq -> seq of the declaration naming it
    overlap: set[int]  # stored and declared: sent before it was evicted, stored anyway
    duplicates: int  # redeliveries the ingest counted and did not store
    report: GapReport
    historical: dict[int, bool]  # seq -> flag of the stored (first received) copy
    kinds: dict[int, str]
    produced: dict[int, str]  # seq -> produced_at as stored (fixed-width UTC text, compares like time)
    boots: dict[int, str]

    def summary(self, name: str) -> str:
        return (
            f"[{name}] produced={self.outbox.last_seq} stored={len(self.stored)} duplicates={self.duplicates} "
            f"evicted={len(self.declared)} declarations={len(self.report.declarations)} "
            f"evicted_and_stored={len(self.overlap)}"
        )


def account(db: Path, outbox_path: Path, timeout_s: float = 30.0) -> Accounting:
    """After the agent stopped: every seq 1..last_seq stored exactly once or declared evicted, nothing else."""
    box = Outbox(outbox_path)
    try:
        stats = box.stats()
    finally:
        box.close()
    assert stats.depth == 0, f"the agent stopped with {stats.depth} messages unsent"
    expected = set(range(1, stats.last_seq + 1))

    def declared_now(store: Store) -> dict[int, int]:
        return {s: d.seq for d in store.evictions(AGENT) for a, b in d.ranges for s in range(a, b + 1)}

    def complete() -> bool:
        with Store(db) as store:
            return set(store.sequence_numbers(AGENT)) | set(declared_now(store)) >= expected

    wait_for(f"the ingest holding or knowing evicted all of 1..{stats.last_seq}", complete, timeout_s)
    with Store(db) as store:
        seqs = store.sequence_numbers(AGENT)
        declared = declared_now(store)
        report = store.gap_report(AGENT)
        duplicates = store.duplicates_of(AGENT)
        dead = store.dead_letters()
    rows = _rows(db, "SELECT seq, historical, kind, produced_at, boot_id FROM messages WHERE agent_id = ?", (AGENT,))
    twice = _rows(db, "SELECT seq FROM messages WHERE agent_id = ? GROUP BY seq HAVING count(*) > 1", (AGENT,))

    assert twice == [] and len(seqs) == len(set(seqs)), "a sequence number stored more than once"
    assert [(d.reason, d.topic) for d in dead] == [], "dead letters: a sequence conflict is a reused seq"
    stored = set(seqs)
    assert stored | set(declared) == expected, (
        f"neither stored nor declared evicted: {sorted(expected - stored - set(declared))}; "
        f"beyond the agent's last seq {stats.last_seq}: {sorted((stored | set(declared)) - expected)}"
    )
    assert report.missing == 0 and report.highest_seq == stats.last_seq
    # the outbox's lifetime totals match what reached the store
    assert stats.declarations == len(report.declarations)
    assert stats.evicted_messages == len(declared) == sum(d.count for d in report.declarations)
    assert report.evicted + report.declared_but_received == len(declared)
    return Accounting(
        outbox=stats,
        stored=stored,
        declared=declared,
        overlap=stored & set(declared),
        duplicates=duplicates,
        report=report,
        historical={int(s): bool(h) for s, h, _, _, _ in rows},
        kinds={int(s): str(k) for s, _, k, _, _ in rows},
        produced={int(s): str(p) for s, _, _, p, _ in rows},
        boots={int(s): str(b) for s, _, _, _, b in rows},
    )


# docs/configuration.md, eviction policy: lowest class first, oldest first within a class
EVICTION_CLASS = {"samples": 0, "state": 1, "kpi": 2, "site": 2}


class OutboxWatcher:
    """Reads the running agent's outbox and checks every snapshot against the eviction policy.

    A row still in the outbox next to a declaration with a higher seq was there when that
    declaration was written (rows are appended with rising seqs and never come back). So the
    declaration must not have evicted anything that comes after that row in eviction order: no
    message of a higher class, and no message of the same class with a higher seq.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kinds: dict[int, str] = {}  # every row ever seen
        self.declarations: dict[int, dict[str, Any]] = {}
        self.snapshots = 0
        self.pairs_checked = 0  # (declaration, row kept next to it) pairs
        self.violations: list[str] = []

    def look(self) -> None:
        rows = _rows(self.path, "SELECT seq, kind, CASE WHEN kind = 'evicted' THEN payload END FROM outbox")
        self.snapshots += 1
        kept: list[tuple[int, int]] = []  # (class, seq) of the evictable rows in this snapshot
        declared = []
        for seq, kind, payload in rows:
            self.kinds[int(seq)] = str(kind)
            if kind in EVICTION_CLASS:
                kept.append((EVICTION_CLASS[kind], int(seq)))
            elif payload is not None:
                declared.append(json.loads(payload))
        for d in declared:
            self.declarations[d["seq"]] = d
            top = max(EVICTION_CLASS[k] for k in d["kinds"])  # the highest class it evicted
            victims = [
                (EVICTION_CLASS[self.kinds[v]], v)
                for a, b in d["ranges"]
                for v in range(a, b + 1)
                if self.kinds.get(v) in EVICTION_CLASS
            ]
            for row in (r for r in kept if r[1] < d["seq"]):
                self.pairs_checked += 1
                if row[0] < top:
                    self.violations.append(f"declaration {d['seq']} evicted class {top} but kept {row}")
                for v in victims:
                    if v[0] == row[0] and v[1] > row[1]:
                        self.violations.append(f"declaration {d['seq']} evicted {v} but kept the older {row}")


def assert_clean_log(text: str) -> None:
    assert "Traceback" not in text and " ERROR " not in text, "the agent logged a crash"


# --- scenarios --------------------------------------------------------------------------------


def test_outbox_bound_reached_in_a_long_outage_evicts_by_policy_and_declares_it(plant: Plant, tmp_path: Path) -> None:
    """Scenario 4: a 20 kB outbox fills during an outage; states go before buckets, births and
    declarations never, and every declaration reaches the store."""
    broker = start_broker(tmp_path)
    db = tmp_path / "ingest.sqlite"
    ingest = IngestService(db, "127.0.0.1", broker.port, client_id="ingest-bound", reconnect_max_s=1)
    ingest.start()
    agent = AgentProcess(plant, tmp_path, broker.port, outbox={"max_bytes": 20_000, "low_water": 0.5})
    enroll_agent(db, AGENT, agent.data_dir)  # its messages are signed: verified, not held pending
    try:
        assert ingest.wait_subscribed(10)
        agent.start()
        wait_for("the agent's first messages stored", lambda: stored_count(db) >= 20)
        assert outbox_meta(agent.outbox_path, "declarations") == 0  # within the bound while the uplink is up
        broker.stop()
        down = plant.clock.now()
        watcher = OutboxWatcher(agent.outbox_path)

        def four_declarations() -> bool:
            watcher.look()
            return outbox_meta(agent.outbox_path, "declarations") >= 4

        # about 17 kB of buckets per wall second against a 20 kB bound, freed down to 10 kB each time
        wait_for("four eviction declarations", four_declarations)
        watcher.look()
        up = plant.clock.now()
        broker.start()
        assert ingest.wait_subscribed(30)
        wait_for("live messages after the outage stored", lambda: stored_since(db, up) >= 20)
        assert agent.stop() == 0
    finally:
        if agent.proc is not None:
            agent.proc.kill()
        ingest.stop()
        broker.stop()
    acc = account(db, agent.outbox_path)
    print(acc.summary("outbox bound"))
    report = acc.report

    assert all(d.reason == "bytes" for d in report.declarations)
    evicted_kinds = {k for d in report.declarations for k in d.kinds}
    assert {"state", "kpi"} <= evicted_kinds and evicted_kinds <= {"state", "kpi", "site"}
    for d in report.declarations:
        assert sum(d.kinds.values()) == d.count
        assert acc.kinds[d.seq] == "evicted"  # the declaration itself was stored ...
    # ... and neither a declaration nor a birth was ever evicted
    protected = {s for s, k in acc.kinds.items() if k in PROTECTED_KINDS}
    assert protected.isdisjoint(acc.declared)
    births = sorted(s for s, k in acc.kinds.items() if k == "birth")
    assert len(births) == agent.connects() == 2  # the start's birth, and one after the reconnect

    # Policy, seen inside the outbox: no declaration skipped a message that came first in eviction order
    assert watcher.violations == []
    assert watcher.pairs_checked > 0
    assert {k for d in watcher.declarations.values() for k in d["kinds"]} >= {"state", "kpi"}
    # Policy, seen from the store: a declaration made during the outage that evicted a bucket left
    # no state interval behind that it could have evicted instead. A state produced during the
    # outage and stored from the backlog (not evicted) sat in the outbox from its append to the
    # reconnect, so it was there when any declaration with a higher seq was written.
    in_outage = [d for d in report.declarations if d.produced_at < up]
    assert len(in_outage) >= 4  # more can follow while the backlog drains: the bound still holds then
    assert len(watcher.declarations) >= 4 and set(watcher.declarations) <= {d.seq for d in in_outage}
    unsent_states = {
        s
        for s in acc.stored - set(acc.declared)
        if acc.kinds[s] == "state" and acc.historical[s] and iso(down) <= acc.produced[s] < iso(up)
    }
    for d in in_outage:
        if d.kinds.keys() & {"kpi", "site"}:
            assert not {s for s in unsent_states if s < d.seq}, f"declaration {d.seq} evicted buckets before states"
        else:  # states only: the oldest ones
            newest_victim = max(s for s, by in acc.declared.items() if by == d.seq)
            assert not {s for s in unsent_states if s < newest_victim}, f"declaration {d.seq} skipped older states"

    # Stored and declared: only a message already sent when it was evicted, i.e. sent live before
    # the broker went down (its first copy is not historical), or sent from the backlog and then
    # evicted by a declaration written after the reconnect.
    late = {s for s, by in acc.declared.items() if _declaration(report, by).produced_at >= up}
    for s in acc.overlap:
        assert (not acc.historical[s] and acc.produced[s] <= iso(down)) or s in late, s
    print(
        f"[outbox bound] declarations={[(d.seq, d.count, d.kinds) for d in report.declarations]} "
        f"evicted_after_reconnect={len(late)} overlap={sorted(acc.overlap)} "
        f"outbox_snapshots={watcher.snapshots} pairs_checked={watcher.pairs_checked}"
    )
    assert_clean_log(agent.log_text())


def _declaration(report: GapReport, seq: int) -> EvictionRecord:
    return next(d for d in report.declarations if d.seq == seq)


def test_broker_outages_lose_nothing(plant: Plant, tmp_path: Path) -> None:
    """Scenario 1: the broker is stopped and started OUTAGES times while the agent produces."""
    broker = start_broker(tmp_path)
    db = tmp_path / "ingest.sqlite"
    ingest = IngestService(db, "127.0.0.1", broker.port, client_id="ingest-outages", reconnect_max_s=1)
    ingest.start()
    agent = AgentProcess(plant, tmp_path, broker.port)
    enroll_agent(db, AGENT, agent.data_dir)  # its messages are signed: verified, not held pending
    outages: list[tuple[datetime, datetime]] = []
    try:
        assert ingest.wait_subscribed(10)
        agent.start()
        wait_for("the agent's first messages stored", lambda: stored_count(db) >= 20)
        for _ in range(OUTAGES):
            broker.stop()
            down = plant.clock.now()
            time.sleep(OUTAGE_S)
            up = plant.clock.now()
            broker.start()
            outages.append((down, up))
            assert ingest.wait_subscribed(30)
            wait_for("live messages after the outage stored", lambda up=up: stored_since(db, up) >= 5)
        assert agent.stop() == 0
    finally:
        if agent.proc is not None:
            agent.proc.kill()
        ingest.stop()
        broker.stop()
    acc = account(db, agent.outbox_path)
    print(acc.summary("broker outages"))

    assert acc.declared == {} and acc.stored == set(range(1, acc.outbox.last_seq + 1))
    assert len(set(acc.boots.values())) == 1
    # a birth on every connect: the one queued at start, then one per reconnect
    births = sum(1 for k in acc.kinds.values() if k == "birth")
    assert births == agent.connects() >= OUTAGES + 1
    for down, up in outages:
        during = [s for s, p in acc.produced.items() if iso(down) <= p < iso(up)]
        # produced while the broker was dead: kept, then sent from the backlog, marked historical
        assert during and all(acc.historical[s] for s in during), (down, up)
    print(f"[broker outages] produced during each outage: {[_count_between(acc, d, u) for d, u in outages]}")
    assert_clean_log(agent.log_text())


def _count_between(acc: Accounting, a: datetime, b: datetime) -> int:
    return sum(1 for p in acc.produced.values() if iso(a) <= p < iso(b))


def test_agent_killed_mid_stream_restarts_without_reusing_a_seq(plant: Plant, tmp_path: Path) -> None:
    """Scenario 2: SIGKILL to the agent, then the same data dir again: a new boot, the seq goes on."""
    broker = start_broker(tmp_path)
    db = tmp_path / "ingest.sqlite"
    ingest = IngestService(db, "127.0.0.1", broker.port, client_id="ingest-agent-kill")
    ingest.start()
    agent = AgentProcess(plant, tmp_path, broker.port)
    enroll_agent(db, AGENT, agent.data_dir)  # its messages are signed: verified, not held pending
    try:
        assert ingest.wait_subscribed(10)
        agent.start()
        wait_for("the agent's first messages stored", lambda: stored_count(db) >= 40)
        agent.kill()
        box = Outbox(agent.outbox_path)
        first_boot = box.stats()
        box.close()
        agent.start()
        wait_for(
            "the second boot's messages stored",
            lambda: len(_rows(db, "SELECT seq FROM messages WHERE seq > ?", (first_boot.last_seq + 30,))) > 0,
        )
        assert agent.stop() == 0
    finally:
        if agent.proc is not None:
            agent.proc.kill()
        ingest.stop()
        broker.stop()
    acc = account(db, agent.outbox_path)
    print(f"{acc.summary('agent SIGKILL')} first_boot_last_seq={first_boot.last_seq} unsent_at_kill={first_boot.depth}")

    assert acc.declared == {} and acc.stored == set(range(1, acc.outbox.last_seq + 1))
    boot1, boot2 = acc.boots[1], acc.boots[first_boot.last_seq + 1]
    assert boot1 != boot2 and set(acc.boots.values()) == {boot1, boot2}
    # no seq reuse: the second boot starts right after the last seq the first one committed
    assert acc.kinds[first_boot.last_seq + 1] == "birth"
    assert all(acc.boots[s] == boot1 for s in range(1, first_boot.last_seq + 1))
    assert all(acc.boots[s] == boot2 for s in range(first_boot.last_seq + 1, acc.outbox.last_seq + 1))
    with Store(db) as store:
        status = store.status(AGENT)
    assert status is not None and (status.online, status.boot_id) == (False, boot2) and status.at is not None
    assert_clean_log(agent.log_text())


def test_ingest_killed_and_restarted_gets_what_was_published_meanwhile(plant: Plant, tmp_path: Path) -> None:
    """Scenario 3: SIGKILL to the ingest process while the agent publishes; its persistent session
    keeps what arrives meanwhile, and the restarted ingest stores it."""
    broker = start_broker(tmp_path)
    db = tmp_path / "ingest.sqlite"
    ingest = IngestProcess(tmp_path, db, broker.port, client_id="ingest-killed")
    agent = AgentProcess(plant, tmp_path, broker.port)
    enroll_agent(db, AGENT, agent.data_dir)  # its messages are signed: verified, not held pending
    try:
        ingest.start()
        agent.start()
        wait_for("the agent's first messages stored", lambda: stored_count(db) >= 20)
        ingest.kill()
        down = plant.clock.now()
        time.sleep(3.0)
        up = plant.clock.now()
        ingest.start()
        wait_for("live messages after the ingest's restart stored", lambda: stored_since(db, up) >= 20)
        assert agent.stop() == 0
        acc = account(db, agent.outbox_path)
        assert ingest.stop() == 0
    finally:
        if agent.proc is not None:
            agent.proc.kill()
        if ingest.proc is not None:
            ingest.proc.kill()
        broker.stop()
    print(acc.summary("ingest SIGKILL") + f" produced_while_ingest_down={_count_between(acc, down, up)}")

    assert acc.declared == {} and acc.stored == set(range(1, acc.outbox.last_seq + 1))
    # the agent saw no outage: what it produced while the ingest was down went out live, and the
    # broker kept it for the ingest's session
    during = [s for s, p in acc.produced.items() if iso(down) <= p < iso(up)]
    assert during and not any(acc.historical[s] for s in during)
    assert agent.connects() == 1
    assert "Traceback" not in ingest.log_text()
    assert_clean_log(agent.log_text())
