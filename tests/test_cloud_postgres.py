"""The rest of the cloud on PostgreSQL: read-only stores, evidence bundles, `influx backfill`.

Projects, declared figures (append-only triggers included), the web app and its accounts run on both
back-ends in tests/test_projects.py, tests/test_declared.py and tests/test_web.py (`store_target`).
Every PostgreSQL test gets a fresh database on a real server and fails, never skips, without one.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cloud_ingest.bundle import DECLARED, MANIFEST, export_bundle, held_path, keys_path, messages_path, read_bundle
from cloud_ingest.bundle import record_path as record_file
from cloud_ingest.store import SCHEMA_VERSION, Store, StoreUnavailable
from cloud_ingest.verify import verify_bundle
from edgeproof import cli
from edgeproof.netutil import free_port
from tests.test_bundle import AT, PROJECT, signed_store
from tests.test_influx import VictoriaMetrics, check_scenario_values
from tests.test_influx import vm as vm  # the fixture
from tests.test_report_evidence import AGENT, scenario
from tests.test_signing import Key

# -- Store.open_readonly ---------------------------------------------------------------------------


def test_open_readonly_reads_and_refuses_every_write(store_target: str | Path) -> None:
    with Store(store_target) as store:
        store.ingest(*scenario()[0], datetime(2024, 6, 2, tzinfo=UTC))
    with Store.open_readonly(store_target) as store:
        assert store.agents() == [AGENT] and store.message_count(AGENT) == 1
        gaps = store.gap_report(AGENT)  # BEGIN … COMMIT: a read-only transaction works
        assert gaps.agent_id == AGENT
        refused = (sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
        for sql in ("DELETE FROM messages", "INSERT INTO duplicates VALUES ('a', 1, 'b')", "CREATE TABLE x (a INT)"):
            with pytest.raises(refused, match=r"read-?only"):
                store.connection.execute(sql)
        assert store.message_count(AGENT) == 1


def test_open_readonly_never_creates_or_upgrades_a_store(tmp_path: Path, postgres_url: str) -> None:
    missing = tmp_path / "none.sqlite"
    with pytest.raises(StoreUnavailable, match="no store at"):
        Store.open_readonly(missing)
    assert not missing.exists()
    old = tmp_path / "old.sqlite"
    sqlite3.connect(old).execute("PRAGMA user_version = 3").connection.close()
    before = old.read_bytes()
    with pytest.raises(StoreUnavailable, match=f"schema version 3, expected {SCHEMA_VERSION}"):
        Store.open_readonly(old)
    assert old.read_bytes() == before and not Path(f"{old}-wal").exists()
    with pytest.raises(StoreUnavailable, match=f"schema version 0, expected {SCHEMA_VERSION}"):
        Store.open_readonly(postgres_url)  # an empty database: no tables made
    with psycopg.connect(postgres_url) as db:
        tables = db.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert tables.fetchone() == (0,)


def test_open_readonly_of_an_unreachable_server_masks_the_password() -> None:
    url = f"postgresql://ingest:s3cret@127.0.0.1:{free_port()}/edgeproof"
    with pytest.raises(StoreUnavailable) as info:
        Store.open_readonly(url)
    assert "s3cret" not in str(info.value) and "ingest:***@127.0.0.1" in str(info.value)


# -- evidence bundles ------------------------------------------------------------------------------


def test_a_bundle_exported_from_postgresql_verifies_and_equals_the_sqlite_one(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Key()
    lite = signed_store(tmp_path, key)
    signed_store(tmp_path, key, postgres_url)  # the same messages, keys, project and declared figures
    out = tmp_path / "pg.zip"
    assert cli.main(["export", "--db", postgres_url, "--project", PROJECT, "--out", str(out)]) == 0
    assert f"{AGENT}: 18 messages, 1 held, 1 key(s)" in capsys.readouterr().out
    result = verify_bundle(out)
    assert result.passed, [c.summary for c in result.checks if not c.passed]
    assert result.check("signatures").summary == "18 of 18 messages verified"

    export_bundle(postgres_url, PROJECT, out, produced_at=AT)
    export_bundle(lite, PROJECT, tmp_path / "lite.zip", produced_at=AT)
    pg, sq = read_bundle(out), read_bundle(tmp_path / "lite.zip")
    assert sorted(pg) == sorted(sq)
    for name in (messages_path(AGENT), keys_path(AGENT)):
        assert pg[name] == sq[name], name  # byte for byte
    # the held message is signed by a new stranger key in each store: the same but for its key id
    assert [(m["seq"], m["status"]) for m in map(json.loads, pg[held_path(AGENT)].splitlines())] == [(7, "pending")]
    assert len(pg[held_path(AGENT)]) == len(sq[held_path(AGENT)])
    a, b = json.loads(pg[record_file(AGENT)]), json.loads(sq[record_file(AGENT)])
    assert a["indicators"] == b["indicators"]
    held = [{**h, "reason": h["reason"].split(":")[1]} for h in a["data_quality"].pop("held")]
    assert held == [{**h, "reason": h["reason"].split(":")[1]} for h in b["data_quality"].pop("held")]
    assert a["data_quality"] == b["data_quality"]
    # the declared import differs only by when each store took it in
    strip = [{**d, "imported_at": None} for d in json.loads(pg[DECLARED])]
    assert strip == [{**d, "imported_at": None} for d in json.loads(sq[DECLARED])]
    assert json.loads(pg[MANIFEST])["counts"] == json.loads(sq[MANIFEST])["counts"]


def test_report_by_project_with_declared_figures_on_postgresql(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    signed_store(tmp_path, Key(), postgres_url)
    out = tmp_path / "r"
    assert cli.main(["report", "--db", postgres_url, "--project", PROJECT, "--out", str(out), "--no-pdf"]) == 0
    record = json.loads((out / AGENT / "evidence.json").read_text(encoding="utf-8"))
    assert [i["declared_by"] for i in record["imported"]] == ["张工 设备科"]
    assert record["project"]["id"] == PROJECT


# -- influx backfill -------------------------------------------------------------------------------


def test_backfill_from_postgresql_writes_what_the_sqlite_backfill_writes(
    tmp_path: Path,
    postgres_url: str,
    vm: VictoriaMetrics,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    messages = scenario()
    with Store(postgres_url) as store:
        for name, payload in [*messages, messages[1]]:
            store.ingest(name, payload, datetime(2024, 6, 2, tzinfo=UTC))
    monkeypatch.setenv("EDGEPROOF_INFLUX_TOKEN", "secret")
    args = ["influx", "backfill", "--db", postgres_url, "--influx-url", vm.url,
            "--influx-org", "o", "--influx-bucket", "b"]  # fmt: skip
    assert cli.main([*args, "--since", "2024-06-03T00:00:00Z"]) == 0
    assert "wrote 0 point(s)" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert f"from {len(messages)} message(s)" in capsys.readouterr().out
    check_scenario_values(vm.export())
