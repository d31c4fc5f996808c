"""OPC UA security against a real simulated CNC on loopback: certificates, trust lists, modes, user identity."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from connectors.opcua.config import OpcUaDeviceConfig, OpcUaSecurity
from connectors.opcua.device import OpcUaDevice
from connectors.opcua.pki import (
    OwnCertificateError,
    Pki,
    ServerCertificateRejected,
    own_certificate,
    validate_server_certificate,
)
from connectors.opcua.security import POLICIES, EndpointNotOffered, secure_client
from connectors.sample import Sample
from edgeproof.clock import ScaledClock
from simulators.opcua_server import CncServer
from simulators.plant import build_plant
from simulators.scenario import load_scenario
from tests.netutil import free_port

MACHINE = "CNC-01"
USER = "operator"
PASSWORD = "s3cret-Pa55word-xyz"
AGENT_URI = "urn:test-host:edgeproof"
MANUFACTURER_NODE = f"ns=2;s={MACHINE}/Identification/Manufacturer"


class ServerThread:
    """An event loop in a thread, so one simulator serves every test while each test runs its own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Sim:
    def __init__(self, server: CncServer, pki: Path, manufacturer: str) -> None:
        self.server = server
        self.url = server.url
        self.pki = pki
        self.manufacturer = manufacturer

    @property
    def cert_path(self) -> Path:
        return self.pki / "own" / "cert.der"

    def trust_client(self, client_pki: Path) -> None:
        shutil.copy(Pki(client_pki).cert_path, self.pki / "trusted" / f"{client_pki.name}.der")


def _cnc(port: int, **security: Any) -> tuple[CncServer, str]:
    scenario = load_scenario()
    plant = build_plant(scenario, "baseline")[MACHINE]
    clock = ScaledClock.starting_now(scenario.phases["baseline"].window.start + timedelta(hours=1), 1.0)
    return CncServer(plant, clock, "127.0.0.1", port, **security), plant.machine.identification.manufacturer


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def sim(loop_thread: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """Secure endpoints only, a password required, client certificates checked against its trusted/."""
    pki = tmp_path_factory.mktemp("server_pki")
    server, manufacturer = _cnc(free_port(), pki_dir=pki, users={USER: PASSWORD})
    loop_thread.run(server.start())
    yield Sim(server, pki, manufacturer)
    loop_thread.run(server.stop())


@pytest.fixture(scope="module")
def agent_pki(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client PKI both sides already trust."""
    root = tmp_path_factory.mktemp("agent_pki")
    own_certificate(Pki(root), AGENT_URI, 3650)
    sim.trust_client(root)
    shutil.copy(sim.cert_path, Pki(root).trusted_dir / "sim.der")
    return root


def _security(pki: Path, **fields: Any) -> OpcUaSecurity:
    defaults: dict[str, Any] = {
        "mode": "SignAndEncrypt",
        "username": USER,
        "password": PASSWORD,
        "pki_dir": pki,
        "application_uri": AGENT_URI,
    }
    return OpcUaSecurity.model_validate(defaults | fields)


async def _read_manufacturer(url: str, security: OpcUaSecurity) -> tuple[Any, ua.MessageSecurityMode, str]:
    client = Client(url, timeout=5)
    await secure_client(client, security, "cnc-01")
    async with client:
        value = await client.get_node(MANUFACTURER_NODE).read_value()
        return value, client.security_policy.Mode, client.security_policy.URI


def _fingerprint(path: Path) -> bytes:
    return x509.load_der_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256())


def test_unknown_server_certificate_is_rejected_until_moved_to_trusted(sim: Sim, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    security = _security(pki.root, mode="Sign")

    with pytest.raises(ServerCertificateRejected) as rejected:
        asyncio.run(_read_manufacturer(sim.url, security))

    saved = list(pki.rejected_dir.iterdir())
    assert len(saved) == 1
    assert saved[0].read_bytes() == sim.cert_path.read_bytes()
    assert rejected.value.saved_as == saved[0]
    assert f"saved as {saved[0]}: move that file into {pki.trusted_dir}/ to trust it" in str(rejected.value)
    assert list(pki.trusted_dir.iterdir()) == []

    # The operator trusts the server here, and the agent on the server.
    saved[0].rename(pki.trusted_dir / saved[0].name)
    sim.trust_client(pki.root)
    value, mode, policy_uri = asyncio.run(_read_manufacturer(sim.url, security))
    assert (value, mode, policy_uri) == (sim.manufacturer, ua.MessageSecurityMode.Sign, POLICIES["Basic256Sha256"].URI)


@pytest.mark.parametrize(
    ("mode", "policy"),
    [
        ("Sign", "Basic256Sha256"),
        ("SignAndEncrypt", "Basic256Sha256"),
        ("Sign", "Aes128_Sha256_RsaOaep"),
        ("SignAndEncrypt", "Aes128_Sha256_RsaOaep"),
        ("Sign", "Aes256_Sha256_RsaPss"),
        ("SignAndEncrypt", "Aes256_Sha256_RsaPss"),
    ],
)
def test_secure_modes_read_a_value(sim: Sim, agent_pki: Path, mode: str, policy: str) -> None:
    value, got_mode, policy_uri = asyncio.run(
        _read_manufacturer(sim.url, _security(agent_pki, mode=mode, policy=policy))
    )
    assert (value, got_mode, policy_uri) == (sim.manufacturer, ua.MessageSecurityMode[mode], POLICIES[policy].URI)


def test_own_certificate_is_made_once_with_the_application_uri(sim: Sim, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    shutil.copy(sim.cert_path, pki.trusted_dir / "sim.der")
    security = _security(pki.root, application_uri="urn:line-3-ipc:edgeproof")

    first = Client(sim.url, timeout=5)
    asyncio.run(secure_client(first, security, "cnc-01"))
    fingerprint, key = _fingerprint(pki.cert_path), pki.key_path.read_bytes()
    cert = x509.load_der_x509_certificate(pki.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:line-3-ipc:edgeproof"]
    assert first.application_uri == "urn:line-3-ipc:edgeproof"
    assert pki.key_path.stat().st_mode & 0o777 == 0o600

    second = Client(sim.url, timeout=5)
    asyncio.run(secure_client(second, security, "cnc-01"))
    assert _fingerprint(pki.cert_path) == fingerprint
    assert pki.key_path.read_bytes() == key
    assert sorted(p.name for p in pki.own_dir.iterdir()) == ["cert.der", "key.pem"]

    # Another ApplicationUri would not match the certificate the servers trust: refuse, say why and what to do.
    other = Client(sim.url, timeout=5)
    with pytest.raises(OwnCertificateError, match="was made for ApplicationUri") as mismatch:
        asyncio.run(secure_client(other, _security(pki.root, application_uri="urn:elsewhere"), "cnc-01"))
    assert "urn:elsewhere" in str(mismatch.value)
    assert f"delete {pki.cert_path} and {pki.key_path}" in str(mismatch.value)


def test_expired_own_certificate_says_how_to_renew(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, "old", {}, [x509.UniformResourceIdentifier(AGENT_URI)], [ExtendedKeyUsageOID.CLIENT_AUTH], days=0
    )
    pki.key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    pki.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))

    # Nothing listens there: the own certificate is checked before any network traffic.
    client = Client(f"opc.tcp://127.0.0.1:{free_port()}/", timeout=2)
    with pytest.raises(OwnCertificateError) as expired:
        asyncio.run(secure_client(client, _security(pki.root), "cnc-01"))
    message = str(expired.value)
    assert f"{pki.cert_path} expired on {cert.not_valid_after_utc.isoformat()}" in message
    assert f"to renew it, delete {pki.cert_path} and {pki.key_path}" in message


def test_password_identity(sim: Sim, agent_pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value, _, _ = asyncio.run(_read_manufacturer(sim.url, _security(agent_pki, mode="Sign")))
    assert value == sim.manufacturer

    with pytest.raises(ua.UaStatusCodeError) as wrong:
        asyncio.run(_read_manufacturer(sim.url, _security(agent_pki, password=PASSWORD + "x")))
    assert wrong.value.code == ua.StatusCodes.BadUserAccessDenied
    assert "BadUserAccessDenied" in str(wrong.value)

    with pytest.raises(ua.UaStatusCodeError) as anonymous:
        asyncio.run(_read_manufacturer(sim.url, _security(agent_pki, username=None, password=None)))
    assert anonymous.value.code == ua.StatusCodes.BadIdentityTokenRejected

    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "Password=b'<redacted>'" in logged  # asyncua's DEBUG dump of ActivateSession was seen, masked
    assert PASSWORD not in logged


def test_server_refuses_an_agent_certificate_it_does_not_trust(sim: Sim, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    shutil.copy(sim.cert_path, pki.trusted_dir / "sim.der")
    with pytest.raises(ua.UaStatusCodeError) as refused:
        asyncio.run(_read_manufacturer(sim.url, _security(pki.root)))
    assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted


def test_expiry_warnings(sim: Sim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    shutil.copy(sim.cert_path, pki.trusted_dir / "sim.der")
    caplog.set_level(logging.WARNING, logger="connectors.opcua.pki")

    short = _security(pki.root, certificate_days=10, expiry_warning_days=30)
    asyncio.run(secure_client(Client(sim.url, timeout=5), short, "cnc-01"))
    own = x509.load_der_x509_certificate(pki.cert_path.read_bytes())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.device, r.certificate, r.days_left) for r in warnings] == [
        ("opcua own certificate expires soon", "cnc-01", "own", 9)
    ]
    assert (warnings[0].subject, warnings[0].not_after) == (
        own.subject.rfc4514_string(),
        own.not_valid_after_utc.isoformat(),
    )

    # The simulator's certificate is valid for a year: inside a 400-day window.
    caplog.clear()
    asyncio.run(secure_client(Client(sim.url, timeout=5), _security(pki.root, expiry_warning_days=400), "cnc-01"))
    server_cert = x509.load_der_x509_certificate(sim.cert_path.read_bytes())
    by_role = {r.certificate: r for r in caplog.records}
    assert sorted(by_role) == ["own", "server"]
    assert (by_role["server"].subject, by_role["server"].days_left) == (server_cert.subject.rfc4514_string(), 364)


def test_endpoint_not_offered(loop_thread: ServerThread, tmp_path: Path) -> None:
    server, _ = _cnc(free_port())  # the default: security None only
    loop_thread.run(server.start())
    try:
        with pytest.raises(EndpointNotOffered, match="mode Sign and policy Basic256Sha256; it offers None/None"):
            asyncio.run(secure_client(Client(server.url, timeout=5), _security(tmp_path, mode="Sign"), "cnc-01"))
    finally:
        loop_thread.run(server.stop())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="password given without username"):
        OpcUaSecurity.model_validate({"password": "x"})
    base = {
        "id": "cnc-01",
        "protocol": "opcua",
        "url": "opc.tcp://127.0.0.1:4840/",
        "tags": [{"name": "t", "node": "i=1"}],
    }
    for security, loc in [
        ({"mode": "Encrypt"}, ("security", "mode")),
        ({"mode": "Sign", "policy": "Basic128Rsa15"}, ("security", "policy")),
        ({"certificate_days": 0}, ("security", "certificate_days")),
        ({"pkidir": "x"}, ("security", "pkidir")),
    ]:
        with pytest.raises(ValidationError) as bad:
            OpcUaDeviceConfig.model_validate(base | {"security": security})
        assert [e["loc"] for e in bad.value.errors()] == [loc]


def test_device_reports_the_rejection_as_bad_quality_then_reads(sim: Sim, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    config = OpcUaDeviceConfig.model_validate(
        {
            "id": "cnc-01",
            "protocol": "opcua",
            "url": sim.url,
            "acquisition": "polling",
            "timeout_s": 5,
            "security": _security(pki.root).model_dump(),
            "tags": [{"name": "manufacturer", "node": MANUFACTURER_NODE}],
        }
    )
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

    async def read_once() -> list[Sample]:
        device = OpcUaDevice(config)
        try:
            return await device.read(lambda: now)
        finally:
            await device.close()

    [refused] = asyncio.run(read_once())
    [saved] = pki.rejected_dir.iterdir()
    assert (refused.good, refused.value) == (False, None)
    assert refused.reason is not None and refused.reason.startswith("ServerCertificateRejected: ")
    assert f"move that file into {pki.trusted_dir}/ to trust it" in refused.reason

    saved.rename(pki.trusted_dir / saved.name)
    sim.trust_client(pki.root)
    [read] = asyncio.run(read_once())
    assert (read.good, read.value, read.reason) == (True, sim.manufacturer, None)


def _server_cert(uri: str, days: int) -> x509.Certificate:
    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(uri)]
    return cert_gen.generate_self_signed_app_certificate(
        key, "cnc-07", {}, names, [ExtendedKeyUsageOID.SERVER_AUTH], days=days
    )


def test_trusted_server_certificate_still_needs_uri_and_validity(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.create_folders()
    current, expired = _server_cert("urn:cnc-07", 365), _server_cert("urn:cnc-07", 0)
    for i, cert in enumerate((current, expired)):
        (pki.trusted_dir / f"{i}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    server = ua.ApplicationDescription(ApplicationUri="urn:cnc-07", ApplicationType=ua.ApplicationType.Server)

    with pytest.raises(ServerCertificateRejected) as wrong_uri:
        asyncio.run(validate_server_certificate(pki, current, replace(server, ApplicationUri="urn:cnc-7")))
    assert str(wrong_uri.value).endswith("names ['urn:cnc-07'] but the server's ApplicationUri is 'urn:cnc-7'")
    with pytest.raises(ServerCertificateRejected) as out_of_time:
        asyncio.run(validate_server_certificate(pki, expired, server))
    assert str(out_of_time.value).endswith(f"to {expired.not_valid_after_utc.isoformat()}")
    asyncio.run(validate_server_certificate(pki, current, server))  # trusted, right URI, in time: accepted
    assert list(pki.rejected_dir.iterdir()) == []  # trusting these would not help
