"""`python -m simulators` as a real process: the ready line, listening ports, signals, exit codes."""

from __future__ import annotations

import json
import selectors
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from simulators.scenario import demo_scenario_path, load_scenario
from tests.netutil import free_port_block

REPO = Path(__file__).resolve().parents[1]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready_line(proc: subprocess.Popen[str], timeout: float = 40.0) -> dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"no ready line after {timeout}s")
    line = proc.stdout.readline()
    assert line, f"simulator exited: {proc.wait(5)} {proc.stderr.read() if proc.stderr else ''}"
    return json.loads(line)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ready_line_exposed_ports_and_sigterm(tmp_path: Path) -> None:
    base = free_port_block(11)
    truth = tmp_path / "truth.json"
    proc = _spawn("--phase", "baseline", "--port-base", str(base), "--speed", "600", "--until-end",
                  "--truth", str(truth))  # fmt: skip
    try:
        ready = _ready_line(proc)
        assert ready["ready"] is True
        assert ready["clock"]["speed"] == 600.0
        assert ready["clock"]["sim_origin"] == "2026-03-01T21:58:00Z"  # window start 06:00+08:00 minus 120 s
        opcua = {"protocol": "opcua", "host": "127.0.0.1"}
        assert ready["endpoints"] == {
            "CNC-01": {**opcua, "port": base + 1, "url": f"opc.tcp://127.0.0.1:{base + 1}/"},
            "CNC-02": {**opcua, "port": base + 2, "url": f"opc.tcp://127.0.0.1:{base + 2}/"},
            "PLC-01": {"protocol": "modbus", "host": "127.0.0.1", "port": base + 5, "unit": 1},
        }
        assert [p for p in range(base, base + 11) if _listening(p)] == [base + 1, base + 2, base + 5]
        doc = json.loads(truth.read_text())
        assert (doc["phase"], doc["port_base"], doc["exposed"]) == ("baseline", base, ["CNC-01", "CNC-02", "PLC-01"])
        assert doc["clock"] == ready["clock"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_until_end_exits_by_itself(tmp_path: Path) -> None:
    # Only the press is exposed (no OPC UA start-up cost), and the clock starts near the window end.
    text = demo_scenario_path().read_text().replace("exposed: [CNC-01, CNC-02, PLC-01]", "exposed: [PLC-01]")
    scenario_path = tmp_path / "plc-only.yaml"
    scenario_path.write_text(text)
    end = load_scenario(scenario_path).phases["baseline"].window.end
    origin = (end - timedelta(seconds=60)).isoformat()
    clock = json.dumps({"sim_origin": origin, "wall_origin": time.time(), "speed": 600})
    base = free_port_block(11)
    started = time.monotonic()
    proc = _spawn("--scenario", str(scenario_path), "--phase", "baseline", "--port-base", str(base),
                  "--clock", clock, "--until-end")  # fmt: skip
    try:
        ready = _ready_line(proc)
        assert list(ready["endpoints"]) == ["PLC-01"]
        assert ready["clock"]["speed"] == 600.0
        assert proc.wait(timeout=15) == 0  # plant time passes end + 60 s 0.2 wall s after the origin
        assert time.monotonic() - started < 15
        assert not _listening(base + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_scenario_and_unknown_phase_exit_2(tmp_path: Path) -> None:
    text = demo_scenario_path().read_text()
    line = text[: text.index("ideal_cycle_s: 60")].count("\n") + 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("ideal_cycle_s: 60", "ideal_cycle_s: fast", 1))
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "--scenario", str(bad), "--phase", "baseline"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{bad}:{line}: machines[1].ideal_cycle_s: Input should be a valid number" in result.stderr
    assert result.stdout == ""
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "--phase", "nope"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "unknown phase 'nope'; phases: baseline, post" in result.stderr
