"""OPC UA acquisition of one device: session, node resolution, subscription or polling, watchdog."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from asyncua import Client, ua

from connectors.backoff import Backoff
from connectors.opcua.config import OpcUaDeviceConfig
from connectors.opcua.security import secure_client
from connectors.sample import Sample

log = logging.getLogger(__name__)


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
            client.session_timeout = int(self.config.session_timeout_s * 1000)
            await secure_client(client, self.config.security, self.id)
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
