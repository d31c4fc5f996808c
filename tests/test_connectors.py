"""Connectors against the simulator's real servers: good samples, then bad ones when the device
goes away (never the last value again), then recovery by themselves when it returns."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.modbus import ModbusDevice, ModbusDeviceConfig, ModbusLink
from connectors.opcua import OpcUaDevice, OpcUaDeviceConfig
from connectors.sample import Sample
from edgeproof.netutil import free_port_block, wait_port


def now() -> datetime:
    return datetime.now(UTC)


class Sim:
    def __init__(self) -> None:
        self.port_base = free_port_block(12)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators",
                "--phase",
                "baseline",
                "--port-base",
                str(self.port_base),
                "--speed",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith('{"ready": true')

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim()
    s.start()
    yield s
    s.stop()


def plc(port: int) -> ModbusDevice:
    config = ModbusDeviceConfig.model_validate(
        {
            "id": "plc-01",
            "protocol": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.5,
            "tags": [
                {"name": "run", "area": "holding", "address": 0},
                {"name": "parts", "area": "holding", "address": 3, "type": "uint32"},
                {"name": "power_kw", "area": "holding", "address": 7, "type": "float32"},
                {"name": "run_di", "area": "discrete", "address": 0, "type": "bool"},
            ],
        }
    )
    return ModbusDevice(config, ModbusLink(config))


def cnc(port: int) -> OpcUaDevice:
    ns = "ns=2;s=CNC-01/"
    return OpcUaDevice(
        OpcUaDeviceConfig.model_validate(
            {
                "id": "cnc-01",
                "protocol": "opcua",
                "url": f"opc.tcp://127.0.0.1:{port}/",
                "timeout_s": 1.0,
                "tags": [
                    {"name": "item_state", "node": ns + "Monitoring/MachineTool/MachineryItemState"},
                    {"name": "parts", "node": ns + "Production/PartsProduced"},
                    {"name": "missing", "node": ns + "No/Such/Node"},
                ],
            }
        )
    )


async def read_until(device: ModbusDevice | OpcUaDevice, good: bool, timeout_s: float = 20.0) -> list[Sample]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await device.read(now)
        if samples[0].good == good or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


def test_modbus_good_then_bad_then_recovers(sim: Sim) -> None:
    async def scenario() -> None:
        device = plc(sim.port_base + 5)  # PLC-01 is machine index 4
        first = await read_until(device, good=True)
        assert all(s.good for s in first)
        values = {s.tag: s.value for s in first}
        assert values["run"] in (0, 1) and values["run_di"] == bool(values["run"])
        assert isinstance(values["parts"], int) and values["parts"] >= 150000  # the scenario's counter start
        sim.stop()
        lost = await device.read(now)
        assert [s.good for s in lost] == [False] * 4
        assert all(s.value is None and s.reason for s in lost)  # no stale value re-sent as new
        sim.start()
        wait_port(sim.port_base + 5)
        back = await read_until(device, good=True)
        assert all(s.good for s in back) and back[1].value >= values["parts"]
        await device.close()

    asyncio.run(scenario())


def test_opcua_good_values_bad_node_and_lost_server(sim: Sim) -> None:
    async def scenario() -> None:
        device = cnc(sim.port_base + 1)
        first = await read_until(device, good=True)
        by_tag = {s.tag: s for s in first}
        assert by_tag["item_state"].good and by_tag["item_state"].value in (0, 1, 2, 3)
        assert by_tag["parts"].source_time is not None and by_tag["parts"].source_time.tzinfo is not None
        assert not by_tag["missing"].good and by_tag["missing"].reason == "status BadNodeIdUnknown"
        sim.stop()
        lost = await device.read(now)
        assert all(not s.good and s.value is None for s in lost)
        await device.close()

    asyncio.run(scenario())
