"""`report` on the command line: files written, a short table, exit 2 on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_ingest.cli import main, parse_window
from cloud_ingest.store import Store
from tests.test_report_evidence import AGENT, BASE, POST, seed

WINDOWS = ["--baseline", f"{BASE[0].isoformat()}/{BASE[1].isoformat()}",
           "--post", f"{POST[0].isoformat()}/{POST[1].isoformat()}"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ingest.sqlite"
    with Store(path) as store:
        seed(store)
    return path


def test_report_writes_files_and_prints_a_table(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "evidence"
    assert main(["report", "--db", str(db), "--agent", AGENT, *WINDOWS, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [str(out / "evidence.json"), str(out / "evidence.zh-CN.html"), str(out / "evidence.en.html")]
    assert all((out / name).is_file() for name in ("evidence.json", "evidence.zh-CN.html", "evidence.en.html"))
    net = next(line for line in lines if line.startswith("Networking rate of production equipment"))
    assert net.split()[-7:] == ["25.0%", "75.0%", "+50.0", "pp", "3", "→", "6"]
    assert lines[-1] == "messages 17, missing 2 in 1 gap(s), duplicates 1, dead letters 0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "2024-03-01T08:00/2024-03-01T10:00+08:00"], "has no UTC offset"),
        (["--baseline", "2024-03-01T08:00+08:00"], "expected START/END"),
        (["--baseline", "yesterday/today"], "'yesterday' is not an ISO 8601 date-time"),
        (["--baseline", "2024-03-01T10:00+08:00/2024-03-01T08:00+08:00"], "baseline window must end after it starts"),
        (["--post", f"{BASE[0].isoformat()}/{BASE[1].isoformat()}"], "baseline and post windows overlap"),
        (["--agent", "ghost"], "no messages from agent 'ghost'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["report", "--db", str(db), "--agent", AGENT, *WINDOWS, "--out", str(tmp_path / "o"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_a_missing_store_is_an_error_not_a_new_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.sqlite"
    assert main(["report", "--db", str(missing), "--agent", AGENT, *WINDOWS]) == 2
    assert f"no store at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_parse_window_accepts_z_and_offsets() -> None:
    start, end = parse_window("2024-03-01T00:00:00Z/2024-03-02T00:00:00+08:00")
    assert (end - start).total_seconds() == 16 * 3600
