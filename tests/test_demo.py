"""`edgeproof demo` as a user runs it: one command, embedded broker, both phases, report written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    for name in (
        "evidence.json", "evidence.zh-CN.html", "evidence.en.html", "evidence.indicators.csv", "evidence.machines.csv",
        "truth-baseline.json", "truth-post.json", "events-baseline.jsonl", "events-post.jsonl",
    ):  # fmt: skip
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
        assert indicators["capacity_utilisation"][phase]["value"] == pytest.approx(
            truth["capacity_utilisation"], abs=0.02
        ), phase
        # the PLCs' energy meters (PLC-01 before, PLC-01..03 after), within the meter's Wh resolution and lag
        assert indicators["energy_per_good_part"][phase]["value"] == pytest.approx(
            truth["energy_per_good_part"], rel=0.03
        ), phase
    assert "设备联网率" in (out / "evidence.zh-CN.html").read_text(encoding="utf-8")
    assert "Networking rate" in (out / "evidence.en.html").read_text(encoding="utf-8")

    check_record_equals_kpi_recompute(report, out)


def kpi(out: Path, phase: str, start: str, end: str) -> dict[str, Any]:
    """`edgeproof kpi` over the phase's raw event log, the whole window as one period."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgeproof.cli", "kpi", "--config", str(out / f"agent-{phase}.yaml"),
         "--events", str(out / f"events-{phase}.jsonl"), "--from", start, "--to", end, "--by", "window"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [period] = json.loads(proc.stdout)["periods"]
    return period


def same(a: Any, b: Any) -> bool:
    """Equal, numbers up to float summation order."""
    if isinstance(a, bool) or a is None or b is None:
        return a == b
    return bool(a == pytest.approx(b, rel=1e-9, abs=1e-6))


def check_record_equals_kpi_recompute(report: dict[str, Any], out: Path) -> None:
    """The record's numbers are the stored messages' numbers; `edgeproof kpi` replays the raw samples
    through the agent's engine. Both must give the same time elements, counts and ratios."""
    indicators = {i["key"]: i for i in report["indicators"]}
    for phase in ("baseline", "post"):
        window = report[phase]
        period = kpi(out, phase, window["start"], window["end"])
        recomputed = {m["machine_id"]: m for m in period["machines"]}
        record = {m["machine_id"]: m[phase] for m in report["machines"] if m[phase]["buckets"] > 0}
        assert sorted(record) == sorted(recomputed), phase
        for machine_id, side in record.items():
            mine, theirs = side["elements"], recomputed[machine_id]["elements"]
            assert mine.keys() == theirs.keys(), (phase, machine_id)
            for key, value in mine.items():
                assert same(theirs[key], value), (phase, machine_id, key)
            for ratio in ("availability", "performance", "quality", "oee"):
                assert same(recomputed[machine_id]["ratios"][ratio]["value"], side[ratio]["value"]), (
                    phase, machine_id, ratio,
                )  # fmt: skip
        site = period["site"]
        for key in ("oee", "availability", "performance", "quality"):
            assert same(site["ratios"][key]["value"], indicators[key][phase]["value"]), (phase, key)
        networking = site["site_ratios"]["networking_rate"]
        assert (networking["numerator"], networking["denominator"]) == (
            indicators["networking_rate"][phase]["numerator"],
            indicators["networking_rate"][phase]["denominator"],
        ), phase
        nc = site["site_ratios"]["nc_rate_key_processes"]
        assert nc["value"] == indicators["nc_rate_key_processes"][phase]["value"], phase
