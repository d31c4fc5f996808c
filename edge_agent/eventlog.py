"""The raw event log: every sample the agent ingests and every evaluation instant, as JSON lines.

Format in docs/event-log.md. Replaying the lines in order through `PlantEngine` reproduces the
agent's numbers exactly, which lets an evaluator recompute every indicator from raw data.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, BinaryIO, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from connectors.sample import Sample, Value
from edge_agent.config import EventLogSettings

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def _text_time(v: object) -> object:
    # pydantic would read a number as seconds since 1970: in the log a time is always ISO-8601 text
    if isinstance(v, int | float):
        raise ValueError("a time must be ISO-8601 text, e.g. 2026-03-02T06:00:00.000000Z")
    return v


Time = Annotated[AwareDatetime, BeforeValidator(_text_time)]


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartLine(_Line):
    """The agent started: accounting restarts from the current bucket's start (earlier time is UNKNOWN).

    With `part` > 1 the run did not restart: its log went on in a new file (rotation), which begins
    with this line so that it can be read alone; after part n - 1 of the same boot it changes nothing.
    """

    start: Time = Field(description="plant time the agent started its accounting")
    v: Literal[1] = FORMAT_VERSION
    boot_id: str
    speed: float = Field(gt=0, description="plant seconds per wall second (1 unless a simulated clock ran)")
    config_sha256: str = Field(description="fingerprint of the configuration parts that change the numbers")
    part: int = Field(
        1, ge=1, description="file of this run: 1 when the agent started, n > 1 when the log went on in a new file"
    )


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
    """Appends to one file; buffered, flushed to the OS at each tick (no fsync: the outbox is the durable record).

    With rotation configured, the first tick at which the file has reached `max_bytes`, or is at or
    past the local midnight after the file's first line, ends it: the file is renamed to
    `<stem>.<UTC time of its first line><suffix>` and the log goes on in a fresh file that begins
    with this run's start line again (time: that tick; `part`: the run's file number), so each file
    can be read alone. Only ticks rotate: a file never ends between samples and the tick that
    evaluates them, and the per-sample path costs what it did without rotation. A start finds the
    file due in the same way and rotates it before writing its start line.
    """

    def __init__(self, target: Path | str | EventLogSettings) -> None:
        settings = target if isinstance(target, EventLogSettings) else EventLogSettings(path=Path(target))
        self.path = settings.path
        self.max_bytes = settings.max_bytes
        self.keep = settings.keep
        self._tz = ZoneInfo(settings.timezone or "UTC") if settings.daily else None
        self._header: dict[str, object] | None = None  # this run's start line, repeated atop every new file
        self._part = 1
        self._rotation_failed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._file: BinaryIO = self.path.open("ab", buffering=1 << 16)
        # a line cut short by a power loss must not swallow the first line this run writes
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write(b"\n")
        self._set_first(_first_start(self.path))

    def _set_first(self, t: datetime | None) -> None:
        """When the file's first line began: it names the file once rotated and dates it for the daily rotation."""
        self._first = t
        self._next_day: datetime | None = None
        if t is not None and self._tz is not None:
            day = t.astimezone(self._tz).date() + timedelta(days=1)
            self._next_day = datetime.combine(day, time(), tzinfo=self._tz).astimezone(UTC)

    def _due(self, t: datetime) -> bool:
        size = self._file.tell()
        if size == 0:
            return False
        if self.max_bytes is not None and size >= self.max_bytes:
            return True
        if self._tz is None:
            return False
        # a first line that cannot be dated (not a start line) starts the day in a file of its own
        return self._next_day is None or t >= self._next_day

    def _header_line(self, t: datetime, fields: dict[str, object]) -> None:
        if self._file.tell() == 0:
            self._set_first(t)
        self._file.write(json.dumps({"start": iso(t), **fields}, separators=(",", ":")).encode() + b"\n")

    def _rotate(self, t: datetime) -> bool:
        """Rename the file and open a fresh one; False if the file system refused (the log goes on in this file)."""
        self._file.close()
        stamp = (self._first or t).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
        try:
            self.path.rename(target)
            if self.keep is not None:
                for old in self.rotated()[: -self.keep]:
                    old.unlink(missing_ok=True)
        except OSError as e:
            # never worth losing a tick over: the agent's numbers would no longer match its log
            if not self._rotation_failed:
                log.warning("event log not rotated: %s; writing on in %s", e, self.path)
            self._rotation_failed = True
        else:
            self._rotation_failed = False
        self._open()
        return self._file.tell() == 0

    def rotated(self) -> list[Path]:
        """The rotated files of this log, oldest first."""
        pattern = re.compile(
            rf"{re.escape(self.path.stem)}\.(\d{{8}}T\d{{6}}\.\d{{6}}Z)(?:-(\d+))?{re.escape(self.path.suffix)}"
        )
        found = []
        for p in self.path.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m:
                found.append((m.group(1), int(m.group(2) or 0), p))
        return [p for _, _, p in sorted(found)]

    def start(self, t: datetime, boot_id: str, speed: float, config_sha256: str) -> None:
        if self._due(t):
            self._rotate(t)
        self._header = {"v": FORMAT_VERSION, "boot_id": boot_id, "speed": speed, "config_sha256": config_sha256}
        self._part = 1
        self._header_line(t, self._header)
        self._file.flush()

    def samples(self, samples: list[Sample]) -> None:
        stamps: dict[datetime, str] = {}  # the samples of one poll mostly share their read time
        lines = []
        for s in samples:
            at = stamps.get(s.agent_time)
            if at is None:
                at = stamps[s.agent_time] = iso(s.agent_time)
            lines.append(sample_line(s, at))
        if lines:
            self._file.write(("\n".join(lines) + "\n").encode())

    def tick(self, t: datetime) -> None:
        self._file.write(f'{{"tick":"{iso(t)}"}}\n'.encode())
        # a file ends with a tick: its samples are all evaluated
        if self._header is not None and self._due(t) and self._rotate(t):
            self._part += 1
            self._header_line(t, {**self._header, "part": self._part})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _first_start(path: Path) -> datetime | None:
    """Time of the start line a file begins with (None: no file, empty, or not a start line)."""
    try:
        with path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    return _aware(json.loads(raw)["start"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


def _aware(text: object) -> datetime | None:
    t = datetime.fromisoformat(text) if isinstance(text, str) else None
    return t if t is not None and t.tzinfo is not None else None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


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


def event_files(specs: Iterable[str | Path]) -> list[Path]:
    """The files named by files, directories (every `*.jsonl` in it) and glob patterns, in log order.

    Several files are ordered by the start line each begins with (its time, then its part), so a
    rotated set reads in the order it was written whatever the names; a file that does not begin
    with a start line cannot be placed and is an error. Each file is read once.
    """
    found: dict[Path, Path] = {}
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            matches = sorted(f for f in p.glob("*.jsonl") if f.is_file())
        elif p.is_file():
            matches = [p]
        elif any(c in str(spec) for c in "*?["):
            matches = sorted(Path(f) for f in glob.glob(str(spec)) if Path(f).is_file())
        else:
            raise EventLogError(f"{spec}: no such file or directory")
        if not matches:
            raise EventLogError(f"{spec}: no event log file in it")
        for m in matches:
            found.setdefault(m.resolve(), m)
    files = list(found.values())
    if len(files) == 1:
        return files
    keys: dict[Path, tuple[datetime, int]] = {}
    for f in files:
        first = _first_line(f)
        if first is not None:  # an empty file adds nothing
            keys[f] = first
    return sorted(keys, key=lambda f: keys[f])


def _first_line(path: Path) -> tuple[datetime, int] | None:
    events = read_events(path)
    try:
        first = next(events, None)
    finally:
        events.close()
    if first is None:
        return None
    if not isinstance(first, StartLine):
        raise EventLogError(f"{path}: a file of a set must begin with a start line to be put in order")
    return first.start, first.part


def read_event_files(paths: Iterable[Path]) -> Iterator[Event]:
    """The events of several files, one file after the other."""
    for path in paths:
        yield from read_events(path)
