"""Configuration of an OPC UA device: endpoint, security, acquisition mode, tags or a machine-tool model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from asyncua import ua
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.opcua.models import MODELS, ModelName


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Deadband(_Model):
    """Data-change filter: report a change only when it exceeds this (OPC UA Part 4, DataChangeFilter)."""

    type: Literal["absolute", "percent"]
    value: float = Field(ge=0, description="absolute: engineering units; percent: of the node's EURange (0-100)")


class OpcUaTag(_Model):
    name: str = Field(min_length=1)
    node: str | None = Field(None, description="NodeId string, e.g. ns=2;s=CNC-01/Monitoring/Spindle/IsRotating")
    path: str | None = Field(
        None,
        description="browse path from the Objects folder (or from the device's machine_path when it has a model), "
        "'/'-separated browse names; 'N:Name' pins namespace index N, a bare 'Name' matches any namespace",
    )
    sampling_interval_s: float | None = Field(None, ge=0, description="overrides the device's sampling interval")
    queue_size: int | None = Field(None, ge=1, description="overrides the device's queue size")
    deadband: Deadband | None = Field(None, description="overrides the device's deadband")

    @field_validator("node")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ua.NodeId.from_string(v)
        except Exception as e:  # asyncua raises several types for bad strings
            raise ValueError(f"not a NodeId: {v!r}") from e
        return v

    @field_validator("path")
    @classmethod
    def _path_steps(cls, v: str | None) -> str | None:
        return v if v is None else _browse_path(v)

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of node or path")
        return self


SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
SecurityPolicy = Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class OpcUaSecurity(_Model):
    mode: SecurityMode = "None"
    policy: SecurityPolicy = Field("Basic256Sha256", description="used with Sign and SignAndEncrypt")
    username: str | None = None
    password: SecretStr | None = None
    pki_dir: Path = Field(
        Path("var/pki"),
        description="own/ (this agent's certificate and key, generated once), trusted/, rejected/ server certificates",
    )
    application_uri: str | None = Field(
        None, description="default urn:<hostname>:edgeproof; written into the certificate"
    )
    certificate_days: int = Field(3650, ge=1, description="validity of a generated application certificate")
    expiry_warning_days: int = Field(30, ge=0, description="warn this long before a certificate expires")

    @model_validator(mode="after")
    def _password_needs_user(self) -> OpcUaSecurity:
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self


class OpcUaDeviceConfig(_Model):
    id: str = Field(min_length=1)
    protocol: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    timeout_s: float = Field(2.0, gt=0, description="per request, and for connecting")
    session_timeout_s: float = Field(600.0, gt=0, description="requested session lifetime; servers may cap it")
    acquisition: Literal["subscription", "polling"] = Field(
        "subscription", description="polling: batch Reads every poll_interval_s, for servers that subscribe badly"
    )
    publishing_interval_s: float = Field(0.5, gt=0, description="subscription: how often the server sends changes")
    poll_interval_s: float = Field(1.0, gt=0, description="polling: wall seconds between batch Reads")
    sampling_interval_s: float | None = Field(
        None, ge=0, description="subscription: default per-tag sampling interval; none = the publishing interval"
    )
    queue_size: int = Field(1, ge=1, description="subscription: default per-tag queue size")
    deadband: Deadband | None = Field(None, description="subscription: default per-tag deadband")
    keepalive_count: int = Field(
        10, ge=1, description="publishing intervals without data before the server sends a keep-alive"
    )
    lifetime_count: int = Field(
        30, ge=3, description="publishing intervals without a publish request before the server drops the subscription"
    )
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between reconnect attempts")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    model: ModelName | None = Field(
        None, description="built-in machine-tool mapping that adds its tags (OPC 40501 / OPC 40502)"
    )
    machine_path: str | None = Field(None, description="browse path of the machine object, required with model")
    tags: list[OpcUaTag] = Field(default_factory=list, description="with a model: extra tags, or overrides by name")

    @field_validator("machine_path")
    @classmethod
    def _machine_path_steps(cls, v: str | None) -> str | None:
        return v if v is None else _browse_path(v)

    @model_validator(mode="after")
    def _tags_or_model(self) -> OpcUaDeviceConfig:
        if self.model is None and not self.tags:
            raise ValueError("give tags, or a model with its machine_path")
        if self.model is not None and self.machine_path is None:
            raise ValueError(f"model {self.model} needs machine_path (browse path of the machine object)")
        if self.model is None and self.machine_path is not None:
            raise ValueError("machine_path is only used with a model")
        if self.lifetime_count < 3 * self.keepalive_count:
            raise ValueError("lifetime_count must be at least 3 x keepalive_count (OPC UA Part 4)")
        names = [t.name for t in self.tags]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ValueError(f"duplicate tag name {n!r} in tags")
        if self.model is not None:
            self.tags = _with_model_tags(self.model, self.tags)
        return self

    @property
    def interval_s(self) -> float:
        """How often the agent collects this device's samples."""
        return self.publishing_interval_s if self.acquisition == "subscription" else self.poll_interval_s


def _browse_path(path: str) -> str:
    if not path.strip("/") or any(not step for step in path.strip("/").split("/")):
        raise ValueError(f"empty browse name in {path!r}")
    return path


def _with_model_tags(model: ModelName, tags: list[OpcUaTag]) -> list[OpcUaTag]:
    """The model's tags in its order, each replaced by a user tag of the same name; then the user's other tags."""
    own = {t.name: t for t in tags}
    merged = [own.get(name) or OpcUaTag(name=name, path=path) for name, path in MODELS[model].tags.items()]
    return merged + [t for t in tags if t.name not in MODELS[model].tags]
