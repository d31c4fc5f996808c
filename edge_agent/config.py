"""The agent's one YAML file: identity, asset register, devices, state rules, calendar, MQTT.

Validated with pydantic; `load_config` reports problems as `file:line: field: message`.
"""

from __future__ import annotations

from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr, field_validator, model_validator

from connectors.modbus.config import ModbusDeviceConfig
from connectors.opcua import OpcUaDeviceConfig
from connectors.opcua.models import MODELS
from edgeproof.configfile import TimeZoneName, load_yaml_model, located_error
from edgeproof.contract import MachineState


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentIdentity(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="unique per agent; used in MQTT topics")
    data_dir: Path = Field(Path("var/agent"), description="outbox and sequence counter live here")
    event_log: Path | None = Field(None, description="append every raw sample here as JSON lines (docs/event-log.md)")


class Firm(_Model):
    name: str
    credit_code: str | None = Field(None, description="统一社会信用代码")
    industry: str | None = None


class Site(_Model):
    firm: Firm
    name: str
    timezone: TimeZoneName = "Asia/Shanghai"


class Process(_Model):
    id: str
    name: str
    key: bool = Field(False, description="key process (关键工序)")


class Counters(_Model):
    parts: str | None = Field(None, description="tag with the cumulative produced-parts counter")
    scrap: str | None = Field(None, description="tag with the cumulative scrap counter")
    bits: Literal[16, 32, 64] = Field(32, description="counter width, for wrap detection")


class Machine(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str
    type: str = Field(description="free text, e.g. cnc_lathe, stamping_press, manual_drill")
    process: str | None = None
    digital: bool = Field(description="has a digital control or interface, or was retrofitted to be observable")
    digital_basis: str | None = Field(None, description="why it counts as digital (for evaluators)")
    nc_capable: bool = Field(False, description="numerically controlled: CNC or PLC-controlled")
    ideal_cycle_s: float | None = Field(
        None, gt=0, description="planned run time per unit (PRU); fallback for programs not in the table"
    )
    program: str | None = Field(None, description="tag with the active program or product")
    ideal_cycle_by_program: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="PRU per value of the program tag"
    )
    device: str | None = Field(None, description="device that observes this machine; none = not acquired")
    state_rules: str | None = Field(None, description="name of a rule set in state_rules")
    counters: Counters = Field(default_factory=Counters)

    @field_validator("ideal_cycle_by_program", mode="before")
    @classmethod
    def _program_keys_as_text(cls, v: object) -> object:
        # YAML reads `1001: 42.0` with an integer key; the tag's value is compared as text
        return {str(k): c for k, c in v.items()} if isinstance(v, dict) else v


Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in"]


class Condition(_Model):
    tag: str
    op: Op = "eq"
    value: float | bool | str | list[float | bool | str]


class When(_Model):
    all: list[Condition] = Field(default_factory=list)
    any: list[Condition] = Field(default_factory=list)


class StateRule(_Model):
    state: Literal["RUNNING", "SETUP", "IDLE", "FAULT", "PLANNED_STOP"]
    when: When = Field(default_factory=When, description="empty: always matches (use last, as the default)")
    reason: str | None = Field(None, description="reason code, or '{tag}' to take it from a tag's value")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Period(_Model):
    start: dtime
    end: dtime


class Shift(_Model):
    name: str = "shift"
    days: list[Weekday]
    start: dtime
    end: dtime = Field(description="if not after start, the shift ends on the next day")
    breaks: list[Period] = Field(default_factory=list)


class PlannedDowntime(_Model):
    start: datetime = Field(description="local date and time, without a zone")
    end: datetime
    reason: str | None = None

    @model_validator(mode="after")
    def _local_and_ordered(self) -> PlannedDowntime:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("give local times without a zone (site.timezone applies)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Calendar(_Model):
    shifts: list[Shift] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list, description="local dates on which no shift starts")
    planned_downtime: list[PlannedDowntime] = Field(
        default_factory=list, description="one-off planned stops inside shifts, e.g. maintenance"
    )


Loss = Literal["availability", "performance"]


class Kpi(_Model):
    bucket_minutes: int = Field(60, ge=1, le=1440, description="must divide a day")
    bucket_align: Literal["midnight", "shift"] = Field(
        "midnight", description="bucket grid anchored at local midnight, or at the first shift's start"
    )
    networked_min_coverage: float = Field(0.9, gt=0, le=1)
    micro_stop_s: float = Field(120.0, ge=0, description="an unreasoned IDLE stop shorter than this is a MICRO_STOP")
    min_running_s: float = Field(0.0, ge=0, description="a RUNNING shorter than this, after a stop, joins the stop")
    micro_stop_loss: Loss = Field("availability", description="ISO 22400: availability; Nakajima/TPM: performance")
    setup_loss: Loss = Field("availability", description="ISO 22400: availability")
    max_lateness_s: float = Field(10.0, ge=0, description="counter samples up to this late are put back in order")
    counter_jump_factor: float = Field(3.0, gt=0, description="a delta above factor x elapsed / cycle is rejected")
    counter_jump_min: int = Field(10, ge=1, description="deltas up to this many parts are never rejected")

    @field_validator("bucket_minutes")
    @classmethod
    def _divides_day(cls, v: int) -> int:
        if 1440 % v:
            raise ValueError("must divide 1440 (minutes in a day)")
        return v


class Mqtt(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5)
    max_inflight: int = Field(20, ge=1, description="QoS 1 messages awaiting PUBACK at once")


DeviceConfig = Annotated[ModbusDeviceConfig | OpcUaDeviceConfig, Field(discriminator="protocol")]
# settings that belong to a shared Modbus link: every device on one endpoint must agree on them
LINK_FIELDS = ("transport", "baudrate", "parity", "stopbits", "bytesize", "timeout_s", "retries", "request_delay_s")


class AgentConfig(_Model):
    agent: AgentIdentity
    site: Site
    processes: list[Process] = Field(default_factory=list)
    machines: list[Machine]
    devices: list[DeviceConfig] = Field(default_factory=list)
    state_rules: dict[str, list[StateRule]] = Field(default_factory=dict)
    calendar: Calendar = Field(default_factory=Calendar)
    kpi: Kpi = Field(default_factory=Kpi)
    mqtt: Mqtt = Field(default_factory=Mqtt)

    @model_validator(mode="after")
    def _references_resolve(self) -> AgentConfig:
        for section, ids in (
            ("machines", [m.id for m in self.machines]),
            ("devices", [d.id for d in self.devices]),
            ("processes", [p.id for p in self.processes]),
        ):
            for index, ident in enumerate(ids):
                if ident in ids[:index]:
                    raise located_error((section, index, "id"), f"duplicate id {ident!r}")
        first_on_link: dict[tuple[str, str], ModbusDeviceConfig] = {}
        for i, d in enumerate(self.devices):
            if not isinstance(d, ModbusDeviceConfig):
                continue
            first = first_on_link.setdefault(d.link_key, d)
            for name in LINK_FIELDS:
                if getattr(d, name) != getattr(first, name):
                    raise located_error(
                        ("devices", i, name),
                        f"{d.id} shares link {d.link_key[1]} with {first.id}, whose {name} is {getattr(first, name)!r}",
                    )
        for m in self.machines:  # a machine-tool model's rule set, unless the file defines one of that name
            if m.state_rules in MODELS and m.state_rules not in self.state_rules:
                self.state_rules[m.state_rules] = [StateRule.model_validate(r) for r in MODELS[m.state_rules].rules]
        processes = {p.id for p in self.processes}
        devices = {d.id: d for d in self.devices}
        for i, m in enumerate(self.machines):
            if m.process is not None and m.process not in processes:
                raise located_error(("machines", i, "process"), f"{m.process!r} is not in processes")
            if m.device is None:
                continue
            if m.device not in devices:
                raise located_error(("machines", i, "device"), f"{m.device!r} is not in devices")
            if m.state_rules not in self.state_rules:
                raise located_error(
                    ("machines", i, "state_rules"), f"{m.state_rules!r} must name a rule set in state_rules"
                )
            tags = {t.name for t in devices[m.device].tags}
            used = [c.tag for r in self.state_rules[m.state_rules] for c in r.when.all + r.when.any]
            used += [t for t in (m.counters.parts, m.counters.scrap, m.program) if t]
            missing = sorted(set(used) - tags)
            if missing:
                raise located_error(("machines", i, "device"), f"device {m.device!r} has no tag {', '.join(missing)}")
        if self.kpi.bucket_align == "shift":
            self._shifts_on_bucket_grid()
        return self

    def _shifts_on_bucket_grid(self) -> None:
        shifts = self.calendar.shifts
        if not shifts:
            raise located_error(("kpi", "bucket_align"), "'shift' needs at least one shift in calendar.shifts")
        anchor = shifts[0].start
        for i, s in enumerate(shifts):
            if s.start.second or s.start.microsecond:
                raise located_error(("calendar", "shifts", i, "start"), "must be a whole minute to align buckets")
            offset = (s.start.hour - anchor.hour) * 60 + s.start.minute - anchor.minute
            if offset % self.kpi.bucket_minutes:
                raise located_error(
                    ("calendar", "shifts", i, "start"),
                    f"{s.start:%H:%M} is not on the {self.kpi.bucket_minutes}-minute bucket grid from {anchor:%H:%M}",
                )


def load_config(path: str | Path) -> AgentConfig:
    return load_yaml_model(path, AgentConfig)


__all__ = ["AgentConfig", "MachineState", "load_config"]
