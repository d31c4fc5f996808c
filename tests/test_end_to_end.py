"""Simulated plant → agent → real Mosquitto → ingest → SQLite, with a broker outage mid-run.

The post-retrofit phase of the demo plant runs at 600× (4 plant hours in 24 s). Tolerances:
the agent samples every 50 ms wall = 30 plant seconds, and a state change is credited at the
tick that sees it, so each transition can shift up to ~1 tick of time between states. With
10-20 transitions per machine in 4 h, that bounds one machine's availability error near 0.05
and the plant's (errors of opposite sign cancel across machines) near 0.02. Counters are
cumulative, so part counts are exact up to the parts made within one tick of the window edges.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import Store, iso
from edge_agent.outbox import Outbox
from edgeproof.contract import topic
from edgeproof.demo import PlantRun, enroll_agent, wait_until_stored
from edgeproof.indicators import TimeElements, oee, total
from tests.netutil import Mosquitto

AGENT = "demo-plant-agent"
GARBAGE = [(topic(AGENT, "kpi"), b"\x00\xffnot json"), (topic(AGENT, "state"), b'{"kind": "state"}')]


@dataclass
class Run:
    store: Path
    produced: int
    outbox_left: int
    window: tuple[Any, Any]
    truth: dict[str, Any]
    outage: tuple[datetime, datetime]  # plant time while the broker was down


def _publish_garbage(port: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="garbage-sender")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for name, payload in GARBAGE:
        client.publish(name, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("e2e")
    (out / "broker").mkdir()
    broker = Mosquitto(out / "broker")
    broker.start()
    ingest = IngestService(out / "ingest.sqlite", "127.0.0.1", broker.port)
    ingest.start()
    assert ingest.wait_subscribed(10)
    plant = PlantRun("post", out, speed=600.0, mqtt_port=broker.port)
    enroll_agent(out / "ingest.sqlite", AGENT, plant.data_dir)  # its messages are signed: verified, not held
    try:
        plant.launch_sim()
        plant.start_agent()
        start = plant.window[0]
        assert plant.clock is not None
        plant.wait_until(start + timedelta(minutes=40))
        broker.stop()  # the uplink is down for 4 s wall = 40 plant minutes; the outbox keeps everything
        down = plant.clock.now()
        time.sleep(4)
        broker.start()
        outage = (down, plant.clock.now())
        plant.wait_until(start + timedelta(minutes=150))
        _publish_garbage(broker.port)
        plant.wait_for_end()
    finally:
        plant.stop()
    box = Outbox(out / "agent-data" / "outbox.sqlite")
    produced, left = box.last_seq(), box.depth()
    box.close()
    wait_until_stored(out / "ingest.sqlite", AGENT, produced)
    ingest.stop()
    broker.stop()
    return Run(out / "ingest.sqlite", produced, left, plant.window, plant.truth, outage)


def test_every_message_produced_is_stored_exactly_once(run: Run) -> None:
    assert run.outbox_left == 0
    assert run.produced > 100  # birth + state intervals + 4 h of hourly kpi and site buckets
    with Store(run.store) as store:
        assert store.sequence_numbers(AGENT) == list(range(1, run.produced + 1))
        assert store.gaps(AGENT) == []
    # messages produced while the broker was down were kept in the outbox and delivered later
    with sqlite3.connect(run.store) as db:
        during = db.execute(
            "SELECT count(*) FROM messages WHERE agent_id = ? AND produced_at >= ? AND produced_at < ?",
            (AGENT, iso(run.outage[0]), iso(run.outage[1])),
        ).fetchone()[0]
    assert during >= 11  # the 06:00 bucket closed (10 kpi + 1 site) at 07:00, while the broker was down


def test_retained_status_says_offline_after_a_clean_stop(run: Run) -> None:
    with Store(run.store) as store:
        status = store.status(AGENT)
        birth = store.latest_birth(AGENT)
    assert status is not None and birth is not None
    assert status.online is False and status.boot_id == birth.boot_id
    assert status.at is not None  # said by the agent itself, not the broker's last will


def test_malformed_messages_are_dead_lettered_and_ingest_keeps_storing(run: Run) -> None:
    with Store(run.store) as store:
        dead = store.dead_letters()
        assert sorted((d.topic, d.payload) for d in dead) == sorted(GARBAGE)
        reasons = {d.topic: d.reason for d in dead}
        assert reasons[topic(AGENT, "kpi")].startswith("payload is not UTF-8")
        assert reasons[topic(AGENT, "state")].startswith("schema violation")
        # the garbage went in at plant 08:30; the last hour's buckets (09:00-10:00) were stored after it
        last_hour = store.kpi_rows(AGENT, run.window[1] - timedelta(hours=1), run.window[1])
        assert len(last_hour) == 10


def _measured(store: Store, window: tuple[Any, Any]) -> dict[str, TimeElements]:
    rows = [r for r in store.kpi_rows(AGENT, *window) if r.bucket_start >= window[0] and r.bucket_end <= window[1]]
    by_machine: dict[str, list[TimeElements]] = {}
    for r in rows:
        by_machine.setdefault(r.machine_id, []).append(r.elements)
    return {m: total(parts) for m, parts in by_machine.items()}


def test_measured_indicators_match_ground_truth(run: Run) -> None:
    with Store(run.store) as store:
        measured = _measured(store, run.window)
    truth = {m: TimeElements(**t["elements"]) for m, t in run.truth["machines"].items()}
    assert sorted(measured) == sorted(truth)
    window_s = (run.window[1] - run.window[0]).total_seconds()
    for machine, te in measured.items():
        t = truth[machine]
        assert te.window_s == pytest.approx(window_s), machine
        assert te.observed_s / window_s >= 0.97, machine  # acquisition ran through the broker outage
        assert te.pot_s == pytest.approx(t.pot_s, abs=60) and te.pdot_s == pytest.approx(t.pdot_s, abs=60)
        assert abs(te.pq - t.pq) <= 2, (machine, te.pq, t.pq)  # includes 16- and 32-bit counter wraps
        assert abs(te.sq - t.sq) <= 1, (machine, te.sq, t.sq)
        assert oee(te).availability.value == pytest.approx(oee(t).availability.value, abs=0.05), machine
    plant, plant_truth = oee(total(measured.values())), oee(total(truth.values()))
    assert plant.availability.value == pytest.approx(plant_truth.availability.value, abs=0.02)
    assert plant.performance.value == pytest.approx(plant_truth.performance.value, abs=0.02)
    assert plant.quality.value == pytest.approx(plant_truth.quality.value, abs=0.005)
    assert plant.oee.value == pytest.approx(plant_truth.oee.value, abs=0.02)


def test_site_ratios_of_the_last_bucket(run: Run) -> None:
    with Store(run.store) as store:
        site = store.latest_site(AGENT, *run.window)
    assert site is not None
    assert site.ratios.networking_rate.value == 1.0 and site.ratios.networking_rate.band_points == 6.0
    assert site.ratios.digitalisation_rate.value == 1.0
    assert (site.ratios.nc_rate_key_processes.numerator, site.ratios.nc_rate_key_processes.denominator) == (3, 4)
    assert {p.process_id: p.basis for p in site.ratios.key_processes} == {
        "turning": "measured",
        "milling": "measured",
        "stamping": "measured",
        "drilling": "none",
    }
