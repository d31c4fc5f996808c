"""The ingest store on PostgreSQL: schema upgrades, several writers, scale-out workers, URLs.

Every test gets a fresh database on a real PostgreSQL server (`postgres_url`, tests/conftest.py) and
fails, never skips, when the server cannot be reached. The store's behaviour on both back-ends is
tests/test_ingest_store.py and tests/test_signing.py, run on each.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from cloud_ingest.cli import main as cloud_main
from cloud_ingest.dialect import mask, store_target, translate
from cloud_ingest.store import SCHEMA_VERSION, Store
from tests.netutil import Mosquitto
from tests.test_fault_injection import wait_for
from tests.test_ingest_store import AGENT, RECEIVED, T0, kpi, wire
from tests.test_scale_out import (
    AGENTS,
    MAX_INFLIGHT,
    PER_AGENT,
    WORKERS,
    N,
    Publisher,
    Worker,
    assert_each_message_stored_once,
    broker,  # noqa: F401  (fixture)
    publisher,  # noqa: F401  (fixture)
    workload,
)


def stored_total(url: str) -> int:
    with Store(url) as store:
        return sum(store.message_count(a) for a in AGENTS)


def test_a_database_of_schema_1_is_upgraded_on_open_and_keeps_its_rows(postgres_url: str) -> None:
    with Store(postgres_url) as s:
        assert s.ingest(*wire(kpi(2)), RECEIVED) == "stored"
    with psycopg.connect(postgres_url, autocommit=True) as db:  # as a schema-1 store would be
        for table in ("evictions", "evicted_ranges", "health", "agent_keys", "held"):
            db.execute(f"DROP TABLE {table}")
        for column in ("historical", "verification", "key_id"):
            db.execute(f"ALTER TABLE messages DROP COLUMN {column}")
        db.execute("UPDATE schema_version SET version = 1")
    with Store(postgres_url) as s:
        assert s.sequence_numbers(AGENT) == [2]
        assert s._query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert s._query("SELECT seq, historical, verification, key_id FROM messages") == [(2, 0, "unsigned", None)]
        assert s.health(AGENT) is None and s.agent_keys(AGENT) == [] and s.held_messages(AGENT) == []
        assert s.ingest(*wire(kpi(3, start=kpi(2).bucket_end)), RECEIVED) == "stored"
        assert s.verification_counts(AGENT)["unsigned"] == 2


def test_a_database_of_a_newer_schema_is_refused(postgres_url: str) -> None:
    Store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match=f"store schema version {SCHEMA_VERSION + 1}, expected {SCHEMA_VERSION}"):
        Store(postgres_url)


@pytest.mark.integration
def test_three_workers_into_postgresql_one_killed_and_restarted_store_every_message_once(
    tmp_path: Path, postgres_url: str, broker: Mosquitto, publisher: Publisher  # noqa: F811
) -> None:
    group = [Worker(tmp_path, postgres_url, broker.port, i) for i in range(1, WORKERS + 1)]
    try:
        for w in group:
            w.start()
        w1, w2, w3 = group
        messages = workload()
        publisher.send(messages[: N // 2])
        wait_for("a first part stored", lambda: stored_total(postgres_url) >= N // 8)
        w2.kill()  # mid-run: it holds unacknowledged messages, stored or not
        publisher.send(messages[N // 2 :])
        wait_for("the survivors' share stored", lambda: stored_total(postgres_url) >= N // 2)
        w2.start()  # its session, with everything dealt to it meanwhile, comes back
        wait_for("every message stored", lambda: stored_total(postgres_url) == N)
        for w in group:
            assert w.stop() == 0
    finally:
        for w in group:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    assert_each_message_stored_once(postgres_url)
    (c1,), (c3,), (restarted,) = w1.counts(), w3.counts(), w2.counts()
    assert (c1["stored"], c3["stored"]) == (N // 3, N // 3)
    assert restarted["stored"] + restarted["duplicate"] <= N // 3
    with Store(postgres_url) as store:
        assert sum(store.message_count(a) for a in AGENTS) == len(AGENTS) * PER_AGENT
        assert store.duplicate_count == restarted["duplicate"] <= MAX_INFLIGHT


# -- URLs and what is not on PostgreSQL yet ----------------------------------------------------------


def test_a_url_is_kept_as_text_and_its_password_is_never_shown() -> None:
    assert store_target("postgresql://ingest@db.example/edgeproof") == "postgresql://ingest@db.example/edgeproof"
    assert store_target("var/ingest.sqlite") == Path("var/ingest.sqlite")
    assert store_target("sqlite:////srv/ingest.sqlite") == Path("/srv/ingest.sqlite")
    assert mask("postgresql://ingest:s3cret@db.example:5432/edgeproof") == (
        "postgresql://ingest:***@db.example:5432/edgeproof"
    )
    assert mask("postgresql://db.example/edgeproof") == "postgresql://db.example/edgeproof"


def test_the_sql_rewrites_for_postgresql() -> None:
    assert translate("SELECT a FROM t WHERE x = ?1 AND y > ?2 OR z = ?1") == (
        "SELECT a FROM t WHERE x = %s AND y > %s OR z = %s",
        (0, 1, 0),
    )
    assert translate("INSERT OR IGNORE INTO t (a) VALUES (?)") == (
        "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING",
        None,
    )
    assert translate("SELECT '5%'") == ("SELECT '5%%'", None)


def test_an_unreachable_server_is_an_error_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://ingest:s3cret@127.0.0.1:1/edgeproof"  # port 1: nothing listens
    assert cloud_main(["gaps", "--db", url, "--agent", AGENT]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL store postgresql://ingest:***@127.0.0.1:1/edgeproof" in err
    assert "s3cret" not in err


def test_report_by_project_on_postgresql_names_an_unknown_project(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # projects and declared figures run on PostgreSQL too (tests/test_projects.py, tests/test_cloud_postgres.py)
    assert cloud_main(["report", "--db", postgres_url, "--project", "p1"]) == 2
    assert f"no project 'p1' in {postgres_url} (projects: none)" in capsys.readouterr().err


def test_gaps_and_enroll_run_on_a_postgresql_store(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeproof.cli import main as edgeproof_main
    from tests.test_signing import Key, signed_wire

    key = Key()
    with Store(postgres_url) as store:
        for seq in (1, 4):
            assert store.ingest(*wire(kpi(seq, start=T0 + timedelta(hours=seq))), RECEIVED) == "stored"
        assert store.ingest(*signed_wire(key, kpi(5, machine="M2")), RECEIVED) == "pending"
    assert cloud_main(["gaps", "--db", postgres_url, "--agent", AGENT]) == 0
    assert "seq 2-3 (2): missing" in capsys.readouterr().out
    assert edgeproof_main(["enroll", "--db", postgres_url, "--agent", AGENT, "--public-key", key.public]) == 0
    assert "1 verified and stored" in capsys.readouterr().out
    with Store(postgres_url) as store:
        assert store.sequence_numbers(AGENT) == [1, 4, 5] and store.verification(AGENT, 5) == "verified"
