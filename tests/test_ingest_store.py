"""The ingest store: validation, idempotency, gaps and dead letters, on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_ingest.store import DEAD_LETTER_KEEP_BYTES, Store
from edgeproof.contract import (
    BirthMessage,
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
    values = {"window_s": 3600.0, "observed_s": 3600.0, "pot_s": 3600.0, "apt_s": 3000.0, "idle_s": 600.0,
              "pq": 100.0, "sq": 2.0, "ideal_run_s": 2500.0, "ideal_good_s": 2450.0} | elements
    te = TimeElements(**values)
    r = oee(te)
    return MachineKpi(
        agent_id=agent, boot_id="boot-1", seq=seq, produced_at=start + timedelta(hours=1, seconds=5),
        machine_id=machine, bucket_start=start, bucket_end=start + timedelta(hours=1), elements=te,
        availability=r.availability.value, performance=r.performance.value, quality=r.quality.value,
        oee=r.oee.value, flags=r.flags,
    )


def birth(seq: int, agent: str = AGENT) -> BirthMessage:
    return BirthMessage(
        agent_id=agent, boot_id="boot-1", seq=seq, produced_at=T0, agent_version="0.1.0",
        site=SiteIdentity(firm=Firm(name="Demo Precision Co."), site="Plant 1", timezone="Asia/Shanghai"),
        processes=[ProcessInfo(process_id="turning", key=True)],
        assets=[RegisterEntry(machine_id="M1", name="Lathe 1", machine_type="CNC lathe", process="turning",
                              digital=True, nc_capable=True, acquired=True, protocol="opcua", ideal_cycle_s=25.0)],
    )


def state(seq: int, agent: str = AGENT) -> StateInterval:
    return StateInterval(agent_id=agent, boot_id="boot-1", seq=seq, produced_at=T0 + timedelta(minutes=10),
                         machine_id="M1", state="FAULT", start=T0, end=T0 + timedelta(minutes=10), reason="E42")


def wire(message: Any) -> tuple[str, bytes]:
    return topic(message.agent_id, message.kind), encode(message)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ingest.sqlite")
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
    assert store._query('SELECT machine_id, state, reason FROM states') == [("M1", "FAULT", "E42")]
    assert store.dead_letters() == [] and store.duplicate_count == 0


def test_datetimes_are_stored_as_fixed_width_utc_text(store: Store) -> None:
    shanghai = kpi(1, start=datetime(2024, 3, 1, 8, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=8))))
    store.ingest(*wire(shanghai), RECEIVED)
    assert store._query("SELECT bucket_start, bucket_end FROM kpi") == [
        ("2024-03-01T00:00:00.500000Z", "2024-03-01T01:00:00.500000Z")
    ]
    assert store._query("SELECT received_at FROM messages") == [("2024-03-01T12:00:00.000000Z",)]


def test_a_redelivered_message_is_stored_once_and_counted_as_duplicate(store: Store, tmp_path: Path) -> None:
    t, payload = wire(kpi(1))
    assert store.ingest(t, payload, RECEIVED) == "stored"
    assert store.ingest(t, payload, RECEIVED + timedelta(seconds=3)) == "duplicate"
    assert store.sequence_numbers(AGENT) == [1]
    assert len(store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))) == 1
    assert store.duplicate_count == 1
    store.close()
    with Store(tmp_path / "ingest.sqlite") as reopened:  # the count is evidence: it survives a restart
        assert reopened.duplicate_count == 1
        assert reopened.duplicates_of(AGENT) == 1


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
        False, "boot-1", None, RECEIVED + timedelta(minutes=1))
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
    ("missing field", KPI_TOPIC, json.dumps(_kpi_dict(machine_id=_DELETE)).encode(),
     "schema violation: kpi.machine_id: Field required"),
    ("extra field", KPI_TOPIC, json.dumps(_kpi_dict(colour="red")).encode(),
     "schema violation: kpi.colour: Extra inputs are not permitted"),
    ("seq zero", KPI_TOPIC, json.dumps(_kpi_dict(seq=0)).encode(),
     "schema violation: kpi.seq: Input should be greater than or equal to 1"),
    ("naive time", KPI_TOPIC, json.dumps(_kpi_dict(produced_at="2024-03-01T01:00:00")).encode(),
     "schema violation: kpi.produced_at: Input should have timezone info"),
    ("seq beyond sqlite", KPI_TOPIC, json.dumps(_kpi_dict(seq=2**70)).encode(),
     "schema violation: kpi.seq: Input should be less than 9223372036854775808"),
    ("wrong version", "edgeproof/v2/plant-a/kpi", encode(kpi(1)), "topic not in contract: 'edgeproof/v2/plant-a/kpi'"),
    ("foreign topic", "factory/plant-a/kpi", encode(kpi(1)), "topic not in contract: 'factory/plant-a/kpi'"),
    ("too deep topic", "edgeproof/v1/plant-a/kpi/x", encode(kpi(1)),
     "topic not in contract: 'edgeproof/v1/plant-a/kpi/x'"),
    ("unknown kind", topic(AGENT, "telemetry"), encode(kpi(1)), "unknown message kind in topic: 'telemetry'"),
    ("kind mismatch", topic(AGENT, "birth"), encode(kpi(1)), "kind mismatch: topic says 'birth', payload says 'kpi'"),
    ("agent mismatch", topic("plant-b", "kpi"), encode(kpi(1)),
     "agent mismatch: topic says 'plant-b', payload says 'plant-a'"),
    ("bucket reversed", KPI_TOPIC,
     json.dumps(_kpi_dict(bucket_end="2024-02-29T23:00:00Z")).encode(),
     "schema violation: kpi: Value error, bucket_end must be after bucket_start"),
    ("negative time", KPI_TOPIC, json.dumps(_kpi_dict(elements=_kpi_dict()["elements"] | {"apt_s": -5.0})).encode(),
     "schema violation: kpi.elements.apt_s: Input should be greater than or equal to 0"),
    ("nan time", KPI_TOPIC, json.dumps(_kpi_dict(elements=_kpi_dict()["elements"] | {"pot_s": float("nan")})).encode(),
     "schema violation: kpi.elements.pot_s: Input should be a finite number"),
    ("status agent mismatch", topic("plant-b", "status"),
     encode(StatusMessage(agent_id=AGENT, boot_id="b", online=True)),
     "agent mismatch: topic says 'plant-b', payload says 'plant-a'"),
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


def test_a_huge_payload_is_dead_lettered_with_only_its_head_kept(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", max_payload_bytes=100_000) as store:
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
    st.builds(lambda a, k: f"edgeproof/v1/{a}/{k}", st.text(max_size=8),
              st.sampled_from(["kpi", "birth", "state", "site", "status", "x", ""])),
)
kpi_keys = sorted(_kpi_dict())
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    # a valid message with one field replaced or removed reaches the deep validators
    st.builds(lambda k, v, drop: json.dumps(_kpi_dict(**{k: _DELETE if drop else v})).encode(),
              st.sampled_from(kpi_keys), json_values, st.booleans()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=topics, payload=payloads)
def test_ingest_never_raises_on_arbitrary_input(store: Store, name: str, payload: bytes) -> None:
    result = store.ingest(name, payload, RECEIVED)
    assert result in ("stored", "duplicate", "dead_letter", "status")
    if result == "dead_letter":
        assert store.dead_letters()[-1].reason
