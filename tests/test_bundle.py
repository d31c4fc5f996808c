"""Evidence bundles: `edgeproof export` writes one, `edgeproof verify` checks it offline, and every
kind of tampering is caught and named. Real SQLite stores, messages signed with real Ed25519 keys,
the real command line (in process)."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_ingest.bundle import (
    DECLARED,
    MANIFEST,
    export_bundle,
    held_path,
    keys_path,
    messages_path,
    read_bundle,
    record_path,
)
from cloud_ingest.bundle import sha256 as digest
from cloud_ingest.declared import DeclaredFigure, DeclaredStore
from cloud_ingest.projects import ProjectStore, load_project_file
from cloud_ingest.store import Store
from cloud_ingest.verify import EXCLUDED_FIELDS, VerifyResult, diff, seq_ranges, verify_bundle
from edgeproof.cli import main
from edgeproof.contract import EvictionDeclaration, MachineKpi, StateInterval, parse_sequenced
from edgeproof.signing import fingerprint, key_id
from tests.test_projects import write_yaml
from tests.test_report_evidence import AGENT, POST, scenario, seed
from tests.test_signing import Key, signed_wire

PROJECT = "sz-2024-001"  # the id in tests.test_projects.PROJECT_YAML
RECEIVED = datetime(2024, 6, 2, tzinfo=UTC)
ENROLLED = datetime(2024, 2, 1, tzinfo=UTC)
AT = datetime(2024, 7, 1, tzinfo=UTC)
DECLARED_AT = datetime(2024, 6, 20, tzinfo=UTC)


def signed_store(tmp_path: Path, key: Key, target: str | Path | None = None) -> Path:
    """The hand-checked scenario of test_report_evidence, every message signed by `key` (enrolled), plus:
    seq 7 signed by a stranger (held pending, never used), seq 8 declared evicted by seq 20.
    In `target` (a SQLite file or PostgreSQL URL) when given, else in tmp_path/ingest.sqlite."""
    db: Any = target if target is not None else tmp_path / "ingest.sqlite"
    messages = [parse_sequenced(payload) for _, payload in scenario()]
    state = next(m for m in messages if isinstance(m, StateInterval))
    declaration = EvictionDeclaration(
        agent_id=AGENT, boot_id="boot", seq=20, produced_at=POST[1] + timedelta(minutes=1), reason="bytes",
        ranges=[(8, 8)], count=1, bytes=900, kinds={"state": 1}, oldest_produced_at=state.produced_at,
        newest_produced_at=state.produced_at,
    )  # fmt: skip
    with Store(db) as store:
        store.enroll_key(AGENT, key.public, at=ENROLLED)
        for m in [*messages, declaration]:
            assert store.ingest(*signed_wire(key, m), RECEIVED) == "stored"
        assert store.ingest(*signed_wire(Key(), state.model_copy(update={"seq": 7})), RECEIVED) == "pending"
    with ProjectStore(db) as projects:
        projects.put(load_project_file(write_yaml(tmp_path)))
    with DeclaredStore(db) as declared:  # the firm's own pre-retrofit figures, from its paper records
        declared.add(
            PROJECT,
            [
                DeclaredFigure(window="baseline", indicator="networking_rate", machine_id=None, value=0.1, row=2),
                DeclaredFigure(window="baseline", indicator="oee", machine_id=None, value=0.55, row=3),
            ],
            declared_by="张工 设备科",
            declared_at=DECLARED_AT,
            file_name="baseline.xlsx",
            file_sha256="0" * 64,
            imported_by="tester",
        )
    return db


@pytest.fixture
def key() -> Key:
    return Key()


@pytest.fixture
def bundle(tmp_path: Path, key: Key) -> Path:
    out = tmp_path / "bundle.zip"
    export_bundle(signed_store(tmp_path, key), PROJECT, out, produced_at=AT)
    return out


def rewrite(path: Path, change: Callable[[dict[str, bytes]], None], fix_manifest: bool = True) -> None:
    """Change files inside a bundle; with fix_manifest, also put their new hashes in the manifest
    (as a forger would), so that only the other checks can catch the change."""
    files = read_bundle(path)
    change(files)
    if fix_manifest:
        manifest = json.loads(files[MANIFEST])
        manifest["files"] = {name: digest(data) for name, data in files.items() if name != MANIFEST}
        files[MANIFEST] = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def edit_line(files: dict[str, bytes], name: str, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    lines = [json.loads(line) for line in files[name].decode().splitlines()]
    [target] = [line for line in lines if line["seq"] == seq]
    change(target)
    files[name] = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


def failed(result: VerifyResult) -> list[str]:
    return [c.name for c in result.checks if not c.passed]


def verify_cli(bundle: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify", str(bundle), *extra])
    return code, capsys.readouterr().out


# -- export and an untouched bundle -------------------------------------------------------------


def test_export_writes_the_record_messages_and_keys(
    tmp_path: Path, key: Key, capsys: pytest.CaptureFixture[str]
) -> None:
    db = signed_store(tmp_path, key)
    out = tmp_path / "out" / "sz.zip"
    assert main(["export", "--db", str(db), "--project", PROJECT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"证据包 Evidence bundle: {out}" in printed and f"{AGENT}: 18 messages, 1 held, 1 key(s)" in printed
    files = read_bundle(out)
    assert sorted(files) == sorted(
        [MANIFEST, DECLARED, record_path(AGENT), messages_path(AGENT), held_path(AGENT), keys_path(AGENT)]
    )
    [declared] = json.loads(files[DECLARED])
    assert (declared["declared_by"], [f["value"] for f in declared["figures"]]) == ("张工 设备科", [0.1, 0.55])
    manifest = json.loads(files[MANIFEST])
    assert (manifest["bundle_format"], manifest["project"]["id"], manifest["agents"]) == (1, PROJECT, [AGENT])
    assert manifest["counts"][AGENT] == {"messages": 18, "held": 1, "keys": 1}
    assert manifest["files"] == {n: digest(d) for n, d in files.items() if n != MANIFEST}
    lines = [json.loads(line) for line in files[messages_path(AGENT)].decode().splitlines()]
    assert [line["seq"] for line in lines] == [*range(1, 7), *range(9, 21)]
    assert {line["status"] for line in lines} == {"verified"}
    with Store(db) as store:  # the payload text exactly as stored
        assert [(line["payload"],) for line in lines] == store._query(
            "SELECT payload FROM messages WHERE agent_id = ? ORDER BY seq", (AGENT,)
        )
        keys = store.agent_keys(AGENT)
    [held] = [json.loads(line) for line in files[held_path(AGENT)].decode().splitlines()]
    assert (held["seq"], held["status"]) == (7, "pending")
    [k] = json.loads(files[keys_path(AGENT)])
    assert (k["key_id"], k["public_key"], k["revoked_at"]) == (key_id(key.raw), key.public, None)
    assert k["fingerprint"] == keys[0].fingerprint
    # the record is the one `edgeproof report --project` writes (its evidence.json), generated_at aside
    assert main(["report", "--db", str(db), "--project", PROJECT, "--out", str(tmp_path / "r"), "--no-pdf"]) == 0
    capsys.readouterr()
    written = json.loads((tmp_path / "r" / AGENT / "evidence.json").read_text(encoding="utf-8"))
    record = json.loads(files[record_path(AGENT)])
    assert record["generated_at"] != written["generated_at"]
    assert {**record, "generated_at": None} == {**written, "generated_at": None}


def test_an_untouched_bundle_verifies(bundle: Path, key: Key, capsys: pytest.CaptureFixture[str]) -> None:
    result = verify_bundle(bundle)
    assert result.passed and failed(result) == []
    assert result.check("signatures").summary == "18 of 18 messages verified"
    assert [n.seq for n in result.check("signatures").notes] == [7]
    assert result.check("signatures").notes[0].reason.startswith("held pending, not used: pending key ")
    coverage = result.check("coverage")
    assert (
        coverage.summary
        == f"{AGENT}: seq 1–6, 9–20 present; gaps 7 held pending, not used; 8 declared evicted by seq 20"
    )
    assert [(n.seq, n.reason.split(":")[0]) for n in coverage.notes] == [(7, "gap seq 7"), (8, "gap seq 8")]
    assert result.check("recompute").summary.endswith("compared field by field, all equal")
    assert [k.fingerprint for k in result.keys] == [fingerprint(key.raw)]

    code, out = verify_cli(bundle, capsys)
    assert code == 0
    for line in (
        "[通过 PASS] 1. 文件完整性 File hashes: 5 files listed, 0 problem(s)",
        "[通过 PASS] 2. 签名 Signatures: 18 of 18 messages verified",
        "[通过 PASS] 4. 指标重算 Recompute: 1 record(s) rebuilt from the signed messages and compared field by "
        "field, all equal",
    ):
        assert line in out.splitlines()
    assert "结论 Result: 通过 PASS" in out and "未通过" not in out
    assert all(f in out for f in EXCLUDED_FIELDS)
    code, out = verify_cli(bundle, capsys, "--json")
    assert code == 0 and VerifyResult.model_validate_json(out).passed


# -- tampering ----------------------------------------------------------------------------------


def test_a_number_changed_in_a_signed_message_fails_its_signature(
    bundle: Path, key: Key, capsys: pytest.CaptureFixture[str]
) -> None:
    """(a) seq 13 is M1's first post bucket; its APT is changed in the bundle, the manifest fixed up."""

    def forge(line: dict[str, Any]) -> None:
        assert '"apt_s":3000.0' in line["payload"]
        line["payload"] = line["payload"].replace('"apt_s":3000.0', '"apt_s":3300.0')

    rewrite(bundle, lambda files: edit_line(files, messages_path(AGENT), 13, forge))
    result = verify_bundle(bundle)
    assert not result.passed
    assert result.check("hashes").passed  # the forger fixed the manifest
    [bad] = result.check("signatures").failures
    assert (bad.agent, bad.seq, bad.kind, bad.reason) == (
        AGENT,
        13,
        "kpi",
        f"signature invalid for key {key_id(key.raw)}",
    )
    coverage = result.check("coverage")
    assert not coverage.passed and [f.seq for f in coverage.failures] == [13]
    # never used: the recomputation lacks the bucket, so the record's M1 post numbers cannot be reproduced
    recompute = {f.path: f for f in result.check("recompute").failures}
    apt = recompute["machines.M1.post.elements.apt_s"]
    assert (apt.record, apt.recomputed) == (5700.0, 2700.0)
    assert apt.messages == (
        f"{AGENT} kpi seq 14 (machine M1, post window); not verifiable, left out: kpi seq 13; "
        f"{AGENT} site seq 19 (asset register, post window)"
    )
    assert [n.reason for n in coverage.notes if n.seq == 13] == [
        "gap seq 13: listed in the bundle but not verifiable (see signatures)"
    ]

    code, out = verify_cli(bundle, capsys)
    assert code == 1
    assert "[未通过 FAIL] 2. 签名 Signatures: 17 of 18 messages verified, 1 not verifiable" in out
    assert f"    - agent {AGENT} seq 13 (kpi): signature invalid for key {key_id(key.raw)}" in out
    assert "[通过 PASS] 1. 文件完整性 File hashes" in out and "结论 Result: 未通过 FAIL" in out


def test_a_number_changed_in_the_record_is_named_with_both_values(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(b) the post networking rate 0.75 becomes 0.8 in the bundle's record, the manifest fixed up."""

    def forge(files: dict[str, bytes]) -> None:
        record = json.loads(files[record_path(AGENT)])
        [net] = [i for i in record["indicators"] if i["key"] == "networking_rate"]
        assert net["post"]["value"] == 0.75
        net["post"]["value"] = 0.8
        files[record_path(AGENT)] = json.dumps(record, ensure_ascii=False, indent=2).encode()

    rewrite(bundle, forge)
    result = verify_bundle(bundle)
    assert failed(result) == ["recompute"]
    [d] = result.check("recompute").failures
    assert (d.agent, d.path, d.record, d.recomputed) == (AGENT, "indicators.networking_rate.post.value", 0.8, 0.75)
    assert (
        d.messages
        == f"{AGENT} site seq 19 (asset register, post window); {AGENT} kpi seq 13–18 (all machines, post window)"
    )

    code, out = verify_cli(bundle, capsys)
    assert code == 1
    assert (
        f"    - agent {AGENT} indicators.networking_rate.post.value: the record differs from the recomputation; "
        "记录值 record 0.8, 重算值 recomputed 0.75" in out
    )
    assert f"来源消息 messages: {AGENT} site seq 19 (asset register, post window)" in out
    assert "[未通过 FAIL] 4. 指标重算 Recompute" in out and "[通过 PASS] 2. 签名 Signatures" in out


@pytest.mark.parametrize("table", ["messages", "kpi"])
def test_a_value_changed_in_the_store_before_export_fails(
    tmp_path: Path, key: Key, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """(c) someone with write access to the ingest's SQLite changes M1's first post bucket (seq 13),
    pq 95 → 99: in the stored payload (the signature catches it), or in the derived kpi row the report
    reads (the recomputation from the signed payload catches it)."""
    db = signed_store(tmp_path, key)
    column = "payload" if table == "messages" else "elements"
    with sqlite3.connect(db) as c:
        changed = c.execute(
            f"UPDATE {table} SET {column} = replace({column}, '\"pq\":95.0', '\"pq\":99.0') WHERE seq = 13"
        ).rowcount
    c.close()
    assert changed == 1
    out = tmp_path / "bundle.zip"
    export_bundle(db, PROJECT, out, produced_at=AT)
    result = verify_bundle(out)
    assert not result.passed and result.check("hashes").passed
    if table == "messages":
        [bad] = result.check("signatures").failures
        assert (bad.seq, bad.kind, bad.reason) == (13, "kpi", f"signature invalid for key {key_id(key.raw)}")
    else:
        assert failed(result) == ["recompute"]
        diffs = {f.path: f for f in result.check("recompute").failures}
        pq = diffs["machines.M1.post.elements.pq"]
        assert (pq.record, pq.recomputed) == (187.0, 183.0)
        assert pq.messages == (
            f"{AGENT} kpi seq 13–14 (machine M1, post window); {AGENT} site seq 19 (asset register, post window)"
        )
        assert (
            diffs["indicators.quality.post.denominator"].record,
            diffs["indicators.quality.post.denominator"].recomputed,
        ) == (847.0, 843.0)
    assert verify_cli(out, capsys)[0] == 1


def test_a_message_signed_by_an_unenrolled_key_is_not_verifiable_and_never_used(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(d) a stranger adds seq 21: a re-sent M1 post bucket that would supersede seq 13 if it were used."""
    stranger = Key()
    original = parse_sequenced(
        next(json.loads(x)["payload"] for x in read_bundle(bundle)[messages_path(AGENT)].decode().splitlines()
             if json.loads(x)["seq"] == 13)
    )  # fmt: skip
    assert isinstance(original, MachineKpi)
    forged = original.model_copy(
        update={"seq": 21, "elements": original.elements.model_copy(update={"apt_s": 3600.0, "idle_s": 0.0})}
    )
    name, payload = signed_wire(stranger, forged)

    def add(files: dict[str, bytes]) -> None:
        line = {"seq": 21, "kind": "kpi", "status": "verified", "reason": None, "key_id": key_id(stranger.raw),
                "received_at": RECEIVED.isoformat(), "topic": name, "payload": payload.decode()}  # fmt: skip
        files[messages_path(AGENT)] += (json.dumps(line) + "\n").encode()

    rewrite(bundle, add)
    result = verify_bundle(bundle)
    assert failed(result) == ["signatures"]  # coverage and the recomputed record are untouched by it
    [bad] = result.check("signatures").failures
    assert (bad.agent, bad.seq, bad.kind, bad.reason) == (
        AGENT, 21, "kpi", f"not verifiable: key {key_id(stranger.raw)} is not enrolled for agent {AGENT}",
    )  # fmt: skip
    assert [(n.seq, n.reason) for n in result.check("recompute").notes] == [(21, "not verifiable, not used")]
    code, out = verify_cli(bundle, capsys)
    assert code == 1 and f"seq 21 (kpi): not verifiable: key {key_id(stranger.raw)} is not enrolled" in out


def test_a_file_changed_without_fixing_the_manifest_fails_the_hash_check(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(e) one space added to the record: the same numbers, other bytes."""

    def touch(files: dict[str, bytes]) -> None:
        files[record_path(AGENT)] += b" "
        files["notes.txt"] = b"added later"

    rewrite(bundle, touch, fix_manifest=False)
    result = verify_bundle(bundle)
    assert failed(result) == ["hashes"]
    changed, extra = result.check("hashes").failures
    assert (changed.file, changed.reason) == (record_path(AGENT), "SHA-256 differs from the manifest")
    assert (extra.file, extra.reason) == ("notes.txt", "not listed in the manifest")
    code, out = verify_cli(bundle, capsys)
    assert code == 1
    assert f"    - file {record_path(AGENT)}: SHA-256 differs from the manifest; expected " in out
    assert "[未通过 FAIL] 1. 文件完整性 File hashes: 5 files listed, 2 problem(s)" in out


# -- other cases ----------------------------------------------------------------------------------


def test_unsigned_messages_fail_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ingest.sqlite"
    with Store(db) as store:
        seed(store)  # an agent older than signing; one message delivered twice (not in the bundle)
    with ProjectStore(db) as projects:
        projects.put(load_project_file(write_yaml(tmp_path)))
    out = tmp_path / "b.zip"
    assert main(["export", "--db", str(db), "--project", PROJECT, "--out", str(out)]) == 0
    capsys.readouterr()
    result = verify_bundle(out)
    assert failed(result) == ["signatures", "coverage", "recompute"]
    assert {f.reason for f in result.check("signatures").failures} == {
        "unsigned: nothing proves where its numbers come from"
    }
    allowed = verify_bundle(out, allow_unsigned=True)
    assert allowed.passed and allowed.check("signatures").summary == "0 of 17 messages verified, 17 unsigned (allowed)"
    assert verify_cli(out, capsys)[0] == 1
    assert verify_cli(out, capsys, "--allow-unsigned")[0] == 0


def test_command_errors(tmp_path: Path, key: Key, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--db", str(tmp_path / "none.sqlite"), "--project", PROJECT]) == 2
    assert "export: error: no store at" in capsys.readouterr().err
    db = signed_store(tmp_path, key)
    assert main(["export", "--db", str(db), "--project", "ghost", "--out", str(tmp_path / "g.zip")]) == 2
    assert "no project 'ghost'" in capsys.readouterr().err and not (tmp_path / "g.zip").exists()
    assert main(["verify", str(tmp_path / "missing.zip")]) == 2
    assert "verify: error: cannot read the bundle" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 2
    assert "no manifest.json in the bundle" in capsys.readouterr().err


def test_diff_and_ranges() -> None:
    assert seq_ranges({1, 2, 3, 7, 9, 10}) == [(1, 3), (7, 7), (9, 10)]
    record = {"generated_at": "x", "indicators": [{"key": "oee", "post": {"value": 0.5, "ok": True}}], "n": [1, 2]}
    rebuilt = {"generated_at": "y", "indicators": [{"key": "oee", "post": {"value": 0.4, "ok": 1}}], "n": [1, 2]}
    assert diff(record, rebuilt) == [("indicators.oee.post.value", 0.5, 0.4), ("indicators.oee.post.ok", True, 1)]


def test_declared_figures_travel_apart_and_a_changed_one_is_named(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The firm's imported baseline is in the record with who and when, never inside a measured number;
    changing it in declared.json (manifest fixed up) fails the recompute, naming the figure."""
    record = json.loads(read_bundle(bundle)[record_path(AGENT)])
    [imported] = record["imported"]
    assert (imported["declared_by"], imported["file_name"]) == ("张工 设备科", "baseline.xlsx")
    indicators = {i["key"]: i for i in record["indicators"]}
    net, oee = indicators["networking_rate"], indicators["oee"]
    assert (net["baseline"]["value"], net["baseline"]["provenance"]) == (0.25, "measured")  # untouched
    assert net["change"] == 0.5 and net["change_from_imported"] == 0.75 - 0.1
    assert oee["change_from_imported"] == 15260 / 20400 - 0.55
    assert indicators["quality"]["change_from_imported"] is None  # nothing declared for it

    def forge(files: dict[str, bytes]) -> None:
        declared = json.loads(files[DECLARED])
        declared[0]["figures"][0]["value"] = 0.05  # a worse "before" makes the retrofit look better
        files[DECLARED] = json.dumps(declared, ensure_ascii=False).encode()

    rewrite(bundle, forge)
    result = verify_bundle(bundle)
    assert failed(result) == ["recompute"]
    found = {(f.path, f.record, f.recomputed) for f in result.check("recompute").failures}
    assert ("imported[0].figures[0].value", 0.1, 0.05) in found
    assert ("indicators.networking_rate.change_from_imported", 0.75 - 0.1, 0.75 - 0.05) in found
    messages = {f.path: f.messages for f in result.check("recompute").failures}
    assert messages["imported[0].figures[0].value"] == f"{DECLARED}: the figures declared from manual records"
    assert messages["indicators.networking_rate.change_from_imported"] == (
        f"{DECLARED}: the figures declared from manual records; "
        f"{AGENT} site seq 19 (asset register, post window); {AGENT} kpi seq 13–18 (all machines, post window)"
    )
