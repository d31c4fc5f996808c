"""A Modbus link: one TCP connection or serial port, shared by every unit behind it.

Only one transaction is on the wire at a time (serial lines and most serial servers cannot do
more), with an optional pause before each request for slow devices. Errors come back typed, so
the device can tell "the unit refused" from "nobody answered".
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse

from connectors.modbus.config import Area, ModbusDeviceConfig
from connectors.modbus.responses import READ_RESPONSES, bits_of, registers_format

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusRefused(Exception):
    """The unit answered with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception 0x{code:02X} {EXCEPTION_NAMES.get(code, 'unknown')}")

    @property
    def unit_absent(self) -> bool:
        """The gateway says the unit behind it does not answer."""
        return self.code in (10, 11)


class NoAnswer(Exception):
    """Timeout, broken connection or a frame that could not be decoded."""


class Answer(NamedTuple):
    """One read's data bytes as received: registers big-endian, or bits least significant first."""

    raw: bytes
    count: int
    bits: bool

    def words(self) -> list[int]:
        """The registers, or the bits as 0/1."""
        if self.bits:
            return bits_of(self.raw, self.count)
        return list(registers_format(self.count).unpack(self.raw))


class ModbusLink:
    def __init__(self, settings: ModbusDeviceConfig) -> None:
        self.settings = settings
        self.key = settings.link_key
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._last_request = 0.0
        self.requests = 0

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        client = self._client_for_transport()
        for response in READ_RESPONSES:
            client.register(response)
        return client

    def _client_for_transport(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.settings
        common = {"timeout": s.timeout_s, "retries": s.retries, "reconnect_delay": 0}
        if s.transport == "rtu":
            assert s.serial_port is not None
            return AsyncModbusSerialClient(
                s.serial_port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                **common,  # type: ignore[arg-type]
            )
        framer = FramerType.RTU if s.transport == "rtu_over_tcp" else FramerType.SOCKET
        assert s.host is not None
        return AsyncModbusTcpClient(s.host, port=s.port, framer=framer, **common)  # type: ignore[arg-type]

    async def _connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        client = self._new_client()
        if not await client.connect():
            client.close()
            raise NoAnswer(f"cannot connect to {self.key[1]}")
        self._client = client
        return client

    async def read(self, unit: int, area: Area, start: int, count: int) -> list[int]:
        """Registers (or bits as 0/1) of one read; raises ModbusRefused or NoAnswer."""
        return (await self.read_answer(unit, area, start, count)).words()

    async def read_answer(self, unit: int, area: Area, start: int, count: int) -> Answer:
        """One read's answer, undecoded; raises ModbusRefused or NoAnswer."""
        async with self._lock:
            wait = self.settings.request_delay_s - (time.monotonic() - self._last_request)
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                client = self._client
                if client is None or not client.connected:
                    client = await self._connected()
                self.requests += 1
                if area == "holding":
                    rr = await client.read_holding_registers(start, count=count, device_id=unit)
                elif area == "input":
                    rr = await client.read_input_registers(start, count=count, device_id=unit)
                elif area == "coil":
                    rr = await client.read_coils(start, count=count, device_id=unit)
                else:
                    rr = await client.read_discrete_inputs(start, count=count, device_id=unit)
            except (ConnectionException, ModbusIOException, OSError, TimeoutError) as e:
                if self._client is not None and not self._client.connected:
                    self.close()
                raise NoAnswer(str(e).strip() or type(e).__name__) from e
            except ModbusException as e:  # garbage frame or other protocol error
                raise NoAnswer(f"bad response: {e}") from e
            finally:
                self._last_request = time.monotonic()
        if isinstance(rr, ExceptionResponse) or rr.isError():
            raise ModbusRefused(int(getattr(rr, "exception_code", 4)))
        bits = area in ("coil", "discrete")
        raw: bytes = getattr(rr, "raw", b"")  # our registered responses keep the bytes (responses.py)
        have = 8 * len(raw) if bits else len(raw) // 2
        if have < count:
            raise NoAnswer(f"short response: {have} of {count}")
        return Answer(raw if bits else raw[: 2 * count], count, bits)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
