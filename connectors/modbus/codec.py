"""Modbus register codec: 16-bit words as read off the wire ↔ typed values.

Byte order names follow the usual gateway convention for a 32-bit value whose bytes are A B C D
from most to least significant: ABCD (big-endian), CDAB (word swap), BADC (byte swap), DCBA
(little-endian). The same two switches (word order, byte order within a word) apply to 16- and
64-bit values: ABCD for a 64-bit value is ABCDEFGH, CDAB is GHEFCDAB, BADC is BADCFEHG and DCBA is
HGFEDCBA.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Literal

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "string"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
StringOrder = Literal["AB", "BA"]
BYTE_ORDERS: tuple[ByteOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
NUMERIC_TYPES: tuple[DataType, ...] = (
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
)
_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float16": ">e",
    "float32": ">f",
    "float64": ">d",
}
WIDTH: dict[str, int] = {name: struct.calcsize(fmt) // 2 for name, fmt in _STRUCT.items()} | {"bool": 1}


class DecodeError(ValueError):
    """The registers cannot hold a value of the requested type (wrong count, bad text)."""


def _words_swapped(order: ByteOrder) -> bool:
    return order in ("CDAB", "DCBA")


def _bytes_swapped(order: ByteOrder) -> bool:
    return order in ("BADC", "DCBA")


def words_to_bytes(words: list[int], order: ByteOrder) -> bytes:
    """The value's bytes, most significant first, from registers in the device's order."""
    seq = reversed(words) if _words_swapped(order) else words
    swap = _bytes_swapped(order)
    return b"".join(w.to_bytes(2, "big")[::-1] if swap else w.to_bytes(2, "big") for w in seq)


def bytes_to_words(data: bytes, order: ByteOrder) -> list[int]:
    """Inverse of words_to_bytes."""
    swap = _bytes_swapped(order)
    words = [int.from_bytes(data[i : i + 2][::-1] if swap else data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if _words_swapped(order) else words


def decode_number(words: list[int], data_type: DataType, order: ByteOrder = "ABCD") -> int | float:
    if data_type not in _STRUCT:
        raise DecodeError(f"{data_type} is not a numeric type")
    if len(words) != WIDTH[data_type]:
        raise DecodeError(f"{data_type} needs {WIDTH[data_type]} registers, got {len(words)}")
    return struct.unpack(_STRUCT[data_type], words_to_bytes(words, order))[0]  # type: ignore[no-any-return]


def encode_number(value: int | float, data_type: DataType, order: ByteOrder = "ABCD") -> list[int]:
    return bytes_to_words(struct.pack(_STRUCT[data_type], value), order)


def decode_string(words: list[int], order: StringOrder = "AB", encoding: str = "ascii") -> str:
    """Text packed two bytes per register; trailing NULs and spaces are padding."""
    data = b"".join(w.to_bytes(2, "big") if order == "AB" else w.to_bytes(2, "little") for w in words)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DecodeError(f"not {encoding} text: {data!r}") from e
    return text.rstrip("\x00 ")  # after decoding, so a UTF-16 code unit is never split


def encode_string(text: str, registers: int, order: StringOrder = "AB", encoding: str = "ascii") -> list[int]:
    data = text.encode(encoding).ljust(registers * 2, b"\x00")[: registers * 2]
    return [int.from_bytes(data[i : i + 2], "big" if order == "AB" else "little") for i in range(0, len(data), 2)]


def decode_bit(word: int, bit: int) -> bool:
    """Bit `bit` of a register, 0 = least significant."""
    return bool((word >> bit) & 1)


def compile_bit_decoder(word_offset: int, bit: int) -> Callable[[bytes], bool]:
    """Bit `bit` (0 = least significant) of the register at `word_offset` in a read's raw bytes."""
    index = 2 * word_offset + (0 if bit >= 8 else 1)  # big-endian: the high byte travels first
    mask = 1 << (bit % 8)
    return lambda raw: bool(raw[index] & mask)


def compile_number_decoder(data_type: DataType, order: ByteOrder, word_offset: int) -> Callable[[bytes], int | float]:
    """A fast decoder of one value at `word_offset` inside a read's raw big-endian register bytes.

    Equivalent to decode_number on that slice of registers (a property test checks it), but the
    byte shuffle is worked out once, when the poll is planned, instead of on every sample.
    """
    fmt = _STRUCT[data_type]
    nbytes = 2 * WIDTH[data_type]
    start = 2 * word_offset
    if order == "ABCD":
        big = struct.Struct(fmt)
        return lambda raw: big.unpack_from(raw, start)[0]  # type: ignore[no-any-return]
    if order == "DCBA":  # the wire bytes are the value little-endian
        little = struct.Struct("<" + fmt[1:])
        return lambda raw: little.unpack_from(raw, start)[0]  # type: ignore[no-any-return]
    # CDAB / BADC: value byte i travels at wire position wire.index(i)
    positions = bytes_to_words(bytes(range(nbytes)), order)
    wire = b"".join(w.to_bytes(2, "big") for w in positions)
    source = [start + wire.index(i) for i in range(nbytes)]
    pick = itemgetter(*source)
    big = struct.Struct(fmt)
    return lambda raw: big.unpack(bytes(pick(raw)))[0]  # type: ignore[no-any-return]


NumberField = tuple[DataType, ByteOrder, int]  # type, byte order, word offset inside a read


def compile_block_decoder(fields: list[NumberField]) -> tuple[list[int], Callable[[bytes], list[int | float]]]:
    """Decode many numbers of one read's raw bytes with at most two struct calls.

    Returns the indexes (into `fields`) it takes and a function giving their values in that order.
    It takes the fields a struct format can express (big- or little-endian; every 16-bit order)
    that do not overlap; the rest, such as word-swapped 32/64-bit values, are left to
    compile_number_decoder. A property test checks it against decode_number.
    """
    by_endian: dict[str, list[tuple[int, int, DataType]]] = {">": [], "<": []}
    for index, (data_type, order, offset) in enumerate(fields):
        if data_type not in _STRUCT:
            continue
        if WIDTH[data_type] == 1:
            endian = "<" if _bytes_swapped(order) else ">"
        elif order in ("ABCD", "DCBA"):
            endian = ">" if order == "ABCD" else "<"
        else:
            continue
        by_endian[endian].append((offset, index, data_type))
    taken: list[int] = []
    structs: list[struct.Struct] = []
    for endian, items in by_endian.items():
        fmt, end, chosen = [], 0, []
        for offset, index, data_type in sorted(items):
            if offset < end:  # overlaps the previous field: decoded on its own
                continue
            if offset > end:
                fmt.append(f"{2 * (offset - end)}x")
            fmt.append(_STRUCT[data_type][1])
            end = offset + WIDTH[data_type]
            chosen.append(index)
        if chosen:
            structs.append(struct.Struct(endian + "".join(fmt)))
            taken += chosen
    if not structs:
        return [], lambda raw: []
    if len(structs) == 1:
        only = structs[0]
        return taken, lambda raw: list(only.unpack_from(raw))
    first, second = structs
    return taken, lambda raw: [*first.unpack_from(raw), *second.unpack_from(raw)]
