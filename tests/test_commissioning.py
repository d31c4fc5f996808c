"""Commissioning tools as an integrator runs them: `edgeproof probe modbus` and `edgeproof read`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproof.netutil import free_port_block
from tests.netutil import start_simulator

ROOT = Path(__file__).resolve().parent.parent


def edgeproof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeproof.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.fixture(scope="module")
def plant() -> Iterator[int]:
    """The baseline demo plant (CNC-01, CNC-02 on OPC UA, PLC-01 on Modbus) on a free port block."""
    port_base = free_port_block(12)
    proc = start_simulator("baseline", port_base)
    yield port_base
    proc.terminate()
    proc.wait(20)


def test_probe_shows_registers_and_every_interpretation(plant: int) -> None:
    # PLC-01 (machine index 4): holding 3-4 part counter uint32 ABCD, 7-8 power float32 ABCD
    result = edgeproof(
        "probe", "modbus", "--host", "127.0.0.1", "--port", str(plant + 5), "--address", "3", "--count", "6"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"127.0.0.1:{plant + 5} unit 1 holding 3..8"
    header = next(line for line in lines if line.split()[:2] == ["address", "type"])
    assert header.split()[2:] == ["ABCD", "CDAB", "BADC", "DCBA"]
    counter = next(line.split() for line in lines if re.match(r"\s+3\s+uint32\s", line))
    assert int(counter[2]) >= 150000  # the scenario's counter start, read in the right order (ABCD)
    assert int(counter[3]) != int(counter[2])  # CDAB gives a different number
    power = next(line.split() for line in lines if re.match(r"\s+7\s+float32\s", line))
    assert float(power[2]) >= 0.0 and float(power[2]) <= 45 * 1.1  # rated 45 kW


def test_probe_reports_a_device_that_does_not_answer() -> None:
    result = edgeproof(
        "probe",
        "modbus",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port_block(1)),
        "--address",
        "0",
        "--timeout",
        "0.5",
    )
    assert result.returncode == 1
    assert "cannot connect" in result.stderr


def _config(tmp_path: Path, port_base: int) -> Path:
    text = (ROOT / "configs" / "demo-agent-baseline.yaml").read_text(encoding="utf-8")
    text = re.sub(r"\b150(2\d)\b", lambda m: str(port_base + int(m.group(1)) - 20), text)
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_prints_json_lines_and_exit_0_when_all_good(plant: int, tmp_path: Path) -> None:
    result = edgeproof("read", "--config", str(_config(tmp_path, plant)))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["device"] for r in rows} == {"cnc-01", "cnc-02", "plc-01"}
    assert len(rows) == 8 + 8 + 7  # every configured tag once
    assert all(r["quality"] == "good" and r["reason"] is None for r in rows)
    power = next(r for r in rows if r["tag"] == "power_kw")
    assert isinstance(power["value"], float) and power["timestamp"].endswith("+00:00")
    energy = next(r for r in rows if r["tag"] == "energy_wh")  # the meter's whole Wh since the plant started
    assert isinstance(energy["value"], int) and energy["value"] >= 0
    spindle = next(r for r in rows if r["device"] == "cnc-01" and r["tag"] == "spindle_rotating")
    assert isinstance(spindle["value"], bool) and spindle["source_timestamp"] is not None


def test_read_one_device_and_exit_1_when_a_tag_is_bad(plant: int, tmp_path: Path) -> None:
    path = _config(tmp_path, plant)
    path.write_text(path.read_text(encoding="utf-8").replace("Production/PartsRejected", "No/Such/Node"), "utf-8")
    result = edgeproof("read", "--config", str(path), "--device", "cnc-02")
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["device"] for r in rows} == {"cnc-02"}
    bad = [r for r in rows if r["quality"] == "bad"]
    assert [(r["tag"], r["value"], r["reason"]) for r in bad] == [("rejected", None, "status BadNodeIdUnknown")]
    unknown = edgeproof("read", "--config", str(path), "--device", "nope")
    assert unknown.returncode == 2 and "no device nope" in unknown.stderr
