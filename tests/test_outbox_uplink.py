"""The bounded outbox end to end: real publisher, real Mosquitto, real ingest, an outage past the bound.

At the end every sequence number the agent allocated is either stored exactly once by the ingest
or named by an eviction declaration, and the ingest's gap report says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import Store
from edge_agent.config import Mqtt, OutboxSettings
from edge_agent.outbox import Outbox
from edge_agent.publisher import MqttPublisher
from tests.netutil import Mosquitto
from tests.test_outbox import AGENT, BOOT, T0, declarations, put, put_next, sized

pytestmark = pytest.mark.integration


def stored(db: Path) -> list[int]:
    with Store(db) as reader:  # a second connection, as a report would open
        return reader.sequence_numbers(AGENT)


async def pump_until(publisher: MqttPublisher, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Run the publisher's loop until `check` holds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        deadline = loop.time() + timeout_s
        while not check():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met within {timeout_s}s")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def outage(broker: Mosquitto, ingest: IngestService, publisher: MqttPublisher, box: Outbox, db: Path) -> None:
    publisher.start()
    assert put(box, sized("birth"), "birth") == 1
    await pump_until(publisher, lambda: box.depth() == 0 and stored(db) == [1])

    # The publisher's loop is not running while the broker is down, so no message can be half-way
    # in paho's queue when evicted: which numbers are evicted depends on the outbox alone.
    broker.stop()
    appended = [put_next(box) for _ in range(22)]  # 22 000 bytes into a 10 000-byte bound
    assert appended == [*range(2, 13), *range(14, 20), *range(21, 26)]
    assert [(d.seq, d.ranges, d.count, d.bytes) for d in declarations(box)] == [
        (13, [(2, 4), (6, 6), (8, 8), (10, 10), (12, 12)], 7, 7000),
        (20, [(5, 5), (7, 7), (9, 9), (14, 14), (16, 16), (18, 18)], 6, 6000),
    ]
    assert [seq for seq, _, _ in box.pending(100)] == [11, 13, 15, 17, 19, 20, 21, 22, 23, 24, 25]

    broker.start()
    assert ingest.wait_subscribed(60)
    await pump_until(publisher, lambda: box.depth() == 0 and len(stored(db)) == 12)


def test_an_outage_beyond_the_bound_ends_with_every_seq_stored_once_or_declared_evicted(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    db = tmp_path / "ingest.sqlite"
    box = Outbox(tmp_path / "outbox.sqlite", OutboxSettings(max_bytes=10_000, low_water=0.5))
    broker.start()
    ingest = IngestService(db, "127.0.0.1", broker.port, client_id="ingest-bounded-outbox")
    ingest.start()
    publisher = MqttPublisher(Mqtt(host="127.0.0.1", port=broker.port), AGENT, BOOT, box, lambda: T0)
    try:
        assert ingest.wait_subscribed(10)
        asyncio.run(outage(broker, ingest, publisher, box, db))
    finally:
        publisher.stop()
        ingest.stop()
        box.close()
        broker.stop()

    with Store(db) as store:
        report = store.gap_report(AGENT)
        assert store.sequence_numbers(AGENT) == [1, 11, 13, 15, 17, 19, 20, 21, 22, 23, 24, 25]
        assert store.message_count(AGENT) == 12  # stored once each, whatever was delivered twice
    assert [(g.first, g.last, g.status, g.declared_by, g.reason) for g in report.gaps] == [
        (2, 4, "evicted", 13, "bytes"),
        (5, 5, "evicted", 20, "bytes"),
        (6, 6, "evicted", 13, "bytes"),
        (7, 7, "evicted", 20, "bytes"),
        (8, 8, "evicted", 13, "bytes"),
        (9, 9, "evicted", 20, "bytes"),
        (10, 10, "evicted", 13, "bytes"),
        (12, 12, "evicted", 13, "bytes"),
        (14, 14, "evicted", 20, "bytes"),
        (16, 16, "evicted", 20, "bytes"),
        (18, 18, "evicted", 20, "bytes"),
    ]
    assert (report.missing, report.evicted, report.declared_but_received, report.highest_seq) == (0, 13, 0, 25)
    declared = {s for d in report.declarations for a, b in d.ranges for s in range(a, b + 1)}
    received = set(stored(db))
    assert declared.isdisjoint(received) and declared | received == set(range(1, 26))
    assert [(d.seq, d.count, d.bytes, d.kinds) for d in report.declarations] == [
        (13, 7, 7000, {"kpi": 1, "state": 6}),
        (20, 6, 6000, {"kpi": 3, "state": 3}),
    ]
