"""MQTT publisher: drains the outbox at QoS 1 and deletes a message only on its PUBACK.

paho runs its network loop in its own thread; the outbox is touched only from the asyncio side.
Acknowledged message ids cross over through a thread-safe queue, so no lock is ever held while
calling into paho.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import Mqtt
from edge_agent.outbox import Outbox
from edgeproof.contract import StatusMessage, encode, topic

log = logging.getLogger(__name__)


class MqttPublisher:
    def __init__(self, cfg: Mqtt, agent_id: str, boot_id: str, outbox: Outbox, now: Any) -> None:
        self.cfg = cfg
        self.agent_id = agent_id
        self.boot_id = boot_id
        self.outbox = outbox
        self._now = now
        self._acked: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # mid -> seq; asyncio side only
        self._connected = False
        self._generation = 0  # bumps on every connect so stale in-flight entries are dropped
        self._sent_generation = 0
        self._drained_at: tuple[int, int] | None = None  # (outbox.appended, generation) when seen empty
        self.published = 0
        self.status_topic = topic(agent_id, "status")
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edgeproof-agent-{agent_id}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        client.will_set(self.status_topic, self._status(False, None), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    def _status(self, online: bool, at: datetime | None) -> bytes:
        return encode(StatusMessage(agent_id=self.agent_id, boot_id=self.boot_id, online=online, at=at))

    # paho network thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason_code)})
            return
        log.info("mqtt connected", extra={"host": self.cfg.host, "port": self.cfg.port})
        client.publish(self.status_topic, self._status(True, self._now()), qos=1, retain=True)
        self._generation += 1
        self._connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected = False
        log.warning("mqtt disconnected", extra={"reason": str(reason_code)})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acked.put(mid)

    # asyncio side
    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def _collect_acks(self) -> None:
        seqs = []
        while True:
            try:
                mid = self._acked.get_nowait()
            except queue.Empty:
                break
            seq = self._in_flight.pop(mid, None)
            if seq is not None:
                seqs.append(seq)
        if seqs:
            self.outbox.acknowledge(seqs)
            self.published += len(seqs)

    def pump_once(self) -> None:
        self._collect_acks()
        if not self._connected:
            return
        if self._sent_generation != self._generation:
            # a new connection: whatever was in flight on the old one is sent again
            self._sent_generation = self._generation
            self._in_flight.clear()
        room = self.cfg.max_inflight - len(self._in_flight)
        if room <= 0:
            return
        if self._drained_at == (self.outbox.appended, self._sent_generation) and not self._in_flight:
            return  # nothing appended since the outbox was last seen empty: skip the query
        batch = self.outbox.pending(room, exclude=self._in_flight.values())
        if not batch and not self._in_flight:
            self._drained_at = (self.outbox.appended, self._sent_generation)
        for seq, name, payload in batch:
            info = self.client.publish(name, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._in_flight[info.mid] = seq

    async def run(self, stop: asyncio.Event, interval_s: float = 0.02) -> None:
        while not stop.is_set():
            self.pump_once()
            await asyncio.sleep(interval_s)

    async def drain(self, timeout_s: float) -> bool:
        """Keep publishing until the outbox is empty or the time is up; True when empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            self.pump_once()
            if self.outbox.depth() == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    def stop(self) -> None:
        if self._connected:
            self.client.publish(
                self.status_topic, self._status(False, self._now()), qos=1, retain=True
            ).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()
