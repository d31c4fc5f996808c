"""The Modbus servers against a real pymodbus client on loopback, decoded by hand with struct."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from edgeproof.clock import ScaledClock
from simulators.modbus_server import io_input_registers, plc_holding
from simulators.plant import Interval, MachinePlant, Snapshot, State, build_plant
from simulators.runner import run_plant
from simulators.scenario import Scenario, load_scenario
from tests.netutil import free_port_block

SPEED = 10.0  # plant seconds per wall second
MARGIN_S = 120  # plant seconds between the chosen time and any state change of the machines read
MODBUS = ["PLC-01", "PLC-02", "PLC-03", "LEG-01", "LEG-02", "LEG-03"]


def _snap(state: State, parts: int, scrap: int, power: float, code: int = 0, energy: float = 0.0) -> Snapshot:
    return Snapshot(datetime(2026, 1, 1, tzinfo=UTC), Interval(0, 60, state, code, "P"), parts, scrap, power, energy)


def test_plc_register_encoding() -> None:
    # 0x0002_0003 Wh and nine tenths of one: the meter shows the whole watt-hours, never rounded up
    regs = plc_holding(_snap(State.FAULT, 2**32 + 0x00010002, 0x12345678, 45.5, code=103, energy=131.0759))
    power = struct.unpack(">2H", struct.pack(">f", 45.5))
    assert regs == [0, 103, 0, 0x0001, 0x0002, 0x1234, 0x5678, *power, 0x0002, 0x0003]
    assert plc_holding(_snap(State.SETUP, 7, 0, 0.0))[:5] == [0, 0, 1, 0, 7]
    assert plc_holding(_snap(State.RUNNING, 7, 0, 0.0))[:3] == [1, 0, 0]


def test_io_register_encoding() -> None:
    # parts 0x0001_0005: uint16 wraps to 5; uint32 low word first (CDAB); scrap uint16 wraps.
    assert io_input_registers(_snap(State.RUNNING, 0x00010005, 65536 + 9, 1.0)) == [5, 0x0005, 0x0001, 9]


def _quiet_time(plants: dict[str, MachinePlant], ids: list[str], start: datetime, end: datetime) -> datetime:
    """A plant time inside the window where none of `ids` changes state for MARGIN_S either side,
    after the 16- and 32-bit counters have wrapped, with at least one of them running and one stopped."""
    t = start
    while t < end:
        ivs = [plants[m].interval_at(t) for m in ids]
        x = t.timestamp()
        quiet = all(iv.start + MARGIN_S <= x <= iv.end - MARGIN_S for iv in ivs)
        wrapped = plants["LEG-02"].parts_at(t) >= 2**16 and plants["PLC-03"].parts_at(t) >= 2**32
        states = {iv.state for iv in ivs}
        if quiet and wrapped and State.RUNNING in states and len(states) > 1:
            return t
        t += timedelta(seconds=30)
    raise AssertionError("no quiet time in the window")


def _modbus_only(scenario: Scenario) -> Scenario:
    # Same plant; serve only the Modbus machines so the test does not pay for OPC UA servers.
    post = scenario.phases["post"].model_copy(update={"exposed": MODBUS})
    return scenario.model_copy(update={"phases": {**scenario.phases, "post": post}})


async def _read_plant(port_base: int, origin: datetime) -> dict[str, Any]:
    scenario = _modbus_only(load_scenario())
    plants = build_plant(scenario, "post")
    clock = ScaledClock.starting_now(origin, SPEED)
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_plant(scenario, "post", clock, port_base, None, ready.set_result, stop))
    out: dict[str, Any] = {"clock": clock, "plants": plants}
    try:
        out["ready"] = await asyncio.wait_for(ready, 20)
        for mid in MODBUS:
            ep = out["ready"]["endpoints"][mid]
            client = AsyncModbusTcpClient(ep["host"], port=ep["port"], timeout=5, retries=0)
            assert await client.connect()
            try:
                before = clock.now()
                if mid.startswith("PLC"):
                    hr = await client.read_holding_registers(0, count=11, device_id=ep["unit"])
                    di = await client.read_discrete_inputs(0, count=2, device_id=ep["unit"])
                    out[mid] = {"hr": hr.registers, "di": di.bits[:2]}
                else:
                    ir = await client.read_input_registers(0, count=4, device_id=ep["unit"])
                    di = await client.read_discrete_inputs(0, count=1, device_id=ep["unit"])
                    out[mid] = {"ir": ir.registers, "di": di.bits[:1]}
                out[mid]["span"] = (before, clock.now())
                if mid == "LEG-01":
                    out["unknown_unit"] = await client.read_input_registers(0, count=1, device_id=9)
                    out["holding_on_io"] = await client.read_holding_registers(0, count=1, device_id=1)
            finally:
                client.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return out


def test_plc_and_io_gateway_serve_the_model() -> None:
    scenario = load_scenario()
    window = scenario.phases["post"].window
    origin = _quiet_time(build_plant(scenario, "post"), MODBUS, window.start, window.end)
    port_base = free_port_block(11)
    out = asyncio.run(_read_plant(port_base, origin))
    plants: dict[str, MachinePlant] = out["plants"]

    endpoints = out["ready"]["endpoints"]
    assert endpoints["PLC-01"] == {"protocol": "modbus", "host": "127.0.0.1", "port": port_base + 5, "unit": 1}
    assert endpoints["PLC-03"]["port"] == port_base + 7
    assert endpoints["LEG-02"] == {"protocol": "modbus", "host": "127.0.0.1", "port": port_base, "unit": 2}
    assert set(endpoints) == set(MODBUS)
    assert out["ready"]["clock"]["speed"] == SPEED

    for mid in MODBUS:
        plant, values = plants[mid], out[mid]
        t0, t1 = values["span"]
        state = plant.state_at(t0)
        assert plant.state_at(t1) is state  # the margin keeps the read well inside one interval
        # The refresh runs every 20 ms wall (0.2 plant s here): allow one plant second before the read.
        low, high = t0 - timedelta(seconds=1), t1
        if mid.startswith("PLC"):
            run, code, mode, p_hi, p_lo, s_hi, s_lo, w_hi, w_lo, e_hi, e_lo = values["hr"]
            assert run == (state is State.RUNNING)
            assert code == plant.fault_code_at(t0) and (code != 0) == (state is State.FAULT)
            assert mode == (state is State.SETUP)
            parts, scrap = (p_hi << 16) | p_lo, (s_hi << 16) | s_lo
            assert plant.parts_at(low) % 2**32 <= parts <= plant.parts_at(high) % 2**32
            assert plant.scrap_at(low) % 2**32 <= scrap <= plant.scrap_at(high) % 2**32
            (power,) = struct.unpack(">f", struct.pack(">HH", w_hi, w_lo))
            assert abs(power - plant.power_kw_at(t0)) < 1e-3 * plant.machine.rated_kw
            wh = (e_hi << 16) | e_lo  # the meter: whole Wh of the power model's integral
            assert int(plant.energy_kwh_at(low) * 1000) <= wh <= int(plant.energy_kwh_at(high) * 1000)
            assert wh > 0
            assert values["di"] == [state is State.RUNNING, state is State.FAULT]
        else:
            p16, c_lo, c_hi, s16 = values["ir"]
            parts32 = struct.unpack(">I", struct.pack(">HH", c_hi, c_lo))[0]  # CDAB: low word first
            assert plant.parts_at(low) % 2**32 <= parts32 <= plant.parts_at(high) % 2**32
            assert p16 == parts32 % 2**16
            assert plant.scrap_at(low) % 2**16 <= s16 <= plant.scrap_at(high) % 2**16
            assert values["di"] == [state is State.RUNNING]

    # The chosen time is after both wraps: the registers show the wrapped values.
    assert plants["LEG-02"].parts_at(origin) >= 2**16 and out["LEG-02"]["ir"][0] < 1000
    p_hi, p_lo = out["PLC-03"]["hr"][3:5]
    assert plants["PLC-03"].parts_at(origin) >= 2**32 and p_hi == 0 and p_lo < 1000
    # An IO gateway answers 0x0B for a unit it does not have, and 0x02 for the table an IO module lacks.
    assert out["unknown_unit"].isError() and out["unknown_unit"].exception_code == 0x0B
    assert out["holding_on_io"].isError() and out["holding_on_io"].exception_code == 0x02
