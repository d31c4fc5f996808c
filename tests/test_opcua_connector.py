"""The OPC UA connector against real servers on loopback: subscriptions, deadbands, browse paths, polling
within the server's operation limits, the watchdog, and recovery from restarts and silent servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback

from connectors.opcua import OpcUaDevice, OpcUaDeviceConfig
from connectors.sample import Sample
from simulators.scenario import demo_scenario_path
from tests.netutil import free_port, free_port_block

NS_A, NS_B = "urn:edgeproof:test:a", "urn:edgeproof:test:b"
COUNTERS = [f"Counter{i}" for i in range(5)]
MAX_NODES_PER_READ = 3
SOURCE_TIME = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


class PlainServer:
    """A real asyncua server with a small address space, on its own event loop in a thread, so that one
    server start serves every test of the module. Records the size of each Read of its own nodes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/"
        self.read_sizes: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server()
        self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.a = await server.register_namespace(NS_A)
        b = await server.register_namespace(NS_B)
        line = await server.nodes.objects.add_object(ua.NodeId("Line", self.a), ua.QualifiedName("Line", self.a))
        press = await line.add_object(ua.NodeId("Press", self.a), ua.QualifiedName("Press", self.a))
        for name, value, vtype in [("Temperature", 20.0, ua.VariantType.Double), ("Marker", 0, ua.VariantType.Int32)]:
            await press.add_variable(ua.NodeId(name, self.a), ua.QualifiedName(name, self.a), ua.Variant(value, vtype))
        for i, name in enumerate(COUNTERS):
            await press.add_variable(
                ua.NodeId(name, self.a), ua.QualifiedName(name, self.a), ua.Variant(i, ua.VariantType.UInt32)
            )
        # The same browse name in two namespaces: a bare name is ambiguous, 'N:Mode' is not.
        await line.add_variable(ua.NodeId("ModeA", self.a), ua.QualifiedName("Mode", self.a), 1)
        await line.add_variable(ua.NodeId("ModeB", b), ua.QualifiedName("Mode", b), 2)
        limit = server.get_node(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        await limit.write_value(ua.Variant(MAX_NODES_PER_READ, ua.VariantType.UInt32))
        server.subscribe_server_callback(CallbackType.PreRead, self._on_read)
        await server.start()

    def _on_read(self, event: ServerItemCallback, _service: object) -> None:
        nodes = event.request_params.NodesToRead
        if any(n.NodeId.NamespaceIndex == self.a for n in nodes):
            self.read_sizes.append(len(nodes))

    def write(self, name: str, value: Any, vtype: ua.VariantType, source_time: datetime | None = None) -> None:
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=source_time or now())
        self.call(self.server.write_attribute_value(ua.NodeId(name, self.a), dv))

    def drop_subscriptions(self) -> int:
        """What a server does when a subscription's lifetime runs out: it is gone, the session stays."""
        service = self.server.iserver.subscription_service
        ids = list(service.subscriptions)
        self.call(service.delete_subscriptions(ids))
        return len(ids)

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def plain() -> Iterator[PlainServer]:
    server = PlainServer()
    yield server
    server.stop()


def device(url: str, tags: list[dict[str, Any]], **fields: Any) -> OpcUaDevice:
    config = {"id": "dev", "protocol": "opcua", "url": url, "timeout_s": 1.0, "publishing_interval_s": 0.05}
    return OpcUaDevice(OpcUaDeviceConfig.model_validate(config | fields | {"tags": tags}))


async def until(
    dev: OpcUaDevice, done: Callable[[dict[str, Sample]], bool], seen: list[dict[str, Sample]] | None = None
) -> dict[str, Sample]:
    """read_group as the agent calls it, until `done`; every result is appended to `seen`."""
    deadline = time.monotonic() + 30
    while True:
        samples = {s.tag: s for s in await dev.read_group(dev.groups[0], now)}
        if seen is not None:
            seen.append(samples)
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"not reached; last samples: {samples}"
        await asyncio.sleep(0.02)


def all_good(samples: dict[str, Sample]) -> bool:
    return all(s.good for s in samples.values())


def all_bad(samples: dict[str, Sample]) -> bool:
    return not any(s.good for s in samples.values())


def test_subscription_carries_source_time_and_refreshes_unchanged_values(plain: PlainServer) -> None:
    async def scenario() -> tuple[dict[str, Sample], list[dict[str, Sample]]]:
        dev = device(plain.url, [{"name": "temp", "node": f"ns={plain.a};s=Temperature"}])
        try:
            plain.write("Temperature", 61.5, ua.VariantType.Double, SOURCE_TIME)
            first = await until(dev, lambda s: s["temp"].value == 61.5)
            again = [{s.tag: s for s in await dev.read_group(dev.groups[0], now)} for _ in range(3)]
        finally:
            await dev.close()
        return first, again

    first, again = asyncio.run(scenario())
    assert first["temp"].good and first["temp"].source_time == SOURCE_TIME
    # The agent expects a sample every interval; an unchanged value stays good with its own source time.
    assert [(s["temp"].good, s["temp"].value, s["temp"].source_time) for s in again] == [(True, 61.5, SOURCE_TIME)] * 3
    assert again[0]["temp"].agent_time <= again[2]["temp"].agent_time


def test_absolute_deadband_suppresses_small_changes(plain: PlainServer) -> None:
    async def scenario() -> list[float]:
        tags = [
            {"name": "temp", "node": f"ns={plain.a};s=Temperature", "deadband": {"type": "absolute", "value": 5.0}},
            {"name": "marker", "node": f"ns={plain.a};s=Marker"},
        ]
        dev = device(plain.url, tags)
        seen = []
        try:
            plain.write("Temperature", 100.0, ua.VariantType.Double)
            seen.append((await until(dev, lambda s: s["temp"].value == 100.0))["temp"].value)
            plain.write("Temperature", 103.0, ua.VariantType.Double)  # within the deadband
            plain.write("Marker", 1, ua.VariantType.Int32)  # published with or after any temp notification
            seen.append((await until(dev, lambda s: s["marker"].value == 1))["temp"].value)
            # beyond the deadband from the last reported value and from the last written one (asyncua compares
            # with the latter)
            plain.write("Temperature", 110.0, ua.VariantType.Double)
            seen.append((await until(dev, lambda s: s["temp"].value != 100.0))["temp"].value)
        finally:
            await dev.close()
        return seen

    assert asyncio.run(scenario()) == [100.0, 100.0, 110.0]


def test_browse_paths_resolve_and_an_unresolved_one_is_bad_alone(plain: PlainServer) -> None:
    async def scenario() -> dict[str, Sample]:
        tags = [
            {"name": "temp", "path": "Line/Press/Temperature"},
            {"name": "pinned", "path": f"{plain.a}:Line/{plain.a}:Press/{plain.a}:Marker"},
            {"name": "mode_b", "path": f"Line/{plain.a + 1}:Mode"},
            {"name": "mode", "path": "Line/Mode"},
            {"name": "missing", "path": "Line/Press/Pressure"},
            {"name": "wrong_ns", "path": f"{plain.a + 1}:Line"},
        ]
        dev = device(plain.url, tags)
        try:
            return await until(dev, lambda s: s["temp"].good)
        finally:
            await dev.close()

    got = asyncio.run(scenario())
    assert [t for t, s in got.items() if s.good] == ["temp", "pinned", "mode_b"]
    assert got["mode_b"].value == 2
    assert got["mode"].reason == "path ambiguous: several 'Mode' under Line; pin the namespace as 'N:Mode'"
    assert got["missing"].reason == "path not found: no 'Pressure' under Line/Press"
    assert got["wrong_ns"].reason == f"path not found: no '{plain.a + 1}:Line' under the start node"
    assert all(s.value is None for t, s in got.items() if not s.good)


def test_polling_splits_reads_at_the_servers_max_nodes_per_read(plain: PlainServer) -> None:
    async def scenario() -> tuple[list[list[Sample]], list[int]]:
        tags = [{"name": c.lower(), "node": f"ns={plain.a};s={c}"} for c in COUNTERS]
        tags += [{"name": "temp", "path": "Line/Press/Temperature"}, {"name": "marker", "path": "Line/Press/Marker"}]
        dev = device(plain.url, tags, acquisition="polling", poll_interval_s=0.05)
        plain.read_sizes.clear()
        try:
            polls = [await dev.read_group(dev.groups[0], now) for _ in range(2)]
            polls.append(await dev.read(now))
        finally:
            await dev.close()
        return polls, list(plain.read_sizes)

    polls, sizes = asyncio.run(scenario())
    assert sizes == [3, 3, 1] * 3  # 7 tags, MaxNodesPerRead 3: three Reads per poll
    for samples in polls:
        assert [s.tag for s in samples] == [
            "counter0",
            "counter1",
            "counter2",
            "counter3",
            "counter4",
            "temp",
            "marker",
        ]
        assert all(s.good and s.source_time is not None for s in samples)
        assert [s.value for s in samples[:5]] == [0, 1, 2, 3, 4]


def test_watchdog_rebuilds_a_subscription_the_server_dropped(plain: PlainServer) -> None:
    async def scenario() -> tuple[list[dict[str, Sample]], int]:
        dev = device(
            plain.url, [{"name": "marker", "node": f"ns={plain.a};s=Marker"}], keepalive_count=3, lifetime_count=9
        )
        seen: list[dict[str, Sample]] = []
        try:
            plain.write("Marker", 7, ua.VariantType.Int32)
            await until(dev, lambda s: s["marker"].value == 7, seen)
            dropped = plain.drop_subscriptions()
            await until(dev, all_bad, seen)
            plain.write("Marker", 8, ua.VariantType.Int32)
            await until(dev, lambda s: s["marker"].value == 8, seen)
        finally:
            await dev.close()
        return seen, dropped

    seen, dropped = asyncio.run(scenario())
    assert dropped == 1
    bad = [s["marker"] for s in seen if not s["marker"].good]
    after_first_good = [s["marker"] for s in seen[next(i for i, s in enumerate(seen) if s["marker"].good) :]]
    gap = [s for s in after_first_good if not s.good]
    assert gap and all(s.value is None for s in bad)
    assert gap[0].reason is not None and gap[0].reason.endswith("(watchdog)")
    assert after_first_good[-1].good and after_first_good[-1].value == 8


# --- a simulator process: restarted, and stopped with SIGSTOP --------------------------------------------


class CncProcess:
    """`python -m simulators` serving only CNC-01 (one OPC UA server), restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        scenario = yaml.safe_load(demo_scenario_path().read_text(encoding="utf-8"))
        scenario["phases"]["baseline"]["exposed"] = ["CNC-01"]
        self.scenario = workdir / "one-cnc.yaml"
        self.scenario.write_text(yaml.safe_dump(scenario, allow_unicode=True), encoding="utf-8")
        self.port_base = free_port_block(2)
        self.url = f"opc.tcp://127.0.0.1:{self.port_base + 1}/"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "simulators", "--scenario", str(self.scenario), "--phase", "baseline"]
        cmd += ["--port-base", str(self.port_base), "--speed", "60"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith('{"ready": true')

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def cnc(tmp_path: Path) -> Iterator[CncProcess]:
    process = CncProcess(tmp_path)
    process.start()
    yield process
    process.signal(signal.SIGCONT)
    process.stop()


def phases(seen: list[dict[str, Sample]]) -> list[str]:
    """The run of states the agent saw, repeats collapsed: good, bad or mixed."""
    out: list[str] = []
    for samples in seen:
        state = "good" if all_good(samples) else "bad" if all_bad(samples) else "mixed"
        if not out or out[-1] != state:
            out.append(state)
    return out


def test_server_restart_and_silence_bad_then_recovered(cnc: CncProcess) -> None:
    async def scenario() -> dict[str, list[dict[str, Sample]]]:
        dev = device(
            cnc.url, [], model="umati_machinetool", machine_path="Machines/CNC-01", keepalive_count=5,
            lifetime_count=15, backoff_max_s=1.0,
        )  # fmt: skip
        runs: dict[str, list[dict[str, Sample]]] = {"restart": [], "silence": []}
        try:
            await until(dev, all_good)
            seen = runs["restart"]
            cnc.stop()
            await until(dev, all_bad, seen)
            cnc.start()  # the same port
            await until(dev, all_good, seen)
            seen = runs["silence"]
            cnc.signal(signal.SIGSTOP)
            await until(dev, all_bad, seen)
            cnc.signal(signal.SIGCONT)
            await until(dev, all_good, seen)
        finally:
            await dev.close()
        return runs

    runs = asyncio.run(scenario())
    for seen in runs.values():
        assert phases(seen)[-2:] == ["bad", "good"] and phases(seen)[0] in ("good", "bad")
        for samples in seen:
            if not all_good(samples):  # a gap is reported as bad, never filled with the last value
                assert all(s.value is None and s.reason for s in samples.values())
        assert seen[-1]["item_state"].value in (0, 1, 2, 3) and seen[-1]["parts"].source_time is not None
