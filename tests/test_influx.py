"""The InfluxDB copy of the time series against a real server speaking the InfluxDB v2 write API.

Each test starts its own VictoriaMetrics (Debian package `victoria-metrics`) on a free loopback
port. VictoriaMetrics stores each field of a line as its own series `<measurement>_<field>` with
the tags as labels, and (without -dedup.minScrapeInterval) keeps every raw sample it receives, so
/api/v1/export shows exactly what the sink wrote, twice-written points included.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.consumer import IngestService
from cloud_ingest.influx import (
    STATE_CODES,
    InfluxSettings,
    InfluxSink,
    parse,
    register_of,
    to_points,
)
from cloud_ingest.store import Store
from edgeproof import cli
from edgeproof.contract import (
    MACHINE_STATES,
    BirthMessage,
    DeviceHealth,
    EvictionDeclaration,
    HealthMessage,
    OutboxHealth,
    encode,
    parse_sequenced,
    topic,
)
from edgeproof.netutil import free_port
from edgeproof.signing import sign
from tests.netutil import Mosquitto
from tests.test_ingest_consumer import wait_for
from tests.test_report_evidence import AGENT, BASE, CST, POST, scenario

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parent.parent / "configs" / "grafana-dashboard.json"
H = timedelta(hours=1)


class VictoriaMetrics:
    """A private victoria-metrics on a free loopback port with its own data directory."""

    def __init__(self, workdir: Path, port: int | None = None, dedup: bool = False) -> None:
        binary = shutil.which("victoria-metrics")
        if binary is None:  # a failure, not a skip: the InfluxDB path must be tested for real
            pytest.fail("victoria-metrics is not installed (Debian package 'victoria-metrics'; .ci/run installs it)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            binary,
            f"-storageDataPath={workdir / 'vm-data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",  # the scenario's data is from 2024; the default keeps one month
            "-loggerLevel=ERROR",
        ] + (["-dedup.minScrapeInterval=1ms"] if dedup else [])  # InfluxDB's "same point overwrites"
        self.log = workdir / "victoria-metrics.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VictoriaMetrics:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not become healthy within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def export(self, match: str = '{__name__=~"edgeproof_.*"}') -> dict[tuple[str, frozenset[tuple[str, str]]], list]:
        """Every raw sample: (metric name, labels) → [(timestamp ms, value), ...]."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/internal/force_flush"), timeout=10).close()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as r:
            lines = r.read().decode().splitlines()
        out = {}
        for line in lines:
            row = json.loads(line)
            labels = dict(row["metric"])
            name = labels.pop("__name__")
            out[(name, frozenset(labels.items()))] = sorted(zip(row["timestamps"], row["values"], strict=True))
        return out


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path).start()
    yield server
    server.stop()


def settings(url: str, **overrides: Any) -> InfluxSettings:
    return InfluxSettings(url=url, org="edgeproof", bucket="edgeproof", **{"flush_interval_s": 0.2, **overrides})


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def series(samples: dict, name: str, **labels: str) -> list[tuple[int, float]]:
    """The samples of the one series named `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, f"{name} {labels}: {len(found)} series"
    return found[0]


def ingest_all(store: Store, sink: InfluxSink, messages: list[tuple[str, bytes]]) -> list[str]:
    """What IngestService does per message: store it, and offer it to the sink only when stored."""
    results = []
    for name, payload in messages:
        result = store.ingest(name, payload, datetime.now(UTC))
        if result in ("stored", "health"):
            sink.offer(name, payload)
        results.append(result)
    return results


def health_reading(at: datetime) -> HealthMessage:
    return HealthMessage(
        agent_id=AGENT, boot_id="boot", agent_version="0.1.0", at=at, uptime_s=120.0, connected=True, published=42,
        publish_rate_per_s=0.5, samples_read=9000,
        outbox=OutboxHealth(depth=3, bytes=2048, oldest_age_s=1.5, evicted_messages=0, evicted_bytes=0),
        devices=[DeviceHealth(device_id="plc-1", protocol="modbus", status="degraded", tags=8, bad_tags=1,
                              good_samples=7000, poll_overruns=2)],
    )


def check_scenario_values(samples: dict) -> None:
    """Exact values of specific machines and buckets of tests.test_report_evidence.scenario()."""
    b8, p8 = BASE[0], POST[0]
    m1 = {"agent_id": AGENT, "machine_id": "M1", "process": "turning", "bucket_s": "3600"}
    assert series(samples, "edgeproof_kpi_oee", **m1)[:2] == [
        (ms(b8 + H), pytest.approx(2280 / 3600)),  # 08:00-09:00: Σ PRU·GQ / observed PBT
        (ms(b8 + 2 * H), pytest.approx(2040 / 3000)),  # 09:00-10:00: PBT 3600 − 600 break
    ]
    assert series(samples, "edgeproof_kpi_availability", **m1)[0] == (ms(b8 + H), 0.75)
    assert series(samples, "edgeproof_kpi_pq", **m1)[0] == (ms(b8 + H), 80)
    assert series(samples, "edgeproof_kpi_window_s", **m1)[0] == (ms(b8 + H), 3600)
    # the daily roll-up ends with the 23:00 bucket's end but is its own series: bucket_s 86400
    day = {**m1, "bucket_s": "86400"}
    assert series(samples, "edgeproof_kpi_pq", **day) == [(ms(datetime(2024, 3, 2, tzinfo=CST)), 600)]
    m2 = {"machine_id": "M2", "process": "pressing", "bucket_s": "3600"}
    assert (ms(p8 + H), 12.5) in series(samples, "edgeproof_kpi_energy_kwh", **m2)
    assert (ms(p8 + H), 7) in series(samples, "edgeproof_kpi_sq", **m2)
    assert not [k for k in samples if k[0] == "edgeproof_kpi_energy_kwh" and ("machine_id", "M1") in k[1]]
    # M2's 09:00-10:00 baseline bucket had no data: OEE undefined, so no sample, but its elements are there
    assert ms(b8 + 2 * H) not in [t for t, _ in series(samples, "edgeproof_kpi_oee", **m2)]
    assert (ms(b8 + 2 * H), 3600) in series(samples, "edgeproof_kpi_unknown_s", **m2)
    m4 = {"machine_id": "M4", "process": "welding", "bucket_s": "3600"}
    assert series(samples, "edgeproof_kpi_observed_s", **m4) == [(ms(p8 + H), 3600), (ms(p8 + 2 * H), 3000)]

    site = {"agent_id": AGENT, "bucket_s": "3600"}
    # post 09:00-10:00: M4 observed 3000 of 3600 s is under the 90 % coverage → not networked in that bucket
    assert series(samples, "edgeproof_site_networking_rate", **site) == [(ms(b8 + 2 * H), 0.25), (ms(p8 + 2 * H), 0.5)]
    assert series(samples, "edgeproof_site_networking_rate_numerator", **site) == [(ms(b8 + 2 * H), 1),
                                                                                   (ms(p8 + 2 * H), 2)]
    assert series(samples, "edgeproof_site_networking_rate_denominator", **site)[0] == (ms(b8 + 2 * H), 4)
    assert series(samples, "edgeproof_site_nc_rate_key_processes", **site) == [
        (ms(b8 + 2 * H), pytest.approx(1 / 3)), (ms(p8 + 2 * H), pytest.approx(2 / 3))]
    assert series(samples, "edgeproof_site_networking_rate_points", **site)[1] == (ms(p8 + 2 * H), 4.5)
    assert series(samples, "edgeproof_site_digitalisation_rate_points", **site)[0] == (ms(b8 + 2 * H), 6)

    fault = {"machine_id": "M2", "process": "pressing", "state": "FAULT"}
    start = b8 + timedelta(minutes=20)
    assert series(samples, "edgeproof_state_duration_s", **fault) == [(ms(start), 600)]
    assert series(samples, "edgeproof_state_state_code", **fault) == [(ms(start), STATE_CODES["FAULT"])]
    assert [v for _, v in series(samples, "edgeproof_birth_acquired", agent_id=AGENT)] == [2, 3]


def test_stored_messages_are_written_with_exact_values(tmp_path: Path, vm: VictoriaMetrics) -> None:
    messages = scenario()
    with Store(tmp_path / "ingest.sqlite") as store:
        sink = InfluxSink(settings(vm.url), store_path=store.path).start()
        started = time.perf_counter()
        results = ingest_all(store, sink, messages)
        stats = sink.close()
        elapsed = time.perf_counter() - started
    assert results == ["stored"] * len(messages)
    assert stats.dropped_messages == stats.dropped_points == stats.failed_writes == 0
    samples = vm.export()
    check_scenario_values(samples)
    # one line per message: kpi lines carry 19 fields (+ energy, + defined ratios); samples = written fields
    assert sum(len(v) for v in samples.values()) > stats.written_points == len(messages)
    print(f"\n{stats.written_points} points ({sum(len(v) for v in samples.values())} samples) in {elapsed:.2f} s")


def test_duplicates_are_not_written_and_a_resent_bucket_keeps_its_identity(tmp_path: Path) -> None:
    messages = scenario()
    (tmp_path / "raw").mkdir()
    (tmp_path / "dedup").mkdir()
    raw = VictoriaMetrics(tmp_path / "raw")
    dedup = VictoriaMetrics(tmp_path / "dedup", dedup=True)
    try:
        raw.start()
        dedup.start()
        with Store(tmp_path / "ingest.sqlite") as store:
            sinks = [InfluxSink(settings(s.url), store_path=store.path).start() for s in (raw, dedup)]
            for name, payload in [*messages, messages[1], messages[4]]:  # M1 and M2 buckets redelivered
                result = store.ingest(name, payload, datetime.now(UTC))
                if result == "stored":
                    for sink in sinks:
                        sink.offer(name, payload)
            for sink in sinks:
                sink.close()
        b8 = BASE[0]
        m1 = {"machine_id": "M1", "bucket_s": "3600"}
        m2 = {"machine_id": "M2", "bucket_s": "3600"}
        raw_samples = raw.export()
        # a redelivery is a duplicate in the store and never reaches InfluxDB: one raw sample
        assert series(raw_samples, "edgeproof_kpi_pq", **m1)[0] == (ms(b8 + H), 80)
        assert series(raw_samples, "edgeproof_kpi_pq", **m1)[1][0] != ms(b8 + H)
        # seq 4 and seq 11 are the same bucket sent twice under two numbers: both stored, both written,
        # to the same series and timestamp — InfluxDB (and VictoriaMetrics with dedup) keeps one point
        assert series(raw_samples, "edgeproof_kpi_pq", **m2)[:2] == [(ms(b8 + H), 100), (ms(b8 + H), 100)]
        assert series(dedup.export(), "edgeproof_kpi_pq", **m2)[0] == (ms(b8 + H), 100)
        assert series(dedup.export(), "edgeproof_kpi_pq", **m2)[1][0] == ms(b8 + 2 * H)
    finally:
        raw.stop()
        dedup.stop()


def test_held_messages_are_not_written(tmp_path: Path, vm: VictoriaMetrics) -> None:
    key = Ed25519PrivateKey.generate()
    messages = scenario()
    signed = [(name, encode(sign(key, parse_sequenced(payload)))) for name, payload in messages]
    with Store(tmp_path / "ingest.sqlite") as store:
        sink = InfluxSink(settings(vm.url), store_path=store.path).start()
        results = ingest_all(store, sink, signed)  # the key is not enrolled: every message is held pending
        health = health_reading(datetime(2024, 6, 1, 9, tzinfo=UTC))
        results.append(store.ingest(topic(AGENT, "health"), encode(health), datetime.now(UTC)))
        sink.offer(topic(AGENT, "health"), encode(health))
        stats = sink.close()
    assert set(results) == {"pending", "health"}
    assert stats.written_points == 2  # the health reading and its one device
    samples = vm.export()
    assert {name for name, _ in samples} == {
        "edgeproof_health_uptime_s", "edgeproof_health_connected", "edgeproof_health_published",
        "edgeproof_health_publish_rate_per_s", "edgeproof_health_samples_read", "edgeproof_health_outbox_depth",
        "edgeproof_health_outbox_bytes", "edgeproof_health_outbox_oldest_age_s",
        "edgeproof_health_outbox_evicted_messages", "edgeproof_health_outbox_evicted_bytes",
        "edgeproof_device_status_code", "edgeproof_device_tags", "edgeproof_device_bad_tags",
        "edgeproof_device_good_samples", "edgeproof_device_poll_overruns",
    }
    assert series(samples, "edgeproof_health_outbox_depth", agent_id=AGENT) == [(ms(health.at), 3)]
    assert series(samples, "edgeproof_device_status_code", device_id="plc-1", protocol="modbus") == [(ms(health.at), 1)]


def test_an_influxdb_outage_neither_blocks_nor_fails_ingestion_and_backfill_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there yet: InfluxDB is down
    messages = scenario()
    caplog.set_level(logging.WARNING, logger="cloud_ingest.influx")
    db = tmp_path / "ingest.sqlite"
    with Store(db) as store:
        sink = InfluxSink(
            settings(f"http://127.0.0.1:{port}", max_buffered=5, batch_size=1, timeout_s=1, retry_max_s=0.5),
            store_path=store.path,
        ).start()
        results = ingest_all(store, sink, messages)  # returns although no write can succeed
        assert results == ["stored"] * len(messages)  # SQLite has everything
        wait_for(lambda: sink.stats().failed_writes >= 1, timeout=20)
        during = sink.stats()
        # bounded: at most 5 buffered and one held by the writer for its retry; the rest dropped, counted
        assert during.buffered <= 5 and during.written_points == 0
        assert len(messages) - 1 <= during.dropped_messages + during.buffered <= len(messages)
        assert "edgeproof influx backfill --since" in caplog.text
        # InfluxDB is back: the sink catches up by itself. dedup: the backfill then overwrites, as in InfluxDB
        server = VictoriaMetrics(tmp_path, port=port, dedup=True).start()
        try:
            wait_for(lambda: sink.stats().buffered == 0 and sink.stats().written_points >= 5, timeout=20)
            stats = sink.close()
            assert stats.dropped_messages == during.dropped_messages
            assert stats.written_points == len(messages) - stats.dropped_messages  # one point per message
            assert len(server.export()) > 0
            # the store is the record: a backfill since the first drop writes everything stored since then
            since = (stats.first_dropped_at - timedelta(minutes=1)).isoformat()
            monkeypatch.setenv("EDGEPROOF_INFLUX_TOKEN", "t0ken-not-on-the-command-line")
            code = cli.main(["influx", "backfill", "--db", str(db), "--since", since, "--influx-url", server.url,
                             "--influx-org", "edgeproof", "--influx-bucket", "edgeproof"])
            assert code == 0
            check_scenario_values(server.export())
        finally:
            server.stop()
    assert "t0ken" not in caplog.text


def test_backfill_writes_what_the_store_holds(
    tmp_path: Path, vm: VictoriaMetrics, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = scenario()
    db = tmp_path / "ingest.sqlite"
    with Store(db) as store:
        for name, payload in [*messages, messages[1]]:
            store.ingest(name, payload, datetime(2024, 6, 2, tzinfo=UTC))
    args = ["influx", "backfill", "--db", str(db), "--influx-url", vm.url, "--influx-org", "o", "--influx-bucket", "b"]
    monkeypatch.setenv("EDGEPROOF_INFLUX_TOKEN", "secret")
    assert cli.main([*args, "--since", "2024-06-03T00:00:00Z"]) == 0  # received before: nothing to write
    assert "wrote 0 point(s)" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert f"wrote {len(messages)} point(s)" in capsys.readouterr().out
    samples = vm.export()
    check_scenario_values(samples)
    # a backfill writes what the live path writes: the same series, timestamps and values
    live = VictoriaMetrics(tmp_path / "live")
    (tmp_path / "live").mkdir()
    live.start()
    try:
        with Store(tmp_path / "live.sqlite") as store:
            sink = InfluxSink(settings(live.url), store_path=store.path).start()
            ingest_all(store, sink, [*messages, messages[1]])
            sink.close()
        assert live.export() == samples
    finally:
        live.stop()
    # InfluxDB unreachable: a clear error, exit 1
    args[args.index(vm.url)] = f"http://127.0.0.1:{free_port()}"
    assert cli.main(args) == 1
    assert "failed" in capsys.readouterr().err


def test_through_the_ingest_service_with_a_real_broker(
    tmp_path: Path, mosquitto: Mosquitto, vm: VictoriaMetrics
) -> None:
    messages = scenario()
    db = tmp_path / "ingest.sqlite"
    sink = InfluxSink(settings(vm.url), store_path=db).start()
    service = IngestService(db, "127.0.0.1", mosquitto.port, client_id="ingest-influx", sink=sink)
    service.start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="influx-test-publisher")
    try:
        assert service.wait_subscribed(10)
        publisher.connect("127.0.0.1", mosquitto.port)
        publisher.loop_start()
        key = Ed25519PrivateKey.generate()
        held = parse_sequenced(messages[1][1]).model_copy(update={"seq": 99})
        extra = [
            messages[1],  # a redelivery: duplicate
            (topic(AGENT, "kpi"), encode(sign(key, held))),  # signed by a key nobody enrolled: held pending
            (topic(AGENT, "kpi"), b"{not json"),  # dead letter
            (topic(AGENT, "health"), encode(health_reading(datetime(2024, 6, 1, 9, tzinfo=UTC)))),
        ]
        for name, payload in messages + extra:
            publisher.publish(name, payload, qos=1).wait_for_publish(5)
        wait_for(lambda: sum(service.counts.values()) == len(messages) + len(extra), timeout=20)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        service.stop()
        stats = sink.close()
    assert service.counts == {"stored": len(messages), "duplicate": 1, "pending": 1, "dead_letter": 1, "health": 1}
    assert stats.written_points == len(messages) + 2 and stats.dropped_messages == 0
    samples = vm.export()
    check_scenario_values(samples)
    m1 = series(samples, "edgeproof_kpi_pq", machine_id="M1", process="turning", bucket_s="3600")
    assert [t for t, _ in m1].count(ms(BASE[0] + H)) == 1  # neither the duplicate nor the held copy


def test_state_codes_cover_every_state() -> None:
    assert set(STATE_CODES) == set(MACHINE_STATES)
    assert len(set(STATE_CODES.values())) == len(STATE_CODES)


def written_fields() -> dict[str, set[str]]:
    """measurement → fields, from what to_points writes for the scenario and a health reading."""
    out: dict[str, set[str]] = {}
    birth = None
    evicted = EvictionDeclaration(agent_id=AGENT, boot_id="boot", seq=30, produced_at=POST[1], reason="bytes",
                                  ranges=[(20, 29)], count=10, bytes=9000, oldest_produced_at=None,
                                  newest_produced_at=None)
    wire = [
        *scenario(),
        (topic(AGENT, "evicted"), encode(evicted)),
        (topic(AGENT, "health"), encode(health_reading(datetime(2024, 6, 1, tzinfo=UTC)))),
    ]
    for name, payload in wire:
        message = parse(name, payload)
        assert message is not None
        birth = message if isinstance(message, BirthMessage) else birth
        for point in to_points(message, register_of(birth)):
            line = point.to_line_protocol()
            measurement = line.split(",", 1)[0]
            fields_part = re.split(r"(?<!\\) ", line)[1]
            out.setdefault(measurement, set()).update(f.split("=", 1)[0] for f in fields_part.split(","))
    return out


def test_every_dashboard_query_names_a_written_measurement_and_fields() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    fields = written_fields()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"DS_INFLUXDB", "agent_id", "machine_id"} <= variables.keys()
    assert variables["DS_INFLUXDB"]["query"] == "influxdb"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {p["type"] for p in panels} >= {"timeseries", "state-timeline"}
    titles = " ".join(p["title"] for p in panels).lower()
    for topic_word in ("oee", "networking", "nc rate", "state", "coverage", "parts", "energy"):
        assert topic_word in titles, topic_word
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_INFLUXDB}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_INFLUXDB}"
            query = target["query"]
            measurements = re.findall(r'r\._measurement == "([a-z_]+)"', query)
            named = re.findall(r'r\._field == "([a-z_]+)"', query)
            assert measurements and named, f"{panel['title']}: {query}"
            for measurement in measurements:
                assert measurement in fields, f"{panel['title']}: {measurement}"
                assert set(named) <= fields[measurement], f"{panel['title']}: {set(named) - fields[measurement]}"
