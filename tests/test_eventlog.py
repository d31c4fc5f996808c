"""The raw event log: lines round-trip exactly, a bad line is reported by file and line number, files rotate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.sample import Sample
from edge_agent.config import AgentConfig, EventLogSettings
from edge_agent.eventlog import (
    EventLogError,
    EventLogWriter,
    SampleLine,
    StartLine,
    TickLine,
    event_files,
    read_event_files,
    read_events,
)

T0 = datetime(2026, 3, 2, 0, 30, 0, 123456, tzinfo=UTC)
SAMPLES = [
    Sample("plc-1", "run", True, True, T0),
    Sample("plc-1", "parts", 4_294_967_290, True, T0 + timedelta(microseconds=1)),
    Sample("cnc-01", "feed", 0.1 + 0.2, True, T0, T0 - timedelta(milliseconds=3)),  # a float that must not round
    Sample("cnc-01", "program", "O1234 主轴", True, T0),
    Sample.bad("cnc-01", "alarm", T0, "status BadNodeIdUnknown"),
    Sample("plc-1", "count", 7, True, T0),  # an int stays an int, not 7.0 and not True
    Sample("plc-1", "temp", float("nan"), True, T0),
]


def write_log(path: Path) -> None:
    log = EventLogWriter(path)
    log.start(T0, "boot-1", 60.0, "ab" * 32)
    log.samples(SAMPLES)
    log.tick(T0 + timedelta(seconds=1))
    log.close()


def test_round_trip_gives_back_the_same_samples_types_and_times(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path)
    start, *samples, tick = list(read_events(path))
    assert start == StartLine(start=T0, boot_id="boot-1", speed=60.0, config_sha256="ab" * 32)
    assert tick == TickLine(tick=T0 + timedelta(seconds=1))
    back = [s.sample() for s in samples if isinstance(s, SampleLine)]
    assert len(back) == len(SAMPLES)
    for original, read in zip(SAMPLES[:-1], back[:-1], strict=True):
        assert read == original
        assert type(read.value) is type(original.value)
    assert back[-1].value != back[-1].value  # NaN survives as NaN
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith('{"start":"2026-03-02T00:30:00.123456Z"')
    assert json.loads(lines[2]) == {
        "device": "plc-1",
        "tag": "parts",
        "value": 4294967290,
        "good": True,
        "at": "2026-03-02T00:30:00.123457Z",
    }
    assert json.loads(lines[5])["reason"] == "status BadNodeIdUnknown"
    assert lines[-1] == '{"tick":"2026-03-02T00:30:01.123456Z"}'


def test_a_malformed_line_names_file_and_line_after_everything_before_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"device": "plc-1", "tag": "run", "value": 1, "good": "maybe", "at": "2026-03-02T00:31:00Z"}\n')
        f.write('{"tick": "2026-03-02T00:32:00Z"}\n')
    read: list[object] = []
    with pytest.raises(EventLogError) as e:
        for event in read_events(path):
            read.append(event)
    assert str(e.value).startswith(f"{path}:10: SampleLine good:")
    assert len(read) == 9  # start, seven samples, tick
    assert read[-1] == TickLine(tick=T0 + timedelta(seconds=1))


def test_not_json_and_naive_times_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"tick": "2026-03-02T00:32:00Z"}\n{"tick": "2026-03-02T00:3\n', encoding="utf-8")
    with pytest.raises(EventLogError, match=r"events.jsonl:2: not a JSON line"):
        list(read_events(path))
    path.write_text('\n{"tick": "2026-03-02T00:32:00"}\n', encoding="utf-8")
    with pytest.raises(EventLogError, match=r"events.jsonl:2: TickLine tick: .*timezone"):
        list(read_events(path))
    path.write_text('{"tick": 1772411520}\n', encoding="utf-8")  # not read as seconds since 1970
    with pytest.raises(EventLogError, match=r"events.jsonl:1: TickLine tick: .*ISO-8601 text"):
        list(read_events(path))


def test_a_line_cut_by_a_power_loss_does_not_swallow_the_next_runs_first_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_log(path)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"device":"plc-1","tag":"ru')  # the write the power loss interrupted
    log = EventLogWriter(path)
    log.start(T0 + timedelta(hours=1), "boot-2", 60.0, "ab" * 32)
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[-2] == '{"device":"plc-1","tag":"ru'
    assert json.loads(lines[-1])["boot_id"] == "boot-2"
    with pytest.raises(EventLogError, match=r":10: not a JSON line"):
        list(read_events(path))


# --- rotation -----------------------------------------------------------------------------------


def ten_samples(t: datetime) -> list[Sample]:
    return [Sample("d", "t", 1, True, t)] * 10  # 10 lines of 81 bytes + newline


def write_ticks(log: EventLogWriter, first: int, last: int) -> None:
    """At T0 + k s for each k: ten samples (820 bytes), then the tick (38 + 1 bytes): 859 bytes a tick."""
    for k in range(first, last + 1):
        t = T0 + timedelta(seconds=k)
        log.samples(ten_samples(t))
        log.tick(t)


def test_size_rotation_ends_a_file_with_the_tick_that_reaches_max_bytes(tmp_path: Path) -> None:
    log = EventLogWriter(EventLogSettings(path=tmp_path / "events.jsonl", max_bytes=4096))
    log.start(T0, "boot-1", 60.0, "ab" * 32)  # 160 bytes + newline
    write_ticks(log, 1, 12)
    log.close()
    first, second = log.rotated()
    # 161 + 4 x 859 = 3597 < 4096 <= 161 + 5 x 859 = 4456: the 5th tick ends the first file
    assert (first.name, first.stat().st_size) == ("events.20260302T003000.123456Z.jsonl", 4456)
    # each next file begins with the start line again, dated by the tick that ended the one before, part n
    assert (second.name, second.stat().st_size) == ("events.20260302T003005.123456Z.jsonl", 170 + 5 * 859)
    assert (tmp_path / "events.jsonl").stat().st_size == 170 + 2 * 859
    heads = [next(iter(read_events(p))) for p in (first, second, tmp_path / "events.jsonl")]
    assert heads == [
        StartLine(start=T0 + timedelta(seconds=s), boot_id="boot-1", speed=60.0, config_sha256="ab" * 32, part=n)
        for s, n in ((0, 1), (5, 2), (10, 3))
    ]
    assert list(read_events(first))[-1] == TickLine(tick=T0 + timedelta(seconds=5))  # a file ends with a tick
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name, "events.jsonl"]
    # in any order, by directory, by glob or by name: the set is read in the order it was written
    in_order = [first, second, tmp_path / "events.jsonl"]
    assert event_files([tmp_path]) == in_order
    assert event_files([str(tmp_path / "events*.jsonl")]) == in_order
    assert event_files(in_order[::-1]) == in_order
    events = list(read_event_files(in_order))
    assert sum(isinstance(e, TickLine) for e in events) == 12 and sum(isinstance(e, SampleLine) for e in events) == 120


def test_keep_deletes_the_oldest_rotated_files(tmp_path: Path) -> None:
    log = EventLogWriter(EventLogSettings(path=tmp_path / "events.jsonl", max_bytes=4096, keep=1))
    log.start(T0, "boot-1", 60.0, "ab" * 32)
    write_ticks(log, 1, 12)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.20260302T003005.123456Z.jsonl", "events.jsonl"]


def test_daily_rotation_at_local_midnight_and_at_a_start_on_a_later_day(tmp_path: Path) -> None:
    settings = EventLogSettings(path=tmp_path / "events.jsonl", daily=True, timezone="Asia/Shanghai")
    midnight = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # 2026-03-03 00:00 in Shanghai
    log = EventLogWriter(settings)
    log.start(midnight - timedelta(seconds=2), "boot-1", 1.0, "ab" * 32)
    for s in (-1, 0, 1):
        log.tick(midnight + timedelta(seconds=s))
    log.close()
    (day1,) = log.rotated()
    assert day1.name == "events.20260302T155958.000000Z.jsonl"
    assert [type(e).__name__ for e in read_events(day1)] == ["StartLine", "TickLine", "TickLine"]
    assert list(read_events(day1))[-1] == TickLine(tick=midnight)  # the first tick at or after midnight ends it
    assert list(read_events(tmp_path / "events.jsonl")) == [
        StartLine(start=midnight, boot_id="boot-1", speed=1.0, config_sha256="ab" * 32, part=2),
        TickLine(tick=midnight + timedelta(seconds=1)),
    ]
    # the agent stopped; it starts again the next local day: yesterday's file is rotated before it writes
    log = EventLogWriter(settings)
    log.start(midnight + timedelta(days=1, seconds=5), "boot-2", 1.0, "ab" * 32)
    log.close()
    assert [p.name for p in log.rotated()] == [day1.name, "events.20260302T160000.000000Z.jsonl"]
    assert [e.boot_id for e in read_events(tmp_path / "events.jsonl") if isinstance(e, StartLine)] == ["boot-2"]


def test_event_log_setting_is_a_path_or_a_rotation_with_the_sites_zone() -> None:
    base = {"site": {"firm": {"name": "F"}, "name": "S", "timezone": "Europe/Berlin"}, "machines": []}
    plain = AgentConfig.model_validate({"agent": {"id": "a", "event_log": "var/events.jsonl"}, **base})
    assert plain.agent.event_log is not None
    assert (plain.agent.event_log.path, plain.agent.event_log.max_bytes, plain.agent.event_log.daily) == (
        Path("var/events.jsonl"),
        None,
        False,
    )
    rotating = AgentConfig.model_validate(
        {"agent": {"id": "a", "event_log": {"path": "e.jsonl", "max_bytes": 10_000_000, "daily": True}}, **base}
    )
    assert rotating.agent.event_log is not None and rotating.agent.event_log.timezone == "Europe/Berlin"
    with pytest.raises(ValidationError, match="max_bytes"):
        EventLogSettings.model_validate({"path": "e.jsonl", "max_bytes": 100})


def test_a_refused_rotation_goes_on_in_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, target: Path) -> Path:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "rename", refuse)
    log = EventLogWriter(EventLogSettings(path=tmp_path / "events.jsonl", max_bytes=4096))
    log.start(T0, "boot-1", 60.0, "ab" * 32)
    write_ticks(log, 1, 12)
    log.close()
    # nothing lost, nothing repeated: one start line and every tick, 161 + 12 x 859 bytes
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert (tmp_path / "events.jsonl").stat().st_size == 10469
    events = list(read_events(tmp_path / "events.jsonl"))
    assert sum(isinstance(e, StartLine) for e in events) == 1 and sum(isinstance(e, TickLine) for e in events) == 12
