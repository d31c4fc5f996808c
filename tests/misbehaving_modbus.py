"""A small Modbus TCP server on loopback whose units can misbehave on purpose.

pymodbus servers always answer (or answer 0x0B for unknown units); a plant floor also has units
that stay silent, answer with garbage, or refuse reads longer than a few registers. Each unit
serves holding/input register i = (unit * 1000 + i) & 0xFFFF.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Behaviour = Literal["ok", "silent", "garbage", "short_reads_only"]


class MisbehavingServer:
    def __init__(self, behaviour: dict[int, Behaviour]) -> None:
        self.behaviour = behaviour
        self.requests: dict[int, int] = dict.fromkeys(behaviour, 0)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _proto, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.requests[unit] = self.requests.get(unit, 0) + 1
                behaviour = self.behaviour.get(unit, "silent")
                function, start, count = pdu[0], *struct.unpack(">HH", pdu[1:5])
                if behaviour == "silent":
                    continue
                if behaviour == "garbage":
                    writer.write(b"\x00\x01garbage!\xff\xff")
                    await writer.drain()
                    continue
                if behaviour == "short_reads_only" and count > 1:
                    body = bytes([function | 0x80, 0x02])  # illegal data address
                else:
                    values = [(unit * 1000 + start + i) & 0xFFFF for i in range(count)]
                    body = bytes([function, 2 * count]) + struct.pack(f">{count}H", *values)
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @contextmanager
    def running(self) -> Iterator[MisbehavingServer]:
        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)
        try:
            yield self
        finally:
            async def shutdown() -> None:
                assert self._server is not None
                self._server.close()
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(5)
