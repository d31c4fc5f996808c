"""`edgeproof demo` as a user runs it: one command, embedded broker, both phases, report written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproof.demo import truth_summary


def test_demo_runs_both_phases_and_writes_the_evidence(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeproof.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "设备联网率" in proc.stdout and "stored by the ingest" in proc.stdout
    for name in ("evidence.json", "evidence.zh-CN.html", "evidence.en.html", "truth-baseline.json", "truth-post.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "evidence.json").read_text(encoding="utf-8"))
    indicators = {i["key"]: i for i in report["indicators"]}
    networking = indicators["networking_rate"]
    # baseline: CNC-01, CNC-02, PLC-01 of 10 machines; post: all 10
    assert (networking["baseline"]["numerator"], networking["baseline"]["denominator"]) == (3, 10)
    assert networking["baseline"]["band_points"] == 3.0
    assert (networking["post"]["numerator"], networking["post"]["denominator"]) == (10, 10)
    assert networking["post"]["band_points"] == 6.0
    assert indicators["digitalisation_rate"]["baseline"]["value"] == pytest.approx(0.7)
    for phase in ("baseline", "post"):
        measured_ids = [m["machine_id"] for m in report["machines"] if m[phase]["oee"]["value"] is not None]
        truth = truth_summary(json.loads((out / f"truth-{phase}.json").read_text(encoding="utf-8")), measured_ids)
        assert indicators["oee"][phase]["value"] == pytest.approx(truth["oee"], abs=0.02), phase
        assert indicators["availability"][phase]["value"] == pytest.approx(truth["availability"], abs=0.02), phase
    assert "设备联网率" in (out / "evidence.zh-CN.html").read_text(encoding="utf-8")
    assert "Networking rate" in (out / "evidence.en.html").read_text(encoding="utf-8")
