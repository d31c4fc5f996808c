"""`python -m cloud_ingest gaps`: an agent's gap report as text or JSON."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cloud_ingest.cli import main
from cloud_ingest.store import GapReport, Store
from tests.test_ingest_store import AGENT, RECEIVED, T0, evicted, kpi, wire


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ingest.sqlite"
    with Store(path) as store:
        store.ingest(*wire(kpi(1)), RECEIVED)
        store.ingest(*wire(kpi(5, start=T0 + timedelta(hours=5))), RECEIVED + timedelta(seconds=5))
        store.ingest(*wire(evicted(6, [(2, 3)])), RECEIVED + timedelta(seconds=6))
    return path


def test_gaps_prints_each_part_with_its_neighbours(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--db", str(db), "--agent", AGENT]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "agent plant-a: 3 stored, highest seq 6; 2 declared evicted (1 declaration(s)), 1 missing, "
        "0 declared but received",
        "  seq 2-3 (2): evicted (bytes), declared by seq 6; after seq 1 (produced 2024-03-01T01:00:05Z, received "
        "2024-03-01T12:00:00Z), before seq 5 (produced 2024-03-01T06:00:05Z, received 2024-03-01T12:00:05Z)",
        "  seq 4 (1): missing; after seq 1 (produced 2024-03-01T01:00:05Z, received 2024-03-01T12:00:00Z), "
        "before seq 5 (produced 2024-03-01T06:00:05Z, received 2024-03-01T12:00:05Z)",
    ]


def test_gaps_json_is_the_report_model(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--db", str(db), "--agent", AGENT, "--json"]) == 0
    report = GapReport.model_validate_json(capsys.readouterr().out)
    assert [(g.first, g.last, g.status, g.declared_by) for g in report.gaps] == [
        (2, 3, "evicted", 6),
        (4, 4, "missing", None),
    ]
    assert (report.evicted, report.missing, report.declarations[0].ranges) == (2, 1, [(2, 3)])


def test_gaps_of_an_unknown_agent_or_store_exit_2(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--db", str(db), "--agent", "nobody"]) == 2
    assert main(["gaps", "--db", str(tmp_path / "none.sqlite"), "--agent", AGENT]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"gaps: error: no messages of agent 'nobody' in {db}",
        f"gaps: error: no store at {tmp_path / 'none.sqlite'}",
    ]
