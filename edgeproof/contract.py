"""The edge → cloud message contract (version 1): topics and payload models.

Imported by both the agent and the ingest; depends on pydantic and the indicator models only.
Every sequenced message carries the agent id, the boot id and a per-agent sequence number that
survives restarts, so the cloud can prove what arrived, what is missing and what is duplicated.
The retained status message and the periodic health message are the only unsequenced ones.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from edgeproof.indicators import ProcessInfo, RegisteredMachine, SiteRatios, TimeElements

CONTRACT_VERSION = 1
TOPIC_ROOT = f"edgeproof/v{CONTRACT_VERSION}"
INGEST_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+"

MachineState = Literal["RUNNING", "SETUP", "MICRO_STOP", "IDLE", "FAULT", "PLANNED_STOP", "NOT_SCHEDULED", "UNKNOWN"]
MACHINE_STATES: tuple[str, ...] = MachineState.__args__  # type: ignore[attr-defined]


def topic(agent_id: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{agent_id}/{kind}"


def parse_topic(name: str) -> tuple[str, str] | None:
    """(agent_id, kind) of a contract topic, or None for anything else."""
    parts = name.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT or not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


AGENT_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"  # safe as one MQTT topic level: no '/', '+' or '#'


class StatusMessage(_Strict):
    """Retained on `<root>/<agent>/status`; the broker publishes the offline one as last will.

    `at` is when the agent said it; None in the last will, which the broker sends at a time the
    agent cannot know.
    """

    v: Literal[1] = 1
    kind: Literal["status"] = "status"
    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    boot_id: str = Field(min_length=1)
    online: bool
    at: AwareDatetime | None = None


DeviceStatus = Literal["ok", "degraded", "down"]


class DeviceHealth(_Strict):
    device_id: str
    protocol: str
    status: DeviceStatus = Field(description="ok: every tag good; degraded: some bad; down: none good")
    tags: int = Field(ge=0)
    bad_tags: int = Field(ge=0, description="tags whose latest sample is bad (with a reason)")
    good_samples: int = Field(ge=0, description="good samples read since the agent started")
    poll_overruns: int = Field(ge=0, description="poll cycles that finished after the next poll was due")


class OutboxHealth(_Strict):
    depth: int = Field(ge=0, description="messages waiting for a PUBACK")
    bytes: int = Field(ge=0)
    oldest_age_s: float | None = Field(ge=0, description="age of the oldest waiting message; None when empty")
    evicted_messages: int = Field(ge=0, description="evicted since the outbox was created (declared upstream)")
    evicted_bytes: int = Field(ge=0)


class HealthMessage(_Strict):
    """Periodic on `<root>/<agent>/health`, QoS 0, not sequenced: live state, not evidence.

    The same numbers the agent serves as Prometheus metrics.
    """

    v: Literal[1] = 1
    kind: Literal["health"] = "health"
    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    boot_id: str = Field(min_length=1)
    agent_version: str
    at: AwareDatetime = Field(description="plant clock time of the reading, UTC")
    uptime_s: float = Field(ge=0, description="wall seconds since the agent started")
    connected: bool = Field(description="the MQTT session is up")
    published: int = Field(ge=0, description="messages acknowledged by the broker since the agent started")
    publish_rate_per_s: float = Field(ge=0, description="acknowledged messages per wall second since the last reading")
    samples_read: int = Field(ge=0)
    outbox: OutboxHealth
    devices: list[DeviceHealth]


class _Sequenced(_Strict):
    v: Literal[1] = 1
    agent_id: str = Field(pattern=AGENT_ID_PATTERN)
    boot_id: str = Field(min_length=1)
    seq: int = Field(ge=1, lt=2**63, description="per-agent, gap-free, survives restarts")
    produced_at: AwareDatetime = Field(description="plant clock time the message was produced, UTC")
    historical: bool = Field(
        False, description="sent from the agent's backlog after a reconnect, not live; transport only, never evidence"
    )
    key_id: str | None = Field(
        None, description="first 16 hex digits of the SHA-256 of the signing public key; None: unsigned"
    )
    sig: str | None = Field(None, description="base64 Ed25519 signature of signing_bytes(message); None: unsigned")


class Firm(_Strict):
    name: str
    credit_code: str | None = None
    industry: str | None = None


class SiteIdentity(_Strict):
    firm: Firm
    site: str
    timezone: str


class RegisterEntry(_Strict):
    machine_id: str
    name: str
    machine_type: str
    process: str | None
    digital: bool
    digital_basis: str | None = None
    nc_capable: bool
    acquired: bool
    protocol: str | None = None
    ideal_cycle_s: float | None = None


class BirthMessage(_Sequenced):
    kind: Literal["birth"] = "birth"
    agent_version: str
    public_key: str | None = Field(None, description="base64 of the agent's raw 32-byte Ed25519 public key")
    site: SiteIdentity
    processes: list[ProcessInfo]
    assets: list[RegisterEntry]


class StateInterval(_Sequenced):
    """One closed interval of one machine's state."""

    kind: Literal["state"] = "state"
    machine_id: str
    state: MachineState
    start: AwareDatetime
    end: AwareDatetime
    reason: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> StateInterval:
        if self.end < self.start:
            raise ValueError("state interval end is before its start")
        return self


class _Bucketed(_Sequenced):
    bucket_start: AwareDatetime
    bucket_end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> _Bucketed:
        if self.bucket_end <= self.bucket_start:
            raise ValueError("bucket_end must be after bucket_start")
        return self


class MachineKpi(_Bucketed):
    """Time elements and counts of one machine over one bucket [bucket_start, bucket_end)."""

    kind: Literal["kpi"] = "kpi"
    machine_id: str
    elements: TimeElements
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    flags: list[str] = Field(default_factory=list)


class SiteKpi(_Bucketed):
    """Site ratios over one bucket, with the register they were computed from."""

    kind: Literal["site"] = "site"
    machines: list[RegisteredMachine]
    processes: list[ProcessInfo]
    ratios: SiteRatios


EvictionReason = Literal["bytes", "age"]


class EvictionDeclaration(_Sequenced):
    """The agent's outbox dropped these messages unsent, to stay within its bounds.

    Written in the same transaction that deletes them, so an eviction is never silent: the cloud
    can tell a declared loss from a message that went missing on the way.
    """

    kind: Literal["evicted"] = "evicted"
    reason: EvictionReason = Field(description="bytes: over outbox.max_bytes; age: older than outbox.max_age_s")
    ranges: list[tuple[int, int]] = Field(
        min_length=1, description="evicted sequence numbers as inclusive [first, last] runs, ascending"
    )
    count: int = Field(ge=1, description="messages evicted; equals the numbers the ranges cover")
    bytes: int = Field(ge=0, description="payload bytes evicted")
    kinds: dict[str, int] = Field(default_factory=dict, description="evicted messages per kind")
    oldest_produced_at: AwareDatetime | None = Field(description="earliest produced_at among the evicted")
    newest_produced_at: AwareDatetime | None = Field(description="latest produced_at among the evicted")

    @model_validator(mode="after")
    def _consistent(self) -> EvictionDeclaration:
        previous = 0
        for first, last in self.ranges:
            if first <= previous or last < first:
                raise ValueError("ranges must be ascending, disjoint [first, last] pairs of sequence numbers >= 1")
            previous = last
        if previous >= self.seq:
            raise ValueError("a declaration can only name sequence numbers below its own")
        if sum(last - first + 1 for first, last in self.ranges) != self.count:
            raise ValueError("count differs from the numbers the ranges cover")
        if self.kinds and sum(self.kinds.values()) != self.count:
            raise ValueError("kinds do not add up to count")
        if (
            self.oldest_produced_at is not None
            and self.newest_produced_at is not None
            and self.newest_produced_at < self.oldest_produced_at
        ):
            raise ValueError("newest_produced_at is before oldest_produced_at")
        return self


AnySequenced = BirthMessage | StateInterval | MachineKpi | SiteKpi | EvictionDeclaration
SequencedMessage = Annotated[AnySequenced, Field(discriminator="kind")]
SEQUENCED_KINDS = ("birth", "state", "kpi", "site", "evicted")
_sequenced = TypeAdapter(SequencedMessage)


def parse_sequenced(payload: bytes | str) -> AnySequenced:
    """Validate one sequenced payload; raises pydantic.ValidationError with the reason."""
    return _sequenced.validate_json(payload)


# Not signed: the signature itself, and the transport flag the publisher flips after signing.
UNSIGNED_FIELDS = frozenset({"sig", "historical"})


def signing_bytes(message: BaseModel) -> bytes:
    """The bytes a sequenced message's `sig` signs: canonical JSON of the model without `sig` and
    `historical` (sorted keys, no spaces, UTF-8), so any party holding the model gets the same bytes,
    whatever the payload's key order or spacing."""
    body = message.model_dump(mode="json", exclude=set(UNSIGNED_FIELDS))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


def utc_iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
