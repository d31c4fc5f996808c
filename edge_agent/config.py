"""The agent's one YAML file: identity, asset register, devices, state rules, calendar, MQTT, outbox.

Validated with pydantic; `load_config` reports problems as `file:line: field: message`.
"""

from __future__ import annotations

from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PositiveFloat,
    SecretStr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from connectors.modbus.config import ModbusDeviceConfig
from connectors.opcua import OpcUaDeviceConfig
from connectors.opcua.models import MODELS
from edgeproof.configfile import TimeZoneName, load_yaml_model, located_error
from edgeproof.contract import MachineState


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventLogSettings(_Model):
    """The raw event log (docs/event-log.md); a bare path means one file, never rotated."""

    path: Path = Field(description="the file written to; rotated files are renamed next to it")
    max_bytes: int | None = Field(
        None, ge=4096, description="start a new file at the first tick once the current one has reached this size"
    )
    daily: bool = Field(False, description="start a new file at the first tick of each local day")
    keep: int | None = Field(None, ge=1, description="rotated files kept; older ones are deleted (default: all)")
    timezone: TimeZoneName | None = Field(None, description="zone of the daily rotation; default: site.timezone")

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, v: object) -> object:
        return {"path": v} if isinstance(v, str | Path) else v


class AgentIdentity(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="unique per agent; used in MQTT topics")
    data_dir: Path = Field(Path("var/agent"), description="outbox and sequence counter live here")
    event_log: EventLogSettings | None = Field(
        None, description="append every raw sample here as JSON lines (docs/event-log.md)"
    )


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
    energy: str | None = Field(
        None, description="tag with the power meter's cumulative active energy (e.g. its total kWh register)"
    )
    energy_scale: PositiveFloat = Field(1.0, description="kWh per unit of the energy tag, e.g. 0.001 for Wh")

    @model_serializer(mode="wrap")
    def _no_meter_as_before(self, handler: SerializerFunctionWrapHandler) -> object:
        # dumped as before meters existed, so the configuration fingerprint of older logs still matches
        out = handler(self)
        if self.energy is None:
            out.pop("energy", None)
            out.pop("energy_scale", None)
        return out


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


class Break(Period):
    name: str | None = Field(None, description="reason code of the break's PLANNED_STOP: break:<name>")

    @model_serializer(mode="wrap")
    def _unnamed_as_before(self, handler: SerializerFunctionWrapHandler) -> object:
        # dumped as before names existed, so the configuration fingerprint of older logs still matches
        out = handler(self)
        if self.name is None:
            out.pop("name", None)
        return out


class Shift(_Model):
    name: str = "shift"
    days: list[Weekday]
    start: dtime
    end: dtime = Field(description="if not after start, the shift ends on the next day")
    breaks: list[Break] = Field(default_factory=list)


class Holiday(_Model):
    """A local date on which no shift starts; written as a bare date or as `{date: ..., name: ...}`."""

    date: date
    name: str | None = Field(None, description="reason code of its NOT_SCHEDULED time: holiday:<name>")

    @model_validator(mode="before")
    @classmethod
    def _bare_date(cls, v: object) -> object:
        return v if isinstance(v, dict) else {"date": v}

    @model_serializer(mode="wrap")
    def _unnamed_as_date(self, handler: SerializerFunctionWrapHandler) -> object:
        out = handler(self)  # an unnamed holiday is dumped as its bare date, as before names existed
        return out["date"] if self.name is None else out


class PlannedDowntime(_Model):
    start: datetime = Field(description="local date and time, without a zone")
    end: datetime
    reason: str | None = Field(None, description="reason code of its PLANNED_STOP: planned_downtime:<reason>")

    @model_validator(mode="after")
    def _local_and_ordered(self) -> PlannedDowntime:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("give local times without a zone (site.timezone applies)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Calendar(_Model):
    shifts: list[Shift] = Field(default_factory=list)
    holidays: list[Holiday] = Field(default_factory=list, description="local dates on which no shift starts")
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


class MqttTls(_Model):
    """TLS to the broker; present (even empty: `tls: {}`) means TLS is on."""

    ca_file: FilePath | None = Field(
        None, description="PEM CA bundle the broker's certificate must chain to; none: system"
    )
    cert_file: FilePath | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: FilePath | None = Field(None, description="client private key (PEM); none: it is in cert_file")
    key_password: SecretStr | None = Field(None, description="passphrase of an encrypted key_file")
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="lowest TLS version accepted")
    insecure_skip_verify: bool = Field(False, description="accept any server certificate and name (testing only)")

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, float | int) else v  # YAML reads 1.2 as a number

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTls:
        if (self.key_file is not None or self.key_password is not None) and self.cert_file is None:
            raise ValueError("key_file and key_password need cert_file")
        return self


class Mqtt(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535, description="default 8883 when tls is set")
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(30, ge=5)
    max_inflight: int = Field(20, ge=1, description="QoS 1 messages awaiting PUBACK at once")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT 5, or 3.1.1 when the broker refuses 5 or leaves a 5 CONNECT unanswered"
    )
    tls: MqttTls | None = None
    connect_timeout_s: float = Field(
        10.0, gt=0, description="limit for each of: TCP connect, TLS handshake, the broker's CONNACK"
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="shortest wait before a reconnect attempt")
    reconnect_max_s: float = Field(60.0, gt=0, description="longest wait before a reconnect attempt")
    reconnect_jitter: Literal["full", "decorrelated"] = Field(
        "decorrelated", description="how the random reconnect delays grow (connectors/backoff.py)"
    )
    drain_rate_per_s: float = Field(
        200.0, ge=0, description="backlog messages sent per second after a reconnect; 0: unlimited"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, v: object) -> object:
        # YAML reads `protocol: 5` as a number
        return "5" if isinstance(v, int | float) and not isinstance(v, bool) and v == 5 else v

    @model_validator(mode="after")
    def _tls_port_and_bounds(self) -> Mqtt:
        if self.tls is not None and "port" not in self.model_fields_set:
            self.port = 8883
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self


class HealthSettings(_Model):
    """The agent's own health: an MQTT message every `interval_s` and, when a port is set, Prometheus metrics."""

    interval_s: float = Field(60.0, gt=0, description="wall seconds between health messages")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus metrics over HTTP on this port (none: off)"
    )
    metrics_listen: str = Field("127.0.0.1", description="address the metrics port binds; 0.0.0.0 for every one")


class OutboxSettings(_Model):
    """Bounds of the durable outbox; docs/configuration.md gives the eviction policy."""

    max_bytes: int = Field(
        256 << 20, ge=1024, description="payload bytes kept unsent at most; over it, messages are evicted"
    )
    max_age_s: float = Field(
        30 * 86400.0, gt=0, description="unsent messages older than this (agent wall clock) are evicted"
    )
    low_water: float = Field(
        0.9,
        gt=0,
        le=1,
        description="an eviction goes down to this fraction of the bound, so that declarations stay rare",
    )


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
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

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
                if m.counters.energy is not None:
                    raise located_error(("machines", i, "counters", "energy"), "a meter needs the machine's device")
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
            if m.counters.energy is not None and m.counters.energy not in tags:
                raise located_error(
                    ("machines", i, "counters", "energy"), f"device {m.device!r} has no tag {m.counters.energy}"
                )
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

    @model_validator(mode="after")
    def _event_log_zone(self) -> AgentConfig:
        # a daily rotation follows the plant's day unless told otherwise
        if self.agent.event_log is not None and self.agent.event_log.timezone is None:
            self.agent.event_log.timezone = self.site.timezone
        return self


def load_config(path: str | Path) -> AgentConfig:
    return load_yaml_model(path, AgentConfig)


__all__ = ["AgentConfig", "MachineState", "load_config"]
