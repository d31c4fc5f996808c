"""Modbus TCP acquisition: tag configuration, decoding and one-request-per-area polling."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from connectors.backoff import Backoff
from connectors.sample import Sample, Value

log = logging.getLogger(__name__)

Area = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
_REGISTERS = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_DATATYPE = AsyncModbusTcpClient.DATATYPE
_CONVERT = {
    "int16": _DATATYPE.INT16,
    "uint16": _DATATYPE.UINT16,
    "int32": _DATATYPE.INT32,
    "uint32": _DATATYPE.UINT32,
    "float32": _DATATYPE.FLOAT32,
}


class ModbusTag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    area: Area
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: DataType = "uint16"
    word_order: WordOrder | None = Field(None, description="overrides the device's word order")
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _bits_are_bool(self) -> ModbusTag:
        if self.area in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"{self.area} tags are single bits: type must be bool")
        return self

    @property
    def width(self) -> int:
        return 1 if self.area in ("coil", "discrete") else _REGISTERS[self.type]


class ModbusTcpDeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    protocol: Literal["modbus_tcp"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="Modbus unit / device id")
    timeout_s: float = Field(1.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0, description="wall seconds between polls")
    word_order: WordOrder = Field("big", description="big: high word first (ABCD); little: CDAB")
    max_registers: int = Field(125, ge=1, le=125, description="largest read the device accepts")
    tags: list[ModbusTag] = Field(min_length=1)


def decode(tag: ModbusTag, words: list[int], device_order: WordOrder) -> Value:
    if tag.type == "bool":
        return bool(words[0])
    raw = AsyncModbusTcpClient.convert_from_registers(words, _CONVERT[tag.type], tag.word_order or device_order)
    assert isinstance(raw, int | float)
    if tag.scale == 1.0 and tag.offset == 0.0:
        return raw
    return raw * tag.scale + tag.offset


class ModbusTcpDevice:
    """Polls all tags of one device; each area is read in as few requests as fit."""

    def __init__(self, config: ModbusTcpDeviceConfig) -> None:
        self.config = config
        self.id = config.id
        self._client: AsyncModbusTcpClient | None = None
        self._backoff = Backoff()
        self._by_area: dict[Area, list[ModbusTag]] = defaultdict(list)
        for tag in config.tags:
            self._by_area[tag.area].append(tag)

    def _all_bad(self, now: datetime, reason: str) -> list[Sample]:
        return [Sample.bad(self.id, t.name, now, reason) for t in self.config.tags]

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        await self.close()
        c = self.config
        client = AsyncModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0, reconnect_delay=0)
        if not await client.connect():
            client.close()
            raise ConnectionError(f"cannot connect to {c.host}:{c.port}")
        self._client = client
        return client

    async def _read_span(self, client: AsyncModbusTcpClient, area: Area, start: int, count: int) -> list[int]:
        unit = self.config.unit
        if area == "holding":
            rr = await client.read_holding_registers(start, count=count, device_id=unit)
        elif area == "input":
            rr = await client.read_input_registers(start, count=count, device_id=unit)
        elif area == "coil":
            rr = await client.read_coils(start, count=count, device_id=unit)
        else:
            rr = await client.read_discrete_inputs(start, count=count, device_id=unit)
        if rr.isError():
            raise ModbusException(f"exception response {rr}")
        values = rr.registers if area in ("holding", "input") else [int(b) for b in rr.bits]
        return values[:count]

    def _spans(self, tags: list[ModbusTag]) -> list[tuple[int, int, list[ModbusTag]]]:
        """Coalesce tags into (start, count, tags) requests no longer than max_registers."""
        spans: list[tuple[int, int, list[ModbusTag]]] = []
        for tag in sorted(tags, key=lambda t: t.address):
            end = tag.address + tag.width
            if spans and end - spans[-1][0] <= self.config.max_registers:
                start, count, members = spans[-1]
                spans[-1] = (start, max(count, end - start), [*members, tag])
            else:
                spans.append((tag.address, tag.width, [tag]))
        return spans

    async def read(self, now_fn: object) -> list[Sample]:
        """Read every tag once; `now_fn()` gives the agent timestamp after the reads."""
        assert callable(now_fn)
        if not self._backoff.ready():
            return self._all_bad(now_fn(), "device unreachable, waiting to retry")
        words: dict[str, list[int]] = {}
        try:
            client = await self._connected()
            for area, tags in self._by_area.items():
                for start, count, members in self._spans(tags):
                    values = await self._read_span(client, area, start, count)
                    for tag in members:
                        offset = tag.address - start
                        words[tag.name] = values[offset : offset + tag.width]
        except (ModbusException, ConnectionError, OSError, TimeoutError) as e:
            delay = self._backoff.failed()
            log.warning("modbus read failed", extra={"device": self.id, "error": str(e), "retry_s": delay})
            await self.close()
            return self._all_bad(now_fn(), f"{type(e).__name__}: {e}")
        self._backoff.succeeded()
        now = now_fn()
        order = self.config.word_order
        return [Sample(self.id, t.name, decode(t, words[t.name], order), True, now) for t in self.config.tags]

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
