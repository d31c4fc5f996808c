"""The agent: polls devices, derives machine states, integrates KPIs, publishes through the outbox."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from connectors.registry import Device, open_devices
from connectors.sample import Sample
from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import AgentConfig, Machine
from edge_agent.kpi import ClosedBucket, ClosedInterval, MachineAccumulator
from edge_agent.outbox import Outbox
from edge_agent.publisher import MqttPublisher
from edge_agent.states import StateRules
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
    topic,
)
from edgeproof.indicators import ProcessInfo, RegisteredMachine, oee, site_ratios

log = logging.getLogger(__name__)
STALE_POLLS = 3  # a tag not refreshed within this many poll periods (plus the timeout) counts as no data


class Agent:
    def __init__(self, config: AgentConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        tz = ZoneInfo(config.site.timezone)
        self.calendar = ShiftCalendar(config.calendar, tz)
        self.buckets = Buckets(config.kpi.bucket_minutes, tz)
        self.outbox = Outbox(config.agent.data_dir / "outbox.sqlite")
        self.publisher = MqttPublisher(config.mqtt, config.agent.id, self.boot_id, self.outbox, clock.now)
        self.devices: dict[str, Device] = open_devices(config.devices)
        self.latest: dict[str, dict[str, Sample]] = {d: {} for d in self.devices}
        self._fresh_until: dict[str, dict[str, float]] = {d: {} for d in self.devices}  # device -> tag -> deadline
        self.overruns: dict[tuple[str, float], int] = {}  # (device, poll interval) -> late poll cycles
        self.rules = {name: StateRules(rules) for name, rules in config.state_rules.items()}
        self.accumulators = {
            m.id: MachineAccumulator(m.id, m.ideal_cycle_s, self.calendar, self.buckets, m.counters.bits)
            for m in config.machines
        }
        self.register = [
            RegisteredMachine(
                machine_id=m.id, process=m.process, digital=m.digital, nc_capable=m.nc_capable, acquired=bool(m.device)
            )
            for m in config.machines
        ]
        self.processes = [ProcessInfo(process_id=p.id, key=p.key) for p in config.processes]
        self._unsaved: list[tuple[str, Callable[[int], BaseModel]]] = []
        self.samples_read = 0
        self.good_samples: Counter[str] = Counter()  # device -> good samples read

    # --- messages -------------------------------------------------------------------------
    def _emit(self, model: type[BirthMessage | StateInterval | MachineKpi | SiteKpi], **fields: object) -> None:
        """Queue one message; `_flush` stores the queue in the outbox, which assigns sequence numbers."""
        kind = model.model_fields["kind"].default

        def make(seq: int) -> BirthMessage | StateInterval | MachineKpi | SiteKpi:
            return model(
                agent_id=self.config.agent.id, boot_id=self.boot_id, seq=seq, produced_at=self.clock.now(), **fields
            )

        self._unsaved.append((topic(self.config.agent.id, kind), make))

    def _flush(self) -> None:
        """One transaction (one disk sync) for everything one evaluation produced."""
        if self._unsaved:
            self.outbox.append_all(self._unsaved)
            self._unsaved = []

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
        self._emit(BirthMessage, agent_version=__version__, site=site, processes=self.processes, assets=assets)

    def _emit_intervals(self, machine_id: str, intervals: list[ClosedInterval]) -> None:
        for iv in intervals:
            self._emit(
                StateInterval, machine_id=machine_id, state=iv.state, start=iv.start, end=iv.end, reason=iv.reason
            )

    def _emit_buckets(self, closed: dict[str, list[ClosedBucket]]) -> None:
        observed_by_window: dict[tuple[datetime, datetime], dict[str, float]] = {}
        for machine_id, buckets in closed.items():
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
                observed_by_window.setdefault((b.start, b.end), {})[machine_id] = b.elements.observed_s
        for (start, end), observed in sorted(observed_by_window.items()):
            ratios = site_ratios(
                self.register,
                self.processes,
                observed,
                (end - start).total_seconds(),
                self.config.kpi.networked_min_coverage,
            )
            self._emit(
                SiteKpi,
                bucket_start=start,
                bucket_end=end,
                machines=self.register,
                processes=self.processes,
                ratios=ratios,
            )

    # --- acquisition ----------------------------------------------------------------------
    async def _poll_group(self, device: Device, group: object, stop: asyncio.Event) -> None:
        period: float = group.interval_s  # type: ignore[attr-defined]
        lifetime = STALE_POLLS * period + device.config.timeout_s
        machines = [m for m in self.config.machines if m.device == device.id]
        key = (device.id, period)
        self.overruns[key] = 0
        latest, fresh = self.latest[device.id], self._fresh_until[device.id]
        while not stop.is_set():
            started = time.monotonic()
            try:
                samples = await device.read_group(group, self.clock.now)  # type: ignore[arg-type]
            except Exception as e:  # a connector bug must not end acquisition: report it as bad data
                log.exception("device read crashed", extra={"device": device.id})
                now = self.clock.now()
                samples = [Sample.bad(device.id, t.name, now, f"internal error: {e!r}") for t in device.config.tags]
            self.samples_read += len(samples)
            by_tag = {s.tag: s for s in samples}
            latest.update(by_tag)
            good = [s.tag for s in samples if s.good]
            fresh.update(dict.fromkeys(good, time.monotonic() + lifetime))
            self.good_samples[device.id] += len(good)
            for m in machines:
                self._count(m, by_tag)
            elapsed = time.monotonic() - started
            if elapsed > period:
                self.overruns[key] += 1
            await asyncio.sleep(max(0.0, period - elapsed))

    def _count(self, machine: Machine, values: dict[str, Sample]) -> None:
        """Counter deltas from the samples of one poll (tags of other groups are absent)."""

        def good(tag: str | None) -> Sample | None:
            s = values.get(tag) if tag else None
            return s if s is not None and s.good and isinstance(s.value, int | float) else None

        parts, scrap = good(machine.counters.parts), good(machine.counters.scrap)
        if parts is not None or scrap is not None:
            t = (parts or scrap).agent_time  # type: ignore[union-attr]
            self.accumulators[machine.id].count(
                t,
                parts.value if parts else None,
                scrap.value if scrap else None,  # type: ignore[arg-type]
            )

    def _machine_state(self, machine: Machine) -> tuple[str, str | None]:
        if machine.device is None or machine.state_rules is None:
            return "UNKNOWN", "not acquired"
        rules = self.rules[machine.state_rules]
        latest, fresh = self.latest[machine.device], self._fresh_until[machine.device]
        now = time.monotonic()
        values = {}
        for tag in rules.tags:  # only the tags the rules look at
            s = latest.get(tag)
            if s is not None and s.good and now > fresh.get(tag, 0.0):
                s = Sample.bad(s.device_id, tag, s.agent_time, "stale: not refreshed in time")
            if s is not None:
                values[tag] = s
        return rules.evaluate(values)

    def evaluate(self, now: datetime) -> None:
        """Advance every machine to `now`; publish closed state intervals and closed buckets."""
        closed: dict[str, list[ClosedBucket]] = {}
        for m in self.config.machines:
            acc = self.accumulators[m.id]
            state, reason = self._machine_state(m)
            self._emit_intervals(m.id, acc.advance(now, state, reason))
            done = acc.close_buckets(now)
            if done:
                closed[m.id] = done
        if closed:
            self._emit_buckets(closed)
        self._flush()

    async def _evaluate_loop(self, stop: asyncio.Event) -> None:
        tick = min([g.interval_s for d in self.devices.values() for g in d.groups] or [1.0])
        while not stop.is_set():
            self.evaluate(self.clock.now())
            await asyncio.sleep(tick)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 10.0) -> None:
        log.info(
            "agent starting",
            extra={"agent": self.config.agent.id, "boot": self.boot_id, "devices": len(self.devices)},
        )
        now = self.clock.now()
        for acc in self.accumulators.values():
            acc.start(now)
        self._birth()
        self._flush()
        # Everything built so far (imported libraries, configuration) lives as long as the agent:
        # keep it out of the collector's full scans, which would otherwise walk it again and again.
        gc.freeze()
        self.publisher.start()
        tasks = [asyncio.create_task(self._poll_group(d, g, stop)) for d in self.devices.values() for g in d.groups]
        tasks.append(asyncio.create_task(self._evaluate_loop(stop)))
        tasks.append(asyncio.create_task(self.publisher.run(stop)))
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
            self.outbox.close()
