"""Run one phase of a scenario: the plant model, its ground-truth file and its protocol servers.

Ports: the IO gateway listens on port_base; the machine at 0-based index i of the scenario listens
on port_base + 1 + i (legacy machines take an index but no server of their own). Only machines
exposed in the phase are served; an unexposed one is simply not listening.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from edgeproof.clock import Clock, ClockSpec, ScaledClock
from simulators.modbus_server import PLC_DEVICE_ID, ModbusSimServer
from simulators.opcua_server import CncServer
from simulators.plant import build_plant
from simulators.scenario import Scenario
from simulators.truth import build_truth, write_truth

HOST = "127.0.0.1"


class _SimServer(Protocol):
    async def start(self) -> None: ...

    async def run_updates(self) -> None: ...

    async def stop(self) -> None: ...


def clock_spec(clock: Clock) -> ClockSpec:
    """The published description of a clock (real time when it is not a scaled clock)."""
    return clock.spec() if isinstance(clock, ScaledClock) else ClockSpec()


def machine_port(scenario: Scenario, machine_id: str, port_base: int) -> int:
    return port_base + 1 + [m.id for m in scenario.machines].index(machine_id)


async def run_plant(
    scenario: Scenario,
    phase: str,
    clock: Clock,
    port_base: int,
    truth_path: Path | None,
    on_ready: Callable[[dict[str, Any]], None] | None,
    stop: asyncio.Event,
    *,
    opcua_pki_dir: Path | None = None,
    opcua_users: Mapping[str, str] | None = None,
) -> None:
    """Serve the phase until `stop` is set; raises if a server cannot start or a refresh fails.

    opcua_pki_dir: the CNCs offer only signed and encrypted endpoints, each with its PKI in
    opcua_pki_dir/<machine id>/ (see CncServer). opcua_users: username -> password the CNCs require.
    """
    exposed = set(scenario.phase(phase).exposed)
    plants = build_plant(scenario, phase)
    interval = scenario.update_interval_s
    servers: list[_SimServer] = []
    endpoints: dict[str, dict[str, Any]] = {}
    io_units = {}
    for m in scenario.machines:
        if m.id not in exposed:
            continue
        if m.interface == "none":
            assert m.io_unit is not None
            io_units[m.io_unit] = plants[m.id]
            endpoints[m.id] = {"protocol": "modbus", "host": HOST, "port": port_base, "unit": m.io_unit}
            continue
        port = machine_port(scenario, m.id, port_base)
        if m.interface == "modbus":
            servers.append(ModbusSimServer("plc", {PLC_DEVICE_ID: plants[m.id]}, clock, HOST, port, interval))
            endpoints[m.id] = {"protocol": "modbus", "host": HOST, "port": port, "unit": PLC_DEVICE_ID}
        else:
            pki = opcua_pki_dir / m.id if opcua_pki_dir is not None else None
            servers.append(CncServer(plants[m.id], clock, HOST, port, interval, pki_dir=pki, users=opcua_users))
            endpoints[m.id] = {"protocol": "opcua", "host": HOST, "port": port, "url": f"opc.tcp://{HOST}:{port}/"}
            if pki is not None:
                # what an operator trusts on the agent side, and where the agent's certificate goes
                endpoints[m.id] |= {"certificate": str(pki / "own" / "cert.der"), "trusted": str(pki / "trusted")}
    if io_units:
        servers.append(ModbusSimServer("io", io_units, clock, HOST, port_base, interval))

    started: list[_SimServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
        if isinstance(clock, ScaledClock):
            clock.start()  # plant time starts once every server answers
        spec = clock_spec(clock)
        if truth_path is not None:
            write_truth(truth_path, build_truth(scenario, phase, plants, spec, port_base))
        if on_ready is not None:
            on_ready({"endpoints": endpoints, "clock": spec.model_dump(mode="json")})
        # A failing refresh loop cancels the group and surfaces here instead of serving stale values.
        async with asyncio.TaskGroup() as group:
            updaters = [group.create_task(s.run_updates()) for s in started]
            await stop.wait()
            for task in updaters:
                task.cancel()
    finally:
        # Concurrently: an asyncua server takes about a second to stop.
        await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)
