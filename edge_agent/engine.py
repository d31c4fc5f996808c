"""The plant's evaluation, free of I/O: samples in, states, closed intervals and closed buckets out.

Works only on the times it is given (sample agent and source times, evaluation instants), never
on a clock of its own, so the live agent and a replay of its event log compute the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import isfinite
from typing import Literal
from zoneinfo import ZoneInfo

from connectors.modbus.config import ModbusDeviceConfig
from connectors.sample import Sample
from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import AgentConfig, DeviceConfig, Machine
from edge_agent.kpi import ClosedBucket, ClosedInterval, MachineAccumulator
from edge_agent.states import StateRules
from edgeproof.indicators import ProcessInfo, RegisteredMachine, SiteRatios, site_ratios

STALE_POLLS = 3  # a tag not refreshed within this many poll periods (plus the timeout) counts as no data
STALE_REASON = "stale: not refreshed in time"
CounterKind = Literal["parts", "scrap", "energy"]


def poll_interval_s(device: DeviceConfig, tag: str) -> float:
    """Wall seconds between reads of one tag, as the device's poll groups are planned."""
    if isinstance(device, ModbusDeviceConfig):
        per_tag = next((t.poll_interval_s for t in device.tags if t.name == tag), None)
        return per_tag or device.poll_interval_s
    return device.interval_s


def stale_lifetimes(config: AgentConfig, speed: float) -> dict[tuple[str, str], timedelta]:
    """(device, tag) -> how long a good sample stays current, in plant time (`speed` plant s per wall s)."""
    return {
        (d.id, t.name): timedelta(seconds=(STALE_POLLS * poll_interval_s(d, t.name) + d.timeout_s) * speed)
        for d in config.devices
        for t in d.tags
    }


def config_fingerprint(config: AgentConfig) -> str:
    """SHA-256 of everything that changes the numbers, so a replay can tell it uses another configuration."""
    relevant = config.model_dump(
        mode="json", include={"site", "processes", "machines", "state_rules", "calendar", "kpi"}
    )
    relevant["poll"] = sorted(
        [d.id, t.name, poll_interval_s(d, t.name), d.timeout_s] for d in config.devices for t in d.tags
    )
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@dataclass
class SiteWindow:
    start: datetime
    end: datetime
    ratios: SiteRatios


@dataclass
class Evaluation:
    """What one evaluation instant closed."""

    intervals: list[tuple[str, ClosedInterval]] = field(default_factory=list)
    buckets: dict[str, list[ClosedBucket]] = field(default_factory=dict)
    sites: list[SiteWindow] = field(default_factory=list)


class PlantEngine:
    def __init__(self, config: AgentConfig, speed: float = 1.0) -> None:
        self.config = config
        tz = ZoneInfo(config.site.timezone)
        self.calendar = ShiftCalendar(config.calendar, tz)
        self.buckets = Buckets.configured(config.kpi, config.calendar, tz)
        self.lifetimes = stale_lifetimes(config, speed)
        self.latest: dict[str, dict[str, Sample]] = {d.id: {} for d in config.devices}
        self.rules = {name: StateRules(rules) for name, rules in config.state_rules.items()}
        self.accumulators = {
            m.id: MachineAccumulator.for_machine(m, config.kpi, self.calendar, self.buckets) for m in config.machines
        }
        # (device, tag) -> (machine, kind) for every counter and energy meter tag
        self._counters: dict[tuple[str, str], list[tuple[str, CounterKind]]] = {}
        for m in config.machines:
            kinds: tuple[tuple[str | None, CounterKind], ...] = (
                (m.counters.parts, "parts"),
                (m.counters.scrap, "scrap"),
                (m.counters.energy, "energy"),
            )
            for tag, kind in kinds:
                if m.device and tag:
                    self._counters.setdefault((m.device, tag), []).append((m.id, kind))
        self.register = [
            RegisteredMachine(
                machine_id=m.id, process=m.process, digital=m.digital, nc_capable=m.nc_capable, acquired=bool(m.device)
            )
            for m in config.machines
        ]
        self.processes = [ProcessInfo(process_id=p.id, key=p.key) for p in config.processes]
        self._site_pending: dict[tuple[datetime, datetime], dict[str, float]] = {}  # window -> machine -> observed_s
        self._last_tick: datetime | None = None
        self._resumed: datetime | None = None  # the latest start of planned work after a break or time off

    def start(self, now: datetime) -> None:
        """Account every machine's current bucket from its start: time before this is UNKNOWN."""
        for acc in self.accumulators.values():
            acc.start(now)

    def ingest(self, samples: list[Sample]) -> None:
        """Latest values; counter and meter samples at their own time: the source's timestamp if given, else ours."""
        counters, latest = self._counters, self.latest
        for s in samples:
            tags = latest.setdefault(s.device_id, {})
            users = counters.get((s.device_id, s.tag)) if s.good else None
            if not users or not isinstance(s.value, int | float) or not isfinite(s.value):  # NaN/inf: no count
                tags[s.tag] = s
                continue
            previous = tags.get(s.tag)
            tags[s.tag] = s
            t = s.source_time
            if t is None:
                t = s.agent_time
            elif previous is not None and previous.source_time == t and previous.value == s.value:
                continue  # the same source reading again (OPC UA re-delivers an unchanged value): not a new sample
            elif t > s.agent_time:
                t = s.agent_time  # a source clock ahead of ours: a value cannot have been made after it was read
            for machine_id, kind in users:
                acc = self.accumulators[machine_id]
                if kind == "energy":
                    acc.meter(t, s.value)
                elif kind == "scrap":
                    acc.count(t, None, s.value, acc.program_in(tags))
                else:
                    acc.count(t, s.value, None, acc.program_in(tags))

    def machine_state(self, machine: Machine, now: datetime) -> tuple[str, str | None]:
        device = machine.device
        if device is None or machine.state_rules is None:
            return "UNKNOWN", "not acquired"
        rule_set = self.rules[machine.state_rules]
        latest = self.latest.get(device, {})
        values = {}
        for tag in rule_set.tags:  # only the tags the rules look at
            s = latest.get(tag)
            if s is not None and s.good and now > s.agent_time + self.lifetimes[(device, tag)]:
                s = Sample.bad(s.device_id, tag, s.agent_time, STALE_REASON)
            if s is not None:
                values[tag] = s
        return rule_set.evaluate(values)

    def _read_before(self, machine: Machine, since: datetime, now: datetime) -> bool:
        """Whether a tag the machine's rules use still holds a sample read before `since` that is not yet stale."""
        device = machine.device
        if device is None or machine.state_rules is None:
            return False
        latest = self.latest.get(device, {})
        for tag in self.rules[machine.state_rules].tags:
            s = latest.get(tag)
            if s is not None and s.agent_time < since and now <= s.agent_time + self.lifetimes[(device, tag)]:
                return True
        return False

    def evaluate(self, now: datetime) -> Evaluation:
        """Advance every machine to `now`; return the state intervals, buckets and site windows that closed.

        Where planned work resumes (a break ends, a shift starts), samples read before do not describe
        the machine after it: from there its state waits for a sample read since, or for those samples
        to go stale (UNKNOWN), and the state it then shows holds from the resumption on.
        """
        out = Evaluation()
        previous = self._last_tick
        if previous is None or now > previous:
            self._last_tick = now
            # no resumption before the first tick: time before the first observation stays UNKNOWN
            if previous is not None:
                self._resumed = self.calendar.work_resumed(previous, now) or self._resumed
        resumed = self._resumed
        for m in self.config.machines:
            acc = self.accumulators[m.id]
            waiting = False
            if resumed is not None and (acc.held or (acc.last_t is not None and acc.last_t < resumed)):
                out.intervals += [(m.id, iv) for iv in acc.hold(resumed)]
                waiting = self._read_before(m, resumed, now)
            if not waiting:
                state, reason = self.machine_state(m, now)
                out.intervals += [(m.id, iv) for iv in acc.advance(now, state, reason)]
            done = acc.close_buckets(now)
            if done:
                out.buckets[m.id] = done
                for b in done:
                    self._site_pending.setdefault((b.start, b.end), {})[m.id] = b.elements.observed_s
        out.sites = self._complete_site_windows()
        return out

    def _complete_site_windows(self) -> list[SiteWindow]:
        """Site ratios of each window every machine has closed (machines may close a bucket at different ticks)."""
        complete = sorted(w for w, observed in self._site_pending.items() if len(observed) == len(self.accumulators))
        return [
            SiteWindow(
                start,
                end,
                site_ratios(
                    self.register,
                    self.processes,
                    self._site_pending.pop((start, end)),
                    (end - start).total_seconds(),
                    self.config.kpi.networked_min_coverage,
                ),
            )
            for start, end in complete
        ]
