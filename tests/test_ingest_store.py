"""The ingest store: validation, idempotency, gaps, eviction declarations and dead letters.

Every test on the `store` fixture runs twice: on a real SQLite file and on a real PostgreSQL database
(the `store_target` fixture, tests/conftest.py). The schema-migration test edits the SQLite file itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_ingest.store import DEAD_LETTER_KEEP_BYTES, EvictionRecord, Neighbour, Store
from edgeproof.contract import (
    BirthMessage,
    EvictionDeclaration,
    Firm,
    MachineKpi,
    RegisterEntry,
    SiteIdentity,
    StateInterval,
    StatusMessage,
    encode,
    topic,
)
from edgeproof.indicators import ProcessInfo, TimeElements, oee

AGENT = "plant-a"
T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def kpi(seq: int, machine: str = "M1", start: datetime = T0, agent: str = AGENT, **elements: Any) -> MachineKpi:
    values = {
        "window_s": 3600.0,
        "observed_s": 3600.0,
        "pot_s": 3600.0,
        "apt_s": 3000.0,
        "idle_s": 600.0,
        "pq": 100.0,
        "sq": 2.0,
        "ideal_run_s": 2500.0,
        "ideal_good_s": 2450.0,
    } | elements
    te = TimeElements(**values)
    r = oee(te)
    return MachineKpi(
        agent_id=agent,
        boot_id="boot-1",
        seq=seq,
        produced_at=start + timedelta(hours=1, seconds=5),
        machine_id=machine,
        bucket_start=start,
        bucket_end=start + timedelta(hours=1),
        elements=te,
        availability=r.availability.value,
        performance=r.performance.value,
        quality=r.quality.value,
        oee=r.oee.value,
        flags=r.flags,
    )


def birth(seq: int, agent: str = AGENT) -> BirthMessage:
    return BirthMessage(
        agent_id=agent,
        boot_id="boot-1",
        seq=seq,
        produced_at=T0,
        agent_version="0.1.0",
        site=SiteIdentity(firm=Firm(name="Demo Precision Co."), site="Plant 1", timezone="Asia/Shanghai"),
        processes=[ProcessInfo(process_id="turning", key=True)],
        assets=[
            RegisterEntry(
                machine_id="M1",
                name="Lathe 1",
                machine_type="CNC lathe",
                process="turning",
                digital=True,
                nc_capable=True,
                acquired=True,
                protocol="opcua",
                ideal_cycle_s=25.0,
            )
        ],
    )


def state(seq: int, agent: str = AGENT) -> StateInterval:
    return StateInterval(
        agent_id=agent,
        boot_id="boot-1",
        seq=seq,
        produced_at=T0 + timedelta(minutes=10),
        machine_id="M1",
        state="FAULT",
        start=T0,
        end=T0 + timedelta(minutes=10),
        reason="E42",
    )


def wire(message: Any) -> tuple[str, bytes]:
    return topic(message.agent_id, message.kind), encode(message)


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Store]:
    s = Store(store_target)
    yield s
    s.close()


def test_valid_messages_are_stored_with_their_derived_rows(store: Store) -> None:
    for m in (birth(1), kpi(2), state(3)):
        assert store.ingest(*wire(m), RECEIVED) == "stored"
    assert store.sequence_numbers(AGENT) == [1, 2, 3]
    [row] = store.kpi_rows(AGENT, T0, T0 + timedelta(days=1))
    assert (row.seq, row.machine_id, row.bucket_start, row.bucket_end) == (2, "M1", T0, T0 + timedelta(hours=1))
    assert row.elements == kpi(2).elements
    latest = store.latest_birth(AGENT)
    assert latest is not None and latest.assets[0].name == "Lathe 1"
    assert store._query("SELECT machine_id, state, reason FROM states") == [("M1", "FAULT", "E42")]
    assert store.dead_letters() == [] and store.duplicate_count == 0


def test_datetimes_are_stored_as_fixed_width_utc_text(store: Store) -> None:
    shanghai = kpi(1, start=datetime(2024, 3, 1, 8, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=8))))
    store.ingest(*wire(shanghai), RECEIVED)
    assert store._query("SELECT bucket_start, bucket_end FROM kpi") == [
        ("2024-03-01T00:00:00.500000Z", "2024-03-01T01:00:00.500000Z")
    ]
    assert store._query("SELECT received_at FROM messages") == [("2024-03-01T12:00:00.000000Z",)]


def test_a_redelivered_message_is_stored_once_and_counted_as_duplicate(
    store: Store, store_target: str | Path
) -> None:
    t, payload = wire(kpi(1))
    assert store.ingest(t, payload, RECEIVED) == "stored"
    assert store.ingest(t, payload, RECEIVED + timedelta(seconds=3)) == "duplicate"
    assert store.sequence_numbers(AGENT) == [1]
    assert len(store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))) == 1
    assert store.duplicate_count == 1
    store.close()
    with Store(store_target) as reopened:  # the count is evidence: it survives a restart
        assert reopened.duplicate_count == 1
        assert reopened.duplicates_of(AGENT) == 1


def test_a_message_sent_live_then_again_from_the_backlog_is_a_duplicate(store: Store) -> None:
    from edge_agent.publisher import mark_historical

    t, payload = wire(kpi(1))
    assert store.ingest(t, payload, RECEIVED) == "stored"  # live, but its PUBACK was lost with the link
    assert store.ingest(t, mark_historical(payload), RECEIVED + timedelta(minutes=5)) == "duplicate"
    t2, payload2 = wire(kpi(2, start=T0 + timedelta(hours=1)))
    assert store.ingest(t2, mark_historical(payload2), RECEIVED) == "stored"  # first seen from the backlog
    assert store._query("SELECT seq, historical FROM messages ORDER BY seq") == [(1, 0), (2, 1)]
    assert store.duplicate_count == 1 and store.dead_letters() == []
    # historical differs, and so does a number: still a conflict
    other = wire(kpi(1, apt_s=1.0))[1]
    assert store.ingest(t, mark_historical(other), RECEIVED) == "dead_letter"


def test_a_reused_sequence_number_with_other_content_is_rejected_not_overwritten(store: Store) -> None:
    assert store.ingest(*wire(kpi(1, apt_s=3000.0)), RECEIVED) == "stored"
    assert store.ingest(*wire(kpi(1, apt_s=1000.0)), RECEIVED) == "dead_letter"
    [dead] = store.dead_letters()
    assert dead.reason == "sequence conflict: seq 1 of agent 'plant-a' already stored with a different payload"
    [row] = store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))
    assert row.elements.apt_s == 3000.0
    assert store.duplicate_count == 0


def test_gaps_are_missing_ranges_from_seq_1_per_agent(store: Store) -> None:
    for seq in (3, 4, 7, 10, 11):
        store.ingest(*wire(kpi(seq, start=T0 + timedelta(hours=seq))), RECEIVED)
    for seq in (1, 2, 3):
        store.ingest(*wire(kpi(seq, agent="plant-b", start=T0 + timedelta(hours=seq))), RECEIVED)
    assert store.sequence_numbers(AGENT) == [3, 4, 7, 10, 11]
    assert store.gaps(AGENT) == [(1, 2), (5, 6), (8, 9)]
    assert store.gaps("plant-b") == []
    assert store.gaps("nobody") == []
    assert store.produced_at(AGENT, 4) == T0 + timedelta(hours=5, seconds=5)


def test_status_is_kept_per_agent_latest_wins_and_is_not_sequenced(store: Store) -> None:
    online = StatusMessage(agent_id=AGENT, boot_id="boot-1", online=True, at=T0)
    offline = StatusMessage(agent_id=AGENT, boot_id="boot-1", online=False)
    assert store.ingest(topic(AGENT, "status"), encode(online), RECEIVED) == "status"
    assert store.ingest(topic(AGENT, "status"), encode(offline), RECEIVED + timedelta(minutes=1)) == "status"
    s = store.status(AGENT)
    assert s is not None and (s.online, s.boot_id, s.at, s.received_at) == (
        False,
        "boot-1",
        None,
        RECEIVED + timedelta(minutes=1),
    )
    assert store.sequence_numbers(AGENT) == []


def _kpi_dict(**changes: Any) -> dict[str, Any]:
    body = json.loads(encode(kpi(1)))
    for key, value in changes.items():
        if value is _DELETE:
            del body[key]
        else:
            body[key] = value
    return body


_DELETE = object()
KPI_TOPIC = topic(AGENT, "kpi")

INVALID: list[tuple[str, str, bytes, str]] = [
    ("bad json", KPI_TOPIC, b'{"kind": "kpi", ', "payload is not JSON: "),
    ("not utf-8", KPI_TOPIC, b'{"kind": "kpi\xff\xfe"}', "payload is not UTF-8: invalid start byte at byte 13"),
    ("empty", KPI_TOPIC, b"", "empty payload"),
    ("json array", KPI_TOPIC, b"[1, 2]", "schema violation: payload is a JSON array, not an object"),
    (
        "missing field",
        KPI_TOPIC,
        json.dumps(_kpi_dict(machine_id=_DELETE)).encode(),
        "schema violation: kpi.machine_id: Field required",
    ),
    (
        "extra field",
        KPI_TOPIC,
        json.dumps(_kpi_dict(colour="red")).encode(),
        "schema violation: kpi.colour: Extra inputs are not permitted",
    ),
    (
        "seq zero",
        KPI_TOPIC,
        json.dumps(_kpi_dict(seq=0)).encode(),
        "schema violation: kpi.seq: Input should be greater than or equal to 1",
    ),
    (
        "naive time",
        KPI_TOPIC,
        json.dumps(_kpi_dict(produced_at="2024-03-01T01:00:00")).encode(),
        "schema violation: kpi.produced_at: Input should have timezone info",
    ),
    (
        "seq beyond sqlite",
        KPI_TOPIC,
        json.dumps(_kpi_dict(seq=2**70)).encode(),
        "schema violation: kpi.seq: Input should be less than 9223372036854775808",
    ),
    ("wrong version", "edgeproof/v2/plant-a/kpi", encode(kpi(1)), "topic not in contract: 'edgeproof/v2/plant-a/kpi'"),
    ("foreign topic", "factory/plant-a/kpi", encode(kpi(1)), "topic not in contract: 'factory/plant-a/kpi'"),
    (
        "too deep topic",
        "edgeproof/v1/plant-a/kpi/x",
        encode(kpi(1)),
        "topic not in contract: 'edgeproof/v1/plant-a/kpi/x'",
    ),
    ("unknown kind", topic(AGENT, "telemetry"), encode(kpi(1)), "unknown message kind in topic: 'telemetry'"),
    ("kind mismatch", topic(AGENT, "birth"), encode(kpi(1)), "kind mismatch: topic says 'birth', payload says 'kpi'"),
    (
        "agent mismatch",
        topic("plant-b", "kpi"),
        encode(kpi(1)),
        "agent mismatch: topic says 'plant-b', payload says 'plant-a'",
    ),
    (
        "bucket reversed",
        KPI_TOPIC,
        json.dumps(_kpi_dict(bucket_end="2024-02-29T23:00:00Z")).encode(),
        "schema violation: kpi: Value error, bucket_end must be after bucket_start",
    ),
    (
        "negative time",
        KPI_TOPIC,
        json.dumps(_kpi_dict(elements=_kpi_dict()["elements"] | {"apt_s": -5.0})).encode(),
        "schema violation: kpi.elements.apt_s: Input should be greater than or equal to 0",
    ),
    (
        "nan time",
        KPI_TOPIC,
        json.dumps(_kpi_dict(elements=_kpi_dict()["elements"] | {"pot_s": float("nan")})).encode(),
        "schema violation: kpi.elements.pot_s: Input should be a finite number",
    ),
    (
        "status agent mismatch",
        topic("plant-b", "status"),
        encode(StatusMessage(agent_id=AGENT, boot_id="b", online=True)),
        "agent mismatch: topic says 'plant-b', payload says 'plant-a'",
    ),
]


@pytest.mark.parametrize(("case", "bad_topic", "payload", "reason"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_is_dead_lettered_with_its_reason_and_the_next_message_stores(
    store: Store, case: str, bad_topic: str, payload: bytes, reason: str
) -> None:
    assert store.ingest(bad_topic, payload, RECEIVED) == "dead_letter"
    [dead] = store.dead_letters()
    assert dead.reason.startswith(reason), dead.reason
    assert (dead.topic, dead.payload, dead.received_at) == (bad_topic, payload, RECEIVED)
    assert store.sequence_numbers(AGENT) == []
    assert store.ingest(*wire(kpi(2)), RECEIVED) == "stored"
    assert store.sequence_numbers(AGENT) == [2]


def test_a_huge_payload_is_dead_lettered_with_only_its_head_kept(store_target: str | Path) -> None:
    with Store(store_target, max_payload_bytes=100_000) as store:
        huge = b'{"kind": "kpi", "pad": "' + b"x" * 200_000 + b'"}'
        assert store.ingest(KPI_TOPIC, huge, RECEIVED) == "dead_letter"
        [dead] = store.dead_letters(AGENT)
        assert dead.reason == f"payload too large: {len(huge)} bytes > limit 100000"
        assert dead.payload == huge[:DEAD_LETTER_KEEP_BYTES]
        assert store.ingest(*wire(kpi(1)), RECEIVED) == "stored"


# -- property: nothing a client can send makes ingest() raise ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
topics = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda a, k: f"edgeproof/v1/{a}/{k}",
        st.text(max_size=8),
        st.sampled_from(["kpi", "birth", "state", "site", "status", "x", ""]),
    ),
)
kpi_keys = sorted(_kpi_dict())
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    # a valid message with one field replaced or removed reaches the deep validators
    st.builds(
        lambda k, v, drop: json.dumps(_kpi_dict(**{k: _DELETE if drop else v})).encode(),
        st.sampled_from(kpi_keys),
        json_values,
        st.booleans(),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=topics, payload=payloads)
def test_ingest_never_raises_on_arbitrary_input(store: Store, name: str, payload: bytes) -> None:
    result = store.ingest(name, payload, RECEIVED)
    assert result in ("stored", "duplicate", "dead_letter", "status")
    if result == "dead_letter":
        assert store.dead_letters()[-1].reason


# -- eviction declarations and the gap report ----------------------------------------------------


def evicted(seq: int, ranges: list[tuple[int, int]], reason: Literal["bytes", "age"] = "bytes") -> EvictionDeclaration:
    count = sum(last - first + 1 for first, last in ranges)
    return EvictionDeclaration(
        agent_id=AGENT,
        boot_id="boot-1",
        seq=seq,
        produced_at=T0 + timedelta(hours=seq),
        reason=reason,
        ranges=ranges,
        count=count,
        bytes=500 * count,
        kinds={"state": count},
        oldest_produced_at=T0 + timedelta(hours=ranges[0][0]),
        newest_produced_at=T0 + timedelta(hours=ranges[-1][1]),
    )


def received(seq: int) -> datetime:
    return RECEIVED + timedelta(seconds=seq)


def neighbour(seq: int) -> Neighbour:
    """Where kpi(seq, start=T0 + seq h) sits: produced 1 h 5 s after its bucket starts."""
    return Neighbour(seq=seq, produced_at=T0 + timedelta(hours=seq + 1, seconds=5), received_at=received(seq))


def test_a_declaration_is_stored_with_its_ranges(store: Store) -> None:
    assert store.ingest(*wire(evicted(9, [(2, 4), (7, 7)], "age")), RECEIVED) == "stored"
    [record] = store.evictions(AGENT)
    assert record == EvictionRecord(
        seq=9,
        boot_id="boot-1",
        produced_at=T0 + timedelta(hours=9),
        received_at=RECEIVED,
        reason="age",
        count=4,
        bytes=2000,
        kinds={"state": 4},
        oldest_produced_at=T0 + timedelta(hours=2),
        newest_produced_at=T0 + timedelta(hours=7),
        ranges=[(2, 4), (7, 7)],
    )
    assert store.sequence_numbers(AGENT) == [9]
    assert store.ingest(*wire(evicted(9, [(2, 4), (7, 7)], "age")), RECEIVED) == "duplicate"
    assert len(store.evictions(AGENT)) == 1


def test_the_gap_report_says_which_parts_of_each_gap_were_declared_evicted(store: Store) -> None:
    for seq in (1, 2, 3, 10, 11, 18, 19, 30):
        assert store.ingest(*wire(kpi(seq, start=T0 + timedelta(hours=seq))), received(seq)) == "stored"
    for d in (evicted(21, [(4, 6)]), evicted(22, [(7, 9), (13, 14), (16, 16)]), evicted(23, [(10, 11)], "age")):
        assert store.ingest(*wire(d), received(d.seq)) == "stored"

    assert store.gaps(AGENT) == [(4, 9), (12, 17), (20, 20), (24, 29)]  # the plain API is unchanged
    report = store.gap_report(AGENT)
    got = [(g.first, g.last, g.count, g.status, g.declared_by, g.reason) for g in report.gaps]
    assert got == [
        # (a) a gap fully covered, by two declarations
        (4, 6, 3, "evicted", 21, "bytes"),
        (7, 9, 3, "evicted", 22, "bytes"),
        # (b) a gap partly covered: split at every edge of the declared ranges
        (12, 12, 1, "missing", None, None),
        (13, 14, 2, "evicted", 22, "bytes"),
        (15, 15, 1, "missing", None, None),
        (16, 16, 1, "evicted", 22, "bytes"),
        (17, 17, 1, "missing", None, None),
        # (c) gaps no declaration covers
        (20, 20, 1, "missing", None, None),
        (24, 29, 6, "missing", None, None),
    ]
    # every part of a gap carries the stored messages around the whole gap: from when to when
    assert [(g.after, g.before) for g in report.gaps[:2]] == [(neighbour(3), neighbour(10))] * 2
    assert [(g.after, g.before) for g in report.gaps[2:7]] == [(neighbour(11), neighbour(18))] * 5
    # a declaration is a stored message too, and can be a gap's neighbour
    declaration = {
        seq: Neighbour(seq=seq, produced_at=T0 + timedelta(hours=seq), received_at=received(seq)) for seq in (21, 23)
    }
    assert (report.gaps[7].after, report.gaps[7].before) == (neighbour(19), declaration[21])
    assert (report.gaps[8].after, report.gaps[8].before) == (declaration[23], neighbour(30))
    assert (report.received, report.highest_seq, report.evicted, report.missing) == (11, 30, 9, 10)
    assert [d.seq for d in report.declarations] == [21, 22, 23]
    assert report.declared_but_received == 2  # 10 and 11 arrived although declared: they were in flight


def test_the_gap_report_of_a_gap_from_seq_1_and_of_an_unknown_agent(store: Store) -> None:
    store.ingest(*wire(kpi(3, start=T0 + timedelta(hours=3))), received(3))
    [gap] = store.gap_report(AGENT).gaps
    assert (gap.first, gap.last, gap.status, gap.after, gap.before) == (1, 2, "missing", None, neighbour(3))
    empty = store.gap_report("nobody")
    assert (empty.received, empty.highest_seq, empty.gaps, empty.declarations, empty.missing) == (0, None, [], [], 0)


def test_an_inconsistent_declaration_is_dead_lettered(store: Store) -> None:
    body = json.loads(encode(evicted(9, [(2, 4)])))
    for change, reason in (
        ({"count": 4}, "schema violation: evicted: Value error, count differs from the numbers the ranges cover"),
        (
            {"ranges": [[4, 5], [2, 3]], "count": 4, "kinds": {"state": 4}},
            "schema violation: evicted: Value error, ranges must be ascending",
        ),
        (
            {"ranges": [[2, 9]], "count": 8, "kinds": {"state": 8}},
            "schema violation: evicted: Value error, a declaration can only name sequence numbers below its own",
        ),
        ({"reason": "disk"}, "schema violation: evicted.reason: Input should be 'bytes' or 'age'"),
    ):
        assert store.ingest(topic(AGENT, "evicted"), json.dumps(body | change).encode(), RECEIVED) == "dead_letter"
        assert store.dead_letters()[-1].reason.startswith(reason), store.dead_letters()[-1].reason
    assert store.evictions(AGENT) == [] and store.sequence_numbers(AGENT) == []


def test_a_store_of_schema_1_gains_the_eviction_and_health_tables_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sqlite"
    with Store(path) as s:
        s.ingest(*wire(kpi(2)), RECEIVED)
    with sqlite3.connect(path) as db:  # as the previous release left it
        db.execute("DROP TABLE evictions")
        db.execute("DROP TABLE evicted_ranges")
        db.execute("DROP TABLE health")
        db.execute("ALTER TABLE messages DROP COLUMN historical")
        db.execute("DROP TABLE agent_keys")
        db.execute("DROP TABLE held")
        db.execute("ALTER TABLE messages DROP COLUMN verification")
        db.execute("ALTER TABLE messages DROP COLUMN key_id")
        db.execute("PRAGMA user_version=1")
    db.close()
    with Store(path) as s:
        assert s.sequence_numbers(AGENT) == [2]
        assert s.ingest(*wire(evicted(3, [(1, 1)])), RECEIVED) == "stored"
        assert [(g.first, g.last, g.status, g.declared_by) for g in s.gap_report(AGENT).gaps] == [(1, 1, "evicted", 3)]
        assert s._query("PRAGMA user_version") == [(4,)]
        assert s.health(AGENT) is None
        assert s._query("SELECT seq, historical, verification FROM messages ORDER BY seq") == [
            (2, 0, "unsigned"),
            (3, 0, "unsigned"),
        ]
