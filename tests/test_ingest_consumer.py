"""The MQTT consumer against a real Mosquitto: QoS 1, dead letters, persistent session, reconnect."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import Store
from edgeproof.contract import StatusMessage, encode, topic
from tests.netutil import Mosquitto
from tests.test_ingest_store import AGENT, T0, birth, kpi, wire

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, name: str, payload: bytes, retain: bool = False) -> None:
    info = client.publish(name, payload, qos=1, retain=retain)
    info.wait_for_publish(timeout=5)
    assert info.is_published()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ingest.sqlite"


@pytest.fixture
def service(mosquitto: Mosquitto, db: Path) -> Iterator[IngestService]:
    s = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-under-test")
    s.start()
    assert s.wait_subscribed(10)
    yield s
    s.stop()


def stored(db: Path, agent: str = AGENT) -> list[int]:
    with Store(db) as reader:  # a second connection, as the report would open
        return reader.sequence_numbers(agent)


def test_qos1_messages_are_stored(service: IngestService, publisher: mqtt.Client, db: Path) -> None:
    publish(publisher, *wire(birth(1)))
    for seq in (2, 3, 4):
        publish(publisher, *wire(kpi(seq, start=T0.replace(hour=seq))))
    wait_for(lambda: stored(db) == [1, 2, 3, 4])
    assert service.counts["stored"] == 4


def test_a_retained_status_is_recorded(service: IngestService, publisher: mqtt.Client, db: Path) -> None:
    publish(publisher, topic(AGENT, "status"), encode(StatusMessage(agent_id=AGENT, boot_id="b7", online=True)),
            retain=True)
    wait_for(lambda: service.counts["status"] == 1)
    with Store(db) as reader:
        s = reader.status(AGENT)
    assert s is not None and (s.online, s.boot_id) == (True, "b7")


def test_a_malformed_message_is_dead_lettered_and_consumption_goes_on(
    service: IngestService, publisher: mqtt.Client, db: Path
) -> None:
    publish(publisher, topic(AGENT, "kpi"), b"\x00garbage")
    publish(publisher, topic(AGENT, "kpi"), b'{"kind": "kpi", "seq": "one"}')
    publish(publisher, *wire(kpi(1)))
    wait_for(lambda: stored(db) == [1])
    with Store(db) as reader:
        reasons = [d.reason for d in reader.dead_letters()]
    assert reasons[0].startswith("payload is not JSON")
    assert reasons[1].startswith("schema violation: ")
    assert len(reasons) == 2
    assert service.counts["dead_letter"] == 2


def test_messages_published_while_ingest_is_down_arrive_exactly_once(
    mosquitto: Mosquitto, publisher: mqtt.Client, db: Path
) -> None:
    first = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-persistent")
    first.start()
    assert first.wait_subscribed(10)
    publish(publisher, *wire(kpi(1)))
    wait_for(lambda: stored(db) == [1])
    first.stop()

    # The broker queues these for the persistent session; one is even sent twice by the agent.
    for seq in range(2, 12):
        publish(publisher, *wire(kpi(seq, start=T0.replace(hour=seq))))
    publish(publisher, *wire(kpi(5, start=T0.replace(hour=5))))
    assert stored(db) == [1]

    second = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-persistent")
    second.start()
    try:
        wait_for(lambda: stored(db) == list(range(1, 12)))
        wait_for(lambda: second.counts["duplicate"] == 1)
    finally:
        second.stop()
    with Store(db) as reader:
        assert reader.duplicate_count == 1
        assert reader.message_count(AGENT) == 11
        assert reader.gaps(AGENT) == []


def test_the_ingest_resubscribes_after_the_broker_restarts(
    service: IngestService, mosquitto: Mosquitto, db: Path
) -> None:
    mosquitto.stop()  # this broker keeps no sessions on disk: the subscription is lost with it
    wait_for(lambda: not service.subscribed)
    mosquitto.start()
    assert service.wait_subscribed(15)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="late-publisher")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        publish(client, *wire(kpi(1)))
        wait_for(lambda: stored(db) == [1])
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_storage_failure_stops_the_ingest_and_the_message_is_redelivered(
    mosquitto: Mosquitto, publisher: mqtt.Client, db: Path
) -> None:
    failing = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-failing")
    never = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(failing.run_forever(never)))
    runner.start()
    assert failing.wait_subscribed(10)
    assert failing._store is not None
    failing._store.close()  # the database goes away under the running ingest
    publish(publisher, *wire(kpi(1)))
    runner.join(15)
    assert result == [1]
    assert failing.fatal_error is not None
    assert stored(db) == []

    # Not acknowledged, so the broker hands it to the next run of the same session.
    recovered = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-failing")
    recovered.start()
    try:
        wait_for(lambda: stored(db) == [1])
    finally:
        recovered.stop()
