"""The agent's MQTT publisher against real brokers: TLS and mutual TLS, MQTT 5 with fallback to
3.1.1, reconnect after a broker restart, backlog drain behind live data, jittered back-off."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from connectors.backoff import Backoff
from edge_agent.config import Mqtt
from edge_agent.outbox import Outbox
from edge_agent.publisher import MqttPublisher, mark_historical, reconnect_backoff, tls_context
from edgeproof.broker import EmbeddedBroker
from edgeproof.contract import StateInterval, topic
from tests.netutil import Mosquitto, MosquittoTls, free_port

pytestmark = pytest.mark.integration

AGENT = "pub-test"
BOOT = "boot-1"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KEY_PASSWORD = "client-key-pass"


# --- certificates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    other_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cn: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    ca = usage is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _write(d / "ca.crt", _certificate("test ca", ca_key, "test ca", ca_key, None))
    _write(d / "other-ca.crt", _certificate("other ca", other_key, "other ca", other_key, None))
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(
        d / "server.crt",
        _certificate("127.0.0.1", server_key, "test ca", ca_key, ExtendedKeyUsageOID.SERVER_AUTH),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "client.crt", _certificate(AGENT, client_key, "test ca", ca_key, ExtendedKeyUsageOID.CLIENT_AUTH))
    (d / "client.key").write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", d / "other-ca.crt")


# --- helpers --------------------------------------------------------------------------------
@dataclass
class Received:
    topic: str
    payload: bytes
    user_properties: dict[str, str]

    @property
    def seq(self) -> int | None:
        return json.loads(self.payload).get("seq")  # None for status messages


class Subscriber:
    """A real MQTT 5 (or 3.1.1) subscriber recording everything under edgeproof/v1/ in arrival order."""

    def __init__(
        self, port: int, ctx: ssl.SSLContext | None = None, protocol: int = mqtt.MQTTv5, name: str = "test-subscriber"
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
        if ctx is not None:
            client.tls_set_context(ctx)
        client.on_connect = lambda c, *_: c.subscribe("edgeproof/v1/#", qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client
        assert self._subscribed.wait(10), "subscriber not subscribed"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", None) or [])
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, props))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def seqs(self) -> list[int]:
        return [s for m in self.snapshot() if (s := m.seq) is not None]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _state(machine: str = "m1") -> tuple[str, Callable[[int], StateInterval]]:
    def make(seq: int) -> StateInterval:
        return StateInterval(
            agent_id=AGENT,
            boot_id=BOOT,
            seq=seq,
            produced_at=T0,
            machine_id=machine,
            state="RUNNING",
            start=T0,
            end=T0 + timedelta(seconds=seq),
        )

    return topic(AGENT, "state"), make


class Clock:
    """Each call one second later than the one before, so a status message tells which call made it."""

    def __init__(self) -> None:
        self.calls: list[datetime] = []
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.calls.append(T0 + timedelta(seconds=len(self.calls)))
            return self.calls[-1]


def _status_at(sub: Subscriber, at: datetime) -> dict[str, object] | None:
    for m in sub.snapshot():
        status = json.loads(m.payload) if m.topic == topic(AGENT, "status") else {}
        if status.get("at") and datetime.fromisoformat(status["at"]) == at:
            return status
    return None


async def until(check: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s}s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def publishing(pub: MqttPublisher) -> AsyncIterator[MqttPublisher]:
    stop = asyncio.Event()
    pub.start()
    task = asyncio.create_task(pub.run(stop))
    try:
        yield pub
    finally:
        stop.set()
        await task
        pub.stop()


def _publisher(outbox: Outbox, port: int, agent_id: str = AGENT, **mqtt_fields: object) -> MqttPublisher:
    cfg = Mqtt.model_validate({"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **mqtt_fields})
    return MqttPublisher(cfg, agent_id, BOOT, outbox, Clock())  # the agent id is also the MQTT client id


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


# --- (a) TLS and mutual TLS -----------------------------------------------------------------
@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual-tls"])
def test_tls_delivers_and_mutual_tls_refuses_a_client_without_certificate(
    tmp_path: Path, pki: Pki, outbox: Outbox, mutual: bool
) -> None:
    broker = Mosquitto(tmp_path, tls=MosquittoTls(pki.ca, pki.server_cert, pki.server_key, require_certificate=mutual))
    broker.start()
    client_tls: dict[str, object] = {"ca_file": str(pki.ca), "min_version": 1.2}
    if mutual:
        client_tls |= {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key), "key_password": KEY_PASSWORD}
    cfg_tls = Mqtt.model_validate({"tls": client_tls}).tls
    assert cfg_tls is not None
    sub = Subscriber(broker.port, tls_context(cfg_tls))
    outbox.append_all([_state() for _ in range(3)])
    pub = _publisher(outbox, broker.port, tls=client_tls)
    assert KEY_PASSWORD not in repr(pub.cfg)
    spare = [Outbox(tmp_path / "no-cert.sqlite"), Outbox(tmp_path / "wrong-ca.sqlite")]
    no_cert = _publisher(spare[0], broker.port, "no-cert", tls={"ca_file": str(pki.ca)})
    wrong_ca = _publisher(spare[1], broker.port, "wrong-ca", tls={"ca_file": str(pki.other_ca)})

    async def scenario() -> None:
        async with publishing(pub), publishing(wrong_ca):
            await until(lambda: outbox.depth() == 0 and len(sub.seqs()) == 3, "delivery over TLS")
            await until(lambda: wrong_ca.connect_failures >= 2, "attempts against an untrusted server")
            if mutual:
                async with publishing(no_cert):
                    await until(lambda: no_cert.connect_failures >= 2, "attempts without a client certificate")

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
        broker.stop()
        for box in spare:
            box.close()
    assert sorted(sub.seqs()) == [1, 2, 3]
    assert pub.connects == 1 and pub.published == 3 and pub.protocol == "5"
    assert wrong_ca.connects == 0  # the server's certificate does not chain to the configured CA
    if mutual:
        assert no_cert.connects == 0


# --- (b) protocol negotiation ---------------------------------------------------------------
class RefusesMqtt5:
    """In front of Mosquitto: answers an MQTT 5 CONNECT as a 3.1.1-only broker must (CONNACK return
    code 1, "unacceptable protocol version", then close) and passes any other connection through.

    Mosquitto has no option to turn MQTT 5 off, so this small proxy plays the old broker, while
    whatever the agent sends after falling back still reaches a real broker and a real subscriber.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.levels: list[int] = []  # protocol level of every CONNECT seen

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(1)
        length_bytes = b""
        length, factor = 0, 1
        while True:  # the remaining-length varint of the fixed header
            byte = await reader.readexactly(1)
            length_bytes += byte
            length += (byte[0] & 0x7F) * factor
            factor *= 128
            if not byte[0] & 0x80:
                break
        body = await reader.readexactly(length)
        level = body[6]  # after the protocol name: 2-byte length + "MQTT"
        self.levels.append(level)
        if level == 5:
            writer.write(bytes([0x20, 0x02, 0x00, 0x01]))
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(first + length_bytes + body)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def test_auto_protocol_is_5_with_mosquitto_and_3_1_1_when_the_broker_refuses_5(
    tmp_path: Path, mosquitto: Mosquitto, outbox: Outbox
) -> None:
    sub = Subscriber(mosquitto.port)
    refuser = RefusesMqtt5(mosquitto.port)
    proxy_port = free_port()
    old_outbox, forced_outbox = Outbox(tmp_path / "old.sqlite"), Outbox(tmp_path / "forced.sqlite")
    modern = _publisher(outbox, mosquitto.port, "modern")
    fallback = _publisher(old_outbox, proxy_port, "fallback")
    forced = _publisher(forced_outbox, mosquitto.port, "forced", protocol="3.1.1")
    for box, machine in ((outbox, "modern"), (old_outbox, "fallback"), (forced_outbox, "forced")):
        box.append_all([_state(machine), _state(machine)])

    async def scenario() -> None:
        server = await asyncio.start_server(refuser.handle, "127.0.0.1", proxy_port)
        try:
            async with publishing(modern), publishing(fallback), publishing(forced):
                await until(lambda: len(sub.snapshot()) >= 3 + 6, "three statuses and six messages")
                await until(lambda: all(b.depth() == 0 for b in (outbox, old_outbox, forced_outbox)), "all acked")
        finally:
            server.close()

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
        old_outbox.close()
        forced_outbox.close()
    assert (modern.protocol, modern.connects) == ("5", 1)
    assert (fallback.protocol, fallback.connects) == ("3.1.1", 1)
    assert refuser.levels == [5, 4]  # one MQTT 5 attempt, refused, then 3.1.1
    assert fallback.connect_failures == 0  # a refusal leads straight to the 3.1.1 attempt, no back-off
    assert (forced.protocol, forced.connects) == ("3.1.1", 1)
    machines = sorted(json.loads(m.payload)["machine_id"] for m in sub.snapshot() if m.seq is not None)
    assert machines == ["fallback", "fallback", "forced", "forced", "modern", "modern"]


def test_auto_protocol_falls_back_when_a_broker_leaves_mqtt_5_unanswered(outbox: Outbox) -> None:
    # amqtt (the demo's embedded broker) speaks 3.1.1 only; an MQTT 5 CONNECT carrying a will is
    # more than its parser can follow, so it never answers: only the CONNACK timeout tells
    legacy = EmbeddedBroker(free_port())
    legacy.start()
    sub = Subscriber(legacy.port, protocol=mqtt.MQTTv311, name="legacy-subscriber")
    outbox.append_all([_state(), _state()])
    pub = _publisher(outbox, legacy.port, connect_timeout_s=1.0)

    async def scenario() -> None:
        async with publishing(pub):
            await until(lambda: sorted(sub.seqs()) == [1, 2], "delivery after falling back to 3.1.1")

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
        legacy.stop()
    assert (pub.protocol, pub.connects, pub.connect_failures) == ("3.1.1", 1, 1)
    assert outbox.depth() == 0


# --- (c) reconnect after a broker restart ---------------------------------------------------
def test_reconnects_after_broker_restart_with_status_and_hook_on_every_connect(
    mosquitto: Mosquitto, outbox: Outbox
) -> None:
    pub = _publisher(outbox, mosquitto.port)
    clock = pub._now
    assert isinstance(clock, Clock)
    hooks: list[int] = []

    def on_connected() -> None:  # what the runtime does: queue a birth message
        hooks.append(pub.connects)
        outbox.append_all([_state("birth-marker")])

    pub.on_connected = on_connected
    sub = Subscriber(mosquitto.port)

    async def scenario() -> tuple[datetime, datetime]:
        async with publishing(pub):
            await until(lambda: pub.connects == 1 and len(sub.seqs()) == 1, "first connect")
            first = clock.calls[-1]
            mosquitto.stop()
            await until(lambda: not pub.connected, "disconnect noticed")
            outbox.append_all([_state() for _ in range(3)])  # produced during the outage
            mosquitto.start()
            await until(lambda: pub.connects == 2, "reconnect")
            second = clock.calls[-1]
            late = Subscriber(mosquitto.port, name="late-subscriber")  # sees what is retained now
            try:
                await until(lambda: _status_at(late, second) is not None, "online status of the second connect")
                await until(lambda: outbox.depth() == 0, "outage messages delivered")
            finally:
                late.close()
            status = _status_at(late, second)
            assert status is not None and status["online"] is True and status["boot_id"] == BOOT
            return first, second

    try:
        first, second = asyncio.run(scenario())
    finally:
        sub.close()
    assert second > first  # the retained status after the restart is the second connect's, not a leftover
    assert pub.connects == 2 and hooks == [1, 2]  # the hook ran once per connect
    assert pub.connect_failures >= 1
    assert outbox.last_seq() == 5  # two hook messages + three produced during the outage


# --- (d) backlog drain ----------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_backlog_drains_rate_limited_behind_live_messages(mosquitto: Mosquitto, outbox: Outbox, protocol: str) -> None:
    backlog = 240
    outbox.append_all([_state() for _ in range(backlog)])  # produced while the agent had no connection
    stored = {seq: payload for seq, _, payload in outbox.pending(backlog)}
    pub = _publisher(outbox, mosquitto.port, protocol=protocol, drain_rate_per_s=120)
    marker: list[int] = []
    pub.on_connected = lambda: marker.extend(outbox.append_all([_state("birth-marker")]))
    sub = Subscriber(mosquitto.port)
    live: list[int] = []

    async def scenario() -> None:
        async with publishing(pub):
            for at in (40, 120):
                await until(lambda at=at: pub.sent_backlog >= at, f"{at} backlog messages sent")
                live.extend(outbox.append_all([_state("live") for _ in range(5)]))
            await until(lambda: outbox.depth() == 0, "outbox empty")
            await until(lambda: len(sub.seqs()) >= backlog + 11, "everything received")

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
    received = sub.snapshot()
    order = [m.seq for m in received if m.seq is not None]
    assert sorted(set(order)) == list(range(1, backlog + 12))
    assert marker == [backlog + 1] and order[0] == backlog + 1  # the connect hook's message goes first
    last_backlog = max(i for i, s in enumerate(order) if s <= backlog)
    assert all(order.index(s) < last_backlog for s in live)  # live data did not wait for the backlog
    by_seq = {m.seq: m for m in received if m.seq is not None}
    for seq, m in by_seq.items():
        historical = m.user_properties.get("historical")
        if protocol == "5" and seq <= backlog:
            assert historical == "true", seq
        else:
            assert historical is None, seq
    for seq, payload in stored.items():  # the outbox's bytes; backlog ones marked in the payload too
        assert by_seq[seq].payload == (mark_historical(payload) if seq <= backlog else payload), seq
        assert json.loads(by_seq[seq].payload)["historical"] is True, seq
    assert all(json.loads(by_seq[seq].payload)["historical"] is False for seq in live)
    assert pub.published == backlog + 11 and pub.sent_backlog == backlog and pub.sent_live == 11


def test_payload_marking() -> None:
    payload = b'{"v":1,"kind":"state","seq":3}'  # an outbox row from before the contract had the field
    assert mark_historical(payload) == b'{"historical":true,"v":1,"kind":"state","seq":3}'
    assert json.loads(mark_historical(payload)) == {"historical": True, "v": 1, "kind": "state", "seq": 3}
    with_field = b'{"v":1,"seq":3,"historical":false,"reason":"historical\\":false"}'
    marked = mark_historical(with_field)
    assert json.loads(marked) == {"v": 1, "seq": 3, "historical": True, "reason": 'historical":false'}


def test_a_message_the_broker_refuses_stays_in_the_outbox(tmp_path: Path, outbox: Outbox) -> None:
    # an MQTT 5 PUBACK with a failure reason code is not a delivery: deleting the row would lose it
    (tmp_path / "acl").write_text(
        f"topic readwrite {topic(AGENT, 'status')}\ntopic readwrite {topic(AGENT, 'birth')}\ntopic read #\n"
    )
    broker = Mosquitto(tmp_path, extra_conf=f"acl_file {tmp_path / 'acl'}\n")
    broker.start()
    sub = Subscriber(broker.port)
    birth_topic = topic(AGENT, "birth")
    outbox.append_all([_state(), (birth_topic, _state()[1])])  # seq 1 is refused (state), seq 2 allowed
    pub = _publisher(outbox, broker.port)

    async def scenario() -> None:
        async with publishing(pub):
            await until(lambda: pub.refused == 1 and pub.published == 1, "one refusal, one delivery")

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
        broker.stop()
    assert [seq for seq, _, _ in outbox.pending(10)] == [1]
    assert sub.seqs() == [2]


# --- (e) jitter -----------------------------------------------------------------------------
@pytest.mark.parametrize("jitter", ["full", "decorrelated"])
def test_reconnect_delays_are_jittered_within_bounds(jitter: str) -> None:
    cfg = Mqtt(reconnect_min_s=0.5, reconnect_max_s=8.0, reconnect_jitter=jitter)  # type: ignore[arg-type]
    backoff = reconnect_backoff(cfg, random.Random(1234))
    delays = [backoff.failed() for _ in range(40)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    below_cap = [d for d in delays if d < 8.0]
    assert len(below_cap) >= 10 and len(set(below_cap)) == len(below_cap)  # drawn, not a fixed schedule
    assert max(delays) > 4.0  # the window does grow towards the maximum
    backoff.succeeded()
    assert backoff.failed() <= 0.5 * (2 if jitter == "full" else 3)  # and starts small again
    # a fleet that lost the same broker at the same instant: first retries spread, not in step
    firsts = [reconnect_backoff(cfg, random.Random(seed)).failed() for seed in range(50)]
    high = 0.5 * (2 if jitter == "full" else 3)
    assert len(set(firsts)) == 50 and all(0.5 <= d <= high for d in firsts)
    fifths = [
        sum(1 for d in firsts if 0.5 + k * (high - 0.5) / 5 <= d < 0.5 + (k + 1) * (high - 0.5) / 5) for k in range(5)
    ]
    assert min(fifths) >= 3, fifths  # every fifth of the first window gets some of the fleet


def test_backoff_without_jitter_is_unchanged() -> None:
    backoff = Backoff(initial_s=1.0, maximum_s=8.0)
    assert [backoff.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.succeeded()
    assert backoff.ready() and backoff.failed() == 1.0


def test_mqtt_config(tmp_path: Path, pki: Pki) -> None:
    assert Mqtt.model_validate({"protocol": 5}).protocol == "5"
    assert Mqtt.model_validate({"protocol": "3.1.1"}).protocol == "3.1.1"
    assert Mqtt().protocol == "auto" and Mqtt().drain_rate_per_s == 200 and Mqtt().port == 1883
    tls = Mqtt.model_validate({"tls": {"ca_file": str(pki.ca), "min_version": 1.3}})
    assert tls.port == 8883 and tls.tls is not None and tls.tls.min_version == "1.3"
    assert Mqtt.model_validate({"port": 1884, "tls": {}}).port == 1884
    with pytest.raises(ValidationError, match="reconnect_max_s must not be below reconnect_min_s"):
        Mqtt(reconnect_min_s=5, reconnect_max_s=1)
    with pytest.raises(ValidationError, match="key_file and key_password need cert_file"):
        Mqtt.model_validate({"tls": {"key_file": str(pki.client_key)}})
    with pytest.raises(ValidationError, match="ca_file"):
        Mqtt.model_validate({"tls": {"ca_file": str(tmp_path / "missing.pem")}})
