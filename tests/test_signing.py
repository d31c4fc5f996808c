"""Signed messages: the agent's kept Ed25519 key, enrollment at the cloud, and the ingest's
verification (verified / unsigned / pending / rejected) on real SQLite, a real agent, real
Mosquitto and the real command line."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from cloud_ingest.consumer import IngestService
from cloud_ingest.store import Store
from edge_agent.config import AgentConfig, OutboxSettings
from edge_agent.identity import KEY_FILE, IdentityError, load_or_create
from edge_agent.outbox import Outbox
from edge_agent.publisher import mark_historical
from edge_agent.runtime import Agent
from edgeproof.clock import ScaledClock
from edgeproof.contract import encode, parse_sequenced, signing_bytes, topic
from edgeproof.signing import encode_public_key, fingerprint, key_id, raw_public_key, sign, verify
from tests.misbehaving_modbus import MisbehavingServer
from tests.netutil import Mosquitto
from tests.test_ingest_store import AGENT, RECEIVED, T0, birth, kpi, state
from tests.test_modbus_links import device_config as unit
from tests.test_outbox import AGENT as OUTBOX_AGENT
from tests.test_outbox import declarations, put, put_next, sized

FINGERPRINT = re.compile(r"^[0-9a-f]{4}( [0-9a-f]{4}){15}$")


class Key:
    """A key pair that is not the agent's file: an operator's second IPC, or an attacker's."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.raw = raw_public_key(self.private.public_key())
        self.public = encode_public_key(self.raw)


def signed_wire(key: Key, message: object) -> tuple[str, bytes]:
    m = sign(key.private, message)  # type: ignore[type-var]
    return topic(m.agent_id, m.kind), encode(m)


# --- the agent's key ------------------------------------------------------------------------


def test_the_key_is_created_once_with_mode_0600_and_kept_across_restarts(tmp_path: Path) -> None:
    first = load_or_create(tmp_path / "agent")
    path = tmp_path / "agent" / KEY_FILE
    assert first.created and first.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    pem = path.read_bytes()
    again = load_or_create(tmp_path / "agent")
    assert not again.created
    assert path.read_bytes() == pem  # never overwritten
    assert (again.fingerprint, again.key_id, again.public_key) == (first.fingerprint, first.key_id, first.public_key)
    assert FINGERPRINT.match(first.fingerprint)
    assert first.key_id == first.fingerprint.replace(" ", "")[:16]
    assert first.fingerprint == fingerprint(first.raw_public)
    assert list((tmp_path / "agent").iterdir()) == [path]  # no temporary file left behind
    assert "PRIVATE" not in repr(first) and first.key_id in repr(first)


def test_a_corrupt_or_wrong_type_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("not a key\n")
    with pytest.raises(IdentityError, match=re.escape(str(path)) + ": not an unencrypted PEM private key"):
        load_or_create(tmp_path)
    assert path.read_text() == "not a key\n"  # left for the operator to look at, not replaced
    path.write_bytes(X25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(IdentityError, match=re.escape(str(path)) + r": holds a X25519PrivateKey, not an Ed25519"):
        load_or_create(tmp_path)


def test_signing_bytes_are_canonical_and_leave_out_sig_and_historical() -> None:
    key = Key()
    m = sign(key.private, kpi(1))
    body = json.loads(signing_bytes(m))
    assert "sig" not in body and "historical" not in body and body["key_id"] == m.key_id
    assert list(body) == sorted(body)
    assert signing_bytes(m) == signing_bytes(m.model_copy(update={"historical": True, "sig": "x"}))
    assert verify(key.raw, m) and not verify(Key().raw, m)


def test_the_outbox_signs_its_eviction_declarations_with_the_agent_key(
    tmp_path: Path, store_target: str | Path
) -> None:
    key = load_or_create(tmp_path / "agent")
    box = Outbox(tmp_path / "outbox.sqlite", OutboxSettings(max_bytes=10_000, low_water=0.5), signer=key.sign)
    assert put(box, sized("birth"), "birth") == 1
    for _ in range(10):
        put_next(box)
    [d] = declarations(box)
    assert (d.seq, d.ranges, d.key_id) == (12, [(2, 6), (8, 8), (10, 10)], key.key_id)  # as without a signer
    assert verify(key.raw_public, d)
    [payload] = [p for s, _, p in box.pending(100) if s == 12]
    box.close()
    with Store(store_target) as store:
        store.enroll_key(OUTBOX_AGENT, key.public_key)
        assert store.ingest(topic(OUTBOX_AGENT, "evicted"), payload, RECEIVED) == "stored"
        assert store.verification(OUTBOX_AGENT, 12) == "verified"
        assert [e.seq for e in store.evictions(OUTBOX_AGENT)] == [12]


# --- the ingest's verification --------------------------------------------------------------


def test_signed_by_an_enrolled_key_is_verified_and_unsigned_is_stored_but_marked(store_target: str | Path) -> None:
    key = Key()
    with Store(store_target) as store:
        assert store.ingest(topic(AGENT, "state"), encode(state(3)), RECEIVED) == "stored"  # an older agent
        result = store.enroll_key(AGENT, key.public)
        assert (result.key_id, result.fingerprint) == (fingerprint(key.raw).replace(" ", "")[:16], fingerprint(key.raw))
        assert store.ingest(*signed_wire(key, birth(1)), RECEIVED) == "stored"
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "stored"
        assert [store.verification(AGENT, s) for s in (1, 2, 3)] == ["verified", "verified", "unsigned"]
        assert store.verification_counts(AGENT) == {"verified": 2, "unsigned": 1, "pending": 0, "rejected": 0}
        assert [r.seq for r in store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))] == [2]
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "duplicate"  # Ed25519 is deterministic


def test_an_unsigned_message_from_an_agent_with_an_enrolled_key_is_rejected(store_target: str | Path) -> None:
    """Once its key is enrolled, the agent signs everything: an unsigned message claiming to be from it
    (a forgery, or a signature stripped on the way) is held apart as rejected, never used."""
    key = Key()
    with Store(store_target) as store:
        store.enroll_key(AGENT, key.public)
        assert store.ingest(topic(AGENT, "kpi"), encode(kpi(2)), RECEIVED) == "rejected"
        assert store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1)) == []
        [held] = store.held_messages(AGENT)
        assert (held.seq, held.status) == (2, "rejected")
        assert held.reason == f"unsigned, but agent {AGENT} has an enrolled key"
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "stored"  # the real one still gets in
        assert store.verification(AGENT, 2) == "verified"


def test_the_historical_flip_does_not_break_a_signature(store_target: str | Path) -> None:
    key = Key()
    name, payload = signed_wire(key, kpi(1))
    flipped = mark_historical(payload)
    assert flipped != payload and b'"historical":true' in flipped
    assert verify(key.raw, parse_sequenced(flipped))
    with Store(store_target) as store:
        store.enroll_key(AGENT, key.public)
        assert store.ingest(name, flipped, RECEIVED) == "stored"
        assert store.ingest(name, payload, RECEIVED) == "duplicate"  # the live copy of the same message
        assert store.verification(AGENT, 1) == "verified"
        assert store._query("SELECT historical FROM messages") == [(1,)]


def test_a_tampered_kpi_is_rejected_kept_apart_and_never_used(store_target: str | Path) -> None:
    key = Key()
    name, payload = signed_wire(key, kpi(2))
    assert b'"apt_s":3000.0' in payload
    tampered = payload.replace(b'"apt_s":3000.0', b'"apt_s":3001.0')  # one number in the signed payload
    with Store(store_target) as store:
        store.enroll_key(AGENT, key.public)
        assert store.ingest(*signed_wire(key, birth(1)), RECEIVED) == "stored"
        assert store.ingest(name, tampered, RECEIVED) == "rejected"
        assert store.ingest(*signed_wire(key, kpi(3, machine="M2")), RECEIVED) == "stored"
        assert store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))[0].machine_id == "M2"
        assert len(store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))) == 1  # not the tampered one
        assert store.sequence_numbers(AGENT) == [1, 3]
        [held] = store.held_messages(AGENT)
        assert (held.seq, held.kind, held.status, held.reason) == (
            2,
            "kpi",
            "rejected",
            f"signature invalid for key {key_id(key.raw)}",
        )
        assert store.held_payload(held.id) == tampered.decode()  # kept, byte for byte
        assert store.verification(AGENT, 2) == "rejected"
        assert store.verification_counts(AGENT) == {"verified": 2, "unsigned": 0, "pending": 0, "rejected": 1}
        report = store.gap_report(AGENT)
    assert [(g.first, g.last, g.status, g.held) for g in report.gaps] == [
        (2, 2, "rejected", f"rejected: {held.reason}")
    ]
    assert (report.missing, report.rejected, report.pending) == (0, 1, 0)


def test_unenrolled_key_is_pending_then_verified_and_moved_in_at_enrollment(store_target: str | Path) -> None:
    key, stranger = Key(), Key()
    with Store(store_target) as store:
        assert store.ingest(*signed_wire(key, birth(1)), RECEIVED) == "pending"
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "pending"
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "pending"  # redelivered: kept once
        assert store.ingest(*signed_wire(stranger, kpi(4, machine="M9")), RECEIVED) == "pending"
        assert store.ingest(topic(AGENT, "state"), encode(state(3)), RECEIVED) == "stored"  # unsigned
        assert store.verification_counts(AGENT) == {"verified": 0, "unsigned": 1, "pending": 3, "rejected": 0}
        assert store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1)) == []
        assert store.latest_birth(AGENT) is None
        report = store.gap_report(AGENT)
        kid = fingerprint(key.raw).replace(" ", "")[:16]
        other = fingerprint(stranger.raw).replace(" ", "")[:16]
        assert [(g.first, g.last, g.status, g.held, g.before) for g in report.gaps] == [
            (1, 2, "pending", f"held: pending key {kid}", report.gaps[0].before),
            (4, 4, "pending", f"held: pending key {other}", None),  # beyond the highest stored seq 3
        ]
        assert report.gaps[0].before is not None and report.gaps[0].before.seq == 3

        result = store.enroll_key(AGENT, key.public)
        assert (result.pending_stored, result.pending_rejected, result.already_enrolled) == (2, 0, False)
        assert store.sequence_numbers(AGENT) == [1, 2, 3]
        assert [store.verification(AGENT, s) for s in (1, 2, 3, 4)] == ["verified", "verified", "unsigned", "pending"]
        assert [r.machine_id for r in store.kpi_rows(AGENT, T0, T0 + timedelta(hours=1))] == ["M1"]
        assert store.latest_birth(AGENT) is not None
        # the stranger's message stays pending, never used
        assert [(h.seq, h.status) for h in store.held_messages(AGENT)] == [(4, "pending")]
        assert store.verification_counts(AGENT) == {"verified": 2, "unsigned": 1, "pending": 1, "rejected": 0}
        assert store._query("SELECT received_at FROM messages WHERE seq = 2") == [("2024-03-01T12:00:00.000000Z",)]


def test_a_revoked_key_rejects_later_messages_and_moves_stored_ones_out(store_target: str | Path) -> None:
    old, new = Key(), Key()  # the industrial PC was replaced; several keys per agent
    revoked_from = T0 + timedelta(hours=3)
    with Store(store_target) as store:
        store.enroll_key(AGENT, old.public)
        store.enroll_key(AGENT, new.public)
        assert store.ingest(*signed_wire(old, kpi(1, start=T0)), RECEIVED) == "stored"  # produced 01:00
        assert store.ingest(*signed_wire(old, kpi(2, start=T0 + timedelta(hours=3))), RECEIVED) == "stored"  # 04:00
        kid = key_id(old.raw)
        assert store.revoke_key(AGENT, kid, revoked_from) == 1  # seq 2 was produced after: moved out
        assert store.ingest(*signed_wire(old, kpi(3, start=T0 + timedelta(hours=4))), RECEIVED) == "rejected"
        assert store.ingest(*signed_wire(new, kpi(4, start=T0 + timedelta(hours=4))), RECEIVED) == "stored"
        assert store.sequence_numbers(AGENT) == [1, 4]
        assert [r.seq for r in store.kpi_rows(AGENT, T0, T0 + timedelta(days=1))] == [1, 4]
        reasons = [(h.seq, h.status, h.reason) for h in store.held_messages(AGENT)]
        assert reasons == [
            (2, "rejected", f"key {kid} revoked from 2024-03-01T03:00:00.000000Z; message produced at "
             "2024-03-01T04:00:05.000000Z"),
            (3, "rejected", f"key {kid} revoked from 2024-03-01T03:00:00.000000Z; message produced at "
             "2024-03-01T05:00:05.000000Z"),
        ]  # fmt: skip
        assert [k.revoked_at for k in store.agent_keys(AGENT) if k.key_id == kid] == [revoked_from]
        assert store.verification_counts(AGENT) == {"verified": 2, "unsigned": 0, "pending": 0, "rejected": 2}


def test_a_store_of_schema_3_gains_verification_and_marks_its_messages_unsigned(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sqlite"
    with Store(path) as s:
        s.ingest(topic(AGENT, "kpi"), encode(kpi(1)), RECEIVED)
    with sqlite3.connect(path) as db:  # as the previous release left it
        db.execute("DROP TABLE agent_keys")
        db.execute("DROP TABLE held")
        db.execute("ALTER TABLE messages DROP COLUMN verification")
        db.execute("ALTER TABLE messages DROP COLUMN key_id")
        db.execute("PRAGMA user_version=3")
    db.close()
    key = Key()
    with Store(path) as s:
        assert s._query("PRAGMA user_version") == [(4,)]
        assert s.verification(AGENT, 1) == "unsigned"
        s.enroll_key(AGENT, key.public)
        assert s.ingest(*signed_wire(key, kpi(2, machine="M2")), RECEIVED) == "stored"
        assert s.verification_counts(AGENT) == {"verified": 1, "unsigned": 1, "pending": 0, "rejected": 0}


# --- the command line -----------------------------------------------------------------------


def edgeproof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeproof.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_show_key_prints_the_agent_id_public_key_and_fingerprint(tmp_path: Path) -> None:
    config = {
        "agent": {"id": "press-7", "data_dir": str(tmp_path / "data")},
        "site": {"firm": {"name": "F"}, "name": "S"},
        "machines": [],
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    first = edgeproof("agent", "--config", str(tmp_path / "agent.yaml"), "--show-key")
    assert first.returncode == 0, first.stderr
    key = load_or_create(tmp_path / "data")
    assert first.stdout.splitlines() == [
        "agent        press-7",
        f"key file     {tmp_path / 'data' / KEY_FILE} (created now)",
        f"key id       {key.key_id}",
        f"public key   {key.public_key}",
        f"fingerprint  {key.fingerprint}",
    ]
    second = edgeproof("agent", "--config", str(tmp_path / "agent.yaml"), "--show-key")
    assert second.stdout.splitlines()[1] == f"key file     {tmp_path / 'data' / KEY_FILE}"
    assert second.stdout.splitlines()[4] == f"fingerprint  {key.fingerprint}"
    assert "PRIVATE" not in first.stdout + first.stderr + second.stdout + second.stderr
    (tmp_path / "data" / KEY_FILE).write_text("garbage")
    broken = edgeproof("agent", "--config", str(tmp_path / "agent.yaml"), "--show-key")
    assert broken.returncode == 2
    assert f"{tmp_path / 'data' / KEY_FILE}: not an unencrypted PEM private key" in broken.stderr


def test_enroll_prints_the_fingerprint_and_from_birth_takes_the_announced_key(tmp_path: Path) -> None:
    db = tmp_path / "ingest.sqlite"
    key = Key()
    groups = fingerprint(key.raw).split()
    kid = "".join(groups)[:16]
    with Store(db) as store:  # the agent's birth arrived before its key was enrolled: held pending
        announced = birth(1).model_copy(update={"public_key": key.public})
        assert store.ingest(*signed_wire(key, announced), RECEIVED) == "pending"
        assert store.ingest(*signed_wire(key, kpi(2)), RECEIVED) == "pending"
    out = edgeproof("enroll", "--db", str(db), "--agent", AGENT, "--from-birth")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        f"public key taken from the birth message seq 1 of agent {AGENT} (produced 2024-03-01T00:00:00+00:00, pending)"
    )
    assert lines[1:7] == [
        f"agent        {AGENT}",
        f"key id       {kid}",
        f"public key   {key.public}",
        "fingerprint  (compare with `edgeproof agent --config FILE --show-key` on the agent)",
        "  " + " ".join(groups[:8]),
        "  " + " ".join(groups[8:]),
    ]
    assert lines[8] == "pending messages signed by this key: 2 verified and stored, 0 duplicate, 0 rejected"
    with Store(db) as store:
        assert store.verification_counts(AGENT)["verified"] == 2

    other = Key()
    again = edgeproof("enroll", "--db", str(db), "--agent", AGENT, "--public-key", other.public)
    assert again.returncode == 0 and f"public key   {other.public}" in again.stdout
    assert "  " + " ".join(fingerprint(other.raw).split()[:8]) in again.stdout
    revoke = edgeproof("enroll", "--db", str(db), "--agent", AGENT, "--revoke", kid, "--from", "2024-03-01T00:30Z")
    assert revoke.returncode == 0, revoke.stderr
    assert revoke.stdout.splitlines() == [
        f"key {kid} of agent {AGENT} revoked from 2024-03-01T00:30:00+00:00",
        "stored messages it signed from then on, now rejected: 1",  # the kpi, produced 01:00:05
    ]
    listing = edgeproof("enroll", "--db", str(db), "--agent", AGENT, "--list")
    assert listing.returncode == 0, listing.stderr
    assert "messages: 1 verified, 0 unsigned, 0 pending, 1 rejected" in listing.stdout
    assert f"  seq 2 (kpi, produced 2024-03-01T01:00:05+00:00): rejected: key {kid} revoked from" in listing.stdout

    bad = edgeproof("enroll", "--db", str(db), "--agent", AGENT, "--public-key", "AAAA")
    assert bad.returncode == 2 and "public key is 3 bytes, an Ed25519 public key is 32" in bad.stderr
    none = edgeproof("enroll", "--db", str(db), "--agent", "nobody", "--from-birth")
    assert none.returncode == 2 and "no birth message of agent 'nobody'" in none.stderr


# --- a real agent ---------------------------------------------------------------------------


def _agent_config(port: int, mqtt_port: int, data_dir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"id": "signer", "data_dir": str(data_dir)},
            "site": {"firm": {"name": "F"}, "name": "S", "timezone": "UTC"},
            "processes": [{"id": "p", "name": "P", "key": True}],
            "machines": [
                {
                    "id": f"M{u}",
                    "name": f"machine {u}",
                    "type": "press",
                    "process": "p",
                    "digital": True,
                    "nc_capable": False,
                    "device": f"u{u}",
                    "state_rules": "simple",
                }
                for u in (1, 2)
            ],
            "state_rules": {"simple": [{"state": "RUNNING", "when": {"all": [{"tag": "a", "value": 1000}]}}]},
            "devices": [unit(1, port), unit(2, port)],
            "calendar": {"shifts": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00",
                                     "end": "00:00"}]},
            "kpi": {"bucket_minutes": 1},
            "mqtt": {"port": mqtt_port},
        }
    )  # fmt: skip


def _run_agent(config: AgentConfig, wall_s: float) -> tuple[Agent, int]:
    # 600x: a one-minute bucket closes every 0.1 s of wall time
    agent = Agent(config, ScaledClock.starting_now(datetime(2026, 1, 5, tzinfo=UTC), 600.0))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(wall_s, stop.set)
        await agent.run(stop, drain_timeout_s=5.0)

    asyncio.run(main())
    box = Outbox(config.agent.data_dir / "outbox.sqlite")
    produced, left = box.last_seq(), box.depth()
    box.close()
    assert left == 0
    return agent, produced


def _wait_for(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.integration
def test_a_real_agent_is_pending_until_enrolled_then_all_verified(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "ingest.sqlite"
    ingest = IngestService(db, "127.0.0.1", mosquitto.port, client_id="signing-ingest")
    ingest.start()
    try:
        assert ingest.wait_subscribed(10)
        # unit 1 answers (M1 RUNNING), unit 2 is silent (M2 UNKNOWN): births, states, kpi and site buckets
        with MisbehavingServer({1: "ok", 2: "silent"}).running() as server:
            config = _agent_config(server.port, mosquitto.port, tmp_path / "agent")
            agent, produced = _run_agent(config, 3.0)

            def held() -> int:
                with Store(db) as s:
                    return s.verification_counts("signer")["pending"]

            _wait_for(lambda: held() == produced)
            with Store(db) as store:
                assert store.verification_counts("signer") == {
                    "verified": 0,
                    "unsigned": 0,
                    "pending": produced,
                    "rejected": 0,
                }
                assert store.sequence_numbers("signer") == []
                announced = store.announced_key("signer")
                assert announced is not None and announced.self_signed
                assert (announced.public_key, announced.fingerprint) == (agent.key.public_key, agent.key.fingerprint)
                kinds = {h.kind for h in store.held_messages("signer")}
                assert kinds == {"birth", "state", "kpi", "site"}
                result = store.enroll_key("signer", agent.key.public_key)
                assert (result.pending_stored, result.pending_rejected) == (produced, 0)
                assert store.sequence_numbers("signer") == list(range(1, produced + 1))
                assert store.verification_counts("signer") == {
                    "verified": produced,
                    "unsigned": 0,
                    "pending": 0,
                    "rejected": 0,
                }
                assert store.kpi_rows("signer", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))

            # a restart keeps the key: the next boot's messages are verified as they arrive
            again, produced_now = _run_agent(config, 1.5)
            assert again.key.fingerprint == agent.key.fingerprint and again.boot_id != agent.boot_id

            def stored() -> int:
                with Store(db) as s:
                    return s.message_count("signer")

            _wait_for(lambda: stored() == produced_now)
        with Store(db) as store:
            assert store.verification_counts("signer") == {
                "verified": produced_now,
                "unsigned": 0,
                "pending": 0,
                "rejected": 0,
            }
            assert store.gap_report("signer").gaps == []
            stored_keys = {r[0] for r in store._query("SELECT DISTINCT key_id FROM messages")}
            assert stored_keys == {agent.key.key_id}
    finally:
        ingest.stop()
