"""The scenario file: a simulated plant (calendar, machines, behaviour) and its named phases.

Validated with pydantic and loaded through `edgeproof.configfile`, so a mistake is reported as
`file:line: field: message`. docs/simulators.md describes every field.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from edgeproof.configfile import TimeZoneName, load_yaml_model

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Interface = Literal["opcua", "modbus", "none"]
UINT32_MAX = 2**32 - 1
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _parse_hhmm(value: object) -> time:
    # A plain YAML 1.1 reader turns an unquoted 14:00 into the base-60 integer 840: refuse numbers.
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not (m := _HHMM.match(value)):
        raise ValueError(f"expected an 'HH:MM' time, got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


ClockTime = Annotated[time, BeforeValidator(_parse_hhmm)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Break(_Strict):
    start: ClockTime
    end: ClockTime


class Shift(_Strict):
    name: str
    days: list[Weekday] = Field(min_length=1)
    start: ClockTime
    end: ClockTime = Field(description="an end at or before start means the shift ends the next day")
    breaks: list[Break] = Field(default_factory=list)

    def duration(self) -> timedelta:
        return _span(self.start, self.end)

    @model_validator(mode="after")
    def _breaks_inside(self) -> Shift:
        length = self.duration()
        for b in self.breaks:
            offset = _span(self.start, b.start)
            if offset + _span(b.start, b.end) > length:
                raise ValueError(f"break {b.start:%H:%M}-{b.end:%H:%M} is not strictly inside the shift")
        return self


def _span(a: time, b: time) -> timedelta:
    """Length from clock time a to clock time b, crossing midnight when b <= a."""
    seconds = (b.hour * 60 + b.minute - a.hour * 60 - a.minute) * 60
    return timedelta(seconds=seconds if seconds > 0 else seconds + 86400)


class Calendar(_Strict):
    shifts: list[Shift] = Field(min_length=1)


class StopKind(_Strict):
    probability: float = Field(ge=0, description="relative weight of this stop kind")
    mean_min: float = Field(gt=0, description="mean duration in minutes (exponential)")


class MicroStops(_Strict):
    """Short unreasoned stops inside running stretches (the machine simply stops, no fault, no setup).

    Keep `max_s` below the agent's micro-stop threshold (edge_agent kpi.micro_stop_s, default
    120 s), or the agent sees an IDLE stop where the truth has a micro-stop.
    """

    probability: float = Field(
        gt=0, le=1, description="micro-stops per minute of running (a Poisson rate), after 60 s of running"
    )
    mean_s: float = Field(gt=0, description="mean duration in plant seconds (exponential, then clipped)")
    min_s: int = Field(default=10, ge=1, description="shortest micro-stop, plant seconds")
    max_s: int = Field(ge=1, description="longest micro-stop, plant seconds")

    @model_validator(mode="after")
    def _ordered(self) -> MicroStops:
        if self.max_s < self.min_s:
            raise ValueError("micro max_s must be at least min_s")
        return self


class StopMix(_Strict):
    idle: StopKind
    setup: StopKind
    fault: StopKind
    micro: MicroStops | None = Field(default=None, description="optional micro-stops inside running stretches")


class Identification(_Strict):
    manufacturer: str = "Edgeproof Simulated Machine Works"
    model: str = "SIM"
    serial_number: str = "0000"


class Machine(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="also used in OPC UA node ids")
    name: str
    process: str = Field(description="the process (工序) the machine serves, e.g. turning")
    interface: Interface
    io_unit: int | None = Field(
        default=None, ge=1, le=247, description="unit id on the IO gateway; only for interface none"
    )
    ideal_cycle_s: float = Field(gt=0)
    counter_start: int = Field(default=0, ge=0, le=UINT32_MAX)
    counter_start_scrap: int = Field(default=0, ge=0, le=UINT32_MAX)
    scrap_rate: float = Field(default=0.0, ge=0, le=1)
    mean_run_min: float = Field(gt=0)
    stops: StopMix
    rated_kw: float = Field(gt=0)
    programs: list[str] = Field(default_factory=lambda: ["MAIN"], min_length=1)
    identification: Identification = Field(default_factory=Identification)

    @model_validator(mode="after")
    def _io_unit_matches_interface(self) -> Machine:
        if self.interface == "none" and self.io_unit is None:
            raise ValueError("a machine with interface none needs io_unit (its IO module's unit id)")
        if self.interface != "none" and self.io_unit is not None:
            raise ValueError("io_unit is only for machines with interface none")
        return self


class Window(_Strict):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("window end must be after start")
        return self


class Phase(_Strict):
    description: str = ""
    window: Window
    exposed: list[str] = Field(description="machines with a live network interface in this phase")
    fault_factor: float = Field(default=1.0, ge=0, description="multiplies the fault probability weight")
    setup_factor: float = Field(default=1.0, gt=0, description="multiplies the mean setup duration")
    slowdown: float = Field(default=0.0, ge=0, description="actual cycle = ideal x (1 + slowdown)")
    scrap_factor: float = Field(default=1.0, ge=0, description="multiplies each machine's scrap_rate")


class Scenario(_Strict):
    scenario: str
    seed: int = Field(ge=0)
    timezone: TimeZoneName
    calendar: Calendar
    model_lead_s: int = Field(default=3600, ge=0, description="plant modelled this long before a window")
    model_tail_s: int = Field(default=3600, ge=0, description="plant modelled this long after a window")
    update_interval_s: float = Field(default=0.02, gt=0, description="wall seconds between server refreshes")
    machines: list[Machine] = Field(min_length=1)
    phases: dict[str, Phase] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        ids = [m.id for m in self.machines]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate machine ids: {dupes}")
        units = [m.io_unit for m in self.machines if m.io_unit is not None]
        if dupes_u := sorted({u for u in units if units.count(u) > 1}):
            raise ValueError(f"duplicate io_unit: {dupes_u}")
        for name, phase in self.phases.items():
            if unknown := [m for m in phase.exposed if m not in ids]:
                raise ValueError(f"phase {name}: exposed lists unknown machines {unknown}")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def machine(self, machine_id: str) -> Machine:
        return next(m for m in self.machines if m.id == machine_id)

    def phase(self, name: str) -> Phase:
        try:
            return self.phases[name]
        except KeyError:
            raise KeyError(f"unknown phase {name!r}; the scenario has {sorted(self.phases)}") from None

    def horizon(self, phase: str) -> tuple[datetime, datetime]:
        """The span the plant model covers for a phase: the window widened by lead and tail."""
        w = self.phase(phase).window
        return w.start - timedelta(seconds=self.model_lead_s), w.end + timedelta(seconds=self.model_tail_s)


def demo_scenario_path() -> Path:
    """The demo plant shipped inside the package."""
    return Path(str(resources.files("simulators") / "scenarios" / "demo-plant.yaml"))


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Load and validate a scenario file (the packaged demo plant by default); raises ConfigError."""
    return load_yaml_model(path if path is not None else demo_scenario_path(), Scenario)
