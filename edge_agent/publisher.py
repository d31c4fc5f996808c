"""MQTT publisher: drains the outbox at QoS 1 and deletes a message only on its PUBACK.

Threads. A supervisor thread owns the connection: it connects (TLS, MQTT 5 or 3.1.1), runs paho's
network thread while the connection lasts, and waits a jittered, growing delay before the next
attempt, so a fleet of gateways that lost the same broker does not come back in step. The outbox is
touched only from the asyncio side. Acknowledged message ids cross over through a thread-safe queue,
so no lock is ever held while calling into paho.

Streams. Each connection splits the outbox at the highest sequence number that existed when the
connection came up. Newer messages are *live* and go first, limited only by `max_inflight`; older
ones are the *backlog*, replayed oldest first at most `drain_rate_per_s` per second and marked
historical (MQTT 5 user property `historical=true`, and the payload field once the contract has it).

On every connect the retained `online: true` status is published first, then the `on_connected`
hook runs on the asyncio side (the runtime queues its birth message there).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.backoff import Backoff
from edge_agent.config import Mqtt, MqttTls
from edge_agent.outbox import Outbox
from edgeproof.contract import StatusMessage, encode, topic

log = logging.getLogger(__name__)

HISTORICAL_PROPERTY = ("historical", "true")
_UNSUPPORTED_PROTOCOL_VERSION = 0x84  # also what paho reports for a 3.1.1 CONNACK return code 1
_HISTORICAL_FALSE = b'"historical":false'
ACK_BATCH = 500  # acknowledged rows deleted in one transaction at most
ACK_DELAY_S = 0.025  # longest an acknowledged row waits for its delete


def mark_historical(payload: bytes) -> bytes:
    """The JSON payload with `"historical":true` (an outbox row from before the field gets it inserted)."""
    if _HISTORICAL_FALSE in payload:
        # JSON escaping keeps this byte sequence out of string values, and the common fields come
        # before nested objects, so the first occurrence is the message's own field
        return payload.replace(_HISTORICAL_FALSE, b'"historical":true', 1)
    if b'"historical":' in payload:
        return payload
    return b'{"historical":true,' + payload[1:]


def tls_context(tls: MqttTls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    else:
        ctx.load_default_certs()
    if tls.cert_file is not None:
        secret = tls.key_password.get_secret_value() if tls.key_password else ""
        # a callable, so that an encrypted key without a password fails instead of prompting on a tty
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None, password=lambda: secret)
    return ctx


def reconnect_backoff(cfg: Mqtt, rng: random.Random | None = None) -> Backoff:
    return Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s, jitter=cfg.reconnect_jitter, rng=rng)


class _FixedProperties(Properties):
    """PUBLISH properties that never change, packed once: paho would pack them again for every message."""

    def __init__(self, user_properties: list[tuple[str, str]]) -> None:
        super().__init__(PacketTypes.PUBLISH)
        self.UserProperty = user_properties
        object.__setattr__(self, "_packed", super().pack())  # Properties refuses unknown attribute names

    def pack(self) -> bytes:
        return self._packed  # type: ignore[no-any-return]


class _TokenBucket:
    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s / 10)  # bursts of at most a tenth of a second's worth
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self, wanted: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def give_back(self, unused: int) -> None:
        self.tokens = min(self.capacity, self.tokens + unused)


@dataclass(frozen=True)
class _Session:
    generation: int
    client: mqtt.Client
    v5: bool
    window: int  # messages in flight at once on this connection


class MqttPublisher:
    def __init__(
        self,
        cfg: Mqtt,
        agent_id: str,
        boot_id: str,
        outbox: Outbox,
        now: Callable[[], datetime],
        on_connected: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.agent_id = agent_id
        self.boot_id = boot_id
        self.outbox = outbox
        self._now = now
        # runs on the asyncio side once per connection the pump sees come up (not for one that
        # drops again before the next pump), before anything is sent on it
        self.on_connected = on_connected
        self.status_topic = topic(agent_id, "status")
        self.client_id = f"edgeproof-agent-{agent_id}"
        self.published = 0  # messages acknowledged and removed from the outbox
        self.sent_live = 0
        self.sent_backlog = 0
        self.connects = 0  # successful CONNACKs
        self.connect_failures = 0  # attempts that failed or connections that ended, each followed by a wait
        self.refused = 0  # PUBACKs with a failure reason code; the message stays for the next connection
        self.protocol: str | None = None  # "5" or "3.1.1" once connected
        self._ssl = tls_context(cfg.tls) if cfg.tls is not None else None
        if cfg.tls is not None and cfg.tls.insecure_skip_verify:
            log.warning(
                "MQTT TLS CERTIFICATE VERIFICATION IS DISABLED (mqtt.tls.insecure_skip_verify): "
                "anyone on the path can impersonate the broker; never use this in production",
                extra={"host": cfg.host, "port": cfg.port},
            )
        # network side (supervisor and paho threads)
        self._mqtt_version = mqtt.MQTTv311 if cfg.protocol == "3.1.1" else mqtt.MQTTv5
        self._backoff = reconnect_backoff(cfg, rng)
        self._stopping = threading.Event()
        self._session_over = threading.Event()
        self._settled = threading.Event()  # CONNACK (either way) or the end of the connection
        self._supervisor: threading.Thread | None = None
        self._current: mqtt.Client | None = None
        self._session: _Session | None = None
        self._connected = False
        self._refused_protocol = False
        self._ended: tuple[bool, str] = (False, "")  # (had a CONNACK, disconnect reason) of the last connection
        # (generation, mid, refusal): an MQTT 5 PUBACK can carry a refusal (quota, not authorised)
        self._acked: queue.SimpleQueue[tuple[int, int, str | None]] = queue.SimpleQueue()
        # asyncio side
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._in_flight: dict[int, int] = {}  # mid -> seq, on the current connection
        self._sent_generation = 0
        self._watermark = 0  # highest seq when the current connection came up
        self._live_cursor = 0  # highest live seq sent on the current connection
        self._live_idle_at: int | None = None  # outbox.appended when every live message was sent
        self._backlog_cursor = 0
        self._backlog_done = True
        self._backlog_started = 0.0
        self._backlog_sent_at_start = 0
        self._bucket = _TokenBucket(cfg.drain_rate_per_s) if cfg.drain_rate_per_s > 0 else None
        self._historical = _FixedProperties([HISTORICAL_PROPERTY])
        self._to_delete: list[int] = []  # acknowledged, not yet deleted from the outbox
        self._to_delete_since = 0.0

    @property
    def client(self) -> mqtt.Client | None:
        """The paho client of the current connection attempt."""
        return self._current

    @property
    def connected(self) -> bool:
        return self._connected

    def _status(self, online: bool, at: datetime | None) -> bytes:
        return encode(StatusMessage(agent_id=self.agent_id, boot_id=self.boot_id, online=online, at=at))

    # --- supervisor thread ----------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        v5 = self._mqtt_version == mqtt.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self._mqtt_version,
            reconnect_on_failure=False,  # the supervisor decides when to try again
            **({} if v5 else {"clean_session": True}),
        )
        if self.cfg.username:
            password = self.cfg.password.get_secret_value() if self.cfg.password else None
            client.username_pw_set(self.cfg.username, password)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        client.will_set(self.status_topic, self._status(False, None), qos=1, retain=True)
        client.max_inflight_messages_set(self.cfg.max_inflight + 1)  # + the status message
        client.connect_timeout = self.cfg.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            client = self._new_client()
            self._current = client
            self._refused_protocol = False
            self._session_over.clear()
            self._settled.clear()
            if self._stopping.is_set():  # stop() came between the loop test and the clears
                break
            clean = {"clean_start": True} if self._mqtt_version == mqtt.MQTTv5 else {}
            try:
                client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, **clean)
            except OSError as e:  # refused, unreachable, timed out, TLS handshake or certificate
                self._retry_later("mqtt connect failed", e)
                continue
            except Exception as e:  # a bug must not end the thread silently and stop all publishing
                log.exception("mqtt connect crashed", extra={"host": self.cfg.host, "port": self.cfg.port})
                self._retry_later("mqtt connect failed", e)
                continue
            client.loop_start()
            unanswered = not self._settled.wait(self.cfg.connect_timeout_s) and not self._stopping.is_set()
            if unanswered:
                client.disconnect()
            self._session_over.wait()
            if self._stopping.is_set():
                self._say_goodbye(client)
            client.loop_stop()
            self._connected = False
            if self._stopping.is_set():
                break
            if self._refused_protocol:
                self._mqtt_version = mqtt.MQTTv311
                continue  # at once: the broker is there, it only wants the older protocol
            if unanswered:
                self._no_connack()
                continue
            had_connack, reason = self._ended
            # without a CONNACK: refused, or (TLS 1.3) the broker rejected our certificate after the handshake
            self._retry_later("mqtt disconnected" if had_connack else "mqtt connection closed before CONNACK", reason)

    def _no_connack(self) -> None:
        version = "5" if self._mqtt_version == mqtt.MQTTv5 else "3.1.1"
        if self.cfg.protocol == "auto" and self.connects == 0:
            # some 3.1.1-only brokers (amqtt) cannot even parse an MQTT 5 CONNECT and never answer it;
            # alternate until one version is answered, then keep that one
            self._mqtt_version = mqtt.MQTTv311 if version == "5" else mqtt.MQTTv5
        self._retry_later(
            "mqtt CONNECT unanswered", f"no CONNACK to MQTT {version} within {self.cfg.connect_timeout_s}s"
        )

    def _retry_later(self, what: str, error: BaseException | str) -> None:
        delay = self._backoff.failed()
        self.connect_failures += 1
        log.warning(
            what,
            extra={
                "host": self.cfg.host,
                "port": self.cfg.port,
                "error": error if isinstance(error, str) else repr(error),
                "retry_in_s": round(delay, 3),
            },
        )
        self._stopping.wait(delay)

    def _say_goodbye(self, client: mqtt.Client) -> None:
        if self._connected:
            try:
                client.publish(
                    self.status_topic, self._status(False, self._now()), qos=1, retain=True
                ).wait_for_publish(2)
            except (RuntimeError, ValueError):
                log.warning("mqtt offline status not sent", extra={"host": self.cfg.host})
        client.disconnect()

    # --- paho network thread ------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._settled.set()
        if reason_code.is_failure:
            if (
                reason_code.value == _UNSUPPORTED_PROTOCOL_VERSION
                and self.cfg.protocol == "auto"
                and self._mqtt_version == mqtt.MQTTv5
            ):
                self._refused_protocol = True
                log.warning(
                    "mqtt broker refuses MQTT 5, using 3.1.1", extra={"host": self.cfg.host, "port": self.cfg.port}
                )
            else:
                log.warning("mqtt connect refused", extra={"host": self.cfg.host, "reason": str(reason_code)})
            return
        if self._stopping.is_set():
            return  # the supervisor disconnects; announcing "online" now would outlive the agent
        self._backoff.succeeded()
        v5 = self._mqtt_version == mqtt.MQTTv5
        self.protocol = "5" if v5 else "3.1.1"
        # first on the wire, before anything the new session sends
        client.publish(self.status_topic, self._status(True, self._now()), qos=1, retain=True)
        self.connects += 1
        window = self.cfg.max_inflight
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if receive_maximum:  # the broker's limit (MQTT 5); one place stays free for the status message
            window = max(1, min(window, receive_maximum - 1))
        self._session = _Session(self.connects, client, v5, window)
        self._connected = True
        log.info(
            "mqtt connected",
            extra={
                "host": self.cfg.host,
                "port": self.cfg.port,
                "protocol": self.protocol,
                "tls": self._ssl is not None,
                "tls_verify": self._ssl is not None and self._ssl.verify_mode != ssl.CERT_NONE,
                "connects": self.connects,
            },
        )
        self._wake_asyncio()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._ended = (self._connected, str(reason_code))
        self._connected = False
        self._settled.set()
        self._session_over.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        session = self._session
        if session is not None and session.client is client:
            self._acked.put((session.generation, mid, str(reason_code) if reason_code.is_failure else None))
            self._wake_asyncio()

    def _wake_asyncio(self) -> None:
        # one cross-thread call per pump, not one per PUBACK
        if self._wake_pending or self._loop is None or self._wake is None:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nobody to wake
            pass

    # --- asyncio side ---------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._attach(asyncio.get_running_loop())
        except RuntimeError:
            pass  # started outside a loop: run() or drain() attaches later
        self._supervisor = threading.Thread(target=self._supervise, name=f"mqtt-{self.agent_id}", daemon=True)
        self._supervisor.start()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        if self._loop is not loop or self._wake is None:
            self._wake = asyncio.Event()
            self._loop = loop
        return self._wake

    def _collect_acks(self) -> None:
        seqs = []
        generation = self._sent_generation
        while True:
            try:
                g, mid, refusal = self._acked.get_nowait()
            except queue.Empty:
                break
            if g != generation:
                continue  # an older connection's PUBACK: its mapping is gone, the message is sent again
            seq = self._in_flight.pop(mid, None)
            if seq is None:
                continue
            if refusal is None:
                seqs.append(seq)
            else:
                # kept in the outbox: the next connection sends it again as backlog
                self.refused += 1
                log.warning("mqtt broker refused a message", extra={"seq": seq, "reason": refusal})
        if seqs:
            if not self._to_delete:
                self._to_delete_since = time.monotonic()
            self._to_delete += seqs
        if self._to_delete and (
            len(self._to_delete) >= ACK_BATCH or time.monotonic() - self._to_delete_since >= ACK_DELAY_S
        ):
            self._delete_acknowledged()

    def _delete_acknowledged(self) -> None:
        # one transaction (one disk sync) for many PUBACKs; the cursors keep these rows from being
        # sent again meanwhile, and a crash before the delete only means a duplicate later
        if self._to_delete:
            self.outbox.acknowledge(self._to_delete)
            self.published += len(self._to_delete)
            self._to_delete = []

    def _new_session(self, session: _Session) -> None:
        # whatever was in flight on the old connection is backlog now and is sent again
        self._delete_acknowledged()
        self._sent_generation = session.generation
        self._in_flight.clear()
        self._watermark = self.outbox.last_seq()
        self._live_cursor = self._watermark
        self._live_idle_at = None
        self._backlog_cursor = 0
        self._backlog_done = False
        self._backlog_started = time.monotonic()
        self._backlog_sent_at_start = self.sent_backlog
        if self._bucket is not None:
            self._bucket.tokens = self._bucket.capacity
        if self.on_connected is not None:
            try:
                self.on_connected()
            except Exception:  # the hook is the caller's code: it must not stop publishing
                log.exception("mqtt on_connected hook failed", extra={"agent": self.agent_id})

    def pump_once(self) -> None:
        self._collect_acks()
        session = self._session
        if session is None or not self._connected:
            return
        if session.generation != self._sent_generation:
            self._new_session(session)
        room = session.window - len(self._in_flight)
        if room > 0 and self._live_idle_at != self.outbox.appended:
            room -= self._send_live(session, room)
        if room > 0 and not self._backlog_done:
            self._send_backlog(session, room)

    def _send_live(self, session: _Session, room: int) -> int:
        appended = self.outbox.appended
        rows = self.outbox.pending_range(self._live_cursor, None, room)
        publish = session.client.publish
        sent = 0
        for seq, name, payload in rows:
            info = publish(name, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._in_flight[info.mid] = seq
            self._live_cursor = seq
            sent += 1
        self.sent_live += sent
        if sent == len(rows) < room:
            self._live_idle_at = appended  # nothing new until the outbox grows again
        return sent

    def _send_backlog(self, session: _Session, room: int) -> None:
        wanted = room if self._bucket is None else self._bucket.take(room)
        if wanted == 0:
            return
        rows = self.outbox.pending_range(self._backlog_cursor, self._watermark, wanted)
        props = self._historical if session.v5 else None
        publish = session.client.publish
        sent = 0
        for seq, name, payload in rows:
            info = publish(name, mark_historical(payload), qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._in_flight[info.mid] = seq
            self._backlog_cursor = seq
            sent += 1
        self.sent_backlog += sent
        if self._bucket is not None:
            self._bucket.give_back(wanted - sent)
        if len(rows) < wanted and sent == len(rows):
            self._backlog_done = True
            count = self.sent_backlog - self._backlog_sent_at_start
            if count:
                log.info(
                    "mqtt backlog sent",
                    extra={
                        "messages": count,
                        "seconds": round(time.monotonic() - self._backlog_started, 3),
                        "up_to_seq": self._watermark,
                    },
                )

    def publish_volatile(self, name: str, payload: bytes) -> bool:
        """QoS 0, outside the outbox: live readings (health) that are worth nothing after an outage.

        Dropped (False) while not connected.
        """
        session = self._session
        if session is None or not self._connected:
            return False
        return session.client.publish(name, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS

    def _empty(self) -> bool:
        if self._in_flight:
            return False
        self._delete_acknowledged()
        return self.outbox.depth() == 0

    async def _idle(self, wake: asyncio.Event, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await wake.wait()
        except TimeoutError:
            pass

    def wake(self) -> None:
        """New messages are in the outbox: pump now rather than at the next interval (asyncio side)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event, interval_s: float = 0.02) -> None:
        """Publish until `stop` is set; wakes on every batch of PUBACKs, else every interval."""
        wake = self._attach(asyncio.get_running_loop())
        while not stop.is_set():
            self._wake_pending = False
            wake.clear()
            self.pump_once()
            await self._idle(wake, interval_s)

    async def drain(self, timeout_s: float) -> bool:
        """Keep publishing until the outbox is empty or the time is up; True when empty."""
        loop = asyncio.get_running_loop()
        wake = self._attach(loop)
        deadline = loop.time() + timeout_s
        while True:
            self._wake_pending = False
            wake.clear()
            self.pump_once()
            if self._empty():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._idle(wake, min(0.02, remaining))

    def stop(self) -> None:
        """Publish the retained offline status (when connected), disconnect, end the threads."""
        self._stopping.set()
        self._settled.set()
        self._session_over.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=15)
            self._supervisor = None
        self._collect_acks()
        self._delete_acknowledged()
