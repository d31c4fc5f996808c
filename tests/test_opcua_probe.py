"""`edgeproof probe opcua` against a simulated CNC served over OPC UA on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua

from connectors.opcua.config import OpcUaDeviceConfig
from connectors.opcua.probe import ProbedNode, snake_case, tag_names
from edgeproof.cli import main
from edgeproof.clock import ScaledClock
from edgeproof.configfile import load_yaml_model
from simulators.opcua_server import NODES, CncServer, cnc_values
from simulators.plant import State, build_plant
from simulators.scenario import load_scenario
from tests.netutil import free_port

USER, PASSWORD, PASSWORD_ENV = "operator", "s3cret-probe", "EDGEPROOF_PROBE_TEST_PASSWORD"
OPERATION_MODE = "ns=2;s=CNC-01/Monitoring/MachineTool/OperationMode"
OPERATION_MODE_PATH = "2:Machines/2:CNC-01/2:Monitoring/2:MachineTool/2:OperationMode"


@dataclass(frozen=True)
class Cnc:
    url: str
    values: dict[str, Any]  # what the server holds, by path under Machines/CNC-01


@contextmanager
def serve_cnc(**security: Any) -> Iterator[Cnc]:
    """CNC-01 while running, on its own event loop in a thread; its clock never starts, so its values hold still."""
    scenario = load_scenario()
    plant = build_plant(scenario, "baseline")["CNC-01"]
    origin = scenario.phases["baseline"].window.start
    while plant.state_at(origin) is not State.RUNNING:
        origin += timedelta(minutes=1)
    server = CncServer(plant, ScaledClock(origin, None, 1.0), "127.0.0.1", free_port(), **security)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        yield Cnc(server.url, cnc_values(plant.snapshot(origin), server.spindle_override))
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def cnc() -> Iterator[Cnc]:
    """Security mode None, one user: the operator."""
    with serve_cnc(users={USER: PASSWORD}) as cnc:
        yield cnc


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def probe(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """Run the command line in-process as the operator; exit status, stdout, stderr."""
    status = main(["probe", "opcua", "--url", url, "--username", USER, "--password-env", PASSWORD_ENV, *args])
    out, err = capsys.readouterr()
    return status, out, err


def columns(lines: list[str]) -> list[dict[str, str]]:
    """The table's rows as dicts, cut at the header's column starts (so this also checks the alignment)."""
    header = lines[0]
    names = ["browse name", "class", "data type", "value", "node id", "path"]
    starts = [header.index(n) for n in names]
    bounds = [*zip(starts, [*starts[1:], None], strict=True)]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} | {"line": line} for line in lines]


def test_table_shows_node_ids_paths_types_and_live_values(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = probe(capsys, cnc.url, "--depth", "5")
    assert (status, err) == (0, "")
    rows = {r["node id"]: r for r in columns(out.splitlines())[1:]}
    mode = rows[OPERATION_MODE]
    assert mode["line"].startswith(" " * 10 + "2:OperationMode ")  # depth 5 below Objects
    assert (mode["browse name"], mode["class"], mode["data type"], mode["path"]) == (
        "2:OperationMode", "Variable", "Int32", OPERATION_MODE_PATH
    )  # fmt: skip
    assert mode["value"] == str(cnc.values["Monitoring/MachineTool/OperationMode"]) == "1"  # Automatic
    program = rows["ns=2;s=CNC-01/Production/ActiveProgram/Name"]
    assert program["value"] == json.dumps(cnc.values["Production/ActiveProgram/Name"])
    assert rows["ns=2;s=CNC-01/Monitoring/Spindle/IsRotating"]["value"] == "true"
    assert rows["ns=2;s=CNC-01/Monitoring/Spindle/Override"]["data type"] == "Double"
    assert rows["i=85"]["browse name"] == "0:Objects"
    assert "i=2253" not in rows  # the standard Server object is left out unless --start points into it


def test_depth_limits_what_is_shown(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = probe(capsys, cnc.url, "--start", "Machines/2:CNC-01", "--depth", "2", "--json")
    assert status == 0
    shown = {n["node_id"]: n["depth"] for n in map(json.loads, out.splitlines())}
    assert shown["ns=2;s=CNC-01"] == 0
    assert shown["ns=2;s=CNC-01/Monitoring/MachineTool"] == 2
    assert OPERATION_MODE not in shown  # three levels down
    assert max(shown.values()) == 2


def test_json_lines_carry_every_field(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = probe(capsys, cnc.url, "--start", "ns=2;s=CNC-01/Monitoring", "--depth", "2", "--json")
    assert status == 0
    nodes = {n["node_id"]: n for n in map(json.loads, out.splitlines())}
    assert nodes[OPERATION_MODE] == {
        "node_id": OPERATION_MODE,
        "path": OPERATION_MODE_PATH,
        "browse_name": "2:OperationMode",
        "node_class": "Variable",
        "depth": 2,
        "data_type": "Int32",
        "value": cnc.values["Monitoring/MachineTool/OperationMode"],
        "status": "Good",
    }
    start = nodes["ns=2;s=CNC-01/Monitoring"]
    assert (start["path"], start["node_class"], start["value"], start["status"]) == (
        "2:Machines/2:CNC-01/2:Monitoring", "Object", None, None
    )  # fmt: skip
    assert nodes["ns=2;s=CNC-01/Monitoring/Spindle/Override"]["value"] == cnc.values["Monitoring/Spindle/Override"]
    assert len(nodes) == 1 + 2 + 6  # Monitoring, MachineTool and Spindle, their six variables


def test_emitted_config_loads_with_every_variable_and_no_password(
    cnc: Cnc, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = probe(
        capsys, cnc.url, "--start", "Machines", "--depth", "6", "--emit-config", "--device-id", "cnc-01"
    )
    assert status == 0
    assert PASSWORD not in out and f"${{{PASSWORD_ENV}}}" in out
    snippet = tmp_path / "device.yaml"
    snippet.write_text(out, encoding="utf-8")
    device = load_yaml_model(snippet, OpcUaDeviceConfig)  # expands ${VAR} as the agent's loader does
    assert (device.id, device.url, device.security.username) == ("cnc-01", cnc.url, USER)
    assert device.security.password is not None and device.security.password.get_secret_value() == PASSWORD
    tags = {t.name: t.node for t in device.tags}
    assert sorted(tags.values()) == sorted(f"ns=2;s=CNC-01/{p}" for p in NODES)
    assert tags["operation_mode"] == OPERATION_MODE
    assert tags["act_program_status"] == "ns=2;s=CNC-01/CncInterface/Channel1/ActProgramStatus"
    assert tags["name"] == "ns=2;s=CNC-01/Production/ActiveProgram/Name"


def test_emitted_config_by_path_holds_the_selection(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = probe(
        capsys, cnc.url, "--start", "Machines", "--depth", "6", "--emit-config", "--by-path",
        "--select", "Machines/CNC-01/Production", "ns=2;s=CNC-01/Monitoring/Spindle/IsRotating",
    )  # fmt: skip
    assert status == 0
    device = OpcUaDeviceConfig.model_validate(yaml.safe_load(out))
    production = "2:Machines/2:CNC-01/2:Production"
    assert [(t.name, t.path, t.node) for t in device.tags] == [
        ("name", f"{production}/2:ActiveProgram/2:Name", None),
        ("state", f"{production}/2:ActiveProgram/2:State", None),
        ("parts_produced", f"{production}/2:PartsProduced", None),
        ("parts_rejected", f"{production}/2:PartsRejected", None),
        ("is_rotating", "2:Machines/2:CNC-01/2:Monitoring/2:Spindle/2:IsRotating", None),
    ]


def test_start_inside_server_object_and_node_budget(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = probe(capsys, cnc.url, "--start", "i=2253", "--depth", "1", "--max-nodes", "4", "--json")
    assert status == 0
    nodes = [json.loads(line) for line in out.splitlines()]
    assert [n["node_id"] for n in nodes[:2]] == ["i=2253", "i=2254"]  # Server, Server/ServerArray
    assert nodes[1]["path"] == "0:Server/0:ServerArray"
    assert len(nodes) == 4
    assert "--max-nodes 4" in err


def test_unreachable_server_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}/"
    status, out, err = probe(capsys, url, "--timeout", "1")
    assert (status, out) == (1, "")
    assert err == f"{url}: cannot connect: connection refused\n"


def test_refused_user_exits_1_with_one_line(
    cnc: Cnc, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    status, out, err = probe(capsys, cnc.url)
    assert (status, out) == (1, "")
    assert err.startswith(f"{cnc.url}: user refused (BadUserAccessDenied);") and err.count("\n") == 1


def test_missing_start_path_exits_1(cnc: Cnc, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = probe(capsys, cnc.url, "--start", "Machines/CNC-09")
    assert (status, err) == (1, "--start Machines/CNC-09: path not found: no 'CNC-09' under Machines\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "-1"], "--depth must be 0 or more"),
        (["--select", "Machines"], "--select, --by-path and --device-id go with --emit-config"),
        (["--start", "i=abc"], "not a node id: i=abc"),
        (["--password-env", "EDGEPROOF_PROBE_UNSET"], "--password-env EDGEPROOF_PROBE_UNSET: the variable is not set"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the last --password-env wins, so the unset one is the one used
    status, out, err = probe(capsys, "opc.tcp://127.0.0.1:4840/", *args)
    assert (status, out, err) == (2, "", message + "\n")


def test_json_and_emit_config_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        probe(capsys, "opc.tcp://127.0.0.1:4840/", "--json", "--emit-config")
    assert exit_.value.code == 2


def test_certificates_rejected_either_way_then_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server_pki, own_pki = tmp_path / "server-pki", tmp_path / "probe-pki"
    secure = ("--security-mode", "SignAndEncrypt", "--pki-dir", str(own_pki), "--start", "Machines", "--depth", "4")
    with serve_cnc(pki_dir=server_pki) as cnc:
        status, out, err = probe(capsys, cnc.url, *secure)
        assert (status, out) == (1, "")
        assert err.startswith(f"{cnc.url}: certificate rejected: server certificate ") and err.count("\n") == 1
        (saved,) = (own_pki / "rejected").iterdir()  # the operator checks it and trusts it
        saved.rename(own_pki / "trusted" / saved.name)
        # The server trusts a certificate, not the probe's (its own: the simulator cannot build an empty trust store).
        shutil.copy(server_pki / "own" / "cert.der", server_pki / "trusted" / "server.der")

        status, out, err = probe(capsys, cnc.url, *secure)
        assert (status, out) == (1, "")
        assert err.startswith(f"{cnc.url}: certificate rejected (BadCertificateUntrusted);") and err.count("\n") == 1

        shutil.copy(own_pki / "own" / "cert.der", server_pki / "trusted" / "probe.der")  # the server's admin does too
        status, out, err = probe(capsys, cnc.url, *secure, "--json")
        assert (status, err) == (0, "")
        values = {n["node_id"]: n["value"] for n in map(json.loads, out.splitlines())}
        assert values[OPERATION_MODE] == cnc.values["Monitoring/MachineTool/OperationMode"]


def _variable(path: str) -> ProbedNode:
    node = ProbedNode(ua.NodeId(85, 0), ua.QualifiedName("Objects", 0), ua.NodeClass.Object, 0, ())
    for depth, name in enumerate(path.split("/"), start=1):
        node = ProbedNode(ua.NodeId(path, 2), ua.QualifiedName(name, 2), ua.NodeClass.Object, depth, None, node)
    node.node_class = ua.NodeClass.Variable
    return node


def test_tag_names_are_snake_case_and_unique() -> None:
    assert [snake_case(n) for n in ("OperationMode", "CNC-01", "HTTPServer", "Spindle1Speed", "主轴 转速")] == [
        "operation_mode", "cnc_01", "http_server", "spindle1_speed", "主轴_转速"
    ]  # fmt: skip
    paths = ["Tool/Name", "Program/Name", "A/Axis/Load", "B/Axis/Load", "Load", "X/Count", "X/Count"]
    assert tag_names([_variable(p) for p in paths]) == [
        "tool_name", "program_name", "a_axis_load", "b_axis_load", "load", "x_count", "x_count_2"
    ]  # fmt: skip
