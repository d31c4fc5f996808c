"""The CNC OPC UA servers against a real asyncua client on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import Client, ua

from edgeproof.clock import ScaledClock
from simulators.opcua_server import NAMESPACE_URI, NODES, cnc_values
from simulators.plant import Interval, MachinePlant, Snapshot, State, build_plant
from simulators.runner import run_plant
from simulators.scenario import load_scenario
from tests.netutil import free_port_block

SPEED = 10.0
MARGIN_S = 120
CNCS = ["CNC-01", "CNC-02"]

# state -> (OperationMode, MachineryItemState, ActiveProgram/State, IsRotating, ActProgramStatus, ActOperationMode)
EXPECTED = {
    State.RUNNING: (1, 3, 1, True, 1, 2),
    State.IDLE: (1, 2, 2, False, 0, 2),
    State.MICRO_STOP: (1, 2, 2, False, 0, 2),  # served exactly like IDLE
    State.PLANNED_STOP: (1, 2, 2, False, 0, 2),
    State.SETUP: (2, 2, 3, False, 0, 0),
    State.FAULT: (1, 1, 4, False, 4, 2),
    State.NOT_SCHEDULED: (1, 0, 2, False, 0, 2),
}
SIGNALS = (
    "Monitoring/MachineTool/OperationMode",
    "Monitoring/MachineTool/MachineryItemState",
    "Production/ActiveProgram/State",
    "Monitoring/Spindle/IsRotating",
    "CncInterface/Channel1/ActProgramStatus",
    "CncInterface/Channel1/ActOperationMode",
)


@pytest.mark.parametrize("state", list(State))
def test_state_to_signal_mapping(state: State) -> None:
    code = 104 if state is State.FAULT else 0
    snap = Snapshot(datetime(2026, 1, 1, tzinfo=UTC), Interval(0, 60, state, code, "O1001"), 2**32 + 3, 7, 1.0)
    values = cnc_values(snap, 94.3)
    assert tuple(values[s] for s in SIGNALS) == EXPECTED[state]
    assert values["Monitoring/MachineTool/AlarmCode"] == code
    assert values["Monitoring/Spindle/IsUsedAsAxis"] is False
    assert (values["Production/PartsProduced"], values["Production/PartsRejected"]) == (3, 7)
    assert values["Production/ActiveProgram/Name"] == "O1001"
    assert values["Monitoring/Spindle/Override"] == 94.3


def _quiet_time(plants: dict[str, MachinePlant], start: datetime, end: datetime) -> datetime:
    """A time where neither CNC changes state for MARGIN_S either side, one running and one not."""
    t = start
    while t < end:
        ivs = [plants[m].interval_at(t) for m in CNCS]
        x = t.timestamp()
        if all(iv.start + MARGIN_S <= x <= iv.end - MARGIN_S for iv in ivs) and len({iv.state for iv in ivs}) == 2:
            return t
        t += timedelta(seconds=30)
    raise AssertionError("no quiet time in the window")


async def _read_cncs(port_base: int, origin: datetime) -> dict[str, Any]:
    scenario = load_scenario()
    clock = ScaledClock.starting_now(origin, SPEED)
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_plant(scenario, "baseline", clock, port_base, None, ready.set_result, stop))
    out: dict[str, Any] = {"clock": clock}
    try:
        out["ready"] = await asyncio.wait_for(ready, 30)
        for mid in CNCS:
            async with Client(out["ready"]["endpoints"][mid]["url"], timeout=5) as client:
                ns = await client.get_namespace_index(NAMESPACE_URI)
                before = clock.now()
                nodes = [client.get_node(f"ns=2;s={mid}/{path}") for path in NODES]
                values = await client.read_values(nodes)
                item = await client.get_node(
                    f"ns=2;s={mid}/Monitoring/MachineTool/MachineryItemState"
                ).read_data_value()
                browsed = await client.nodes.objects.get_child(
                    ["2:Machines", f"2:{mid}", "2:Monitoring", "2:MachineTool", "2:OperationMode"]
                )
                name = await browsed.read_browse_name()
                out[mid] = {
                    "ns": ns,
                    "values": dict(zip(NODES, values, strict=True)),
                    "span": (before, clock.now()),
                    "item_dv": item,
                    "browsed": (browsed.nodeid, name),
                }
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    return out


def test_cnc_servers_serve_the_model() -> None:
    scenario = load_scenario()
    plants = build_plant(scenario, "baseline")
    window = scenario.phases["baseline"].window
    origin = _quiet_time(plants, window.start, window.end)
    port_base = free_port_block(11)
    out = asyncio.run(_read_cncs(port_base, origin))

    assert out["ready"]["endpoints"]["CNC-02"] == {
        "protocol": "opcua", "host": "127.0.0.1", "port": port_base + 2, "url": f"opc.tcp://127.0.0.1:{port_base + 2}/"
    }  # fmt: skip
    for mid in CNCS:
        plant, got = plants[mid], out[mid]
        t0, t1 = got["span"]
        state = plant.state_at(t0)
        assert plant.state_at(t1) is state
        assert got["ns"] == 2
        assert got["browsed"] == (ua.NodeId(f"{mid}/Monitoring/MachineTool/OperationMode", 2),
                                  ua.QualifiedName("OperationMode", 2))  # fmt: skip
        v = got["values"]
        assert tuple(v[s] for s in SIGNALS) == EXPECTED[state]
        assert v["Monitoring/MachineTool/AlarmCode"] == plant.fault_code_at(t0)
        assert v["Monitoring/Spindle/IsUsedAsAxis"] is False
        assert v["Monitoring/Spindle/Override"] == round(100 / 1.18, 1)
        assert v["Production/ActiveProgram/Name"] == plant.program_at(t0)
        low = t0 - timedelta(seconds=1)
        assert plant.parts_at(low) <= v["Production/PartsProduced"] <= plant.parts_at(t1)
        assert plant.scrap_at(low) <= v["Production/PartsRejected"] <= plant.scrap_at(t1)
        ident = plant.machine.identification
        assert (v["Identification/Manufacturer"], v["Identification/Model"], v["Identification/SerialNumber"]) == (
            ident.manufacturer, ident.model, ident.serial_number
        )  # fmt: skip
        # Values carry plant time as source time: written at start-up or at the last change, never later.
        source = got["item_dv"].SourceTimestamp.replace(tzinfo=UTC)
        assert origin - timedelta(seconds=1) <= source <= t1
    states = {plants[m].state_at(out[m]["span"][0]) for m in CNCS}
    assert State.RUNNING in states and len(states) == 2
