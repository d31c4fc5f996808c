"""Modbus links as plant floors have them: shared by many units, with units that are silent,
garbled or picky, and RTU over a real serial line (a pseudo-terminal pair made by socat)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.modbus import ModbusDevice, ModbusDeviceConfig, ModbusLink
from connectors.modbus.planner import requests_per_cycle
from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edgeproof.clock import WallClock
from edgeproof.netutil import free_port, free_port_block
from tests.misbehaving_modbus import Behaviour, MisbehavingServer
from tests.netutil import start_simulator


def now() -> datetime:
    return datetime.now(UTC)


def device_config(unit: int, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"u{unit}",
        "protocol": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "unit": unit,
        "timeout_s": 0.2,
        "poll_interval_s": 0.1,
        "tags": [{"name": "a", "area": "holding", "address": 0}, {"name": "b", "area": "holding", "address": 1}],
    } | extra


def run_agent(port: int, units: list[int], tmp_path: Path, seconds: float, **device: Any) -> dict[str, int]:
    config = AgentConfig.model_validate(
        {
            "agent": {"id": "links", "data_dir": str(tmp_path / f"agent-{time.monotonic_ns()}")},
            "site": {"firm": {"name": "F"}, "name": "S"},
            "machines": [],
            "devices": [device_config(u, port, **device) for u in units],
            "mqtt": {"port": free_port()},  # nothing listens: messages stay in the outbox
        }
    )
    agent = Agent(config, WallClock())

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await agent.run(stop, drain_timeout_s=0.1)

    asyncio.run(main())
    return dict(agent.good_samples)


def test_a_silent_unit_does_not_starve_the_others_on_its_link(tmp_path: Path) -> None:
    units = [1, 2, 3, 4, 5]
    with MisbehavingServer(dict.fromkeys(units, "ok")).running() as healthy:
        reference = run_agent(healthy.port, units, tmp_path, 4.0)
    behaviour: dict[int, Behaviour] = {u: "silent" if u == 3 else "ok" for u in units}
    with MisbehavingServer(behaviour).running() as server:
        with_dead = run_agent(server.port, units, tmp_path, 4.0)
        dead_requests = server.requests[3]
    assert with_dead.get("u3", 0) == 0
    # backed off (1 s, 2 s, ...): a handful of 0.2 s timeouts in 4 s, not one every 0.1 s poll
    assert 1 <= dead_requests <= 4
    for unit in ("u1", "u2", "u4", "u5"):
        assert reference[unit] >= 40, reference  # 2 tags x ~10 polls/s x 4 s, minus start-up
        assert with_dead[unit] >= 0.7 * reference[unit], (unit, with_dead, reference)


def test_unit_missing_behind_the_simulators_io_gateway_does_not_slow_the_others(tmp_path: Path) -> None:
    """The post-retrofit plant's IO gateway serves units 1-3; unit 9 is configured but absent, and
    the gateway answers 0x0B (target device failed to respond) for it."""
    port_base = free_port_block(12)
    sim = start_simulator("post", port_base)
    try:
        io_tags = {
            "tags": [
                {"name": "parts", "area": "input", "address": 0},
                {"name": "run", "area": "discrete", "address": 0, "type": "bool"},
            ]
        }
        reference = run_agent(port_base, [1, 2, 3], tmp_path, 3.0, **io_tags)
        with_absent = run_agent(port_base, [1, 2, 3, 9], tmp_path, 3.0, **io_tags)
    finally:
        sim.terminate()
        sim.wait(20)
    assert with_absent.get("u9", 0) == 0
    for unit in ("u1", "u2", "u3"):
        assert reference[unit] >= 30, reference  # 2 tags x ~10 polls/s x 3 s, minus start-up
        assert with_absent[unit] >= 0.8 * reference[unit], (unit, with_absent, reference)


def test_garbage_frames_are_bad_quality_and_the_link_recovers() -> None:
    async def scenario(port: int) -> None:
        base = ModbusDeviceConfig.model_validate(device_config(2, port))
        link = ModbusLink(base)
        garbled = ModbusDevice(base, link)
        healthy = ModbusDevice(ModbusDeviceConfig.model_validate(device_config(1, port)), link)
        bad = await garbled.read(now)
        assert [s.good for s in bad] == [False, False]
        assert all(s.value is None and s.reason and s.reason.startswith("no answer") for s in bad)
        good = await healthy.read(now)
        for _ in range(20):  # the garbage may cost the connection; the link reconnects by itself
            if all(s.good for s in good):
                break
            await asyncio.sleep(0.1)
            good = await healthy.read(now)
        assert [(s.tag, s.value) for s in good] == [("a", 1000), ("b", 1001)]
        link.close()

    with MisbehavingServer({1: "ok", 2: "garbage"}).running() as server:
        asyncio.run(scenario(server.port))


def test_unit_refusing_merged_reads_falls_back_to_one_request_per_tag() -> None:
    async def scenario(port: int) -> None:
        tags = [{"name": f"t{a}", "area": "holding", "address": a} for a in (0, 1, 5)]
        config = ModbusDeviceConfig.model_validate(device_config(7, port, tags=tags))
        device = ModbusDevice(config, ModbusLink(config))
        assert requests_per_cycle(device.groups) == 1
        planned_first = device.groups[0]  # the agent's poll task keeps the group it started with
        samples = await device.read_group(planned_first, now)
        assert [(s.tag, s.value, s.good) for s in samples] == [
            ("t0", 7000, True),
            ("t1", 7001, True),
            ("t5", 7005, True),
        ]
        # first only the gap-spanning read goes: t0+t1 stay merged, t5 alone
        assert not device.per_tag and requests_per_cycle(device.groups) == 2
        again = await device.read_group(planned_first, now)
        assert [(s.tag, s.value, s.good) for s in again] == [("t0", 7000, True), ("t1", 7001, True), ("t5", 7005, True)]
        # the unit refuses even adjacent tags: one request per tag from now on
        assert device.per_tag and requests_per_cycle(device.groups) == 3
        before = device.link.requests
        third = await device.read_group(planned_first, now)
        assert all(s.good for s in third)
        assert device.link.requests - before == 3  # the new plan is used, not the refused merged read
        await device.close()

    with MisbehavingServer({7: "short_reads_only"}).running() as server:
        asyncio.run(scenario(server.port))


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed (Debian package 'socat'; .ci/run installs it)")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(5)


def test_rtu_over_a_serial_line(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    registers = [SimData(address=0, count=10, values=0, datatype=DataType.REGISTERS)]
    bits = [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]

    async def scenario() -> None:
        server = ModbusSerialServer(
            [SimDevice(id=5, simdata=(bits, bits, registers, registers))],
            framer=FramerType.RTU,
            port=server_end,
            baudrate=19200,
        )
        await server.serve_forever(background=True)
        await server.async_setValues(5, 3, 0, [0x4148, 0x0000, 321])  # float32 12.5, then a counter
        config = ModbusDeviceConfig.model_validate(
            {
                "id": "rtu",
                "protocol": "modbus",
                "transport": "rtu",
                "serial_port": client_end,
                "baudrate": 19200,
                "unit": 5,
                "timeout_s": 1.0,
                "tags": [
                    {"name": "temp", "area": "holding", "address": 0, "type": "float32"},
                    {"name": "count", "area": "holding", "address": 2},
                ],
            }
        )
        device = ModbusDevice(config, ModbusLink(config))
        samples = []
        for _ in range(10):  # the server's port opens asynchronously
            samples = await device.read(now)
            if all(s.good for s in samples):
                break
            await asyncio.sleep(0.3)
        assert [(s.tag, s.value, s.good) for s in samples] == [("temp", 12.5, True), ("count", 321, True)]
        await device.close()
        await server.shutdown()

    asyncio.run(scenario())


def test_read_answers_keep_their_bytes_and_describe_themselves_briefly() -> None:
    from connectors.modbus.link import Answer
    from connectors.modbus.responses import Coils, HoldingRegisters, InputRegisters

    answer = HoldingRegisters()
    answer.decode(bytes([6, 0x12, 0x34, 0xAB, 0xCD, 0x00, 0x01]))
    assert answer.raw == bytes([0x12, 0x34, 0xAB, 0xCD, 0x00, 0x01])
    assert Answer(answer.raw, 3, False).words() == [0x1234, 0xABCD, 1]
    assert str(answer) == "HoldingRegisters"  # never every register as text, on every response
    odd = InputRegisters()
    odd.decode(bytes([3, 0x00, 0x07, 0x09]))  # a garbled byte count: a short answer, not a crash
    assert odd.raw == b"\x00\x07"
    bits = Coils()
    bits.decode(bytes([2, 0b0000_0101, 0b1000_0000]))
    assert Answer(bits.raw, 16, True).words() == [1, 0, 1] + [0] * 12 + [1]
    assert Answer(bits.raw, 3, True).words() == [1, 0, 1]


def test_a_link_hands_over_each_answer_as_received() -> None:
    async def main(port: int) -> None:
        link = ModbusLink(ModbusDeviceConfig.model_validate(device_config(1, port)))
        try:
            registers = await link.read_answer(1, "holding", 0, 4)
            words = await link.read(1, "holding", 0, 4)
            bits = await link.read(1, "coil", 0, 3)
        finally:
            link.close()
        assert registers.raw == b"".join(w.to_bytes(2, "big") for w in words)
        assert (registers.count, len(registers.raw), len(bits)) == (4, 8, 3)

    with MisbehavingServer({1: "ok"}).running() as server:
        asyncio.run(main(server.port))
