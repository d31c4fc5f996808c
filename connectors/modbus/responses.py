"""Read responses decoded in one step; registered on every pymodbus client the links open.

Stock pymodbus 3.16 decodes a register response with one struct call per register, and formats
the whole PDU, every register included, as text for a debug line even when debug logging is off
(pdu/decoders.py); bits become a list of booleans first. At thousands of responses per second
that costs more than all of the agent's own decoding. These subclasses, installed through
pymodbus's documented `client.register()` extension point on the links' own clients, only keep
the answer's data bytes (`raw`), which the device decodes straight into tag values, and describe
themselves briefly. They leave `registers` and `bits` empty: use `answer_words` when the
individual words are needed.
"""

from __future__ import annotations

import struct
from functools import cache

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse


@cache
def registers_format(count: int) -> struct.Struct:
    """`count` big-endian registers, as they travel on the wire."""
    return struct.Struct(f">{count}H")


def _data(data: bytes) -> bytes:
    size = data[0]
    if size >= len(data):
        raise ModbusIOException(f"byte_count {size} > length of packet {len(data)}")
    return data[1 : 1 + size]


def bits_of(raw: bytes, count: int) -> list[int]:
    """The first `count` bits of a coil or discrete-input answer, as 0/1 (LSB of byte 0 first)."""
    value = int.from_bytes(raw, "little")
    return [value >> i & 1 for i in range(count)]


class _Registers(ReadHoldingRegistersResponse):
    raw: bytes = b""

    def decode(self, data: bytes) -> None:
        raw = _data(data)
        self.raw = raw[: len(raw) & ~1]  # an odd byte count leaves a short answer, which the link reports

    def __str__(self) -> str:
        return type(self).__name__


class HoldingRegisters(_Registers):
    function_code = 3


class InputRegisters(_Registers):
    function_code = 4


class _Bits(ReadCoilsResponse):
    raw: bytes = b""

    def decode(self, data: bytes) -> None:
        self.raw = _data(data)

    def __str__(self) -> str:
        return type(self).__name__


class Coils(_Bits):
    function_code = 1


class DiscreteInputs(_Bits):
    function_code = 2


READ_RESPONSES: tuple[type[ModbusPDU], ...] = (Coils, DiscreteInputs, HoldingRegisters, InputRegisters)
