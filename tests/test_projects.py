"""Retrofit projects: the model and its credit-code check, YAML import errors, the commands, report by project."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from cloud_ingest.cli import main as ingest_main
from cloud_ingest.project_cli import main
from cloud_ingest.projects import (
    ConfigError,
    Project,
    ProjectStore,
    check_credit_code,
    credit_code_check_char,
    load_project_file,
)
from cloud_ingest.record import build_project_reports
from cloud_ingest.report import build_report
from cloud_ingest.store import Store
from tests.test_report_evidence import AGENT, BASE, POST, seed

REPO = Path(__file__).resolve().parents[1]
CODE = "91320500MA1PXQ7R0X"  # made up, with the right check character
BAD_CODE = CODE[:17] + "M"

PROJECT_YAML = """\
# line 1
id: sz-2024-001
firm:
  name: 苏州示范精密机械有限公司
  credit_code: {code}
  industry: C34 通用设备制造业
site: 一号厂房
provider: 苏州某数字化服务商
contract_no: SZ-SZH-2024-017
baseline: {{start: "2024-03-01T08:00:00+08:00", end: "2024-03-01T10:00:00+08:00"}}
post: {{start: "2024-06-01T08:00:00+08:00", end: "2024-06-01T10:00:00+08:00"}}
agents: [{agent}]
"""


def write_yaml(tmp_path: Path, code: str = CODE, agent: str = AGENT, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(PROJECT_YAML.format(code=code, agent=agent), encoding="utf-8")
    return path


# -- credit code -------------------------------------------------------------------------------


def test_credit_code_check_character() -> None:
    assert credit_code_check_char("91110000100010433") == "L"  # a published code
    assert credit_code_check_char("91330700MA0000000") == "B"
    assert credit_code_check_char(CODE[:17]) == "X"
    assert check_credit_code(" 91320500ma1pxq7r0x ") == CODE  # stripped and upper-cased


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("9111000010001043", "must have 18 characters, '9111000010001043' has 16"),
        ("91110000100010433LX", "has 19"),
        ("91110000I00010433L", "contains 'I'"),
        ("9111000O100010433L", "contains 'O'"),
        ("9111A000100010433L", "characters 3–8 must be digits"),
        ("91110000100010433M", "check character is 'M', expected 'L'"),
        ("91330700MA0000000X", "check character is 'X', expected 'B'"),
    ],
)
def test_bad_credit_codes_are_refused_with_the_reason(code: str, message: str) -> None:
    with pytest.raises(ValueError, match="unified social credit code") as e:
        check_credit_code(code)
    assert message in str(e.value)


# -- YAML ----------------------------------------------------------------------------------------


def test_yaml_project_loads(tmp_path: Path) -> None:
    p = load_project_file(write_yaml(tmp_path))
    assert (p.id, p.firm.credit_code, p.provider, p.contract_no, p.agents) == (
        "sz-2024-001",
        CODE,
        "苏州某数字化服务商",
        "SZ-SZH-2024-017",
        [AGENT],
    )
    assert p.baseline.pair() == BASE and p.post.pair() == POST


def test_a_bad_field_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, code=BAD_CODE)
    with pytest.raises(ConfigError) as e:
        load_project_file(path)
    assert str(e.value) == (
        f"{path}:5: firm.credit_code: Value error, unified social credit code '{BAD_CODE}': "
        f"check character is 'M', expected 'X'"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('post: {start: "2024-06-01T08:00:00+08:00"', 'post: {start: "2024-03-01T09:00:00+08:00"', ":11: post: "),
        ('end: "2024-03-01T10:00:00+08:00"', 'end: "2024-03-01T07:00:00+08:00"', ":10: baseline: "),
        ('start: "2024-03-01T08:00:00+08:00"', 'start: "2024-03-01T08:00:00"', ":10: baseline.start: "),
        ("provider: 苏州某数字化服务商\n", "", ":2: provider: Field required"),
        ("site: 一号厂房", "sight: 一号厂房", ":7: sight: Extra inputs are not permitted"),
        (f"agents: [{AGENT}]", f"agents: [{AGENT}, {AGENT}]", f":12: agents[1]: agent '{AGENT}' is listed twice"),
        (f"agents: [{AGENT}]", "agents: []", ":12: agents: List should have at least 1 item"),
    ],
)
def test_yaml_errors_name_the_line(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = write_yaml(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_project_file(path)
    assert f"{path}{expected}" in str(e.value)


def test_the_demo_project_matches_the_demo() -> None:
    p = load_project_file(REPO / "configs/demo-project.yaml")
    scenario = yaml.safe_load((REPO / "configs/demo-scenario.yaml").read_text(encoding="utf-8"))
    agent = yaml.safe_load((REPO / "configs/demo-agent-post.yaml").read_text(encoding="utf-8"))
    for name in ("baseline", "post"):
        window = scenario["phases"][name]["window"]
        assert getattr(p, name).pair() == (
            datetime.fromisoformat(window["start"]),
            datetime.fromisoformat(window["end"]),
        )
    assert p.agents == [agent["agent"]["id"]]


# -- commands ------------------------------------------------------------------------------------


def create_args(db: str | Path) -> list[str]:
    return [
        "create", "--db", str(db), "--id", "sz-2024-001", "--firm", "苏州示范精密机械有限公司",
        "--credit-code", CODE, "--industry", "C34", "--provider", "苏州某数字化服务商",
        "--contract-no", "SZ-SZH-2024-017",
        "--baseline", f"{BASE[0].isoformat()}/{BASE[1].isoformat()}",
        "--post", f"{POST[0].isoformat()}/{POST[1].isoformat()}", "--agent", AGENT,
    ]  # fmt: skip


def test_create_set_show_list_round_trip(
    tmp_path: Path, store_target: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_target
    assert main(create_args(db)) == 0
    assert capsys.readouterr().out == "created project sz-2024-001\n"
    assert main(["show", "--db", str(db), "sz-2024-001", "--json"]) == 0
    shown = Project.model_validate_json(capsys.readouterr().out)
    assert shown == load_project_file(write_yaml(tmp_path)).model_copy(
        update={"site": None, "firm": shown.firm.model_copy(update={"industry": "C34"})}
    )

    assert main(["set", "--db", str(db), "sz-2024-001", "--add-agent", "line-2", "--provider", "另一家服务商"]) == 0
    assert capsys.readouterr().out == "updated project sz-2024-001: agents, provider\n"
    assert main(["set", "--db", str(db), "sz-2024-001", "--remove-agent", AGENT, "--site", "二号厂房"]) == 0
    capsys.readouterr()
    assert main(["list", "--db", str(db), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["agents"], listed["provider"], listed["site"]) == (["line-2"], "另一家服务商", "二号厂房")
    assert listed["firm"]["credit_code"] == CODE

    assert main(["show", "--db", str(db), "sz-2024-001"]) == 0
    table = capsys.readouterr().out
    assert f"统一社会信用代码 Credit code  {CODE}" in table
    assert "数字化服务商 Provider         另一家服务商" in table
    assert main(["list", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id ") and lines[1].startswith(f"sz-2024-001  苏州示范精密机械有限公司  {CODE}")

    # the store is still an ingest store the report can read
    with Store(db) as store:
        assert store.agents() == []


def test_import_creates_then_updates_and_refuses_bad_files_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ingest.sqlite"
    good = write_yaml(tmp_path)
    assert main(["import", "--db", str(db), str(good)]) == 0
    assert capsys.readouterr().out == "created project sz-2024-001\n"
    good.write_text(good.read_text(encoding="utf-8").replace("SZ-SZH-2024-017", "SZ-SZH-2024-018"), encoding="utf-8")
    bad = write_yaml(tmp_path, code=BAD_CODE, name="bad.yaml")
    assert main(["import", "--db", str(db), str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"project: error: {bad}:5: firm.credit_code: ")
    with ProjectStore(db) as projects:
        assert projects.get("sz-2024-001").contract_no == "SZ-SZH-2024-017"  # nothing stored
    assert main(["import", "--db", str(db), str(good)]) == 0
    assert capsys.readouterr().out == "updated project sz-2024-001\n"
    with ProjectStore(db) as projects:
        assert projects.get("sz-2024-001").contract_no == "SZ-SZH-2024-018"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "ghost"], "no project 'ghost'"),
        (["set", "sz-2024-001"], "nothing to change"),
        (["set", "sz-2024-001", "--remove-agent", "ghost"], "agent 'ghost' is not in project sz-2024-001"),
        (["set", "sz-2024-001", "--remove-agent", AGENT], "agents: List should have at least 1 item"),
        (["set", "sz-2024-001", "--credit-code", BAD_CODE], "firm.credit_code: Value error"),
        (["set", "sz-2024-001", "--post", "2024-03-01T09:00+08:00/2024-03-01T11:00+08:00"], "windows overlap"),
        (["set", "sz-2024-001", "--post", "2024-03-01T09:00/2024-03-01T11:00+08:00"], "has no UTC offset"),
    ],
)
def test_command_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    db = tmp_path / "ingest.sqlite"
    assert main(create_args(db)) == 0
    capsys.readouterr()
    assert main([argv[0], "--db", str(db), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("project: error: ") and message in err
    assert main(create_args(db)) == 2
    assert "already exists" in capsys.readouterr().err


def test_show_without_a_store_does_not_create_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()


# -- report by project ----------------------------------------------------------------------------


def test_report_by_project_equals_report_by_agent_and_windows(tmp_path: Path) -> None:
    db = tmp_path / "ingest.sqlite"
    with Store(db) as store:
        seed(store)
    project = load_project_file(write_yaml(tmp_path))
    at = datetime(2024, 7, 1, tzinfo=UTC)
    with Store(db) as store:
        [by_project] = build_project_reports(store, project, generated_at=at)
        by_agent = build_report(store, AGENT, BASE, POST, generated_at=at)
    assert by_project.project == project and by_agent.project is None
    assert by_project.model_copy(update={"project": None}) == by_agent


def test_report_cli_by_project_writes_a_folder_per_agent(
    tmp_path: Path, store_target: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_target
    with Store(db) as store:
        seed(store)
    assert main(["import", "--db", str(db), str(write_yaml(tmp_path))]) == 0
    by_project, by_agent = tmp_path / "by-project", tmp_path / "by-agent"
    assert (
        ingest_main(["report", "--db", str(db), "--project", "sz-2024-001", "--out", str(by_project), "--no-pdf"]) == 0
    )
    windows = ["--baseline", f"{BASE[0].isoformat()}/{BASE[1].isoformat()}",
               "--post", f"{POST[0].isoformat()}/{POST[1].isoformat()}"]  # fmt: skip
    assert ingest_main(["report", "--db", str(db), "--agent", AGENT, *windows, "--out", str(by_agent), "--no-pdf"]) == 0
    out = capsys.readouterr().out
    assert f"project sz-2024-001, agent {AGENT}:" in out
    a = json.loads((by_project / AGENT / "evidence.json").read_text(encoding="utf-8"))
    b = json.loads((by_agent / "evidence.json").read_text(encoding="utf-8"))
    assert a["project"]["firm"]["credit_code"] == CODE and b["project"] is None
    for d in (a, b):
        d.pop("generated_at")
        d.pop("project")
    assert a == b
    html = (by_project / AGENT / "evidence.zh-CN.html").read_text(encoding="utf-8")
    for text in ("改造项目编号", "sz-2024-001", "数字化服务商", "苏州某数字化服务商", "SZ-SZH-2024-017", CODE):
        assert text in html


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--project", "ghost"], "no project 'ghost'"),
        (["--project", "sz-2024-001", "--agent", AGENT], "--project takes the agents and windows from the project"),
        (["--agent", AGENT], "missing --baseline --post"),
    ],
)
def test_report_by_project_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    db = tmp_path / "ingest.sqlite"
    with Store(db) as store:
        seed(store)
    assert main(["import", "--db", str(db), str(write_yaml(tmp_path, agent="ghost-agent"))]) == 0
    capsys.readouterr()
    assert ingest_main(["report", "--db", str(db), *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert ingest_main(["report", "--db", str(db), "--project", "sz-2024-001", "--out", str(tmp_path / "o")]) == 2
    assert "project sz-2024-001: no messages from agent 'ghost-agent'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
