"""OPC UA acquisition of one device: session, node resolution, subscription or polling, watchdog.

Subscription mode: a supervisor task keeps one session with one subscription; data changes update a
per-tag cache, and `read_group` turns the cache into one sample per tag every publishing interval.
Whatever makes the cache doubtful (a lost connection, a bad subscription status, a server silent for
longer than its keep-alive promise) throws it away, turns every tag bad with the reason, and rebuilds
everything (connect, resolve, subscribe) with back-off. Polling mode and `read` use batch Reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua

from connectors.backoff import Backoff
from connectors.opcua.config import OpcUaDeviceConfig, OpcUaTag
from connectors.opcua.resolve import OBJECTS, Resolver, parse_path
from connectors.opcua.security import secure_client
from connectors.sample import Sample, Value

log = logging.getLogger(__name__)

ERRORS = (OSError, TimeoutError, ConnectionError, ua.UaError)
FALLBACK_LIMIT = 100  # operations per request when a server does not state its limit
WATCHDOG_MARGIN = 1.5  # a server may be this many keep-alive periods late before its subscription counts as dead
CHECK_S = 0.2  # how often the supervisor looks at the watchdog
_LIMIT_NODES = [
    ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
    ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse),
    ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall),
]
_DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


def _aware(t: datetime | None) -> datetime | None:
    """asyncua returns naive UTC datetimes."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _plain(v: Any) -> Value:
    """Samples carry JSON scalars."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, datetime):
        return _aware(v).isoformat()  # type: ignore[union-attr]
    return str(v)


def _sample(device_id: str, tag: str, dv: ua.DataValue, now: datetime) -> Sample:
    """Good only with a Good status: Uncertain values are not trusted to derive machine states."""
    status = dv.StatusCode or ua.StatusCode(ua.StatusCodes.Good)
    if not status.is_good():
        return Sample.bad(device_id, tag, now, f"status {status.name}")
    if dv.Value is None or dv.Value.Value is None:
        return Sample.bad(device_id, tag, now, "empty value")
    return Sample(device_id, tag, _plain(dv.Value.Value), True, now, _aware(dv.SourceTimestamp))


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class OpcUaGroup:
    interval_s: float


@dataclass
class _Session:
    """One connection: the client, the server's operation limits, each tag's node or why it has none."""

    client: Client
    max_read: int
    max_items: int
    nodes: list[ua.NodeId | str]  # per tag: its node, or the reason it did not resolve


@dataclass
class _Live:
    """One subscription on one session: the latest DataValue of each tag and when the server last spoke."""

    heard_at: float = field(default_factory=time.monotonic)
    delivered: bool = False
    values: dict[int, ua.DataValue] = field(default_factory=dict)  # tag index -> latest
    item_errors: dict[int, str] = field(default_factory=dict)  # tag index -> why it is not monitored
    deadline_s: float = float("inf")
    broken: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    notifications: int = 0  # data changes delivered

    def on_publish(self, result: ua.PublishResult) -> None:
        """Every publish response, keep-alives included, proves the subscription alive."""
        self.heard_at = time.monotonic()
        for notification in result.NotificationMessage.NotificationData or []:
            if isinstance(notification, ua.DataChangeNotification):
                self.notifications += len(notification.MonitoredItems)
                for item in notification.MonitoredItems:
                    self.values[item.ClientHandle - 1] = item.Value
                    self.delivered = True
            elif isinstance(notification, ua.StatusChangeNotification) and not notification.Status.is_good():
                self.fail(f"subscription status {notification.Status.name}")

    def fail(self, reason: str) -> None:
        if not self.broken.is_set():
            self.reason = reason
            self.broken.set()

    async def connection_lost(self, e: Exception) -> None:
        self.fail(f"connection lost: {_describe(e)}")

    def silence(self) -> str | None:
        silent = time.monotonic() - self.heard_at
        if silent > self.deadline_s:
            return f"no publish response for {silent:.1f} s (watchdog)"
        return None


class OpcUaDevice:
    def __init__(self, config: OpcUaDeviceConfig) -> None:
        self.config = config
        self.id = config.id
        self.groups = [OpcUaGroup(config.interval_s)]
        self._backoff = Backoff(maximum_s=config.backoff_max_s)
        base = parse_path(config.machine_path) if config.machine_path else []
        self._paths = [base + parse_path(t.path) if t.path else None for t in config.tags]
        self._polled: _Session | None = None  # polling mode and `read`
        self._supervisor: asyncio.Task[None] | None = None  # subscription mode
        self._live: _Live | None = None
        self._down = "connecting"  # why there is no healthy subscription
        self._notified = 0  # data changes delivered to subscriptions that have ended

    # --- sessions -------------------------------------------------------------------------------
    async def _open(self) -> _Session:
        cfg = self.config
        # the client's own health probe (a Read every interval) runs at the request timeout
        client = Client(cfg.url, timeout=cfg.timeout_s, watchdog_intervall=cfg.timeout_s)
        client.session_timeout = int(cfg.session_timeout_s * 1000)
        await secure_client(client, cfg.security, self.id)
        try:
            await asyncio.wait_for(client.connect(), 3 * cfg.timeout_s)
            limits = await client.uaclient.read(_read_params(_LIMIT_NODES))
            max_read, max_browse, max_items = (_limit(dv) for dv in limits)
            nodes = await self._resolve(client, max_browse)
        except BaseException:
            await _disconnect(client, cfg.timeout_s)
            raise
        return _Session(client, max_read, max_items, nodes)

    async def _resolve(self, client: Client, max_browse: int) -> list[ua.NodeId | str]:
        nodes: list[ua.NodeId | str] = [ua.NodeId.from_string(t.node) if t.node else "" for t in self.config.tags]
        by_path = [i for i, p in enumerate(self._paths) if p is not None]
        if by_path:
            paths = [p for p in self._paths if p is not None]
            found = await Resolver(client.uaclient, max_browse).resolve(paths, OBJECTS)
            for i, node in zip(by_path, found, strict=True):
                nodes[i] = node
                if isinstance(node, str):
                    tag = self.config.tags[i].name
                    log.warning("opcua path unresolved", extra={"device": self.id, "tag": tag, "reason": node})
        return nodes

    # --- polling --------------------------------------------------------------------------------
    async def read(self, now_fn: Callable[[], datetime]) -> list[Sample]:
        """Every tag by batch Reads within the server's MaxNodesPerRead; connects (with back-off) when needed."""
        if not self._backoff.ready():
            return self._all_bad(now_fn(), f"server unreachable, waiting to retry ({self._down})")
        try:
            if self._polled is None:
                self._polled = await self._open()
            samples = await self._read_session(self._polled, now_fn)
        except ERRORS as e:
            self._down = _describe(e)
            delay = self._backoff.failed()
            log.warning("opcua read failed", extra={"device": self.id, "error": self._down, "retry_s": delay})
            if self._polled is not None:
                await _disconnect(self._polled.client, self.config.timeout_s)
                self._polled = None
            return self._all_bad(now_fn(), self._down)
        self._backoff.succeeded()
        return samples

    async def _read_session(self, session: _Session, now_fn: Callable[[], datetime]) -> list[Sample]:
        wanted = [i for i, node in enumerate(session.nodes) if isinstance(node, ua.NodeId)]
        values: dict[int, ua.DataValue] = {}
        for batch in _batches(wanted, session.max_read):
            dvs = await session.client.uaclient.read(_read_params([session.nodes[i] for i in batch]))  # type: ignore[misc]
            values.update(zip(batch, dvs, strict=True))
        now = now_fn()
        return [
            _sample(self.id, tag.name, values[i], now) if i in values else Sample.bad(self.id, tag.name, now, str(node))
            for i, (tag, node) in enumerate(zip(self.config.tags, session.nodes, strict=True))
        ]

    # --- subscription ---------------------------------------------------------------------------
    @property
    def notifications(self) -> int:
        """Data changes the server has delivered to this device's subscriptions, for benchmarks and diagnostics."""
        return self._notified + (self._live.notifications if self._live is not None else 0)

    async def read_group(self, group: OpcUaGroup, now_fn: Callable[[], datetime]) -> list[Sample]:
        if self.config.acquisition == "polling":
            return await self.read(now_fn)
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"opcua {self.id}")
        return self._cached(now_fn())

    def _cached(self, now: datetime) -> list[Sample]:
        """One sample per tag from the cache: good while the subscription is healthy, even if unchanged."""
        live = self._live
        down = self._down if live is None else live.reason or live.silence()
        if live is None or down:
            return self._all_bad(now, down or self._down)
        samples = []
        for i, tag in enumerate(self.config.tags):
            dv = live.values.get(i)
            if i in live.item_errors:
                samples.append(Sample.bad(self.id, tag.name, now, live.item_errors[i]))
            elif dv is None:
                samples.append(Sample.bad(self.id, tag.name, now, "no value from the subscription yet"))
            else:
                samples.append(_sample(self.id, tag.name, dv, now))
        return samples

    async def _supervise(self) -> None:
        """Connect, subscribe, watch; on any failure drop everything and start again after a back-off."""
        while True:
            try:
                session = await self._open()
                try:
                    self._live = await self._subscribe(session)
                    reason = await self._watch(self._live)
                finally:
                    if self._live is not None:
                        self._notified += self._live.notifications
                    self._live = None
                    await _disconnect(session.client, self.config.timeout_s)
            except ERRORS as e:
                reason = _describe(e)
            except Exception as e:  # a bug here must not end acquisition: report it and start again
                log.exception("opcua supervisor crashed", extra={"device": self.id})
                reason = f"internal error: {e!r}"
            self._down = reason
            delay = self._backoff.failed()
            log.warning("opcua subscription down", extra={"device": self.id, "reason": reason, "retry_s": delay})
            await asyncio.sleep(delay)

    async def _subscribe(self, session: _Session) -> _Live:
        cfg = self.config
        live = _Live()
        session.client.connection_lost_callback = live.connection_lost
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_s * 1000
        params.RequestedLifetimeCount = cfg.lifetime_count
        params.RequestedMaxKeepAliveCount = cfg.keepalive_count
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        result = await session.client.uaclient.create_subscription(params, live.on_publish)
        keepalive_s = result.RevisedMaxKeepAliveCount * result.RevisedPublishingInterval / 1000
        live.deadline_s = keepalive_s * WATCHDOG_MARGIN + cfg.timeout_s
        live.heard_at = time.monotonic()
        requests = []
        for i, (tag, node) in enumerate(zip(cfg.tags, session.nodes, strict=True)):
            if isinstance(node, str):
                live.item_errors[i] = node
            else:
                requests.append(self._item_request(i, tag, node))
        for batch in _batches(requests, session.max_items):
            created = ua.CreateMonitoredItemsParameters()
            created.SubscriptionId = result.SubscriptionId
            created.TimestampsToReturn = ua.TimestampsToReturn.Source
            created.ItemsToCreate = batch
            for request, item in zip(batch, await session.client.uaclient.create_monitored_items(created), strict=True):
                if not item.StatusCode.is_good():
                    live.item_errors[request.RequestedParameters.ClientHandle - 1] = f"status {item.StatusCode.name}"
        log.info(
            "opcua subscribed",
            extra={"device": self.id, "items": len(requests) - len(live.item_errors), "watchdog_s": live.deadline_s},
        )
        return live

    def _item_request(self, index: int, tag: OpcUaTag, node: ua.NodeId) -> ua.MonitoredItemCreateRequest:
        cfg = self.config
        sampling_s = tag.sampling_interval_s
        if sampling_s is None:
            sampling_s = cfg.sampling_interval_s if cfg.sampling_interval_s is not None else cfg.publishing_interval_s
        deadband = tag.deadband or cfg.deadband
        p = ua.MonitoringParameters()
        p.ClientHandle = index + 1  # 0 is legal but easy to confuse with "unset"
        p.SamplingInterval = sampling_s * 1000
        p.QueueSize = tag.queue_size or cfg.queue_size
        p.DiscardOldest = True
        if deadband is not None:
            p.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=_DEADBAND_TYPES[deadband.type],
                DeadbandValue=deadband.value,
            )
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = p
        return request

    async def _watch(self, live: _Live) -> str:
        """Until the subscription breaks or falls silent: the reason."""
        while True:
            try:
                await asyncio.wait_for(live.broken.wait(), CHECK_S)
                return live.reason
            except TimeoutError:
                pass
            silence = live.silence()
            if silence:
                live.fail(silence)
                return silence
            if live.delivered:
                self._backoff.succeeded()  # back-off restarts small only once the server really delivers

    # --- common ---------------------------------------------------------------------------------
    def _all_bad(self, now: datetime, reason: str) -> list[Sample]:
        return [Sample.bad(self.id, t.name, now, reason) for t in self.config.tags]

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self._live, self._down = None, "closed"
        if self._polled is not None:
            await _disconnect(self._polled.client, self.config.timeout_s)
            self._polled = None


def _read_params(nodes: list[ua.NodeId]) -> ua.ReadParameters:
    params = ua.ReadParameters()
    params.TimestampsToReturn = ua.TimestampsToReturn.Source
    params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value) for n in nodes]
    return params


def _limit(dv: ua.DataValue) -> int:
    """An operation limit: 0 means none; a server that does not state it gets a conservative default."""
    status = dv.StatusCode or ua.StatusCode(ua.StatusCodes.Good)
    if not status.is_good() or dv.Value is None or not isinstance(dv.Value.Value, int):
        return FALLBACK_LIMIT
    return dv.Value.Value or 2**31


async def _disconnect(client: Client, timeout_s: float) -> None:
    """Best effort: a silent server must not hold the reconnect up longer than a request timeout."""
    try:
        await asyncio.wait_for(client.disconnect(), timeout_s)
    except ERRORS:
        log.debug("opcua disconnect incomplete", exc_info=True)
    finally:
        client.disconnect_socket()
