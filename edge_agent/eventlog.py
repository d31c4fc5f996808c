"""The raw event log: every sample the agent ingests and every evaluation instant, as JSON lines.

Format in docs/event-log.md. Replaying the lines in order through `PlantEngine` reproduces the
agent's numbers exactly, which lets an evaluator recompute every indicator from raw data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from connectors.sample import Sample, Value

FORMAT_VERSION = 1


def _text_time(v: object) -> object:
    # pydantic would read a number as seconds since 1970: in the log a time is always ISO-8601 text
    if isinstance(v, int | float):
        raise ValueError("a time must be ISO-8601 text, e.g. 2026-03-02T06:00:00.000000Z")
    return v


Time = Annotated[AwareDatetime, BeforeValidator(_text_time)]


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartLine(_Line):
    """The agent started: accounting restarts from the current bucket's start (earlier time is UNKNOWN)."""

    start: Time = Field(description="plant time the agent started its accounting")
    v: Literal[1] = FORMAT_VERSION
    boot_id: str
    speed: float = Field(gt=0, description="plant seconds per wall second (1 unless a simulated clock ran)")
    config_sha256: str = Field(description="fingerprint of the configuration parts that change the numbers")


class TickLine(_Line):
    """An evaluation instant: states are derived and time is credited up to here."""

    tick: Time


class SampleLine(_Line):
    """One sample as a connector delivered it."""

    device: str
    tag: str
    value: Value
    good: bool
    at: Time = Field(description="agent time of the read, UTC")
    source_at: Time | None = Field(None, description="the source's own timestamp, if it gave one")
    reason: str | None = Field(None, description="why the sample is bad")

    def sample(self) -> Sample:
        src = self.source_at.astimezone(UTC) if self.source_at else None
        return Sample(self.device, self.tag, self.value, self.good, self.at.astimezone(UTC), src, self.reason)


Event = StartLine | TickLine | SampleLine


class EventLogError(ValueError):
    """A line that is not a valid event; the message starts with `file:line:`."""


def iso(t: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, the only time form in the log."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sample_line(s: Sample, at: str | None = None) -> str:
    """A sample as its line (`at`: its agent time already formatted), without building a model."""
    fields: dict[str, object] = {
        "device": s.device_id,
        "tag": s.tag,
        "value": s.value,
        "good": s.good,
        "at": at or iso(s.agent_time),
    }
    if s.source_time is not None:
        fields["source_at"] = iso(s.source_time)
    if s.reason is not None:
        fields["reason"] = s.reason
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)


class EventLogWriter:
    """Appends to one file; buffered, flushed to the OS at each tick (no fsync: the outbox is the durable record)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a line cut short by a power loss must not swallow the first line this run writes
        needs_newline = path.exists() and path.stat().st_size > 0 and path.read_bytes()[-1:] != b"\n"
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1 << 16)
        if needs_newline:
            self._file.write("\n")

    def start(self, t: datetime, boot_id: str, speed: float, config_sha256: str) -> None:
        fields = {
            "start": iso(t),
            "v": FORMAT_VERSION,
            "boot_id": boot_id,
            "speed": speed,
            "config_sha256": config_sha256,
        }
        self._file.write(json.dumps(fields, separators=(",", ":")) + "\n")
        self._file.flush()

    def samples(self, samples: list[Sample]) -> None:
        stamps: dict[datetime, str] = {}  # the samples of one poll mostly share their read time
        lines = []
        for s in samples:
            at = stamps.get(s.agent_time)
            if at is None:
                at = stamps[s.agent_time] = iso(s.agent_time)
            lines.append(sample_line(s, at))
        self._file.write("\n".join(lines) + "\n" if lines else "")

    def tick(self, t: datetime) -> None:
        self._file.write(f'{{"tick":"{iso(t)}"}}\n')
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> Iterator[Event]:
    """Every event in file order; a malformed line raises EventLogError after all lines before it were yielded."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                fields = json.loads(raw)
            except ValueError as e:  # also undecodable bytes
                raise EventLogError(f"{path}:{number}: not a JSON line: {e}") from None
            if not isinstance(fields, dict):
                raise EventLogError(f"{path}:{number}: not a JSON object")
            model = StartLine if "start" in fields else TickLine if "tick" in fields else SampleLine
            try:
                yield model.model_validate(fields)
            except ValidationError as e:
                problem = e.errors(include_url=False)[0]
                where = ".".join(str(p) for p in problem["loc"]) or model.__name__
                raise EventLogError(f"{path}:{number}: {model.__name__} {where}: {problem['msg']}") from None
