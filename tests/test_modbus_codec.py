"""Modbus register codec: golden vectors written from first principles, plus round-trip properties.

Every expected value below was derived by hand from the bytes (two's complement for integers, the
IEEE 754 bit layout for floats), never by running struct or the code under test. Byte letters: a
value's bytes from most to least significant are A B C D (E F G H for 64-bit). On the wire:

    32-bit  ABCD -> [AB, CD]   CDAB -> [CD, AB]   BADC -> [BA, DC]   DCBA -> [DC, BA]
    64-bit  ABCD -> [AB, CD, EF, GH]   CDAB -> [GH, EF, CD, AB]
            BADC -> [BA, DC, FE, HG]   DCBA -> [HG, FE, DC, BA]
    16-bit  ABCD / CDAB -> [AB]        BADC / DCBA -> [BA]
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.modbus.codec import (
    BYTE_ORDERS,
    NUMERIC_TYPES,
    WIDTH,
    DecodeError,
    bytes_to_words,
    compile_block_decoder,
    compile_number_decoder,
    decode_bit,
    decode_number,
    decode_string,
    encode_number,
    encode_string,
    words_to_bytes,
)
from connectors.modbus.config import ModbusDeviceConfig
from connectors.modbus.device import ModbusDevice
from connectors.modbus.link import ModbusLink

# (type, order, words off the wire, expected value, what the vector shows)
GOLDEN: list[tuple[str, str, list[int], int | float, str]] = [
    # int16: one word; BADC/DCBA swap its bytes.
    ("int16", "ABCD", [0x8000], -32768, "min"),
    ("int16", "ABCD", [0x7FFF], 32767, "max"),
    ("int16", "ABCD", [0x1234], 4660, "0x1234"),
    ("int16", "CDAB", [0xFFFF], -1, "minus-one"),
    ("int16", "CDAB", [0xFF85], -123, "minus-123"),  # 0x10000 - 0xFF85 = 0x7B = 123
    ("int16", "BADC", [0x0080], -32768, "min"),
    ("int16", "BADC", [0x3412], 4660, "0x1234"),
    ("int16", "DCBA", [0x85FF], -123, "minus-123"),
    ("int16", "DCBA", [0xFF7F], 32767, "max"),
    # uint16
    ("uint16", "ABCD", [0xFFFF], 65535, "max"),
    ("uint16", "ABCD", [0x1234], 4660, "0x1234"),
    ("uint16", "CDAB", [0x8000], 32768, "top-bit"),
    ("uint16", "BADC", [0x3412], 4660, "0x1234"),
    ("uint16", "DCBA", [0x0100], 1, "one"),
    ("uint16", "DCBA", [0x0000], 0, "zero"),
    # int32: bytes 11 22 33 44 = 0x11223344 = 287454020
    ("int32", "ABCD", [0x1122, 0x3344], 287454020, "0x11223344"),
    ("int32", "CDAB", [0x3344, 0x1122], 287454020, "0x11223344"),
    ("int32", "BADC", [0x2211, 0x4433], 287454020, "0x11223344"),
    ("int32", "DCBA", [0x4433, 0x2211], 287454020, "0x11223344"),
    # -2 = FF FF FF FE
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2, "minus-two"),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2, "minus-two"),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2, "minus-two"),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2, "minus-two"),
    # -100000: 100000 = 0x000186A0, complement + 1 = FF FE 79 60
    ("int32", "CDAB", [0x7960, 0xFFFE], -100000, "minus-100000"),
    ("int32", "BADC", [0xFEFF, 0x6079], -100000, "minus-100000"),
    ("int32", "ABCD", [0x8000, 0x0000], -(2**31), "min"),
    ("int32", "DCBA", [0xFFFF, 0xFF7F], 2**31 - 1, "max"),
    # uint32
    ("uint32", "ABCD", [0x1122, 0x3344], 287454020, "0x11223344"),
    ("uint32", "CDAB", [0x3344, 0x1122], 287454020, "0x11223344"),
    ("uint32", "BADC", [0x2211, 0x4433], 287454020, "0x11223344"),
    ("uint32", "DCBA", [0x4433, 0x2211], 287454020, "0x11223344"),
    ("uint32", "ABCD", [0xFFFF, 0xFFFF], 4294967295, "max"),
    ("uint32", "BADC", [0x0080, 0x0000], 2147483648, "top-bit"),
    ("uint32", "CDAB", [0xBEEF, 0xDEAD], 0xDEADBEEF, "deadbeef"),
    ("uint32", "DCBA", [0xEFBE, 0xADDE], 0xDEADBEEF, "deadbeef"),
    # int64: bytes 01 02 03 04 05 06 07 08
    ("int64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708, "0102..08"),
    ("int64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708, "0102..08"),
    ("int64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708, "0102..08"),
    ("int64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708, "0102..08"),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1, "minus-one"),
    ("int64", "DCBA", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1, "minus-one"),
    # -0x0102030405060708: invert to FE FD FC FB FA F9 F8 F7, + 1 = FE FD FC FB FA F9 F8 F8
    ("int64", "CDAB", [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD], -0x0102030405060708, "minus-0102..08"),
    ("int64", "ABCD", [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8], -0x0102030405060708, "minus-0102..08"),
    ("int64", "BADC", [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], -2, "minus-two"),
    ("int64", "DCBA", [0x0000, 0x0000, 0x0000, 0x0080], -(2**63), "min"),
    ("int64", "BADC", [0xFF7F, 0xFFFF, 0xFFFF, 0xFFFF], 2**63 - 1, "max"),
    # uint64
    ("uint64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708, "0102..08"),
    ("uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708, "0102..08"),
    ("uint64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708, "0102..08"),
    ("uint64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708, "0102..08"),
    ("uint64", "ABCD", [0x8000, 0x0000, 0x0000, 0x0000], 2**63, "top-bit"),
    ("uint64", "CDAB", [0x0000, 0x0000, 0x0000, 0x8000], 2**63, "top-bit"),
    ("uint64", "BADC", [0x0080, 0x0000, 0x0000, 0x0000], 2**63, "top-bit"),
    ("uint64", "DCBA", [0x0000, 0x0000, 0x0000, 0x0080], 2**63, "top-bit"),
    ("uint64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 2**64 - 1, "max"),
    ("uint64", "DCBA", [0x1032, 0x5476, 0x98BA, 0xDCFE], 0xFEDCBA9876543210, "fedcba98.."),
    # float16: sign 1 | exponent 5 (bias 15) | fraction 10
    ("float16", "ABCD", [0x3C00], 1.0, "one"),  # exp 15 -> 2**0
    ("float16", "ABCD", [0x0001], 2.0**-24, "min-subnormal"),  # 2**-14 * 2**-10
    ("float16", "CDAB", [0xC000], -2.0, "minus-two"),  # sign, exp 16 -> 2**1
    ("float16", "CDAB", [0x7C00], math.inf, "inf"),  # exp all ones, fraction 0
    ("float16", "BADC", [0xFF7B], 65504.0, "max"),  # 0x7BFF: 2**15 * (1 + 1023/1024)
    ("float16", "BADC", [0x0080], -0.0, "minus-zero"),  # 0x8000
    ("float16", "DCBA", [0x0038], 0.5, "half"),  # 0x3800: exp 14 -> 2**-1
    ("float16", "DCBA", [0x00C0], -2.0, "minus-two"),
    # float32: 0x41480000 = 2**3 * 1.5625 = 12.5
    ("float32", "ABCD", [0x4148, 0x0000], 12.5, "12.5"),
    ("float32", "CDAB", [0x0000, 0x4148], 12.5, "12.5"),
    ("float32", "BADC", [0x4841, 0x0000], 12.5, "12.5"),
    ("float32", "DCBA", [0x0000, 0x4841], 12.5, "12.5"),
    # 0xC0490FDB: sign, exp 128 -> 2**1, significand 0xC90FDB = 13176795 -> -13176795 * 2**-22
    ("float32", "ABCD", [0xC049, 0x0FDB], -13176795 / 2**22, "minus-pi"),
    ("float32", "CDAB", [0x0FDB, 0xC049], -13176795 / 2**22, "minus-pi"),
    ("float32", "BADC", [0x49C0, 0xDB0F], -13176795 / 2**22, "minus-pi"),
    ("float32", "DCBA", [0xDB0F, 0x49C0], -13176795 / 2**22, "minus-pi"),
    ("float32", "ABCD", [0x3F80, 0x0000], 1.0, "one"),
    ("float32", "DCBA", [0x0000, 0x803F], 1.0, "one"),
    ("float32", "BADC", [0xC8C2, 0x0000], -100.0, "minus-100"),  # 0xC2C80000: exp 133 -> 2**6 * 1.5625
    ("float32", "CDAB", [0xFFFF, 0x7F7F], (2 - 2.0**-23) * 2.0**127, "max"),
    ("float32", "ABCD", [0x0000, 0x0001], 2.0**-149, "min-subnormal"),
    ("float32", "DCBA", [0x0000, 0x80FF], -math.inf, "minus-inf"),  # 0xFF800000
    # float64: 0x400921FB54442D18 = pi
    ("float64", "ABCD", [0x4009, 0x21FB, 0x5444, 0x2D18], 3.141592653589793, "pi"),
    ("float64", "CDAB", [0x2D18, 0x5444, 0x21FB, 0x4009], 3.141592653589793, "pi"),
    ("float64", "BADC", [0x0940, 0xFB21, 0x4454, 0x182D], 3.141592653589793, "pi"),
    ("float64", "DCBA", [0x182D, 0x4454, 0xFB21, 0x0940], 3.141592653589793, "pi"),
    ("float64", "ABCD", [0x3FF0, 0x0000, 0x0000, 0x0000], 1.0, "one"),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0xF03F], 1.0, "one"),
    ("float64", "ABCD", [0xC000, 0x0000, 0x0000, 0x0000], -2.0, "minus-two"),
    ("float64", "DCBA", [0x9A99, 0x9999, 0x9999, 0xB93F], 0.1, "0.1"),  # 0x3FB999999999999A
    ("float64", "CDAB", [0x0001, 0x0000, 0x0000, 0x0000], 2.0**-1074, "min-subnormal"),
    ("float64", "BADC", [0xEF7F, 0xFFFF, 0xFFFF, 0xFFFF], (2 - 2.0**-52) * 2.0**1023, "max"),
]


def _id(vector: tuple[str, str, list[int], int | float, str]) -> str:
    data_type, order, words, _, label = vector
    return f"{data_type}-{order}-{label}-[{','.join(f'{w:04X}' for w in words)}]"


GOLDEN_PARAMS = [pytest.param(*v[:4], id=_id(v)) for v in GOLDEN]


def assert_same(actual: Any, expected: int | float) -> None:
    """Equal, of the same kind (int vs float, never bool), and with the same sign for a float zero."""
    if isinstance(expected, int):
        assert type(actual) is int
        assert actual == expected
    else:
        assert type(actual) is float
        assert actual == expected
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected)


def test_golden_table_covers_every_type_and_order() -> None:
    covered = {(t, o) for t, o, *_ in GOLDEN}
    assert covered == {(t, o) for t in NUMERIC_TYPES for o in BYTE_ORDERS}
    for data_type, _, words, _, _ in GOLDEN:
        assert len(words) == {"16": 1, "32": 2, "64": 4}[data_type[-2:]]


@pytest.mark.parametrize(("data_type", "order", "words", "expected"), GOLDEN_PARAMS)
def test_decode_golden(data_type: str, order: str, words: list[int], expected: int | float) -> None:
    assert_same(decode_number(words, data_type, order), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(("data_type", "order", "words", "expected"), GOLDEN_PARAMS)
def test_encode_golden(data_type: str, order: str, words: list[int], expected: int | float) -> None:
    assert encode_number(expected, data_type, order) == words  # type: ignore[arg-type]


def test_float32_minus_pi_is_close_to_pi() -> None:
    assert decode_number([0xC049, 0x0FDB], "float32") == pytest.approx(-3.1415927, abs=1e-7)


@pytest.mark.parametrize(
    ("data_type", "words"),
    [
        pytest.param("float16", [0x7E00], id="float16-quiet-nan"),
        pytest.param("float32", [0x7FC0, 0x0000], id="float32-quiet-nan"),
        pytest.param("float64", [0x7FF8, 0x0000, 0x0000, 0x0000], id="float64-quiet-nan"),
    ],
)
def test_decode_nan(data_type: str, words: list[int]) -> None:
    assert math.isnan(decode_number(words, data_type))  # type: ignore[arg-type]


def test_default_order_is_abcd() -> None:
    assert decode_number([0x1122, 0x3344], "uint32") == 287454020
    assert encode_number(287454020, "uint32") == [0x1122, 0x3344]


# --- wrong register count / not numeric ------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "words"),
    [
        pytest.param("int16", [], id="int16-none"),
        pytest.param("uint16", [0x0001, 0x0002], id="uint16-two"),
        pytest.param("float16", [0x3C00, 0x0000], id="float16-two"),
        pytest.param("int32", [0x1122], id="int32-one"),
        pytest.param("uint32", [0x1122, 0x3344, 0x5566], id="uint32-three"),
        pytest.param("float32", [0x4148], id="float32-one"),
        pytest.param("int64", [0x0102, 0x0304], id="int64-two"),
        pytest.param("uint64", [0, 0, 0, 0, 0], id="uint64-five"),
        pytest.param("float64", [0x4009, 0x21FB, 0x5444], id="float64-three"),
    ],
)
@pytest.mark.parametrize("order", BYTE_ORDERS)
def test_wrong_register_count(data_type: str, words: list[int], order: str) -> None:
    with pytest.raises(DecodeError, match="registers"):
        decode_number(words, data_type, order)  # type: ignore[arg-type]


@pytest.mark.parametrize("data_type", ["string", "bool", "int8"])
def test_decode_number_rejects_non_numeric(data_type: str) -> None:
    with pytest.raises(DecodeError):
        decode_number([0x0001], data_type)  # type: ignore[arg-type]


# --- words <-> bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "words"),
    [
        pytest.param("ABCD", [0x1122, 0x3344], id="ABCD"),
        pytest.param("CDAB", [0x3344, 0x1122], id="CDAB"),
        pytest.param("BADC", [0x2211, 0x4433], id="BADC"),
        pytest.param("DCBA", [0x4433, 0x2211], id="DCBA"),
    ],
)
def test_words_to_bytes_32bit(order: str, words: list[int]) -> None:
    assert words_to_bytes(words, order) == b"\x11\x22\x33\x44"  # type: ignore[arg-type]
    assert bytes_to_words(b"\x11\x22\x33\x44", order) == words  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("order", "words"),
    [
        pytest.param("ABCD", [0xAABB, 0xCCDD, 0xEEFF, 0x0011], id="ABCD-ABCDEFGH"),
        pytest.param("CDAB", [0x0011, 0xEEFF, 0xCCDD, 0xAABB], id="CDAB-GHEFCDAB"),
        pytest.param("BADC", [0xBBAA, 0xDDCC, 0xFFEE, 0x1100], id="BADC-BADCFEHG"),
        pytest.param("DCBA", [0x1100, 0xFFEE, 0xDDCC, 0xBBAA], id="DCBA-HGFEDCBA"),
    ],
)
def test_words_to_bytes_64bit(order: str, words: list[int]) -> None:
    data = b"\xaa\xbb\xcc\xdd\xee\xff\x00\x11"
    assert words_to_bytes(words, order) == data  # type: ignore[arg-type]
    assert bytes_to_words(data, order) == words  # type: ignore[arg-type]


# --- strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "order", "encoding", "expected"),
    [
        pytest.param([0x4845, 0x4C4C, 0x4F00], "AB", "ascii", "HELLO", id="AB-HELLO"),
        pytest.param([0x4548, 0x4C4C, 0x004F], "BA", "ascii", "HELLO", id="BA-HELLO"),
        pytest.param([0x4849, 0x2020, 0x2020], "AB", "ascii", "HI", id="AB-space-padding"),
        pytest.param([0x4948, 0x0020, 0x0000], "BA", "ascii", "HI", id="BA-space-and-nul-padding"),
        pytest.param([0x4849, 0x0000], "AB", "ascii", "HI", id="AB-nul-padding"),
        pytest.param([0x2048, 0x4900], "AB", "ascii", " HI", id="AB-leading-space-kept"),
        pytest.param([0x4120, 0x4200], "AB", "ascii", "A B", id="AB-inner-space-kept"),
        pytest.param([0x0000, 0x0000], "AB", "ascii", "", id="AB-all-padding"),
        pytest.param([], "AB", "ascii", "", id="no-registers"),
        pytest.param([0xC3A9], "AB", "utf-8", "é", id="AB-utf8"),
        pytest.param([0xA9C3], "BA", "utf-8", "é", id="BA-utf8"),
        pytest.param([0xE900], "AB", "latin-1", "é", id="AB-latin1"),
    ],
)
def test_decode_string(words: list[int], order: str, encoding: str, expected: str) -> None:
    assert decode_string(words, order, encoding) == expected  # type: ignore[arg-type]


def test_decode_string_default_is_ab_ascii() -> None:
    assert decode_string([0x4845, 0x4C4C, 0x4F00]) == "HELLO"


@pytest.mark.parametrize(
    ("words", "order", "encoding"),
    [
        pytest.param([0x48FF], "AB", "ascii", id="ascii-high-byte"),
        pytest.param([0x8041], "BA", "ascii", id="ascii-high-byte-BA"),
        pytest.param([0xC328], "AB", "utf-8", id="utf8-bad-continuation"),
        pytest.param([0x41C3], "AB", "utf-8", id="utf8-truncated"),
    ],
)
def test_decode_string_invalid_bytes(words: list[int], order: str, encoding: str) -> None:
    with pytest.raises(DecodeError, match=f"not {encoding} text"):
        decode_string(words, order, encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "registers", "order", "expected"),
    [
        pytest.param("HELLO", 3, "AB", [0x4845, 0x4C4C, 0x4F00], id="AB-HELLO"),
        pytest.param("HELLO", 3, "BA", [0x4548, 0x4C4C, 0x004F], id="BA-HELLO"),
        pytest.param("HI", 3, "AB", [0x4849, 0x0000, 0x0000], id="AB-nul-padded"),
        pytest.param("HELLO", 2, "AB", [0x4845, 0x4C4C], id="AB-truncated"),
    ],
)
def test_encode_string(text: str, registers: int, order: str, expected: list[int]) -> None:
    assert encode_string(text, registers, order) == expected  # type: ignore[arg-type]


# --- bits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "bit", "expected"),
    [
        pytest.param(0x8001, 0, True, id="8001-bit0"),
        pytest.param(0x8001, 15, True, id="8001-bit15"),
        pytest.param(0x8001, 1, False, id="8001-bit1"),
        pytest.param(0x8001, 14, False, id="8001-bit14"),
        pytest.param(0x0010, 4, True, id="0010-bit4"),
        pytest.param(0x0010, 3, False, id="0010-bit3"),
        pytest.param(0x0010, 5, False, id="0010-bit5"),
        pytest.param(0x7FFE, 0, False, id="7FFE-bit0"),
        pytest.param(0x7FFE, 15, False, id="7FFE-bit15"),
        pytest.param(0xFFFF, 7, True, id="FFFF-bit7"),
        pytest.param(0x0000, 7, False, id="0000-bit7"),
    ],
)
def test_decode_bit(word: int, bit: int, expected: bool) -> None:
    assert decode_bit(word, bit) is expected


# --- through ModbusDevice.decode --------------------------------------------------------------

DEVICE_TAGS: list[dict[str, Any]] = [
    {"name": "flow", "area": "holding", "address": 1, "type": "float32"},
    {"name": "flow_abcd", "area": "holding", "address": 3, "type": "float32", "order": "ABCD"},
    {"name": "count", "area": "input", "address": 5, "type": "uint32"},
    {"name": "count_dcba", "area": "input", "address": 7, "type": "uint32", "order": "DCBA"},
    {"name": "temp", "area": "holding", "address": 9, "type": "int16", "scale": 0.1, "offset": -40},
    {"name": "level", "area": "holding", "address": 10, "type": "uint16", "scale": 2.0},
    {"name": "raw", "area": "holding", "address": 11, "type": "int16"},
    {"name": "alarm_hi", "area": "holding", "address": 12, "type": "bool", "bit": 15},
    {"name": "alarm_lo", "area": "holding", "address": 12, "type": "bool", "bit": 0},
    {"name": "alarm_1", "area": "holding", "address": 12, "type": "bool", "bit": 1},
    {"name": "label", "area": "holding", "address": 13, "type": "string", "length": 3},
    {"name": "label_ba", "area": "holding", "address": 16, "type": "string", "length": 3, "string_order": "BA"},
    {"name": "run", "area": "coil", "address": 1, "type": "bool"},
    {"name": "door", "area": "discrete", "address": 1, "type": "bool"},
]


def make_config(**overrides: Any) -> ModbusDeviceConfig:
    raw: dict[str, Any] = {
        "id": "plc1",
        "protocol": "modbus",
        "host": "127.0.0.1",
        "address_base": 1,
        "order": "CDAB",
        "tags": DEVICE_TAGS,
    }
    return ModbusDeviceConfig.model_validate(raw | overrides)


@pytest.fixture
def device() -> ModbusDevice:
    config = make_config()
    return ModbusDevice(config, ModbusLink(config))


def _tag(device: ModbusDevice, name: str) -> Any:
    return next(t for t in device.config.tags if t.name == name)


@pytest.mark.parametrize(
    ("name", "words", "expected"),
    [
        pytest.param("flow", [0x0000, 0x4148], 12.5, id="device-order-CDAB-float32"),
        pytest.param("flow_abcd", [0x4148, 0x0000], 12.5, id="tag-order-ABCD-overrides"),
        pytest.param("count", [0x3344, 0x1122], 287454020, id="device-order-CDAB-uint32"),
        pytest.param("count_dcba", [0x4433, 0x2211], 287454020, id="tag-order-DCBA-overrides"),
        pytest.param("raw", [0xFF9C], -100, id="int16-unscaled-stays-int"),  # 0x10000 - 0xFF9C = 100
        pytest.param("alarm_hi", [0x8001], True, id="bool-bit15"),
        pytest.param("alarm_lo", [0x8001], True, id="bool-bit0"),
        pytest.param("alarm_1", [0x8001], False, id="bool-bit1"),
        pytest.param("label", [0x4845, 0x4C4C, 0x4F00], "HELLO", id="string-AB"),
        pytest.param("label_ba", [0x4548, 0x4C4C, 0x004F], "HELLO", id="string-BA"),
        pytest.param("run", [1], True, id="coil-on"),
        pytest.param("run", [0], False, id="coil-off"),
        pytest.param("door", [1], True, id="discrete-on"),
    ],
)
def test_device_decode(device: ModbusDevice, name: str, words: list[int], expected: Any) -> None:
    value = device.decode(_tag(device, name), words)
    assert type(value) is type(expected)
    assert value == expected


def test_device_order_does_not_leak_into_abcd_reading(device: ModbusDevice) -> None:
    # The same words read with the device's CDAB order are a different float: 0x00004148 (a subnormal).
    value = device.decode(_tag(device, "flow"), [0x4148, 0x0000])
    assert value == 0x4148 * 2.0**-149


def test_device_scale_and_offset(device: ModbusDevice) -> None:
    # int16 0xFF9C = -100; -100 * 0.1 - 40 = -50.0
    assert device.decode(_tag(device, "temp"), [0xFF9C]) == pytest.approx(-50.0)
    # 0x0190 = 400; 400 * 0.1 - 40 = 0.0
    assert device.decode(_tag(device, "temp"), [0x0190]) == pytest.approx(0.0)
    # uint16 0x0015 = 21; 21 * 2.0 = 42.0
    level = device.decode(_tag(device, "level"), [0x0015])
    assert type(level) is float
    assert level == 42.0


def test_device_decode_wrong_count_raises(device: ModbusDevice) -> None:
    with pytest.raises(DecodeError):
        device.decode(_tag(device, "flow"), [0x4148])


def test_device_decode_bad_text_raises(device: ModbusDevice) -> None:
    with pytest.raises(DecodeError):
        device.decode(_tag(device, "label"), [0xFFFF, 0x0000, 0x0000])


def test_protocol_address_base_1() -> None:
    config = make_config()
    by_name = {t.name: t for t in config.tags}
    assert config.protocol_address(by_name["flow"]) == 0  # manual's register 1 (4x00001) is address 0
    assert config.protocol_address(by_name["temp"]) == 8
    assert config.protocol_address(by_name["run"]) == 0


def test_protocol_address_base_0() -> None:
    config = make_config(address_base=0)
    assert config.protocol_address(config.tags[0]) == 1


def test_address_below_base_rejected() -> None:
    with pytest.raises(ValidationError, match="below address_base"):
        make_config(tags=[{"name": "x", "area": "holding", "address": 0}])


def test_tag_order_falls_back_to_device() -> None:
    config = make_config(order="BADC")
    by_name = {t.name: t for t in config.tags}
    assert config.tag_order(by_name["flow"]) == "BADC"
    assert config.tag_order(by_name["flow_abcd"]) == "ABCD"


# --- config validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        pytest.param({"area": "coil", "type": "uint16"}, "single bits", id="coil-uint16"),
        pytest.param({"area": "discrete", "type": "int32"}, "single bits", id="discrete-int32"),
        pytest.param({"area": "coil", "type": "bool", "bit": 3}, "single bits", id="coil-with-bit"),
        pytest.param({"area": "holding", "type": "bool"}, "needs bit", id="holding-bool-without-bit"),
        pytest.param({"area": "input", "type": "bool"}, "needs bit", id="input-bool-without-bit"),
        pytest.param({"area": "holding", "type": "uint16", "bit": 2}, "only for type bool", id="bit-on-uint16"),
        pytest.param({"area": "holding", "type": "string"}, "length is required", id="string-without-length"),
        pytest.param({"area": "holding", "type": "int16", "length": 2}, "length is required", id="length-on-int16"),
        pytest.param({"area": "holding", "type": "bool", "bit": 16}, "less than or equal", id="bit-16"),
        pytest.param({"area": "holding", "type": "float32", "order": "BACD"}, "order", id="unknown-order"),
    ],
)
def test_bad_tag_rejected(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_config(tags=[{"name": "x", "address": 1, **tag}])


def test_rtu_without_serial_port_rejected() -> None:
    with pytest.raises(ValidationError, match="serial_port"):
        make_config(transport="rtu", host=None)
    with pytest.raises(ValidationError, match="serial_port"):
        make_config(transport="rtu")


def test_rtu_with_serial_port_accepted() -> None:
    config = make_config(transport="rtu", host=None, serial_port="/dev/ttyUSB0")
    assert config.link_key == ("serial", "/dev/ttyUSB0")


def test_tcp_without_host_rejected() -> None:
    with pytest.raises(ValidationError, match="needs host"):
        make_config(host=None)


def test_wrong_protocol_rejected() -> None:
    with pytest.raises(ValidationError):
        make_config(protocol="opcua")


# --- properties -------------------------------------------------------------------------------

INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
FLOAT_WIDTHS = {"float16": 16, "float32": 32, "float64": 64}


def values_for(data_type: str) -> st.SearchStrategy[int | float]:
    if data_type in INT_RANGES:
        lo, hi = INT_RANGES[data_type]
        return st.integers(min_value=lo, max_value=hi)
    return st.floats(width=FLOAT_WIDTHS[data_type], allow_nan=False, allow_infinity=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", BYTE_ORDERS)
@pytest.mark.parametrize("data_type", NUMERIC_TYPES)
@given(data=st.data())
def test_encode_decode_round_trip(data: st.DataObject, data_type: str, order: str) -> None:
    value = data.draw(values_for(data_type), label="value")
    words = encode_number(value, data_type, order)  # type: ignore[arg-type]
    assert len(words) == WIDTH[data_type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert_same(decode_number(words, data_type, order), value)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", BYTE_ORDERS)
@pytest.mark.parametrize("data_type", NUMERIC_TYPES)
@given(data=st.data())
def test_decode_encode_round_trip(data: st.DataObject, data_type: str, order: str) -> None:
    """Any register contents that are not a NaN decode to a value that encodes to the same registers."""
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=WIDTH[data_type], max_size=WIDTH[data_type]))
    value = decode_number(words, data_type, order)  # type: ignore[arg-type]
    assume(not (isinstance(value, float) and math.isnan(value)))
    assert encode_number(value, data_type, order) == words  # type: ignore[arg-type]


@pytest.mark.parametrize("order", BYTE_ORDERS)
@given(words=st.lists(st.integers(0, 0xFFFF), max_size=8))
def test_words_bytes_round_trip(words: list[int], order: str) -> None:
    data = words_to_bytes(words, order)  # type: ignore[arg-type]
    assert len(data) == 2 * len(words)
    assert bytes_to_words(data, order) == words  # type: ignore[arg-type]


@pytest.mark.parametrize("order", BYTE_ORDERS)
@given(data=st.binary(max_size=16))
def test_bytes_words_round_trip(data: bytes, order: str) -> None:
    data = data[: len(data) // 2 * 2]
    assert words_to_bytes(bytes_to_words(data, order), order) == data  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["AB", "BA"])
@given(
    text=st.text(alphabet=st.characters(max_codepoint=127), max_size=40).filter(lambda s: s == s.rstrip("\x00 ")),
    extra=st.integers(0, 3),
)
def test_string_round_trip(text: str, extra: int, order: str) -> None:
    registers = (len(text) + 1) // 2 + extra
    words = encode_string(text, registers, order)  # type: ignore[arg-type]
    assert len(words) == registers
    assert decode_string(words, order) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("words", "encoding", "expected"),
    [
        pytest.param([0x4100], "utf-16-le", "A", id="utf16le-A"),  # 'A' = 41 00; stripping leaves b'A'
        pytest.param([0x0100, 0x0000], "utf-16-be", "Ā", id="utf16be-U+0100"),  # 01 00 | 00 00 -> b'\x01'
    ],
)
def test_decode_string_utf16_padding(words: list[int], encoding: str, expected: str) -> None:
    assert decode_string(words, "AB", encoding) == expected


@settings(max_examples=300)
@given(
    data_type=st.sampled_from(NUMERIC_TYPES),
    order=st.sampled_from(BYTE_ORDERS),
    before=st.integers(0, 4),
    data=st.data(),
)
def test_compiled_decoder_equals_decode_number(data_type: str, order: str, before: int, data: st.DataObject) -> None:
    width = WIDTH[data_type]
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=before + width + 2, max_size=before + width + 2))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    expected = decode_number(words[before : before + width], data_type, order)  # type: ignore[arg-type]
    got = compile_number_decoder(data_type, order, before)(raw)  # type: ignore[arg-type]
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@settings(max_examples=300)
@given(
    fields=st.lists(
        st.tuples(st.sampled_from(NUMERIC_TYPES), st.sampled_from(BYTE_ORDERS), st.integers(0, 12)),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_block_decoder_equals_decode_number(fields: list[tuple[str, str, int]], data: st.DataObject) -> None:
    """Whatever mix of types, orders, gaps and overlaps: each field it takes decodes as decode_number would."""
    size = max(offset + WIDTH[t] for t, _, offset in fields)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    taken, decode = compile_block_decoder(fields)  # type: ignore[arg-type]
    assert len(set(taken)) == len(taken)
    for index, got in zip(taken, decode(raw), strict=True):
        data_type, order, offset = fields[index]
        expected = decode_number(words[offset : offset + WIDTH[data_type]], data_type, order)  # type: ignore[arg-type]
        assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_block_decoder_leaves_word_swapped_and_overlapping_fields() -> None:
    fields = [("float32", "ABCD", 0), ("int32", "CDAB", 2), ("uint16", "ABCD", 1), ("uint16", "DCBA", 4)]
    taken, decode = compile_block_decoder(fields)  # type: ignore[arg-type]
    # CDAB needs a word swap, and the uint16 at 1 lies inside the float at 0: both left out
    assert taken == [0, 3]
    raw = bytes.fromhex("3fc00000000000003412")
    assert decode(raw) == [1.5, 0x1234]
