"""Modbus TCP servers for the simulated plant: one per PLC, and one IO gateway for legacy machines.

Built on pymodbus' SimDevice/SimData datastore (the old ModbusDeviceContext and friends warn that
they go away in v4). Each device has the classic four separate tables, addressed from protocol
address 0. A background refresh writes the model's values at the current plant time through the
server's public `async_setValues`. Register maps: docs/simulators.md.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Literal

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgeproof.clock import Clock
from simulators.plant import MachinePlant, Snapshot, State

PLC_DEVICE_ID = 1
# Function codes only select the table to write: 2 discrete inputs, 3 holding, 4 input registers.
FC_DISCRETE_INPUTS = 2
FC_HOLDING = 3
FC_INPUT = 4

Write = tuple[int, int, list[int] | list[bool]]  # (function code, address, values)
_DT = ModbusClientMixin.DATATYPE


def _u32(value: int, word_order: Literal["big", "little"]) -> list[int]:
    return ModbusClientMixin.convert_to_registers(value % 2**32, _DT.UINT32, word_order=word_order)


def plc_holding(s: Snapshot) -> list[int]:
    """Holding 0 run, 1 fault code, 2 mode, 3-4 parts (uint32 ABCD), 5-6 scrap, 7-8 power kW (float32 ABCD),
    9-10 active energy in whole Wh (uint32 ABCD, as a meter's total register: exact where float32 kWh rounds)."""
    return [
        int(s.state is State.RUNNING),
        s.interval.fault_code,
        int(s.state is State.SETUP),
        *_u32(s.parts, "big"),
        *_u32(s.scrap, "big"),
        *ModbusClientMixin.convert_to_registers(s.power_kw, _DT.FLOAT32, word_order="big"),
        *_u32(meter_wh(s.energy_kwh), "big"),
    ]


def meter_wh(energy_kwh: float) -> int:
    """The energy register's reading: whole watt-hours, as a meter counts them (it never rounds up)."""
    return math.floor(energy_kwh * 1000)


def plc_discrete_inputs(s: Snapshot) -> list[bool]:
    """Discrete inputs 0 run, 1 fault active."""
    return [s.state is State.RUNNING, s.state is State.FAULT]


def io_discrete_inputs(s: Snapshot) -> list[bool]:
    """Discrete input 0 run: an IO module only sees run / not run (fault and setup look stopped)."""
    return [s.state is State.RUNNING]


def io_input_registers(s: Snapshot) -> list[int]:
    """Input 0 parts uint16 (wraps), 1-2 parts uint32 low word first (CDAB), 3 scrap uint16 (wraps)."""
    return [s.parts % 2**16, *_u32(s.parts, "little"), s.scrap % 2**16]


def _plc_writes(s: Snapshot) -> list[Write]:
    return [(FC_HOLDING, 0, plc_holding(s)), (FC_DISCRETE_INPUTS, 0, plc_discrete_inputs(s))]


def _io_writes(s: Snapshot) -> list[Write]:
    return [(FC_DISCRETE_INPUTS, 0, io_discrete_inputs(s)), (FC_INPUT, 0, io_input_registers(s))]


def _bits() -> list[SimData]:
    return [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]


def _registers(count: int) -> list[SimData]:
    return [SimData(address=0, count=count, values=0, datatype=DataType.REGISTERS)]


def _absent() -> list[SimData]:
    # pymodbus needs every table; an INVALID cell answers "illegal data address".
    return [SimData(address=0, datatype=DataType.INVALID)]


def _plc_device(device_id: int) -> SimDevice:
    # Tables in pymodbus order: coils (unused, read as 0), discrete inputs, holding, input (none).
    return SimDevice(id=device_id, simdata=(_bits(), _bits(), _registers(11), _absent()))


def _io_device(device_id: int) -> SimDevice:
    return SimDevice(id=device_id, simdata=(_bits(), _bits(), _absent(), _registers(4)))


async def _no_such_unit(
    _fc: int, _start: int, _address: int, _count: int, _regs: list[int], _values: list[int] | list[bool] | None
) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _unknown_units() -> SimDevice:
    """Device 0 catches every unit id not configured and answers exception 0x0B, as a gateway does.

    Without it pymodbus 3.16 fails the lookup with a KeyError and logs a traceback.
    """
    whole_range = SimData(address=0, count=65536, values=0, datatype=DataType.REGISTERS)
    return SimDevice(id=0, simdata=[whole_range], action=_no_such_unit)


class ModbusSimServer:
    """A Modbus TCP server whose devices mirror plant models; kind 'plc' or 'io' picks the map."""

    def __init__(
        self,
        kind: Literal["plc", "io"],
        devices: dict[int, MachinePlant],
        clock: Clock,
        host: str,
        port: int,
        update_interval_s: float = 0.02,
    ) -> None:
        self.kind = kind
        self.devices = devices
        self.clock = clock
        self.host = host
        self.port = port
        self.update_interval_s = update_interval_s
        self._encode: Callable[[Snapshot], list[Write]] = _plc_writes if kind == "plc" else _io_writes
        self._layout: Callable[[int], SimDevice] = _plc_device if kind == "plc" else _io_device
        self._server: ModbusTcpServer | None = None
        self._last: dict[int, Sequence[Write]] = {}

    async def start(self) -> None:
        self._server = ModbusTcpServer(
            [*(self._layout(unit) for unit in self.devices), _unknown_units()], address=(self.host, self.port)
        )
        await self.refresh()  # valid values before the first client can connect
        await self._server.serve_forever(background=True)

    async def refresh(self) -> None:
        assert self._server is not None
        now = self.clock.now()
        for unit, plant in self.devices.items():
            writes = self._encode(plant.snapshot(now))
            if writes == self._last.get(unit):
                continue
            # No await inside the datastore yields, so a request never sees half an update.
            for fc, address, values in writes:
                await self._server.async_setValues(unit, fc, address, values)
            self._last[unit] = writes

    async def run_updates(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            await self.refresh()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
