"""The agent's own health: one reading, published over MQTT and served as Prometheus metrics.

The reading is taken on the agent's event loop (the outbox connection and the latest samples live
there) and replaced whole; the metrics endpoint runs in prometheus_client's HTTP thread and only
ever reads the latest complete reading, so a scrape never touches the agent's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edgeproof import __version__
from edgeproof.contract import DeviceHealth, DeviceStatus, HealthMessage, OutboxHealth

if TYPE_CHECKING:
    from edge_agent.runtime import Agent

log = logging.getLogger(__name__)
STATUS_VALUES: tuple[DeviceStatus, ...] = ("ok", "degraded", "down")


def device_status(tags: int, bad: int) -> DeviceStatus:
    if bad == 0 and tags > 0:
        return "ok"
    return "down" if bad >= tags else "degraded"


class HealthReporter:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.started = time.monotonic()
        self._last: tuple[float, int] = (self.started, 0)  # (monotonic, published) at the previous reading
        self.latest: HealthMessage | None = None
        self._server: object | None = None

    def read(self, now: datetime) -> HealthMessage:
        """Take a reading now and keep it for the metrics endpoint."""
        a = self.agent
        stats = a.outbox.stats()
        mono, published = time.monotonic(), a.publisher.published
        then, published_then = self._last
        self._last = (mono, published)
        overruns: dict[str, int] = {}
        for (device_id, _period), n in a.overruns.items():
            overruns[device_id] = overruns.get(device_id, 0) + n
        devices = []
        for device_id, device in a.devices.items():
            tags = len(device.config.tags)
            latest = a.latest.get(device_id, {})
            bad = tags - sum(1 for s in latest.values() if s.good)
            devices.append(
                DeviceHealth(
                    device_id=device_id,
                    protocol=device.config.protocol,
                    status=device_status(tags, bad),
                    tags=tags,
                    bad_tags=bad,
                    good_samples=a.good_samples[device_id],
                    poll_overruns=overruns.get(device_id, 0),
                )
            )
        oldest = stats.oldest_created_at
        reading = HealthMessage(
            agent_id=a.config.agent.id,
            boot_id=a.boot_id,
            agent_version=__version__,
            at=now,
            uptime_s=round(mono - self.started, 3),
            connected=a.publisher.connected,
            published=published,
            publish_rate_per_s=round((published - published_then) / (mono - then), 3) if mono > then else 0.0,
            samples_read=a.samples_read,
            outbox=OutboxHealth(
                depth=stats.depth,
                bytes=stats.bytes,
                oldest_age_s=max(0.0, round(time.time() - oldest.timestamp(), 3)) if oldest else None,
                evicted_messages=stats.evicted_messages,
                evicted_bytes=stats.evicted_bytes,
            ),
            devices=devices,
        )
        self.latest = reading
        return reading

    def serve(self, listen: str, port: int) -> int:
        """Start the Prometheus endpoint in its own thread; returns the bound port (useful with port 0)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(lambda: self.latest))
        server, _thread = start_http_server(port, addr=listen, registry=registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics endpoint listening", extra={"listen": listen, "port": bound})
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server.server_close()  # type: ignore[attr-defined]
            self._server = None


class MetricsCollector(Collector):
    """Prometheus families of the latest health reading (nothing before the first one)."""

    def __init__(self, latest: Callable[[], HealthMessage | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        h = self._latest()
        if h is None:
            return
        agent = {"agent": h.agent_id}
        yield _gauge(
            "edgeproof_agent_info", "agent version and boot", 1, agent | {"version": h.agent_version, "boot": h.boot_id}
        )
        yield _gauge("edgeproof_uptime_seconds", "wall seconds since the agent started", h.uptime_s, agent)
        yield _gauge("edgeproof_mqtt_connected", "1 while the MQTT session is up", int(h.connected), agent)
        yield _counter("edgeproof_published_messages", "messages acknowledged by the broker", h.published, agent)
        yield _gauge(
            "edgeproof_publish_rate_per_second", "acknowledged messages per second", h.publish_rate_per_s, agent
        )
        yield _counter("edgeproof_samples_read", "tag samples read from devices", h.samples_read, agent)
        o = h.outbox
        yield _gauge("edgeproof_outbox_depth_messages", "messages waiting for a PUBACK", o.depth, agent)
        yield _gauge("edgeproof_outbox_bytes", "payload bytes waiting", o.bytes, agent)
        yield _gauge(
            "edgeproof_outbox_oldest_age_seconds", "age of the oldest waiting message", o.oldest_age_s or 0.0, agent
        )
        yield _counter(
            "edgeproof_outbox_evicted_messages", "messages evicted unsent (declared)", o.evicted_messages, agent
        )
        yield _counter("edgeproof_outbox_evicted_bytes", "payload bytes evicted unsent", o.evicted_bytes, agent)
        status = GaugeMetricFamily(
            "edgeproof_device_status", "1 for the device's current status", labels=["agent", "device", "status"]
        )
        labels = ["agent", "device"]
        per_device = {  # DeviceHealth field -> its family
            "bad_tags": GaugeMetricFamily(
                "edgeproof_device_bad_tags", "tags whose latest sample is bad", labels=labels
            ),
            "good_samples": CounterMetricFamily("edgeproof_device_good_samples", "good samples read", labels=labels),
            "poll_overruns": CounterMetricFamily(
                "edgeproof_device_poll_overruns", "poll cycles that finished after the next poll was due", labels=labels
            ),
        }
        for d in h.devices:
            for value in STATUS_VALUES:
                status.add_metric([h.agent_id, d.device_id, value], int(d.status == value))
            for field, family in per_device.items():
                family.add_metric([h.agent_id, d.device_id], getattr(d, field))
        yield status
        yield from per_device.values()


def _gauge(name: str, text: str, value: float, labels: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, text: str, value: float, labels: Mapping[str, str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family
