"""MQTT consumer: subscribes to the contract's topics and hands every message to the store.

Delivery is at-least-once end to end: a persistent session (clean_session=False, stable client
id) makes the broker queue QoS 1 messages while the ingest is away, and a message is acknowledged
(manual PUBACK) only after the store has committed it. Redeliveries are then absorbed by the
store's idempotency on (agent_id, seq), which turns at-least-once into exactly-once storage.

Several workers can share the load on one shared subscription (`share_group`), each on its own
persistent session; what survives a worker's death then depends on the broker (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.dialect import StoreTarget, is_postgres, mask
from cloud_ingest.store import Store
from edgeproof.contract import INGEST_SUBSCRIPTION

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "edgeproof-ingest"


class StoredSink(Protocol):
    """Gets every stored message (and health reading) after its commit; must not block (cloud_ingest/influx.py)."""

    def offer(self, topic: str, payload: bytes) -> None: ...


def ingest_subscription(share_group: str | None, client_id: str) -> str:
    """The topic filter a worker subscribes to: the contract's, or its `$share/<group>/` form (docs/scale-out.md).

    Raises ValueError for a group name MQTT cannot carry, or for a group worker on the default client
    id: workers that share a client id take each other's session over, over and over.
    """
    if share_group is None:
        return INGEST_SUBSCRIPTION
    if not share_group or any(c in share_group for c in "/+#"):
        raise ValueError(f"share group {share_group!r}: must be non-empty, without '/', '+' or '#'")
    if client_id == DEFAULT_CLIENT_ID:
        raise ValueError(
            f"each worker of share group {share_group!r} needs its own stable client id "
            f"(e.g. --client-id {DEFAULT_CLIENT_ID}-1, -2, ...), not the default {DEFAULT_CLIENT_ID!r}"
        )
    return f"$share/{share_group}/{INGEST_SUBSCRIPTION}"


class IngestService:
    """Consume `INGEST_SUBSCRIPTION` (as a worker of `share_group`: its shared form) at QoS 1 into a `Store`.

    The store is written from paho's network thread only (the on_message callback), which is
    also what serialises the writes; `stop()` joins that thread before closing the store.
    """

    def __init__(
        self,
        db_path: StoreTarget,
        host: str,
        port: int,
        client_id: str = DEFAULT_CLIENT_ID,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        share_group: str | None = None,
        sink: StoredSink | None = None,
    ) -> None:
        if not client_id:
            raise ValueError("a stable, non-empty client id is required for a persistent session")
        self.subscription = ingest_subscription(share_group, client_id)
        self.db_path = db_path if is_postgres(db_path) else Path(db_path)
        self.host = host
        self.port = port
        self.client_id = client_id
        self._username = username
        self._password = password
        self._keepalive_s = keepalive_s
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._store: Store | None = None
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()
        self._fatal: BaseException | None = None
        self.counts: Counter[str] = Counter()
        self._sink = sink

    @property
    def fatal_error(self) -> BaseException | None:
        """The storage error that stopped consumption, if any (the message stays unacknowledged)."""
        return self._fatal

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def start(self) -> None:
        if self._client is not None:
            raise RuntimeError("IngestService already started")
        self._fatal = None
        self._subscribed.clear()
        self._store = Store(self.db_path)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        client.reconnect_delay_set(*self._reconnect)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # connect_async + loop_start: a broker that is down at start-up is retried with back-off
        # by the network thread instead of failing the service.
        client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        client.loop_start()
        self._client = client
        log.info(
            "ingest started broker=%s:%d client_id=%s db=%s", self.host, self.port, self.client_id, mask(self.db_path)
        )

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Block until the subscription is acknowledged by the broker (True) or `timeout` passes."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # A clean DISCONNECT keeps the persistent session: the broker goes on queueing for us.
            client.disconnect()
            client.loop_stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        self._subscribed.clear()
        log.info("ingest stopped client_id=%s counts=%s", self.client_id, dict(self.counts))

    def run_forever(self, stop_event: threading.Event) -> int:
        """Run until `stop_event` is set (0) or storage fails (1)."""
        self.start()
        try:
            while not stop_event.wait(0.5):
                if self._fatal is not None:
                    break
        finally:
            self.stop()
        if self._fatal is not None:
            log.error("ingest stopped by a storage error: %s", self._fatal)
            return 1
        return 0

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused connection broker=%s:%d reason=%s", self.host, self.port, reason)
            return
        log.info("connected broker=%s:%d session_present=%s", self.host, self.port, flags.session_present)
        # Subscribe on every connect: harmless when the session already has it, needed when the
        # broker lost the session (restart without persistence).
        client.subscribe(self.subscription, qos=1)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused topic=%s reasons=%s", self.subscription, reasons)
            return
        log.info("subscribed topic=%s qos=1", self.subscription)
        self._subscribed.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._subscribed.clear()
        if reason.is_failure:
            log.warning("disconnected broker=%s:%d reason=%s; reconnecting", self.host, self.port, reason)
        else:
            log.info("disconnected broker=%s:%d", self.host, self.port)

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._fatal is not None or self._store is None:
            return  # storage is broken: leave it unacknowledged for redelivery
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = f"<topic not UTF-8: {msg._topic!r}>"  # paho keeps only the raw bytes then
        try:
            result = self._store.ingest(topic, msg.payload, datetime.now(UTC))
        except Exception as exc:  # sqlite3.Error, OSError: the store's fault, not the message's
            # Not the message's fault: do not acknowledge it, stop consuming, let the supervisor
            # restart us; the broker redelivers it to the persistent session.
            log.exception("storage failed topic=%s mid=%d; stopping without acknowledging", topic, msg.mid)
            self._fatal = exc
            client.disconnect()
            return
        self.counts[result] += 1
        client.ack(msg.mid, msg.qos)
        if self._sink is not None and result in ("stored", "health"):  # never held, duplicate or dead-lettered
            self._sink.offer(topic, msg.payload)
