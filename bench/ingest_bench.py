#!/usr/bin/env python
"""Ingest throughput: 1, 2 and 3 `edgeproof ingest --share-group` workers into one store, against a raw paho counter.

A benchmark, not a test: it measures and prints one JSON document on stdout, and never asserts
timings. Diagnostics go to stderr. See bench/README.md for what each number means.

    python bench/ingest_bench.py                   # 6,000 messages, workers 1 2 3, three repeats (~55 s on 2 cores)
    python bench/ingest_bench.py --quick           # 1,200 messages, one repeat: checks the script

Every run is a backlog drain, so that the publisher costs nothing while the consumers are timed:
a fresh Mosquitto (persistence off, unlimited session queues), the consumers connect once to create
their persistent sessions on the shared subscription and leave, the same pre-generated contract
messages are published at QoS 1 (Mosquitto deals them round-robin into the sessions), and the
consumers come back and drain. The rate is messages over the span from the first to the last
arrival as each consumer timestamps it (the store's `received_at` for the workers), which leaves
process start-up out. The baseline is a paho client in its own process that only counts (QoS 1,
automatic PUBACK, no parsing, no store), on the same broker settings and the same messages.

Store back-ends are entries of BACKENDS (worker arguments and how to read the arrival span):
`sqlite` (the default store) and `postgresql` (`--backend sqlite postgresql`; a fresh database per
run on the server of $EDGEPROOF_BENCH_POSTGRES, default postgresql://127.0.0.1:5432/postgres, which
must let this user create databases; they are dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/ingest_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from _common import process_cpu_s  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edgeproof.contract import INGEST_SUBSCRIPTION, MachineKpi, StateInterval, encode, topic  # noqa: E402
from edgeproof.indicators import TimeElements, oee  # noqa: E402
from edgeproof.netutil import free_port, wait_port  # noqa: E402

SCRIPT = Path(__file__).resolve()
GROUP = "bench"
T0 = datetime(2026, 9, 7, tzinfo=UTC)
STATES = ("RUNNING", "IDLE", "FAULT", "SETUP")


# --- workload ----------------------------------------------------------------------------------


def workload(agents: int, machines: int, total: int, states_per_bucket: int, seed: int) -> list[tuple[str, bytes]]:
    """`total` contract messages: per agent, per hourly bucket, per machine `states_per_bucket` state
    intervals then the machine's KPI bucket; the agents interleaved as live plants are."""
    rng = random.Random(seed)
    per_agent = total // agents
    streams: list[list[tuple[str, bytes]]] = []
    for a in range(agents):
        agent = f"plant-{a:03d}"
        out: list[tuple[str, bytes]] = []
        seq = 0
        bucket = 0
        while len(out) < per_agent:
            start = T0 + timedelta(hours=bucket)
            for m in range(machines):
                machine = f"M{m:02d}"
                edges = sorted(rng.uniform(0, 3600) for _ in range(states_per_bucket - 1))
                bounds = [0.0, *edges, 3600.0]
                for i in range(states_per_bucket):
                    seq += 1
                    s = StateInterval(
                        agent_id=agent,
                        boot_id="bench-boot",
                        seq=seq,
                        produced_at=start + timedelta(seconds=bounds[i + 1]),
                        machine_id=machine,
                        state=rng.choice(STATES),
                        start=start + timedelta(seconds=bounds[i]),
                        end=start + timedelta(seconds=bounds[i + 1]),
                    )
                    out.append((topic(agent, "state"), encode(s)))
                run = rng.uniform(2000, 3400)
                te = TimeElements(
                    window_s=3600.0,
                    observed_s=3600.0,
                    pot_s=3600.0,
                    apt_s=run,
                    idle_s=3600.0 - run,
                    pq=float(int(run / 30)),
                    sq=float(rng.randint(0, 3)),
                    ideal_run_s=run * 0.9,
                    ideal_good_s=run * 0.88,
                )
                r = oee(te)
                seq += 1
                k = MachineKpi(
                    agent_id=agent,
                    boot_id="bench-boot",
                    seq=seq,
                    produced_at=start + timedelta(hours=1, seconds=1),
                    machine_id=machine,
                    bucket_start=start,
                    bucket_end=start + timedelta(hours=1),
                    elements=te,
                    availability=r.availability.value,
                    performance=r.performance.value,
                    quality=r.quality.value,
                    oee=r.oee.value,
                    flags=r.flags,
                )
                out.append((topic(agent, "kpi"), encode(k)))
            bucket += 1
        streams.append(out[:per_agent])
    return [stream[i] for i in range(per_agent) for stream in streams]


# --- broker and publisher -----------------------------------------------------------------------


class Broker:
    """A fresh Mosquitto per measurement: no session, queue or retained state carried between runs."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would switch to 'mosquitto'
        # unlimited session queues: the default 1000 would drop most of the backlog (docs/architecture.md)
        conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nlog_dest none\n"
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(name, payload, qos=1) for name, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


# --- consumers ----------------------------------------------------------------------------------


@dataclass
class Span:
    """What one measurement saw: messages, the first and last arrival (epoch s), consumer CPU seconds."""

    count: int
    first: float
    last: float
    consumer_cpu_s: float | None


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not reached within {timeout_s:g} s: {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Backend:
    """A store the workers write: their extra arguments, and the arrival span read back from it."""

    name: str
    worker_args: Callable[[Path], list[str]]
    span: Callable[[Path], tuple[int, float, float]]
    commit_ceiling: Callable[[Path, list[tuple[str, bytes]]], float]
    cleanup: Callable[[], None] = lambda: None
    version: Callable[[], str] = lambda: sqlite3.sqlite_version


def _sqlite_span(work: Path) -> tuple[int, float, float]:
    db = work / "ingest.sqlite"
    if not db.exists():
        return 0, 0.0, 0.0
    with sqlite3.connect(db, timeout=10.0) as conn:
        try:
            sql = "SELECT count(*), min(received_at), max(received_at) FROM messages"
            n, first, last = conn.execute(sql).fetchone()
        except sqlite3.OperationalError:  # the tables are not there yet
            return 0, 0.0, 0.0
    if not n:
        return 0, 0.0, 0.0
    return int(n), datetime.fromisoformat(first).timestamp(), datetime.fromisoformat(last).timestamp()


def _sqlite_commit_ceiling(work: Path, messages: list[tuple[str, bytes]]) -> float:
    """Commits/s of one writer doing only what bounds the store: a transaction per message, each
    inserting its payload under the (agent_id, seq) key, with the store's WAL and synchronous=FULL."""
    conn = sqlite3.connect(work / "ceiling.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE messages (agent_id TEXT, seq INTEGER, payload TEXT, PRIMARY KEY (agent_id, seq))")
    t0 = time.perf_counter()
    for i, (name, payload) in enumerate(messages):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO messages VALUES (?, ?, ?)", (name, i, payload.decode()))
        conn.execute("COMMIT")
    rate = len(messages) / (time.perf_counter() - t0)
    conn.close()
    return rate


def _span(n: int, first: str | None, last: str | None) -> tuple[int, float, float]:
    if not n or first is None or last is None:
        return 0, 0.0, 0.0
    return int(n), datetime.fromisoformat(first).timestamp(), datetime.fromisoformat(last).timestamp()


PG_ADMIN = os.environ.get("EDGEPROOF_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/postgres")
_pg_databases: list[str] = []  # created by this run, dropped at its end


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True)


def _pg_url(work: Path) -> str:
    """A fresh database per measurement (created on first use), as a fresh file is for SQLite."""
    name = f"edgeproof_bench_{os.getpid()}_{work.name.replace('-', '_')}"
    if name not in _pg_databases:
        with _pg_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        _pg_databases.append(name)
    return urlunsplit(urlsplit(PG_ADMIN)._replace(path=f"/{name}"))


def _pg_span(work: Path) -> tuple[int, float, float]:
    import psycopg

    with psycopg.connect(_pg_url(work)) as conn:
        try:
            row = conn.execute("SELECT count(*), min(received_at), max(received_at) FROM messages").fetchone()
        except psycopg.errors.UndefinedTable:  # the tables are not there yet
            return 0, 0.0, 0.0
    assert row is not None
    return _span(*row)


def _pg_commit_ceiling(work: Path, messages: list[tuple[str, bytes]]) -> float:
    """Commits/s of one writer doing only what bounds the store: a transaction per message inserting its
    payload under the (agent_id, seq) key with ON CONFLICT DO NOTHING, after the per-agent advisory lock."""
    import psycopg

    with psycopg.connect(_pg_url(work), autocommit=True) as conn:
        conn.execute("CREATE TABLE messages (agent_id TEXT, seq BIGINT, payload TEXT, PRIMARY KEY (agent_id, seq))")
        t0 = time.perf_counter()
        for i, (name, payload) in enumerate(messages):
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
            conn.execute(
                "INSERT INTO messages VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (name, i, payload.decode())
            )
            conn.execute("COMMIT")
        return len(messages) / (time.perf_counter() - t0)


def _pg_cleanup() -> None:
    with _pg_admin() as admin:
        while _pg_databases:
            admin.execute(f'DROP DATABASE IF EXISTS "{_pg_databases.pop()}" WITH (FORCE)')


def _pg_version() -> str:
    with _pg_admin() as admin:
        row = admin.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


BACKENDS = {
    "sqlite": Backend(
        "sqlite", lambda work: ["--db", str(work / "ingest.sqlite")], _sqlite_span, _sqlite_commit_ceiling
    ),
    "postgresql": Backend(
        "postgresql",
        lambda work: ["--db", _pg_url(work)],
        _pg_span,
        _pg_commit_ceiling,
        _pg_cleanup,
        _pg_version,
    ),
}


def run_workers(backend: Backend, workers: int, messages: list[tuple[str, bytes]], work: Path) -> Span:
    broker = Broker(work)
    procs: list[subprocess.Popen[str]] = []
    try:
        logs = [work / f"worker-{i}.log" for i in range(1, workers + 1)]

        def start_all() -> None:
            procs.clear()
            for i, log in enumerate(logs, 1):
                args = ["-m", "edgeproof.cli", "ingest", "--mqtt-port", str(broker.port), "--share-group", GROUP]
                args += ["--client-id", f"bench-ingest-{i}", *backend.worker_args(work)]
                procs.append(_spawn(args, log))

        def subscribed() -> int:
            return sum(log.read_text(encoding="utf-8").count("subscribed topic=") for log in logs if log.exists())

        start_all()  # creates the persistent sessions on the shared subscription (and the store)
        _wait("the workers' subscriptions", lambda: subscribed() == workers, 60)
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        publish_all(broker.port, messages)
        start_all()
        _wait("the workers' return", lambda: subscribed() == 2 * workers, 60)
        cpu0 = process_cpu_s([p.pid for p in procs])
        _wait("every message stored", lambda: backend.span(work)[0] >= len(messages), 600)
        cpu1 = process_cpu_s([p.pid for p in procs])
        for p in procs:
            p.send_signal(signal.SIGTERM)
            if p.wait(timeout=30) != 0:
                raise RuntimeError(f"a worker failed; see {work}")
        n, first, last = backend.span(work)
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        return Span(n, first, last, cpu)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()


def run_raw(messages: list[tuple[str, bytes]], work: Path) -> Span:
    broker = Broker(work)
    try:
        log = work / "raw.log"
        args = [str(SCRIPT), "--count-port", str(broker.port)]
        _spawn([*args, "--count", "0"], log).wait(timeout=30)  # creates the session and leaves
        publish_all(broker.port, messages)
        proc = _spawn([*args, "--count", str(len(messages))], log)
        assert proc.stdout is not None
        out = json.loads(proc.stdout.readline() or "null")
        proc.wait(timeout=30)
        if not out:
            raise RuntimeError(f"the raw counter failed; see {log}")
        return Span(out["count"], out["first"], out["last"], out["cpu_s"])
    finally:
        broker.stop()


def count_main(port: int, expected: int) -> None:
    """The baseline: a persistent session on the same shared subscription that only counts arrivals."""
    seen = {"n": 0, "first": 0.0, "last": 0.0}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-1", clean_session=False)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(f"$share/{GROUP}/{INGEST_SUBSCRIPTION}", qos=1)

    def on_subscribe(c: mqtt.Client, *_: Any) -> None:
        if expected == 0:
            c.disconnect()

    def on_message(c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        now = time.time()
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = now
        seen["last"] = now
        if seen["n"] >= expected:
            c.disconnect()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    cpu0 = time.process_time()
    client.connect("127.0.0.1", port)
    client.loop_forever()
    if expected:
        out = {"count": seen["n"], "first": seen["first"], "last": seen["last"], "cpu_s": time.process_time() - cpu0}
        print(json.dumps(out), flush=True)


# --- report -------------------------------------------------------------------------------------


def rates(spans: list[Span], kpi_share: float) -> dict[str, Any]:
    """Median over the repeats of messages/s (first to last arrival) and what follows from it."""
    per_s = [s.count / (s.last - s.first) for s in spans if s.last > s.first]
    cpu = [s.consumer_cpu_s / s.count * 1000 for s in spans if s.consumer_cpu_s is not None]
    rate = statistics.median(per_s) if per_s else None
    return {
        "messages": spans[0].count,
        "messages_per_s": round(rate) if rate else None,
        "kpi_samples_per_s": round(rate * kpi_share) if rate else None,
        "messages_per_s_each_repeat": [round(r) for r in per_s],
        "consumer_cpu_s_per_1000_messages": round(statistics.median(cpu), 3) if cpu else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, help="messages per measurement (default 6000; --quick 1200)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts to measure")
    p.add_argument("--agents", type=int, default=20, help="agents (plants) the messages come from")
    p.add_argument("--machines", type=int, default=10, help="machines per agent")
    p.add_argument("--states", type=int, default=3, help="state intervals per machine per hourly bucket")
    p.add_argument("--repeats", type=int, help="measurements per configuration (default 3; --quick 1)")
    p.add_argument("--backend", choices=sorted(BACKENDS), nargs="+", default=["sqlite"])
    p.add_argument("--quick", action="store_true", help="1,200 messages, one repeat: checks the script")
    p.add_argument("--seed", type=int, default=20260907)
    p.add_argument("--count-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.count_port is not None:
        count_main(args.count_port, args.count)
        return
    total = args.messages or (1200 if args.quick else 6000)
    repeats = args.repeats or (1 if args.quick else 3)
    messages = workload(args.agents, args.machines, total, args.states, args.seed)
    kinds = [name.rsplit("/", 1)[1] for name, _ in messages]
    kpi_share = kinds.count("kpi") / len(kinds)
    print(f"{len(messages)} messages ({kinds.count('kpi')} kpi, {kinds.count('state')} state)", file=sys.stderr)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        runs = iter(range(1_000_000))

        def fresh() -> Path:
            d = Path(tmp) / f"run-{next(runs)}"
            d.mkdir()
            return d

        raw = []
        for r in range(repeats):
            print(f"raw paho counter, repeat {r + 1}", file=sys.stderr)
            raw.append(run_raw(messages, fresh()))
        results["raw_paho_counter"] = rates(raw, kpi_share)
        versions = {}
        for name in args.backend:
            backend = BACKENDS[name]
            versions[name] = backend.version()
            results[name] = {}
            try:
                ceilings = [backend.commit_ceiling(fresh(), messages) for _ in range(repeats)]
                results[name]["commit_ceiling_per_s"] = round(statistics.median(ceilings))
                for n in args.workers:
                    spans = []
                    for r in range(repeats):
                        print(f"{name}: {n} worker(s), repeat {r + 1}", file=sys.stderr)
                        spans.append(run_workers(backend, n, messages, fresh()))
                    entry = rates(spans, kpi_share)
                    raw_rate = results["raw_paho_counter"]["messages_per_s"]
                    entry["share_of_raw"] = round(entry["messages_per_s"] / raw_rate, 3) if raw_rate else None
                    results[name][f"{n}_workers"] = entry
            finally:
                backend.cleanup()

    doc = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "paho_mqtt": paho.mqtt.__version__,
            **versions,
            "platform": platform.platform(),
        },
        "workload": {
            "messages": len(messages),
            "agents": args.agents,
            "machines_per_agent": args.machines,
            "kpi_share": round(kpi_share, 3),
            "mean_payload_bytes": round(statistics.mean(len(b) for _, b in messages)),
            "repeats": repeats,
        },
        "results": results,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
