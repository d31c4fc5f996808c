"""`edgeproof probe modbus`: read raw registers and show every plausible interpretation.

For commissioning: when a manual says "float at 40101" but not in which byte order, the right
reading is the one that looks like a sensible number. `edgeproof probe opcua` lives in
connectors/opcua/probe.py.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

from connectors.modbus.codec import BYTE_ORDERS, NUMERIC_TYPES, WIDTH, DecodeError, decode_number, decode_string
from connectors.modbus.config import ModbusDeviceConfig
from connectors.modbus.link import ModbusLink, ModbusRefused, NoAnswer
from connectors.opcua import probe as opcua_probe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="probe_protocol", required=True, metavar="PROTOCOL")
    m = sub.add_parser("modbus", help="read registers and print them under every type and byte order")
    m.add_argument("--host", help="device or serial server address (TCP transports)")
    m.add_argument("--port", type=int, default=502)
    m.add_argument("--serial-port", help="serial port for RTU, e.g. /dev/ttyUSB0")
    m.add_argument(
        "--transport", choices=["tcp", "rtu", "rtu_over_tcp"], help="default: rtu with --serial-port, else tcp"
    )
    m.add_argument("--baudrate", type=int, default=9600)
    m.add_argument("--parity", choices=["N", "E", "O"], default="N")
    m.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    m.add_argument("--unit", type=int, default=1)
    m.add_argument("--area", choices=["holding", "input", "coil", "discrete"], default="holding")
    m.add_argument("--address", type=int, required=True, help="protocol address (0-based) of the first register")
    m.add_argument("--count", type=int, default=4, help="registers to read (1-125)")
    m.add_argument("--timeout", type=float, default=2.0)
    o = sub.add_parser("opcua", help="browse an OPC UA server's nodes and values; draft a device's tags")
    opcua_probe.add_arguments(o)


def _fmt(value: float | int) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.7g}"
    return str(value)


def interpretations(words: list[int], first_address: int) -> list[str]:
    """Lines of text: each numeric type at each start address, in all four byte orders."""
    lines = [f"{'address':>8}  {'type':<8}  " + "  ".join(f"{o:>16}" for o in BYTE_ORDERS)]
    for data_type in NUMERIC_TYPES:
        width = WIDTH[data_type]
        for i in range(len(words) - width + 1):
            cells = []
            for order in BYTE_ORDERS:
                try:
                    cells.append(f"{_fmt(decode_number(words[i : i + width], data_type, order)):>16}")
                except DecodeError:
                    cells.append(f"{'-':>16}")
            lines.append(f"{first_address + i:>8}  {data_type:<8}  " + "  ".join(cells))
    for order in ("AB", "BA"):
        text = decode_string(words, order, "latin-1")  # type: ignore[arg-type]
        shown = "".join(c if c.isprintable() else "." for c in text)
        lines.append(f"{first_address:>8}  string {order}  {shown!r}")
    return lines


async def _probe(args: argparse.Namespace) -> int:
    transport = args.transport or ("rtu" if args.serial_port else "tcp")
    config = ModbusDeviceConfig.model_validate(
        {
            "id": "probe",
            "protocol": "modbus",
            "transport": transport,
            "host": args.host,
            "port": args.port,
            "serial_port": args.serial_port,
            "baudrate": args.baudrate,
            "parity": args.parity,
            "stopbits": args.stopbits,
            "unit": args.unit,
            "timeout_s": args.timeout,
            "tags": [{"name": "probe", "area": "holding", "address": 0}],
        }
    )
    link = ModbusLink(config)
    try:
        words = await link.read(args.unit, args.area, args.address, args.count)
    except (ModbusRefused, NoAnswer) as e:
        print(f"{link.key[1]} unit {args.unit}: {e}", file=sys.stderr)
        return 1
    finally:
        link.close()
    print(f"{link.key[1]} unit {args.unit} {args.area} {args.address}..{args.address + args.count - 1}")
    print(f"{'address':>8}  {'hex':>6}  {'unsigned':>8}  {'signed':>7}  bits")
    for i, w in enumerate(words):
        signed = w - 0x10000 if w & 0x8000 else w
        print(f"{args.address + i:>8}  0x{w:04X}  {w:>8}  {signed:>7}  {w:016b}")
    if args.area in ("holding", "input"):
        print()
        print("\n".join(interpretations(words, args.address)))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.probe_protocol == "opcua":
        return opcua_probe.run(args)
    if not 1 <= args.count <= 125:
        print("--count must be 1..125", file=sys.stderr)
        return 2
    if not (args.host or args.serial_port):
        print("give --host (TCP, RTU over TCP) or --serial-port (RTU)", file=sys.stderr)
        return 2
    return asyncio.run(_probe(args))
