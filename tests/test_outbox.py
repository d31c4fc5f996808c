"""The durable outbox: sequence numbers survive restarts; rows leave when acknowledged or evicted, never silently."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from edge_agent import outbox as outbox_module
from edge_agent.config import OutboxSettings
from edge_agent.outbox import Outbox
from edgeproof.contract import (
    BirthMessage,
    EvictionDeclaration,
    Firm,
    MachineKpi,
    SiteIdentity,
    StateInterval,
    StatusMessage,
    encode,
    topic,
)
from edgeproof.indicators import TimeElements


def _message(seq: int) -> StatusMessage:
    return StatusMessage(agent_id="a", boot_id=f"b{seq}", online=True, at=datetime(2026, 1, 1, tzinfo=UTC))


def test_sequence_continues_after_reopen_and_ack_removes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    assert [box.append("t", _message) for _ in range(3)] == [1, 2, 3]
    box.acknowledge([1])
    box.close()
    box = Outbox(path)
    assert box.append("t", _message) == 4
    assert [seq for seq, _, _ in box.pending(10)] == [2, 3, 4]
    assert [seq for seq, _, _ in box.pending(2, exclude=[2])] == [3, 4]
    assert box.depth() == 3 and box.last_seq() == 4
    payload = box.pending(1)[0][2]
    assert b'"boot_id":"b2"' in payload


def test_messages_survive_kill_minus_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from edge_agent.outbox import Outbox\n"
        "from tests.test_outbox import _message\n"
        f"box = Outbox(Path({str(path)!r}))\n"
        "for _ in range(50): box.append('t', _message)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9
    box = Outbox(path)
    assert box.depth() == 50 and box.last_seq() == 50


def test_append_all_is_one_transaction(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    assert box.append_all([("t", _message), ("u", _message)]) == [1, 2]

    def broken(seq: int) -> StatusMessage:
        raise ValueError("cannot build")

    with pytest.raises(ValueError, match="cannot build"):
        box.append_all([("t", _message), ("t", broken)])
    # the failed batch left nothing behind, not even its first message or a used sequence number
    assert box.depth() == 2 and box.last_seq() == 2
    assert box.append("t", _message) == 3
    assert [(seq, topic) for seq, topic, _ in box.pending(10)] == [(1, "t"), (2, "u"), (3, "t")]


# -- bounds and eviction ---------------------------------------------------------------------

AGENT = "line-1"
BOOT = "boot-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIZE = 1000  # every test message's payload is exactly this long


def produced(seq: int) -> datetime:
    return T0 + timedelta(minutes=seq)


def _build(kind: str, seq: int, pad: str) -> BaseModel:
    common: dict[str, Any] = {"agent_id": AGENT, "boot_id": BOOT, "seq": seq, "produced_at": produced(seq)}
    if kind == "birth":
        site = SiteIdentity(firm=Firm(name="Demo"), site="Plant 1", timezone="Asia/Shanghai")
        return BirthMessage(**common, agent_version=pad, site=site, processes=[], assets=[])
    if kind == "state":
        return StateInterval(**common, machine_id="M1", state="IDLE", start=T0, end=T0, reason=pad)
    return MachineKpi(
        **common,
        machine_id="M1",
        bucket_start=T0,
        bucket_end=T0 + timedelta(hours=1),
        elements=TimeElements(),
        availability=None,
        performance=None,
        quality=None,
        oee=None,
        flags=[pad],
    )


def sized(kind: str, size: int = SIZE) -> Callable[[int], BaseModel]:
    """A builder of `kind` messages whose encoded payload is exactly `size` bytes."""

    def make(seq: int) -> BaseModel:
        return _build(kind, seq, "x" * (size - len(encode(_build(kind, seq, "")))))

    return make


def alternating(seq: int) -> BaseModel:
    """Even numbers are state intervals, odd ones KPI buckets: the classes interleave."""
    return sized("state" if seq % 2 == 0 else "kpi")(seq)


def put(box: Outbox, make: Callable[[int], BaseModel], kind: str = "state") -> int:
    return box.append(topic(AGENT, kind), make)


def put_next(box: Outbox) -> int:
    """Append the next `alternating` message on its kind's topic."""
    kind = "state" if (box.last_seq() + 1) % 2 == 0 else "kpi"
    return box.append(topic(AGENT, kind), sized(kind))


def declarations(box: Outbox) -> list[EvictionDeclaration]:
    rows = box._db.execute("SELECT payload FROM outbox WHERE kind = 'evicted' ORDER BY seq").fetchall()
    return [EvictionDeclaration.model_validate_json(p) for (p,) in rows]


def stored_totals(path: Path) -> tuple[int, int]:
    """(rows, payload bytes) counted the slow way, from a separate connection."""
    with sqlite3.connect(path) as db:
        n, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
    return int(n), int(size)


def test_test_messages_have_the_exact_size() -> None:
    for kind in ("birth", "state", "kpi"):
        assert [len(encode(sized(kind)(seq))) for seq in (1, 9, 10, 12345)] == [SIZE] * 4


def test_the_byte_bound_evicts_the_lowest_class_first_and_the_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, OutboxSettings(max_bytes=10_000, low_water=0.5))
    assert put(box, sized("birth"), "birth") == 1
    assert [put_next(box) for _ in range(9)] == list(range(2, 11))
    assert box.stats().bytes == 10_000 and declarations(box) == []  # at the bound is within it

    assert put_next(box) == 11  # 11 000 bytes: evict down to 5 000, declaration included
    [d] = declarations(box)
    # states 2 4 6 8 10 first, then KPI 3; 5 000 + the declaration is still too much, so KPI 5 too
    assert (d.seq, d.reason, d.ranges, d.count, d.bytes) == (12, "bytes", [(2, 6), (8, 8), (10, 10)], 7, 7000)
    assert d.kinds == {"kpi": 2, "state": 5}
    assert (d.oldest_produced_at, d.newest_produced_at) == (produced(2), produced(10))
    assert (d.agent_id, d.boot_id, d.produced_at) == (AGENT, BOOT, produced(11))  # with the append that caused it
    assert [seq for seq, _, _ in box.pending(100)] == [1, 7, 9, 11, 12]
    [(name, payload)] = [(t, p) for s, t, p in box.pending(100) if s == 12]
    assert name == "edgeproof/v1/line-1/evicted"
    stats = box.stats()
    assert (stats.depth, stats.bytes, stats.last_seq) == (5, 4000 + len(payload), 12)
    assert (stats.evicted_messages, stats.evicted_bytes, stats.declarations) == (7, 7000, 1)
    assert stored_totals(path) == (5, 4000 + len(payload))
    assert box.appended == 12  # the declaration counts as appended: a publisher that saw the box empty looks again


def test_birth_and_declarations_are_never_evicted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite", OutboxSettings(max_bytes=2000, low_water=1.0))
    assert put(box, sized("birth", 1500), "birth") == 1
    assert put(box, sized("state")) == 2  # 2 500 > 2 000: the state goes, the birth stays
    [first] = declarations(box)
    assert (first.seq, first.ranges, first.count) == (3, [(2, 2)], 1)
    assert put(box, sized("birth", 1500), "birth") == 4  # over the bound with nothing evictable: kept anyway
    assert [seq for seq, _, _ in box.pending(10)] == [1, 3, 4]
    assert put(box, sized("kpi")) == 5  # the newest message is the only evictable one
    assert [(d.seq, d.ranges, d.kinds) for d in declarations(box)] == [
        (3, [(2, 2)], {"state": 1}),
        (6, [(5, 5)], {"kpi": 1}),
    ]
    assert [seq for seq, _, _ in box.pending(10)] == [1, 3, 4, 6]
    stats = box.stats()
    assert (stats.depth, stats.evicted_messages, stats.evicted_bytes, stats.declarations) == (4, 2, 2000, 2)


class FakeWallClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_age_bound_evicts_every_class_older_than_the_low_water_age(tmp_path: Path) -> None:
    clock = FakeWallClock()
    start = clock.now
    box = Outbox(tmp_path / "outbox.sqlite", OutboxSettings(max_age_s=100, low_water=0.5), clock=clock)
    assert put(box, sized("birth"), "birth") == 1
    assert [put(box, sized("state")), put(box, sized("kpi"), "kpi")] == [2, 3]
    clock.now = start + 40
    assert put(box, sized("state")) == 4
    clock.now = start + 60
    assert put(box, sized("kpi"), "kpi") == 5
    assert declarations(box) == []
    clock.now = start + 101  # seq 2 is past 100 s: everything older than 50 s goes, whatever its class
    assert put(box, sized("state")) == 6
    [d] = declarations(box)
    assert (d.seq, d.reason, d.ranges, d.count, d.bytes, d.kinds) == (
        7,
        "age",
        [(2, 4)],
        3,
        3000,
        {"kpi": 1, "state": 2},
    )
    assert (d.oldest_produced_at, d.newest_produced_at) == (produced(2), produced(4))
    assert [seq for seq, _, _ in box.pending(10)] == [1, 5, 6, 7]

    clock.now = start + 130  # the oldest evictable row (seq 5, 60 s) is 70 s old: nothing to do
    assert box.evict_expired(T0) == []
    clock.now = start + 161  # seq 5 (60 s) is past 100 s: 5 and 6 (101 s) are older than 50 s
    [late] = box.evict_expired(T0 + timedelta(days=1))
    assert (late.seq, late.ranges, late.produced_at) == (8, [(5, 6)], T0 + timedelta(days=1))
    assert [seq for seq, _, _ in box.pending(10)] == [1, 7, 8]  # the birth (0 s) and declaration 7 (101 s) stay
    stats = box.stats()
    assert (stats.evicted_messages, stats.evicted_bytes, stats.declarations, stats.depth) == (5, 5000, 2, 3)
    assert stats.oldest_created_at == datetime.fromtimestamp(start, UTC)
    assert box.appended == 8


def test_long_declarations_are_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "MAX_RANGES_PER_DECLARATION", 2)
    box = Outbox(tmp_path / "outbox.sqlite", OutboxSettings(max_bytes=9000, low_water=0.6))
    box.append_all([(topic(AGENT, "x"), alternating) for _ in range(9)])  # states 2 4 6 8, KPIs 1 3 5 7 9
    # 10 000 > 9 000: the five states leave 5 000, which with three declarations is over 5 400: KPI 1 too
    box.append_all([(topic(AGENT, "x"), alternating)])
    got = [(d.seq, d.ranges, d.count, d.bytes) for d in declarations(box)]
    assert got == [(11, [(1, 2), (4, 4)], 3, 3000), (12, [(6, 6), (8, 8)], 2, 2000), (13, [(10, 10)], 1, 1000)]
    assert [seq for seq, _, _ in box.pending(20)] == [3, 5, 7, 9, 11, 12, 13]
    assert box.stats().bytes == 4000 + sum(len(encode(d)) for d in declarations(box))


def test_acknowledging_an_evicted_message_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, OutboxSettings(max_bytes=2500, low_water=1.0))
    assert [put(box, sized("state")) for _ in range(3)] == [1, 2, 3]  # seq 1 evicted, declared by 4
    assert [(d.seq, d.ranges) for d in declarations(box)] == [(4, [(1, 1)])]
    before = box.stats()
    box.acknowledge([1, 1])  # it was in flight when evicted; its PUBACK comes late
    assert box.stats() == before
    box.acknowledge([2, 4])
    assert (box.stats().depth, box.stats().bytes) == (1, 1000) and stored_totals(path) == (1, 1000)
    assert box.stats().evicted_messages == 1


def test_totals_stay_exact_after_a_kill_following_evictions(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from edge_agent.config import OutboxSettings\n"
        "from edge_agent.outbox import Outbox\n"
        "from tests.test_outbox import put, put_next, sized\n"
        f"box = Outbox(Path({str(path)!r}), OutboxSettings(max_bytes=10_000, low_water=0.5))\n"
        "put(box, sized('birth'), 'birth')\n"
        "box.acknowledge([1])\n"
        "for _ in range(22): put_next(box)\n"
        "box.acknowledge([11, 21])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == -9
    box = Outbox(path)
    ds = declarations(box)
    # as in the uplink test: seq 12 overflows (states 2-12, then KPI 3 for the declaration), then seq 19
    # (states 14-18, KPIs 5-9)
    assert [(d.seq, d.ranges) for d in ds] == [
        (13, [(2, 4), (6, 6), (8, 8), (10, 10), (12, 12)]),
        (20, [(5, 5), (7, 7), (9, 9), (14, 14), (16, 16), (18, 18)]),
    ]
    stats = box.stats()
    assert [seq for seq, _, _ in box.pending(100)] == [13, 15, 17, 19, 20, 22, 23, 24, 25]
    assert (stats.depth, stats.bytes) == stored_totals(path)
    assert (stats.depth, stats.bytes) == (9, 7000 + sum(len(encode(d)) for d in ds))
    assert (stats.last_seq, stats.evicted_messages, stats.evicted_bytes, stats.declarations) == (25, 13, 13_000, 2)
    assert box.append("t", _message) == 26


OLD_SCHEMA = """
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def test_an_outbox_file_from_before_the_bounds_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:  # as the previous release wrote it; seq 2 was already acknowledged
        db.executescript(OLD_SCHEMA)
        rows = [(1, "birth"), (3, "state"), (4, "kpi"), (5, "state")]
        db.executemany(
            "INSERT INTO outbox VALUES (?, ?, ?, unixepoch())",
            [(seq, topic(AGENT, kind), encode(sized(kind)(seq))) for seq, kind in rows],
        )
        db.execute("INSERT INTO outbox VALUES (6, 't', x'6e6f74206a736f6e', unixepoch())")  # 'not json'
        db.execute("INSERT INTO meta VALUES ('last_seq', 6)")
    db.close()

    box = Outbox(path, OutboxSettings(max_bytes=4500, low_water=1.0))
    assert [seq for seq, _, _ in box.pending(10)] == [1, 3, 4, 5, 6]
    assert (box.depth(), box.stats().bytes, box.last_seq()) == (5, 4008, 6)
    assert box._db.execute("SELECT seq, kind, priority, produced_at FROM outbox ORDER BY seq").fetchall() == [
        (1, "birth", 3, "2026-01-01T00:01:00.000000Z"),
        (3, "state", 1, "2026-01-01T00:03:00.000000Z"),
        (4, "kpi", 2, "2026-01-01T00:04:00.000000Z"),
        (5, "state", 1, "2026-01-01T00:05:00.000000Z"),
        (6, "t", 3, None),
    ]
    box.close()
    box = Outbox(path, OutboxSettings(max_bytes=4500, low_water=1.0))  # a second open migrates nothing
    assert (box.depth(), box.stats().bytes) == (5, 4008)
    assert put(box, sized("state")) == 7  # 5 008 > 4 500: the oldest migrated state goes first
    [d] = declarations(box)
    assert (d.seq, d.ranges, d.kinds, d.oldest_produced_at) == (8, [(3, 3)], {"state": 1}, produced(3))
    assert [seq for seq, _, _ in box.pending(10)] == [1, 4, 5, 6, 7, 8]


def test_outbox_settings_defaults_and_limits() -> None:
    s = OutboxSettings()
    assert (s.max_bytes, s.max_age_s, s.low_water) == (256 * 1024 * 1024, 2_592_000.0, 0.9)
    with pytest.raises(ValidationError, match="low_water"):
        OutboxSettings(low_water=0)
    with pytest.raises(ValidationError, match="max_bytes"):
        OutboxSettings(max_bytes=100)


def test_pending_range_reads_between_two_cursors(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    assert [box.append("t", _message) for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    box.acknowledge([3])
    assert [s for s, _, _ in box.pending_range(1, None, 10)] == [2, 4, 5, 6]
    assert [s for s, _, _ in box.pending_range(1, 5, 2)] == [2, 4]
    assert [(s, t) for s, t, _ in box.pending_range(4, 5, 10)] == [(5, "t")]
    assert box.pending_range(6, None, 10) == []
