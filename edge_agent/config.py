"""The agent's one YAML file: identity, asset register, devices, state rules, calendar, MQTT.

Validated with pydantic; `load_config` reports problems as `file:line: field: message`.
"""

from __future__ import annotations

from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

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
    ideal_cycle_s: float | None = Field(None, gt=0, description="planned run time per unit (PRU)")
    device: str | None = Field(None, description="device that observes this machine; none = not acquired")
    state_rules: str | None = Field(None, description="name of a rule set in state_rules")
    counters: Counters = Field(default_factory=Counters)


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


class Calendar(_Model):
    shifts: list[Shift] = Field(default_factory=list)


class Kpi(_Model):
    bucket_minutes: int = Field(60, ge=1, le=1440, description="must divide a day; buckets align to local midnight")
    networked_min_coverage: float = Field(0.9, gt=0, le=1)

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
            used += [t for t in (m.counters.parts, m.counters.scrap) if t]
            missing = sorted(set(used) - tags)
            if missing:
                raise located_error(("machines", i, "device"), f"device {m.device!r} has no tag {', '.join(missing)}")
        return self


def load_config(path: str | Path) -> AgentConfig:
    return load_yaml_model(path, AgentConfig)


__all__ = ["AgentConfig", "MachineState", "load_config"]
