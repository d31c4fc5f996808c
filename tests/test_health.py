"""The agent's own health against real parts: Modbus units on loopback (one silent), real Mosquitto,
the real ingest, and the Prometheus endpoint scraped over HTTP."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import Store
from edge_agent.config import AgentConfig
from edge_agent.health import device_status
from edge_agent.runtime import Agent
from edgeproof.clock import WallClock
from edgeproof.netutil import free_port
from tests.misbehaving_modbus import MisbehavingServer
from tests.netutil import Mosquitto
from tests.test_modbus_links import device_config as unit

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "agent"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_device_status_from_its_bad_tags() -> None:
    assert [device_status(2, 0), device_status(2, 1), device_status(2, 2), device_status(0, 0)] == [
        "ok",
        "degraded",
        "down",
        "down",
    ]


def test_health_goes_out_over_mqtt_and_as_prometheus_metrics(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "ingest.sqlite"
    ingest = IngestService(db, "127.0.0.1", mosquitto.port, client_id="health-ingest")
    ingest.start()
    assert ingest.wait_subscribed(10)
    with MisbehavingServer({1: "ok", 2: "silent"}).running() as server:
        config = AgentConfig.model_validate(
            {
                "agent": {"id": "healthy", "data_dir": str(tmp_path / "agent")},
                "site": {"firm": {"name": "F"}, "name": "S"},
                "machines": [],
                "devices": [unit(1, server.port), unit(2, server.port)],
                "mqtt": {"port": mosquitto.port},
                "health": {"interval_s": 0.5, "metrics_port": 0},
            }
        )
        agent = Agent(config, WallClock())
        scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop, drain_timeout_s=1.0))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # until a reading exists and an MQTT one was stored
                await asyncio.sleep(0.2)
                with Store(db) as reader:
                    if agent.metrics_port and agent.health.latest and reader.health("healthy"):
                        break
            assert agent.metrics_port is not None
            scraped.update(await asyncio.to_thread(scrape, agent.metrics_port))
            stop.set()
            await task

        asyncio.run(main())
    ingest.stop()

    reading = agent.health.latest
    assert reading is not None
    assert {d.device_id: (d.status, d.tags, d.bad_tags) for d in reading.devices} == {
        "u1": ("ok", 2, 0),
        "u2": ("down", 2, 2),
    }
    assert reading.devices[0].good_samples > 0 and reading.devices[1].good_samples == 0
    assert reading.connected and reading.published >= 1  # at least the birth message was acknowledged
    with Store(db) as reader:
        stored = reader.health("healthy")
    assert stored is not None and stored.boot_id == agent.boot_id
    assert {d.device_id: d.status for d in stored.devices} == {"u1": "ok", "u2": "down"}

    # the endpoint serves a reading the agent took (a later one than `reading`, or the same)
    assert scraped[("edgeproof_device_status", (("device", "u1"), ("status", "ok")))] == 1
    assert scraped[("edgeproof_device_status", (("device", "u2"), ("status", "down")))] == 1
    assert scraped[("edgeproof_device_status", (("device", "u2"), ("status", "ok")))] == 0
    assert scraped[("edgeproof_device_bad_tags", (("device", "u2"),))] == 2
    assert scraped[("edgeproof_device_good_samples_total", (("device", "u2"),))] == 0
    assert scraped[("edgeproof_device_good_samples_total", (("device", "u1"),))] > 0
    assert scraped[("edgeproof_mqtt_connected", ())] == 1
    assert scraped[("edgeproof_outbox_evicted_messages_total", ())] == 0
    assert ("edgeproof_outbox_depth_messages", ()) in scraped


def test_a_taken_metrics_port_does_not_stop_acquisition(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken, MisbehavingServer({1: "ok"}).running() as server:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = AgentConfig.model_validate(
            {
                "agent": {"id": "busy-port", "data_dir": str(tmp_path / "agent")},
                "site": {"firm": {"name": "F"}, "name": "S"},
                "machines": [],
                "devices": [unit(1, server.port)],
                "mqtt": {"port": free_port()},  # nothing listens: messages stay in the outbox
                "health": {"metrics_port": taken.getsockname()[1]},
            }
        )
        agent = Agent(config, WallClock())

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.0, stop.set)
            await agent.run(stop, drain_timeout_s=0.1)

        asyncio.run(main())
    assert agent.metrics_port is None
    assert agent.good_samples["u1"] > 0
