"""OPC UA acquisition by batch reads of configured nodes, with server timestamps and status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from asyncua import Client, ua
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.backoff import Backoff
from connectors.sample import Sample

log = logging.getLogger(__name__)


class OpcUaTag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    node: str = Field(description="NodeId string, e.g. ns=2;s=CNC-01/Monitoring/Spindle/IsRotating")

    @field_validator("node")
    @classmethod
    def _parses(cls, v: str) -> str:
        try:
            ua.NodeId.from_string(v)
        except Exception as e:  # asyncua raises several types for bad strings
            raise ValueError(f"not a NodeId: {v!r}") from e
        return v


class OpcUaDeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    protocol: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    timeout_s: float = Field(2.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0, description="wall seconds between polls")
    tags: list[OpcUaTag] = Field(min_length=1)


def _aware(t: datetime | None) -> datetime | None:
    """asyncua returns naive UTC datetimes."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass(frozen=True)
class OpcUaGroup:
    interval_s: float


class OpcUaDevice:
    def __init__(self, config: OpcUaDeviceConfig) -> None:
        self.config = config
        self.id = config.id
        self.groups = [OpcUaGroup(config.poll_interval_s)]
        self._client: Client | None = None
        self._backoff = Backoff()
        self._node_ids = [ua.NodeId.from_string(t.node) for t in config.tags]

    def _all_bad(self, now: datetime, reason: str) -> list[Sample]:
        return [Sample.bad(self.id, t.name, now, reason) for t in self.config.tags]

    async def _connected(self) -> Client:
        if self._client is None:
            client = Client(self.config.url, timeout=self.config.timeout_s)
            client.session_timeout = 600_000  # ms; asyncua asks for an hour, servers commonly cap at 10 min
            await client.connect()
            self._client = client
        return self._client

    async def read_group(self, group: OpcUaGroup, now_fn: Callable[[], datetime]) -> list[Sample]:
        return await self.read(now_fn)

    async def read(self, now_fn: Callable[[], datetime]) -> list[Sample]:
        """Every tag in one batch Read."""
        if not self._backoff.ready():
            return self._all_bad(now_fn(), "server unreachable, waiting to retry")
        try:
            client = await self._connected()
            values = await client.read_attributes([client.get_node(n) for n in self._node_ids])
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as e:
            delay = self._backoff.failed()
            log.warning("opcua read failed", extra={"device": self.id, "error": str(e), "retry_s": delay})
            await self.close()
            return self._all_bad(now_fn(), f"{type(e).__name__}: {e}")
        self._backoff.succeeded()
        now = now_fn()
        samples = []
        for tag, dv in zip(self.config.tags, values, strict=True):
            status = dv.StatusCode or ua.StatusCode(ua.StatusCodes.Good)
            source = (
                dv.SourceTimestamp.replace(tzinfo=UTC)
                if dv.SourceTimestamp and dv.SourceTimestamp.tzinfo is None
                else dv.SourceTimestamp
            )
            if status.is_good() and dv.Value is not None:
                samples.append(Sample(self.id, tag.name, dv.Value.Value, True, now, source))
            else:
                samples.append(Sample.bad(self.id, tag.name, now, f"status {status.name}"))
        return samples

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.disconnect()
            except Exception:  # the session is already gone; nothing left to release
                log.debug("opcua disconnect failed", extra={"device": self.id})
