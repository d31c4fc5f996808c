#!/usr/bin/env python
"""Backlog drain benchmark: how fast the agent empties an hour of outbox, and what live data pays meanwhile.

A benchmark, not a test: it measures and prints one JSON document on stdout, and never asserts
timings. Diagnostics go to stderr. See bench/README.md for what each number means.

    python bench/delivery_bench.py                 # one hour of 50 machines, 1-minute buckets, 3 repeats
    python bench/delivery_bench.py --quick         # a quarter of an hour, one repeat

The backlog is built by the real agent code: an `edge_agent.runtime.Agent` (never started: no
device is polled) whose plant engine is fed scripted samples for every poll of the hour, on a
replayed clock, and whose `evaluate` appends what closed to its real outbox file with
`Outbox.append_all`, exactly as a running agent does. A copy of that file is then drained to a
private Mosquitto by a real `MqttPublisher`, while this script appends live messages, and compared
with a plain paho client sending the same payloads. A subscriber in a separate process (this script
with --subscribe) timestamps every arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/delivery_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from _common import Broker, bench_agent_config, process_cpu_s  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from connectors.sample import Sample  # noqa: E402
from edge_agent.config import Mqtt  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from edge_agent.publisher import HISTORICAL_PROPERTY, MqttPublisher, mark_historical  # noqa: E402
from edgeproof.contract import AnySequenced, parse_sequenced, topic  # noqa: E402

log = logging.getLogger("delivery_bench")

AGENT_ID = "bench-agent"
SEQ = re.compile(rb'"seq":(\d+)')  # the common fields come first: the first match is the message's own
HISTORICAL_TRUE = b'"historical":true'
SCRIPT = Path(__file__).resolve()

# The machines' behaviour during the hour (seeded): running spells and stops drawn from exponential
# distributions. An unreasoned IDLE shorter than micro_stop_s (120 s) becomes a MICRO_STOP.
MEAN_RUN_S = 240.0
MEAN_IDLE_S = 100.0
MEAN_FAULT_S = 240.0
FAULT_SHARE = 0.3  # of the stops
CYCLE_S = 30.0  # one part per cycle while running (ideal cycle time 28 s)


# --- workload: an hour of the agent's real output -------------------------------------------------
class ReplayClock:
    """Plant time set by the replay: every message's produced_at is the tick that produced it."""

    speed = 1.0

    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    async def sleep(self, sim_seconds: float) -> None:  # the replay never sleeps
        return None


def machine_script(rng: random.Random, seconds: int) -> list[tuple[bool, bool]]:
    """(run, fault) for every second of the span."""
    out: list[tuple[bool, bool]] = []
    running = rng.random() < 0.7
    while len(out) < seconds:
        if running:
            length, value = rng.expovariate(1 / MEAN_RUN_S), (True, False)
        elif rng.random() < FAULT_SHARE:
            length, value = rng.expovariate(1 / MEAN_FAULT_S), (False, True)
        else:
            length, value = rng.expovariate(1 / MEAN_IDLE_S), (False, False)
        out += [value] * max(5, round(length))
        running = not running
    return out[:seconds]


@dataclass
class Workload:
    path: Path
    devices: int
    hours: float
    bucket_minutes: int
    poll_s: float
    plant_start: datetime
    plant_end: datetime
    build_s: float
    messages: int = 0
    bytes: int = 0
    last_seq: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    kind_bytes: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)
    appends: int = 0  # append_all transactions (evaluation ticks that closed something)

    def describe(self) -> dict[str, Any]:
        machine_hours = self.devices * self.hours
        return {
            "definition": (
                f"{self.hours:g} h of plant time from {self.devices} machines (one Modbus device each, tags run/fault/"
                f"parts), replayed through the real Agent.evaluate at a {self.poll_s:g} s poll: state intervals, "
                f"per-machine KPIs and site KPIs of {self.bucket_minutes}-minute buckets, the boot's birth"
            ),
            "devices": self.devices,
            "hours": self.hours,
            "bucket_minutes": self.bucket_minutes,
            "plant_span": [self.plant_start.isoformat(), self.plant_end.isoformat()],
            "messages": self.messages,
            "bytes": self.bytes,
            "mean_payload_bytes": round(self.bytes / self.messages, 1) if self.messages else None,
            "mix": {k: self.kinds[k] for k in sorted(self.kinds)},
            "mix_bytes": {k: self.kind_bytes[k] for k in sorted(self.kind_bytes)},
            "state_intervals_per_machine_hour": round(self.kinds["state"] / machine_hours, 2),
            "state_interval_states": dict(self.states.most_common()),
            "machine_behaviour": {
                "mean_running_s": MEAN_RUN_S,
                "mean_idle_s": MEAN_IDLE_S,
                "mean_fault_s": MEAN_FAULT_S,
                "fault_share_of_stops": FAULT_SHARE,
                "micro_stop_below_s": 120.0,
            },
            "agent_average_rate_per_s": round(self.messages / (self.hours * 3600), 3),
            "append_transactions": self.appends,
            "outbox_file_bytes": self.path.stat().st_size,
            "build_s": round(self.build_s, 2),
        }


def build_backlog(workdir: Path, devices: int, hours: float, bucket_minutes: int, poll_s: float, seed: int) -> Workload:
    from edge_agent.runtime import Agent

    started = time.monotonic()
    rules = [
        {"state": "FAULT", "when": {"all": [{"tag": "fault", "op": "eq", "value": True}]}, "reason": "fault"},
        {"state": "RUNNING", "when": {"all": [{"tag": "run", "op": "eq", "value": True}]}},
        {"state": "IDLE"},
    ]
    tags = [
        {"name": "run", "area": "discrete", "address": 0, "type": "bool"},
        {"name": "fault", "area": "holding", "address": 0, "type": "bool", "bit": 0},
        {"name": "parts", "area": "holding", "address": 2, "type": "uint32"},
    ]
    machines = [
        {
            "id": f"M{i:03d}",
            "name": f"bench machine {i}",
            "type": "bench",
            "process": "bench",
            "digital": True,
            "nc_capable": True,
            "ideal_cycle_s": CYCLE_S - 2,
            "device": f"dev{i:03d}",
            "state_rules": "bench",
            "counters": {"parts": "parts", "bits": 32},
        }
        for i in range(devices)
    ]
    device_cfgs = [
        # never connected: the replay feeds the engine directly
        {"id": f"dev{i:03d}", "protocol": "modbus", "host": "127.0.0.1", "port": 502, "poll_interval_s": poll_s}
        | {"tags": tags}
        for i in range(devices)
    ]
    data_dir = workdir / "backlog"
    config = bench_agent_config(
        data_dir, 1883, machines, device_cfgs, rules, extra={"kpi": {"bucket_minutes": bucket_minutes}}
    )
    seconds = round(hours * 3600)
    # the span ends about now, on the bucket grid; what closed inside it is the backlog
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    end -= timedelta(minutes=end.minute % bucket_minutes)
    start = end - timedelta(seconds=seconds)
    clock = ReplayClock(start)
    agent = Agent(config, clock)
    rng = random.Random(seed)
    scripts = [machine_script(rng, seconds + 1) for _ in range(devices)]
    parts = [rng.getrandbits(31) for _ in range(devices)]
    phase = [rng.uniform(0, CYCLE_S) for _ in range(devices)]
    agent.engine.start(start)
    agent._birth()  # queued at start by every boot, as Agent.run does
    agent._flush()
    transactions = 0
    ticks = round(seconds / poll_s)
    for k in range(1, ticks + 1):
        offset = k * poll_s
        now = start + timedelta(seconds=offset)
        clock.t = now
        samples = []
        for i in range(devices):
            run, fault = scripts[i][min(int(offset), seconds)]
            if run and (offset + phase[i]) % CYCLE_S < poll_s:
                parts[i] = (parts[i] + 1) % 2**32
            dev = f"dev{i:03d}"
            samples += (
                Sample(dev, "run", run, True, now),
                Sample(dev, "fault", fault, True, now),
                Sample(dev, "parts", parts[i], True, now),
            )
        agent.engine.ingest(samples)
        agent.samples_read += len(samples)
        before = agent.outbox.appended
        agent.evaluate(now)
        transactions += agent.outbox.appended != before
    agent.outbox.close()
    log.warning(
        "backlog built: %d messages appended in %d transactions, %.1f s",
        agent.outbox.appended,
        transactions + 1,
        time.monotonic() - started,
    )
    work = Workload(
        data_dir / "outbox.sqlite", devices, hours, bucket_minutes, poll_s, start, end, time.monotonic() - started
    )
    work.appends = transactions + 1
    with sqlite3.connect(work.path) as db:
        for kind, payload in db.execute("SELECT kind, payload FROM outbox ORDER BY seq"):
            work.messages += 1
            work.bytes += len(payload)
            work.kinds[kind] += 1
            work.kind_bytes[kind] += len(payload)
            if kind == "state":
                work.states[json.loads(payload)["state"]] += 1
        work.last_seq = int(db.execute("SELECT max(seq) FROM outbox").fetchone()[0])
    db.close()
    return work


def load_rows(path: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(path) as db:
        rows = [(int(s), str(t), bytes(p)) for s, t, p in db.execute("SELECT seq, topic, payload FROM outbox")]
    db.close()
    return sorted(rows)


# --- subscriber (--subscribe, its own process) ------------------------------------------------------
def subscribe_main(args: argparse.Namespace) -> None:
    """Timestamp every sequenced arrival (time.monotonic: CLOCK_MONOTONIC, shared by all processes).

    QoS 0 subscription: Mosquitto passes QoS 0 to a connected subscriber without a queue limit, so a
    subscriber that falls behind delays arrivals but loses nothing (and never slows the publisher
    through a QoS 1 flow window of its own).
    """
    upto, count = args.upto, args.count
    backlog: dict[int, float] = {}
    backlog_historical = 0
    live: dict[int, tuple[float, bool]] = {}
    duplicates = 0
    lock = threading.Lock()
    ready = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe("edgeproof/v1/#", qos=0)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        ready.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal backlog_historical, duplicates
        t = time.monotonic()
        payload = msg.payload
        m = SEQ.search(payload)
        if m is None:
            return  # status, health
        seq = int(m.group(1))
        historical = HISTORICAL_TRUE in payload
        with lock:
            if seq <= upto:
                if seq in backlog:
                    duplicates += 1
                    return
                backlog[seq] = t
                backlog_historical += historical
                if len(backlog) == count:
                    print(json.dumps({"drained": t}), flush=True)
            elif seq in live:
                duplicates += 1
            else:
                live[seq] = (t, historical)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    if not ready.wait(10):
        raise SystemExit("subscriber: no SUBACK")
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    client.disconnect()
    client.loop_stop()
    with lock:
        times = sorted(backlog.values())
        print(
            json.dumps(
                {
                    "backlog_received": len(backlog),
                    "backlog_historical": backlog_historical,
                    "backlog_first": times[0] if times else None,
                    "backlog_last": times[-1] if times else None,
                    "duplicates": duplicates,
                    "live": {str(s): v for s, v in live.items()},
                }
            ),
            flush=True,
        )


class Subscriber:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, upto: int, count: int) -> Subscriber:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--subscribe",
            "--port",
            str(port),
            "--upto",
            str(upto),
            "--count",
            str(count),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        sub = cls(proc)
        line = await sub._line(20)
        if not line.get("ready"):
            raise RuntimeError("subscriber did not start")
        return sub

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise RuntimeError("subscriber ended early (see stderr)")
        return json.loads(raw)  # type: ignore[no-any-return]

    async def drained(self, timeout_s: float) -> float | None:
        """Arrival time of the last backlog message; None if not all of them came in time."""
        try:
            return float((await self._line(timeout_s))["drained"])
        except TimeoutError:
            return None

    async def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        result = await self._line(30)
        await self.proc.wait()
        return result

    def cpu_s(self) -> float | None:
        return process_cpu_s([self.proc.pid])


# --- phases -----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def latency_summary(ms: list[float]) -> dict[str, Any]:
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,  # type: ignore[arg-type]
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,  # type: ignore[arg-type]
        "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
    }


@dataclass
class Meter:
    """CPU of this process (all threads), the broker and the subscriber over a window."""

    broker_pid: int | None
    sub: Subscriber
    wall: float = field(default_factory=time.monotonic)
    cpu: float = field(default_factory=time.process_time)
    broker_cpu: float | None = None
    sub_cpu: float | None = None

    def __post_init__(self) -> None:
        self.broker_cpu = process_cpu_s([self.broker_pid]) if self.broker_pid else None
        self.sub_cpu = self.sub.cpu_s()

    def read(self, until: float) -> dict[str, Any]:
        cpu = time.process_time() - self.cpu
        wall = max(1e-9, until - self.wall)
        broker = process_cpu_s([self.broker_pid]) if self.broker_pid else None
        sub = self.sub.cpu_s()
        return {
            "cpu_s": round(cpu, 3),
            "cpu_cores_used": round(cpu / wall, 3),
            "broker_cpu_cores_used": round((broker - self.broker_cpu) / wall, 3)
            if broker is not None and self.broker_cpu is not None
            else None,
            "subscriber_cpu_cores_used": round((sub - self.sub_cpu) / wall, 3)
            if sub is not None and self.sub_cpu is not None
            else None,
        }


class TimedPublisher(MqttPublisher):
    """The real publisher; only notes when each live message was handed to paho (for the breakdown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live_sent: list[tuple[int, int, float]] = []  # (after seq, up to seq, monotonic)

    def _send_live(self, session: Any, room: int) -> int:
        before = self._live_cursor
        sent = super()._send_live(session, room)
        if sent:
            self.live_sent.append((before, self._live_cursor, time.monotonic()))
        return sent

    def sent_at(self) -> dict[int, float]:
        return {seq: t for after, upto, t in self.live_sent for seq in range(after + 1, upto + 1)}


async def poll_until(done: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    for _ in range(max(1, round(timeout_s / step_s))):
        if done():
            return True
        await asyncio.sleep(step_s)
    return done()


def live_templates(rows: list[tuple[int, str, bytes]], seed: int) -> list[AnySequenced]:
    """The backlog's own messages in random order: live messages follow the same mix."""
    models = [parse_sequenced(p) for _, _, p in rows if b'"kind":"birth"' not in p]
    random.Random(seed).shuffle(models)
    return models


async def append_live(
    outbox: Outbox,
    templates: list[AnySequenced],
    boot_id: str,
    rate: float,
    stop: asyncio.Event,
    appended: dict[int, float],
    append_ms: list[float],
    wake: Callable[[], None],
) -> None:
    """One message per append_all (one transaction, one disk sync), `rate` a second, on a fixed grid;
    then the publisher is woken, as the agent does after every tick that stored something."""
    period = 1.0 / rate
    next_at = time.monotonic()
    i = 0
    while not stop.is_set():
        model = templates[i % len(templates)]
        i += 1

        def make(seq: int, m: AnySequenced = model) -> AnySequenced:
            return m.model_copy(update={"seq": seq, "boot_id": boot_id, "produced_at": datetime.now(UTC)})

        t = time.monotonic()
        (seq,) = outbox.append_all([(topic(AGENT_ID, model.kind), make)])
        append_ms.append((time.monotonic() - t) * 1000)
        appended[seq] = t
        wake()
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def agent_phase(
    work: Workload,
    templates: list[AnySequenced],
    broker: Broker,
    workdir: Path,
    rate: float,
    live_rate: float,
    tail_s: float,
    name: str,
) -> tuple[dict[str, Any], list[float], list[float]]:
    """A real MqttPublisher drains a copy of the backlog; live messages are appended meanwhile."""
    phase_dir = workdir / name
    phase_dir.mkdir()
    path = phase_dir / "outbox.sqlite"
    shutil.copyfile(work.path, path)  # closed cleanly: the WAL is checkpointed into the main file
    sub = await Subscriber.start(broker.port, work.last_seq, work.messages)
    boot_id = uuid.uuid4().hex
    outbox = Outbox(path)
    cfg = Mqtt.model_validate({"host": "127.0.0.1", "port": broker.port, "drain_rate_per_s": rate})
    publisher = TimedPublisher(cfg, AGENT_ID, boot_id, outbox, lambda: datetime.now(UTC))
    stop, stop_live, session = asyncio.Event(), asyncio.Event(), asyncio.Event()
    # runs on the asyncio side once the publisher has split its outbox at the connect: what is
    # appended from then on is live (appended earlier, it would be backlog, as in the agent)
    publisher.on_connected = session.set
    appended: dict[int, float] = {}
    append_ms: list[float] = []
    expected_s = work.messages / rate if rate else 0.0
    meter = Meter(broker.proc.pid if broker.proc else None, sub)
    t0 = meter.wall
    publisher.start()
    pump = asyncio.create_task(publisher.run(stop))
    await asyncio.wait_for(session.wait(), 30)
    live = asyncio.create_task(
        append_live(outbox, templates, boot_id, live_rate, stop_live, appended, append_ms, publisher.wake)
    )
    last = await sub.drained(max(120.0, 3 * expected_s))
    usage = meter.read(last or time.monotonic())
    backlog_live = dict(appended)  # live messages appended while the backlog drained
    await asyncio.sleep(tail_s)
    stop_live.set()
    await live
    await poll_until(lambda: outbox.depth() == 0, 30)  # every live message acknowledged
    await asyncio.sleep(0.3)  # and delivered to the subscriber
    stop.set()
    await pump
    window = publisher._session.window if publisher._session is not None else cfg.max_inflight
    publisher.stop()
    depth_left = outbox.depth()
    outbox.close()
    got = await sub.finish()
    lat_drain: list[float] = []
    lat_after: list[float] = []
    queued: list[float] = []  # during the drain: append -> handed to paho
    onward: list[float] = []  # during the drain: handed to paho -> arrival (client, broker, subscriber)
    sent_at = publisher.sent_at()
    live_historical = 0
    for seq, t in appended.items():
        arrival = got["live"].get(str(seq))
        if arrival is None:
            continue
        live_historical += arrival[1]
        ms = (arrival[0] - t) * 1000
        during = seq in backlog_live and (last is None or t <= last)
        (lat_drain if during else lat_after).append(ms)
        if during and seq in sent_at:
            queued.append((sent_at[seq] - t) * 1000)
            onward.append((arrival[0] - sent_at[seq]) * 1000)
    drain_s = (last - t0) if last is not None else None
    result = {
        "drain_rate_per_s": rate if rate else "unlimited",
        "in_flight_window": window,
        "backlog_messages": work.messages,
        "backlog_received": got["backlog_received"],
        "drain_s": round(drain_s, 3) if drain_s else None,
        "messages_per_s": round(work.messages / drain_s, 1) if drain_s else None,
        "expected_drain_s": round(expected_s, 2) if rate else None,
        "first_backlog_arrival_s": round(got["backlog_first"] - t0, 3) if got["backlog_first"] else None,
        **usage,
        "cpu_s_per_1k_messages": round(usage["cpu_s"] / (work.messages + len(backlog_live)) * 1000, 4),
        "live_rate_per_s": live_rate,
        "live_latency_during_drain": latency_summary(lat_drain),
        "live_latency_during_drain_parts": {
            "append_to_publish": latency_summary(queued),
            "publish_to_arrival": latency_summary(onward),
        },
        "live_latency_after_drain": latency_summary(lat_after),
        "live_append_ms": latency_summary(append_ms),
        "live_appended": len(appended),
        "live_lost": len(appended) - sum(1 for s in appended if str(s) in got["live"]),
        "backlog_marked_historical": got["backlog_historical"],
        "live_marked_historical": live_historical,
        "duplicates": got["duplicates"],
        "outbox_depth_after": depth_left,
    }
    if last is None:
        result["error"] = "the backlog did not drain in time"
    return result, lat_drain, lat_after


async def raw_phase(rows: list[tuple[int, str, bytes]], work: Workload, broker: Broker, window: int) -> dict[str, Any]:
    """Plain paho: the same payloads (as the agent sends them, historical) at QoS 1, paho's own queue."""
    messages = [(name, mark_historical(payload)) for _, name, payload in rows]
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [HISTORICAL_PROPERTY]
    sub = await Subscriber.start(broker.port, work.last_seq, work.messages)
    connected = threading.Event()
    acks = {"n": 0, "last": 0.0}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
        connected.set()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: Any, p: Any) -> None:
        acks["n"] += 1
        acks["last"] = time.monotonic()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.on_connect = on_connect
    client.on_publish = on_publish
    meter = Meter(broker.proc.pid if broker.proc else None, sub)
    t0 = meter.wall
    client.connect("127.0.0.1", broker.port, clean_start=True)
    client.loop_start()
    if not await asyncio.to_thread(connected.wait, 10):
        raise RuntimeError("raw client: no CONNACK")
    for name, payload in messages:
        client.publish(name, payload, qos=1, properties=props)
    last = await sub.drained(120.0)
    usage = meter.read(last or time.monotonic())
    await poll_until(lambda: acks["n"] >= len(messages), 30)
    client.disconnect()
    client.loop_stop()
    got = await sub.finish()
    drain_s = (last - t0) if last is not None else None
    return {
        "in_flight_window": window,
        "backlog_messages": work.messages,
        "backlog_received": got["backlog_received"],
        "drain_s": round(drain_s, 3) if drain_s else None,
        "messages_per_s": round(work.messages / drain_s, 1) if drain_s else None,
        "last_puback_s": round(acks["last"] - t0, 3) if acks["n"] == len(messages) else None,
        **usage,
        "cpu_s_per_1k_messages": round(usage["cpu_s"] / work.messages * 1000, 4),
        "duplicates": got["duplicates"],
    }


def mosquitto_version() -> str | None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "benchmark": "edgeproof backlog drain and live latency",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "paho_mqtt": paho.mqtt.__version__,
            "broker": mosquitto_version(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="delivery-bench-") as tmp:
        workdir = Path(tmp)
        log.warning("building %g h of %d machines (%d-minute buckets)", args.hours, args.devices, args.bucket_minutes)
        work = build_backlog(workdir, args.devices, args.hours, args.bucket_minutes, args.poll_s, args.seed)
        doc["workload"] = work.describe()
        rows = load_rows(work.path)
        templates = live_templates(rows, args.seed)
        broker = Broker(workdir, "auto")
        if broker.proc is None:
            raise SystemExit("mosquitto is not installed: this benchmark needs a broker")
        doc["workload"]["broker"] = broker.kind
        try:
            agents: list[dict[str, Any]] = []
            raws: list[dict[str, Any]] = []
            during: list[float] = []  # live latencies while an unlimited drain ran, every repeat
            idle: list[float] = []  # after the drain, every phase
            window = Mqtt().max_inflight
            for r in range(args.repeats):
                log.warning("repeat %d/%d: agent, drain_rate_per_s 0", r + 1, args.repeats)
                result, lat, after = await agent_phase(
                    work, templates, broker, workdir, 0.0, args.live_rate, args.tail, f"agent-0-{r}"
                )
                agents.append(result)
                during += lat
                idle += after
                window = agents[-1]["in_flight_window"]
                log.warning("repeat %d/%d: raw paho, window %d", r + 1, args.repeats, window)
                raws.append(await raw_phase(rows, work, broker, window))
            rate = Mqtt().drain_rate_per_s if args.drain_rate is None else args.drain_rate
            log.warning("agent, drain_rate_per_s %g (expected %.0f s)", rate, work.messages / rate)
            limited, limited_lat, after = await agent_phase(
                work, templates, broker, workdir, rate, args.live_rate, args.tail, "agent-limited"
            )
            idle += after
        finally:
            broker.stop()
    a = median([x["messages_per_s"] for x in agents])
    r = median([x["messages_per_s"] for x in raws])
    doc["drain"] = {
        "measured_until": "last backlog message's arrival at the subscriber (same for agent and raw)",
        "repeats": args.repeats,
        "agent_messages_per_s": a,
        "raw_paho_messages_per_s": r,
        "ratio_agent_to_raw": round(a / r, 3) if a and r else None,
        "target_ratio_min": 0.5,
        "agent_drain_s": median([x["drain_s"] for x in agents]),
        "raw_paho_drain_s": median([x["drain_s"] for x in raws]),
        "agent_cpu_s": median([x["cpu_s"] for x in agents]),
        "raw_paho_cpu_s": median([x["cpu_s"] for x in raws]),
        "rate_limited_cpu_s": limited["cpu_s"],
        "per_repeat_ratio": [
            round(x["messages_per_s"] / y["messages_per_s"], 3) if x["messages_per_s"] and y["messages_per_s"] else None
            for x, y in zip(agents, raws, strict=True)
        ],
        "agent_unlimited": agents,
        "raw_paho": raws,
    }
    doc["live_latency"] = {
        "measured": "append_all call -> arrival at the subscriber, per live message",
        "live_rate_per_s": args.live_rate,
        "during_unlimited_drain": latency_summary(during),
        "during_rate_limited_drain": latency_summary(limited_lat),
        "after_drain": latency_summary(idle),
    }
    doc["rate_limited"] = limited
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=50, help="machines, one device each")
    p.add_argument("--hours", type=float, help="hours of plant time in the backlog (default 1; --quick 0.25)")
    p.add_argument("--quick", action="store_true", help="a quarter of an hour and one repeat: checks the script")
    p.add_argument("--bucket-minutes", type=int, default=1, help="KPI bucket length (the agent's default is 60)")
    p.add_argument("--poll-s", type=float, default=5.0, help="poll interval (and evaluation tick) of the replay")
    p.add_argument("--repeats", type=int, help="agent/raw pairs at unlimited rate (default 5; --quick 1)")
    p.add_argument("--live-rate", type=float, default=5.0, help="live messages appended per second while draining")
    p.add_argument("--drain-rate", type=float, help="drain_rate_per_s of the rate-limited phase (default: config's)")
    p.add_argument("--tail", type=float, default=2.0, help="seconds of live messages after the backlog drained")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--subscribe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upto", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.subscribe:
        subscribe_main(args)
        return
    if args.hours is None:
        args.hours = 0.25 if args.quick else 1.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    doc = asyncio.run(client_main(args))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
