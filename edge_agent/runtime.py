"""The agent's I/O: polls devices into the plant engine, logs raw events, publishes through the outbox."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from operator import itemgetter

from pydantic import BaseModel

from connectors.registry import Device, open_devices
from connectors.sample import Sample
from edge_agent.config import AgentConfig
from edge_agent.engine import Evaluation, PlantEngine, config_fingerprint
from edge_agent.eventlog import EventLogWriter
from edge_agent.health import HealthReporter
from edge_agent.identity import load_or_create
from edge_agent.outbox import Outbox
from edge_agent.publisher import MqttPublisher
from edgeproof import __version__
from edgeproof.clock import Clock
from edgeproof.contract import (
    BirthMessage,
    Firm,
    MachineKpi,
    RegisterEntry,
    SiteIdentity,
    SiteKpi,
    StateInterval,
    encode,
    topic,
)
from edgeproof.indicators import oee

log = logging.getLogger(__name__)
_good = itemgetter(3)  # Sample.good, read without a Python-level call per sample
AGE_CHECK_S = 60.0  # wall seconds between the outbox's age checks when nothing is appended
METRICS_REFRESH_S = 5.0  # wall seconds between health readings for the metrics endpoint, at most


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        self.engine = PlantEngine(config, clock.speed)
        # created on first start and kept; raises IdentityError naming the file if it is unusable
        self.key = load_or_create(config.agent.data_dir)
        self.outbox = Outbox(config.agent.data_dir / "outbox.sqlite", config.outbox, signer=self.key.sign)
        self.publisher = MqttPublisher(config.mqtt, config.agent.id, self.boot_id, self.outbox, clock.now)
        self.publisher.on_connected = self._birth_on_reconnect
        self.devices: dict[str, Device] = open_devices(config.devices)
        self.events = EventLogWriter(config.agent.event_log) if config.agent.event_log else None
        self.overruns: dict[tuple[str, float], int] = {}  # (device, poll interval) -> late poll cycles
        self._unsaved: list[tuple[str, Callable[[int], BaseModel]]] = []
        self.samples_read = 0
        self._next_age_check = 0.0
        self.good_samples: Counter[str] = Counter()  # device -> good samples read
        self.health = HealthReporter(self)
        self.metrics_port: int | None = None  # bound once the metrics endpoint runs

    @property
    def latest(self) -> dict[str, dict[str, Sample]]:
        """device -> tag -> latest sample."""
        return self.engine.latest

    # --- messages -------------------------------------------------------------------------
    def _emit(self, model: type[BirthMessage | StateInterval | MachineKpi | SiteKpi], **fields: object) -> None:
        """Queue one message; `_flush` stores the queue in the outbox, which assigns sequence numbers.

        The message is signed with the agent's key as it is built, before it enters the outbox.
        """
        kind = model.model_fields["kind"].default

        def make(seq: int) -> BirthMessage | StateInterval | MachineKpi | SiteKpi:
            message = model(
                agent_id=self.config.agent.id, boot_id=self.boot_id, seq=seq, produced_at=self.clock.now(), **fields
            )
            return self.key.sign(message)

        self._unsaved.append((topic(self.config.agent.id, kind), make))

    def _flush(self) -> None:
        """One transaction (one disk sync) for everything one evaluation produced."""
        if self._unsaved:
            self.outbox.append_all(self._unsaved)
            self._unsaved = []
            self.publisher.wake()

    def _birth(self) -> None:
        c = self.config
        devices = {d.id: d.protocol for d in c.devices}
        assets = [
            RegisterEntry(
                machine_id=m.id,
                name=m.name,
                machine_type=m.type,
                process=m.process,
                digital=m.digital,
                digital_basis=m.digital_basis,
                nc_capable=m.nc_capable,
                acquired=m.device is not None,
                protocol=devices.get(m.device) if m.device else None,
                ideal_cycle_s=m.ideal_cycle_s,
            )
            for m in c.machines
        ]
        site = SiteIdentity(firm=Firm(**c.site.firm.model_dump()), site=c.site.name, timezone=c.site.timezone)
        self._emit(
            BirthMessage,
            agent_version=__version__,
            public_key=self.key.public_key,
            site=site,
            processes=self.engine.processes,
            assets=assets,
        )

    def _birth_on_reconnect(self) -> None:
        """A fresh birth after every reconnect; the first connect carries the one queued at start,
        which every boot has even if it never reaches a broker."""
        if self.publisher.connects > 1:
            self._birth()
            self._flush()

    def _emit_closed(self, result: Evaluation) -> None:
        for machine_id, iv in result.intervals:
            self._emit(
                StateInterval, machine_id=machine_id, state=iv.state, start=iv.start, end=iv.end, reason=iv.reason
            )
        for machine_id, buckets in result.buckets.items():
            for b in buckets:
                r = oee(b.elements)
                self._emit(
                    MachineKpi,
                    machine_id=machine_id,
                    bucket_start=b.start,
                    bucket_end=b.end,
                    elements=b.elements,
                    availability=r.availability.value,
                    performance=r.performance.value,
                    quality=r.quality.value,
                    oee=r.oee.value,
                    flags=r.flags,
                )
        for w in result.sites:
            self._emit(
                SiteKpi,
                bucket_start=w.start,
                bucket_end=w.end,
                machines=self.engine.register,
                processes=self.engine.processes,
                ratios=w.ratios,
            )

    # --- acquisition ----------------------------------------------------------------------
    async def _poll_group(self, device: Device, group: object, stop: asyncio.Event) -> None:
        period: float = group.interval_s  # type: ignore[attr-defined]
        key = (device.id, period)
        self.overruns[key] = 0
        due = time.monotonic()  # polls keep to a fixed grid, so sleep overshoot does not add up
        while not stop.is_set():
            try:
                samples = await device.read_group(group, self.clock.now)  # type: ignore[arg-type]
            except Exception as e:  # a connector bug must not end acquisition: report it as bad data
                log.exception("device read crashed", extra={"device": device.id})
                now = self.clock.now()
                samples = [Sample.bad(device.id, t.name, now, f"internal error: {e!r}") for t in device.config.tags]
            self.samples_read += len(samples)
            self.good_samples[device.id] += sum(map(_good, samples))
            self.engine.ingest(samples)
            if self.events:
                self.events.samples(samples)
            due += period
            finished = time.monotonic()
            if finished > due:  # after the next poll was due: count it, start at once, no catching up
                self.overruns[key] += 1
                due = finished
            await asyncio.sleep(due - finished)

    def evaluate(self, now: datetime) -> None:
        """Advance every machine to `now`; publish closed state intervals and closed buckets."""
        if self.events:
            self.events.tick(now)
        self._emit_closed(self.engine.evaluate(now))
        self._flush()
        if time.monotonic() >= self._next_age_check:  # appends check age too; this covers quiet times
            self._next_age_check = time.monotonic() + AGE_CHECK_S
            self.outbox.evict_expired(now)

    async def _evaluate_loop(self, stop: asyncio.Event) -> None:
        tick = min([g.interval_s for d in self.devices.values() for g in d.groups] or [1.0])
        while not stop.is_set():
            try:
                self.evaluate(self.clock.now())
            except Exception:  # a bug in one tick must not end acquisition or the ticks after it
                log.exception("evaluation failed", extra={"agent": self.config.agent.id})
                self._unsaved = []  # whatever the failed tick queued is incomplete: never store half of it
            await asyncio.sleep(tick)

    async def _health_loop(self, stop: asyncio.Event) -> None:
        """Fresh readings for the metrics endpoint; every `health.interval_s` one goes out over MQTT."""
        settings = self.config.health
        refresh = min(settings.interval_s, METRICS_REFRESH_S)
        name = topic(self.config.agent.id, "health")
        next_publish = time.monotonic() + settings.interval_s
        while True:
            try:
                await asyncio.wait_for(stop.wait(), refresh)
                return
            except TimeoutError:
                pass
            try:
                reading = self.health.read(self.clock.now())
            except Exception:  # health must never take acquisition down with it
                log.exception("health reading failed", extra={"agent": self.config.agent.id})
                continue
            if time.monotonic() >= next_publish:
                next_publish += settings.interval_s
                self.publisher.publish_volatile(name, encode(reading))

    def _serve_metrics(self) -> None:
        port = self.config.health.metrics_port
        if port is None:
            return
        try:
            self.metrics_port = self.health.serve(self.config.health.metrics_listen, port)
        except OSError as e:  # a taken port must not stop acquisition: say so and go on without metrics
            log.error(
                "metrics endpoint not started",
                extra={"listen": self.config.health.metrics_listen, "port": port, "error": str(e)},
            )

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 10.0) -> None:
        log.info(
            "agent starting",
            extra={
                "agent": self.config.agent.id,
                "boot": self.boot_id,
                "devices": len(self.devices),
                "key_id": self.key.key_id,
            },
        )
        now = self.clock.now()
        self.engine.start(now)
        if self.events:
            self.events.start(now, self.boot_id, self.clock.speed, config_fingerprint(self.config))
        self._birth()
        self._flush()
        # Everything built so far (imported libraries, configuration) lives as long as the agent:
        # keep it out of the collector's full scans, which would otherwise walk it again and again.
        gc.freeze()
        self.publisher.start()
        tasks = [asyncio.create_task(self._poll_group(d, g, stop)) for d in self.devices.values() for g in d.groups]
        tasks.append(asyncio.create_task(self._evaluate_loop(stop)))
        tasks.append(asyncio.create_task(self.publisher.run(stop)))
        tasks.append(asyncio.create_task(self._health_loop(stop)))
        self._serve_metrics()
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            for d in self.devices.values():
                await d.close()
            drained = await self.publisher.drain(drain_timeout_s)
            late = {f"{d}@{p:g}s": n for (d, p), n in self.overruns.items() if n}
            log.info(
                "agent stopping",
                extra={"drained": drained, "outbox_depth": self.outbox.depth(), "poll_overruns": late or 0},
            )
            self.publisher.stop()
            self.health.close()
            self.outbox.close()
            if self.events:
                self.events.close()
