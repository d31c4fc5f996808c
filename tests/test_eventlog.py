"""The raw event log: lines round-trip exactly, and a bad line is reported by file and line number."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.sample import Sample
from edge_agent.eventlog import EventLogError, EventLogWriter, SampleLine, StartLine, TickLine, read_events

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
