"""`python -m cloud_ingest ingest` as a process: consumes until SIGTERM, then exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.store import Store
from tests.netutil import Mosquitto
from tests.test_ingest_store import AGENT, kpi, wire

pytestmark = pytest.mark.integration


def test_ingest_command_stores_and_stops_cleanly_on_sigterm(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "var" / "ingest.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_ingest", "ingest", "--db", str(db), "--mqtt-port", str(mosquitto.port),
         "--client-id", "cli-ingest"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cli-publisher")
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        deadline = time.monotonic() + 15
        stored: list[int] = []
        # Until the ingest has subscribed, a QoS 1 publish finds no session: publish until one lands.
        while time.monotonic() < deadline and stored != [1]:
            client.publish(*wire(kpi(1)), qos=1).wait_for_publish(5)
            time.sleep(0.2)
            if db.exists():
                with Store(db) as reader:
                    stored = reader.sequence_numbers(AGENT)
        client.disconnect()
        client.loop_stop()
        assert stored == [1]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "subscribed topic=edgeproof/v1/+/+" in err
    assert "signal SIGTERM: stopping" in err
