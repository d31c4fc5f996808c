"""The record as PDF (text read back with pdftotext) and CSV (parsed back against the JSON)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_ingest.evidence import EvidenceReport
from cloud_ingest.projects import load_project_file
from cloud_ingest.record import build_project_reports, read_csv, write_record
from cloud_ingest.store import Store
from tests.test_projects import CODE, write_yaml
from tests.test_report_evidence import AGENT, seed


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvidenceReport, Path]:
    """The hand-worked report of test_report_evidence, built by project, written once in every format."""
    tmp = tmp_path_factory.mktemp("record")
    with Store(tmp / "ingest.sqlite") as store:
        seed(store)
        [report] = build_project_reports(
            store, load_project_file(write_yaml(tmp)), generated_at=datetime(2024, 7, 1, tzinfo=UTC)
        )
    out = tmp / "out"
    paths = write_record(report, out)
    assert [p.name for p in paths] == [
        "evidence.json", "evidence.zh-CN.html", "evidence.en.html", "evidence.zh-CN.pdf", "evidence.en.pdf",
        "evidence.project.csv", "evidence.indicators.csv", "evidence.machines.csv", "evidence.lines.csv",
        "evidence.months.csv", "evidence.imported.csv",
    ]  # fmt: skip
    return report, out


def pdf_text(path: Path) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True)
    return " ".join(done.stdout.decode("utf-8").split())  # one line: table cells may wrap


def test_chinese_pdf_has_the_figures_and_labels_as_text(written: tuple[EvidenceReport, Path]) -> None:
    _, out = written
    assert (out / "evidence.zh-CN.pdf").read_bytes().startswith(b"%PDF-")
    text = pdf_text(out / "evidence.zh-CN.pdf")
    for expected in (
        "设备数字化改造前后对比证据",
        "设备联网率 25.0% 75.0% +50.0 个百分点 3 → 6 (+3)",  # the networking rate, baseline → post
        "设备综合效率 OEE（ISO 22400-2） 62.1% 74.8% +12.7 个百分点",
        "关键工序数控化率 33.3% 100.0% +66.7 个百分点",
        "统一社会信用代码 " + CODE,
        "企业 苏州示范精密机械有限公司",
        "数字化服务商 苏州某数字化服务商",
        "合同 / 项目编号 SZ-SZH-2024-017",
        "改造项目编号 sz-2024-001",
        "2024-03-01 08:00 +0800 — 2024-03-01 10:00 +0800",
        "产能利用率 65.5% 76.4% +10.9 个百分点",
        "单件能耗（每合格件） —",  # no meter before the retrofit
        "0.046 kWh",  # after it: M2's 26.5 kWh over its 578 good parts
        "月度平均产品合格率 93.6% 98.0%",
        "设备台账（实测）",
        "08:20 +0800 08:30 +0800",  # M2 first and last seen with data (the date wraps in its cell)
        "未签名: 17",
        "数据质量",
    ):
        assert expected in text, expected


def test_english_pdf_has_the_figures_and_labels_as_text(written: tuple[EvidenceReport, Path]) -> None:
    _, out = written
    text = pdf_text(out / "evidence.en.pdf")
    for expected in (
        "Before/after evidence of equipment digitalisation",
        "Networking rate of production 25.0% 75.0% +50.0 pp 3 → 6 (+3)",  # the label wraps in its cell
        "Unified social credit code " + CODE,
        "Service provider 苏州某数字化服务商",
        "Contract / project number SZ-SZH-2024-017",
    ):
        assert expected in text, expected


RATIOS = ("availability", "performance", "quality", "oee", "capacity_utilisation", "energy_per_good_part")


def _num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_csv_has_a_bom_and_parses_back_to_the_json_numbers(written: tuple[EvidenceReport, Path]) -> None:
    _, out = written
    record = json.loads((out / "evidence.json").read_text(encoding="utf-8"))
    for name in ("evidence.project.csv", "evidence.indicators.csv", "evidence.machines.csv"):
        assert (out / name).read_bytes().startswith(b"\xef\xbb\xbf"), name

    rows = read_csv(out / "evidence.indicators.csv")
    assert [r["key"] for r in rows] == [i["key"] for i in record["indicators"]]
    for row, ind in zip(rows, record["indicators"], strict=True):
        assert (row["project_id"], row["agent_id"], row["label_zh"]) == ("sz-2024-001", AGENT, ind["label"]["zh"])
        for window in ("baseline", "post"):
            for field in ("value", "numerator", "denominator", "coverage", "band_points"):
                assert _num(row[f"{window}_{field}"]) == ind[window][field], (ind["key"], window, field)
            assert row[f"{window}_provenance"] == ind[window]["provenance"]
            assert row[f"{window}_null_reason"] == (ind[window]["null_reason"] or "")
        assert _num(row["change"]) == ind["change"]
    net = rows[0]
    assert (net["label_zh"], net["baseline_value"], net["post_value"], net["change"]) == (
        "设备联网率",
        "0.25",
        "0.75",
        "0.5",
    )

    machines = read_csv(out / "evidence.machines.csv")
    assert len(machines) == 2 * len(record["machines"])
    for m in record["machines"]:
        for window in ("baseline", "post"):
            [row] = [r for r in machines if r["machine_id"] == m["machine_id"] and r["window"] == window]
            side = m[window]
            assert row["networked"] == {True: "true", False: "false", None: ""}[side["networked"]]
            assert _num(row["coverage"]) == side["coverage"]
            assert int(row["buckets"]) == side["buckets"]
            for ratio in RATIOS:
                assert _num(row[ratio]) == side[ratio]["value"]
                assert _num(row[f"{ratio}_numerator"]) == side[ratio]["numerator"]
                assert _num(row[f"{ratio}_denominator"]) == side[ratio]["denominator"]
            for key, value in side["elements"].items():
                if isinstance(value, bool):
                    assert row[f"elements.{key}"] == str(value).lower()
                else:
                    assert _num(row[f"elements.{key}"]) == value, (m["machine_id"], window, key)

    lines = read_csv(out / "evidence.lines.csv")
    assert [(r["process"], r["window"]) for r in lines[:2]] == [("turning", "baseline"), ("turning", "post")]
    for line in record["lines"]:
        for window in ("baseline", "post"):
            [row] = [r for r in lines if r["process"] == line["process"] and r["window"] == window]
            assert row["machines"] == " ".join(line["machines"])
            for ratio in ("oee", "capacity_utilisation", "energy_per_good_part"):
                assert _num(row[ratio]) == line[window][ratio]["value"]
    months = read_csv(out / "evidence.months.csv")
    assert [(r["window"], r["month"], _num(r["good"]), _num(r["produced"])) for r in months] == [
        ("baseline", "2024-03", 234, 250),
        ("post", "2024-06", 826, 843),
    ]

    meta = {r["field"]: r["value"] for r in read_csv(out / "evidence.project.csv")}
    assert meta["project_id"] == "sz-2024-001"
    assert meta["credit_code"] == CODE
    assert meta["provider"] == "苏州某数字化服务商"
    assert meta["contract_no"] == "SZ-SZH-2024-017"
    assert datetime.fromisoformat(meta["baseline_start"]) == datetime.fromisoformat(record["baseline"]["start"])
    assert datetime.fromisoformat(meta["post_end"]) == datetime.fromisoformat(record["post"]["end"])
    assert meta["agent_id"] == AGENT


def test_csv_headers_are_bilingual(written: tuple[EvidenceReport, Path]) -> None:
    _, out = written
    head = (out / "evidence.indicators.csv").read_text(encoding="utf-8-sig").splitlines()[0]
    assert head.startswith("改造项目编号 project_id,采集端 agent_id,指标键 key,指标 label_zh,")
    assert "基线数值 baseline_value" in head and "改造后数值 post_value" in head
