#!/usr/bin/env python
"""OPC UA subscription benchmark: agent CPU per 1,000 notifications vs a raw asyncua subscription.

A benchmark, not a test: it measures and prints one JSON document on stdout, and never asserts
timings. Diagnostics go to stderr. See bench/README.md for what each number means.

    python bench/opcua_bench.py                             # 1,000 items changing every 100 ms, 20 s phases
    python bench/opcua_bench.py --items 200 --duration 8    # quick run

The server is one asyncua Server in a separate process (this script with --serve), so the measured
process's CPU time is the client side only. The same server feeds three phases in turn: the real
agent, a plain asyncua subscription whose handler only counts, and the bare publish callback below
asyncua's subscription layer (the floor any client pays for decoding the notifications).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/opcua_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from _common import Broker, bench_agent_config, process_cpu_s  # noqa: E402
from asyncua import Client, Node, Server, ua  # noqa: E402

from edgeproof.netutil import free_port  # noqa: E402

log = logging.getLogger("opcua_bench")

NAMESPACE_URI = "urn:edgeproof:bench:opcua"
NS = 2  # the first namespace registered after the server's own application URI
DEVICE = "cnc"
RUN_PERIOD_S = 3.0  # the run flag toggles this often, so the machine changes state during the window
PUBLISHING_MS = 100.0
RUN, PARTS = ua.NodeId("run", NS), ua.NodeId("parts", NS)


def node_ids(items: int) -> dict[str, str]:
    """Tag name -> node id: `items` changing numbers, then the two signals of the machine model."""
    ids = {f"v{i:04d}": f"ns={NS};s=v{i:04d}" for i in range(items)}
    return ids | {"run": RUN.to_string(), "parts": PARTS.to_string()}


# --- server side (--serve) ------------------------------------------------------------------------
class _Written(ua.DataValue):
    """A DataValue that is never changed after it is written, so it need not be copied.

    asyncua's server deep-copies every written value once per monitored item, to compare it with the
    previous one; for these flat values that copy is most of the server's CPU time, which would take
    a core away from the measured client on a small machine.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Written:
        return self


async def _address_space(server: Server, items: int) -> list[tuple[ua.NodeId, ua.VariantType]]:
    """The changing numbers (Double and Int32 in turn) and the machine's run and parts; returns the numbers."""
    if await server.register_namespace(NAMESPACE_URI) != NS:
        raise RuntimeError(f"namespace {NAMESPACE_URI} did not get index {NS}")
    folder = await server.nodes.objects.add_folder(ua.NodeId("bench", NS), ua.QualifiedName("bench", NS))
    numbers: list[tuple[ua.NodeId, ua.VariantType]] = []
    for i in range(items):
        vtype = ua.VariantType.Double if i % 2 == 0 else ua.VariantType.Int32
        nid = ua.NodeId(f"v{i:04d}", NS)
        await folder.add_variable(nid, ua.QualifiedName(f"v{i:04d}", NS), ua.Variant(0 if i % 2 else 0.0, vtype))
        numbers.append((nid, vtype))
    await folder.add_variable(RUN, ua.QualifiedName("run", NS), ua.Variant(True, ua.VariantType.Boolean))
    await folder.add_variable(PARTS, ua.QualifiedName("parts", NS), ua.Variant(0, ua.VariantType.UInt32))
    return numbers


async def _serve(items: int, change_s: float) -> None:
    server = Server()
    await server.init()
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    numbers = await _address_space(server, items)
    for _attempt in range(20):
        port = free_port()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        try:
            await server.start()
        except OSError:  # the port was taken in between: pick another
            continue
        break
    else:
        raise RuntimeError("no free loopback port")
    print(json.dumps({"port": port}), flush=True)
    # the server lives until the parent closes our stdin (or dies)
    loop = asyncio.get_running_loop()
    eof = loop.create_future()
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(eof.set_result, None)), daemon=True
    ).start()
    started = next_at = loop.time()
    ticks = late = 0
    double = ua.VariantType.Double
    busy_s = 0.0
    while not eof.done():
        tick_started = loop.time()
        ticks += 1
        stamp = datetime.now(UTC)  # one source timestamp per change cycle, shared by its values
        # Server.write_attribute_value goes straight to the address space (no Write request, no access
        # checks) and fires the monitored items' callbacks: the cheapest way to change a value.
        for k, (nid, vtype) in enumerate(numbers):
            value = ticks * 0.5 + k if vtype is double else ticks + k
            variant = ua.Variant(value, vtype, is_array=False)
            await server.write_attribute_value(nid, _Written(variant, SourceTimestamp=stamp))
        elapsed = tick_started - started
        running = int(elapsed / RUN_PERIOD_S) % 2 == 0
        await server.write_attribute_value(
            RUN, _Written(ua.Variant(running, ua.VariantType.Boolean), SourceTimestamp=stamp)
        )
        count = int(elapsed) % 2**32  # one part a second
        await server.write_attribute_value(
            PARTS, _Written(ua.Variant(count, ua.VariantType.UInt32), SourceTimestamp=stamp)
        )
        busy_s += loop.time() - tick_started
        next_at += change_s
        if loop.time() > next_at:  # the change loop cannot keep up: skip to now rather than burst
            late += 1
            next_at = loop.time()
        await asyncio.wait([eof], timeout=max(0.0, next_at - loop.time()))
    await server.stop()
    print(json.dumps({"change_cycles": ticks, "late_cycles": late, "mean_cycle_ms": round(busy_s / ticks * 1000, 2)}))


class ServerProcess:
    """The asyncua server in its own process; its CPU time is read from /proc."""

    def __init__(self, items: int, change_ms: float) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            "--items",
            str(items),
            "--change-ms",
            str(change_ms),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the OPC UA server process failed to start (see stderr)")
        self.url = f"opc.tcp://127.0.0.1:{json.loads(line)['port']}/"
        self.summary: dict[str, Any] = {}

    def cpu_s(self) -> float | None:
        return process_cpu_s([self.proc.pid])

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # the server's last line: how well its change loop kept time
        lines = self.proc.stdout.read().strip().splitlines() if self.proc.stdout is not None else []
        self.summary = json.loads(lines[-1]) if lines else {}


# --- measurement ----------------------------------------------------------------------------------
@dataclass
class Window:
    """Counters at the start of the steady-state window; `close` turns them into rates."""

    server: ServerProcess
    notifications: int
    cpu: float = field(default_factory=time.process_time)
    wall: float = field(default_factory=time.monotonic)
    server_cpu: float | None = None

    def __post_init__(self) -> None:
        self.server_cpu = self.server.cpu_s()

    def close(self, notifications: int) -> dict[str, Any]:
        cpu = time.process_time() - self.cpu
        wall = time.monotonic() - self.wall
        server_end = self.server.cpu_s()
        n = notifications - self.notifications
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_cores_used": round(cpu / wall, 3),
            "notifications": n,
            "notifications_per_s": round(n / wall, 1),
            "cpu_s_per_1k_notifications": round(cpu / n * 1000, 5) if n else None,
            "server_cpu_cores_used": round((server_end - self.server_cpu) / wall, 3)
            if server_end is not None and self.server_cpu is not None
            else None,
        }


def agent_config(url: str, items: int, data_dir: Path, mqtt_port: int) -> Any:
    machine = {
        "id": "M000",
        "name": "bench CNC",
        "type": "cnc_mill",
        "process": "bench",
        "digital": True,
        "nc_capable": True,
        "ideal_cycle_s": 1.0,
        "device": DEVICE,
        "state_rules": "bench",
        "counters": {"parts": "parts", "bits": 32},
    }
    device = {
        "id": DEVICE,
        "protocol": "opcua",
        "url": url,
        "acquisition": "subscription",
        "publishing_interval_s": PUBLISHING_MS / 1000,
        "queue_size": 1,
        "tags": [{"name": name, "node": nid} for name, nid in node_ids(items).items()],
    }
    rules = [{"state": "RUNNING", "when": {"all": [{"tag": "run", "op": "eq", "value": True}]}}, {"state": "IDLE"}]
    return bench_agent_config(data_dir, mqtt_port, [machine], [device], rules)


async def run_agent(
    items: int, server: ServerProcess, broker: Broker, duration_s: float, warmup_s: float, workdir: Path
) -> dict[str, Any]:
    from connectors.opcua import OpcUaDevice
    from edge_agent.runtime import Agent
    from edgeproof.clock import WallClock

    data_dir = Path(tempfile.mkdtemp(prefix="agent-", dir=workdir))
    agent = Agent(agent_config(server.url, items, data_dir, broker.port), WallClock())
    device = cast(OpcUaDevice, agent.devices[DEVICE])
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop, drain_timeout_s=3.0))
    await asyncio.sleep(warmup_s)
    samples, appended, overruns = agent.samples_read, agent.outbox.appended, sum(agent.overruns.values())
    window = Window(server, device.notifications)
    await asyncio.sleep(duration_s - warmup_s)
    result = window.close(device.notifications)
    samples = agent.samples_read - samples
    result.update(
        samples_processed=samples,
        samples_per_s=round(samples / result["wall_s"], 1),
        outbox_messages=agent.outbox.appended - appended,
        poll_overruns=sum(agent.overruns.values()) - overruns,
        bad_tags_at_end=sum(1 for s in agent.latest[DEVICE].values() if not s.good),
    )
    stop.set()
    await task
    result["messages_published"] = agent.publisher.published
    return result


class _CountingHandler:
    """The raw baseline's whole application: count the data changes asyncua hands over."""

    def __init__(self) -> None:
        self.count = 0

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.count += 1


async def run_raw(items: int, server: ServerProcess, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Plain asyncua: Client.create_subscription with a handler that only counts."""
    client = Client(server.url)
    await client.connect()
    try:
        handler = _CountingHandler()
        sub = await client.create_subscription(PUBLISHING_MS, handler)
        nodes = [client.get_node(nid) for nid in node_ids(items).values()]
        handles = await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=PUBLISHING_MS)
        failed = sum(1 for h in handles if isinstance(h, ua.StatusCode))
        await asyncio.sleep(warmup_s)
        window = Window(server, handler.count)
        await asyncio.sleep(duration_s - warmup_s)
        result = window.close(handler.count)
    finally:
        await client.disconnect()
    result["items_failed"] = failed
    return result


async def run_floor(items: int, server: ServerProcess, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Below asyncua's Subscription layer: the bare publish callback counts the items of each response."""
    client = Client(server.url)
    await client.connect()
    count = 0

    def on_publish(result: ua.PublishResult) -> None:
        nonlocal count
        for notification in result.NotificationMessage.NotificationData or []:
            if isinstance(notification, ua.DataChangeNotification):
                count += len(notification.MonitoredItems)

    try:
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=PUBLISHING_MS,
            RequestedLifetimeCount=30,
            RequestedMaxKeepAliveCount=10,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
        )
        sub = await client.uaclient.create_subscription(params, on_publish)
        requests = []
        for handle, nid in enumerate(node_ids(items).values(), start=1):
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId(NodeId=ua.NodeId.from_string(nid), AttributeId=ua.AttributeIds.Value)
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = ua.MonitoringParameters(
                ClientHandle=handle, SamplingInterval=PUBLISHING_MS, QueueSize=1, DiscardOldest=True
            )
            requests.append(request)
        created = ua.CreateMonitoredItemsParameters(
            SubscriptionId=sub.SubscriptionId, TimestampsToReturn=ua.TimestampsToReturn.Source, ItemsToCreate=requests
        )
        failed = sum(1 for r in await client.uaclient.create_monitored_items(created) if not r.StatusCode.is_good())
        await asyncio.sleep(warmup_s)
        window = Window(server, count)
        await asyncio.sleep(duration_s - warmup_s)
        result = window.close(count)
    finally:
        await client.disconnect()
    result["items_failed"] = failed
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    nominal = args.items / (args.change_ms / 1000)
    doc: dict[str, Any] = {
        "benchmark": "edgeproof opcua subscription",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "asyncua": version("asyncua"),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "workload": {
            "items": args.items,
            "extra_items": ["run (Boolean, toggles every 3 s)", "parts (UInt32, +1 per second)"],
            "change_interval_ms": args.change_ms,
            "nominal_changes_per_s": round(nominal, 1),
            "publishing_interval_ms": PUBLISHING_MS,
            "queue_size": 1,
            "duration_s": args.duration,
            "warmup_excluded_s": args.warmup,
            "mqtt": None,
        },
    }
    with tempfile.TemporaryDirectory(prefix="opcua-bench-") as tmp:
        workdir = Path(tmp)
        server = ServerProcess(args.items, args.change_ms)
        broker = Broker(workdir, args.mqtt)
        doc["workload"]["mqtt"] = broker.kind
        try:
            log.warning("agent for %.0f s", args.duration)
            agent = await run_agent(args.items, server, broker, args.duration, args.warmup, workdir)
            log.warning("raw asyncua subscription for %.0f s", args.duration)
            raw = await run_raw(args.items, server, args.duration, args.warmup)
            log.warning("bare publish callback for %.0f s", args.duration)
            floor = await run_floor(args.items, server, args.duration, args.warmup)
        finally:
            broker.stop()
            server.stop()
    a, r, f = (p["cpu_s_per_1k_notifications"] for p in (agent, raw, floor))
    doc["cpu_per_1k_notifications"] = {
        "agent_s": a,
        "raw_asyncua_s": r,
        "ratio_agent_to_raw": _ratio(a, r),
        "target_ratio_max": 1.5,
        "bare_callback_s": f,
        "ratio_agent_to_bare_callback": _ratio(a, f),
        "agent": agent,
        "raw_asyncua": raw,
        "bare_callback": floor,
    }
    doc["delivery"] = {
        "nominal_changes_per_s": round(nominal, 1),
        "delivered_per_s": {
            "agent": agent["notifications_per_s"],
            "raw_asyncua": raw["notifications_per_s"],
            "bare_callback": floor["notifications_per_s"],
        },
        "server_change_loop": server.summary,
    }
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1000, help="changing monitored items (plus run and parts)")
    p.add_argument("--change-ms", type=float, default=100.0, help="the server changes every item this often")
    p.add_argument("--duration", type=float, default=20.0, help="seconds for each phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds excluded at the start of every phase")
    p.add_argument("--mqtt", choices=["auto", "none"], default="auto", help="auto: private Mosquitto if installed")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        asyncio.run(_serve(args.items, args.change_ms / 1000))
        return
    if args.duration <= args.warmup:
        p.error("--duration must exceed --warmup")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    doc = asyncio.run(client_main(args))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
