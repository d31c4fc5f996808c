"""The evidence record in the formats evaluators file: PDF (one per language) and CSV, and by project.

`write_record` writes everything of one EvidenceReport into a folder: the JSON record of truth and
the HTML pages (`render.write_report`), a PDF of each HTML page (WeasyPrint: Pango lays out the
text, fontconfig finds a CJK font — Debian's fonts-wqy-microhei or fonts-noto-cjk — and the fonts
are embedded with their Unicode maps, so the Chinese can be searched and copied), and three CSV
files, UTF-8 with a byte-order mark so that Excel reads the Chinese:

- evidence.project.csv     the record's metadata: project, firm, credit code, provider, contract, windows
- evidence.indicators.csv  one row per indicator: baseline and post value, numerator, denominator, ...
- evidence.machines.csv    one row per machine and window: register, first/last seen, coverage, A/P/Q/OEE,
                           capacity utilisation, energy per good part, time elements
- evidence.lines.csv       the same per line (the machines of one process), time elements summed
- evidence.months.csv      the monthly pass rates behind the monthly average pass rate
- evidence.imported.csv    figures the firm declared from manual records, with who and when (never measured)

Numbers in the CSV are the JSON's numbers unrounded (ratios as fractions, times in seconds); an
undefined value is an empty cell, its reason in the next column.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cloud_ingest.bilingual import header
from cloud_ingest.declared import DeclaredFigure, DeclaredImport, store_imports
from cloud_ingest.evidence import LANGS, EvidenceReport, Lang, MachineWindow, MonthRate, Performance
from cloud_ingest.projects import Project
from cloud_ingest.render import render_html, write_report
from cloud_ingest.report import build_report
from cloud_ingest.store import Store
from edgeproof.indicators import TimeElements

log = logging.getLogger(__name__)

CSV_ENCODING = "utf-8-sig"  # the BOM tells Excel the file is UTF-8


class PdfUnavailable(RuntimeError):
    """WeasyPrint or its system libraries (Pango) are missing; str() says what to install."""


# -- by project ---------------------------------------------------------------------------------


def build_project_reports(
    store: Store,
    project: Project,
    generated_at: datetime | None = None,
    imported: list[DeclaredImport] | None = None,
) -> list[EvidenceReport]:
    """One EvidenceReport per agent of the project, over the project's windows, carrying the project
    and its active declared imports (from the store's file unless `imported` is given).

    Agents are not combined: each agent has its own asset register, sequence numbers and data
    quality. Raises ReportError or UnknownAgent (an agent of the project with no data yet).
    """
    if imported is None:
        imported = store_imports(store.connection, str(store.path), project.id)
    out = []
    for agent_id in project.agents:
        report = build_report(
            store, agent_id, project.baseline.pair(), project.post.pair(), generated_at, imported=imported
        )
        out.append(report.model_copy(update={"project": project}))
    return out


# -- CSV -----------------------------------------------------------------------------------------

Column = tuple[str, str, Callable[[Any], object]]  # key, Chinese label, getter


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(path: Path, columns: Sequence[Column], rows: Iterable[Any]) -> Path:
    with path.open("w", encoding=CSV_ENCODING, newline="") as f:
        w = csv.writer(f)
        w.writerow([header(key, zh) for key, zh, _ in columns])
        for row in rows:
            w.writerow([_cell(get(row)) for _, _, get in columns])
    return path


def _firm(report: EvidenceReport) -> tuple[str | None, str | None, str | None]:
    if report.project is not None:
        f = report.project.firm
        return f.name, f.credit_code, f.industry
    if report.site is not None:
        return report.site.firm.name, report.site.firm.credit_code, report.site.firm.industry
    return None, None, None


def metadata_rows(report: EvidenceReport) -> list[tuple[str, str, str, object]]:
    """(key, Chinese label, English label, value) of the record's metadata."""
    p = report.project
    name, code, industry = _firm(report)
    site = (p.site if p and p.site else None) or (report.site.site if report.site else None)
    return [
        ("project_id", "改造项目编号", "Retrofit project", p.id if p else None),
        ("firm_name", "企业名称", "Firm", name),
        ("credit_code", "统一社会信用代码", "Unified social credit code", code),
        ("industry", "所属行业", "Industry", industry),
        ("site", "厂区", "Site", site),
        ("provider", "数字化服务商", "Service provider", p.provider if p else None),
        ("contract_no", "合同 / 项目编号", "Contract / project number", p.contract_no if p else None),
        ("project_agents", "项目采集端", "Agents of the project", " ".join(p.agents) if p else None),
        ("agent_id", "采集端", "Edge agent", report.agent_id),
        ("agent_version", "采集端版本", "Agent version", report.agent_version),
        ("timezone", "时区", "Time zone", report.site.timezone if report.site else None),
        ("baseline_start", "基线（改造前）开始", "Baseline start", report.baseline.start),
        ("baseline_end", "基线（改造前）结束", "Baseline end", report.baseline.end),
        ("post_start", "改造后开始", "Post start", report.post.start),
        ("post_end", "改造后结束", "Post end", report.post.end),
        ("generated_at", "生成时间", "Generated at", report.generated_at),
        ("report_version", "报告格式版本", "Report format version", report.report_version),
        ("contract_version", "消息契约版本", "Message contract version", report.contract_version),
    ]


def _side_columns(window: str, zh: str) -> list[Column]:
    def g(attr: str) -> Callable[[Any], object]:
        return lambda ind: getattr(getattr(ind, window), attr)

    return [
        (f"{window}_value", f"{zh}数值", g("value")),
        (f"{window}_null_reason", f"{zh}无定义原因", g("null_reason")),
        (f"{window}_numerator", f"{zh}分子", g("numerator")),
        (f"{window}_denominator", f"{zh}分母", g("denominator")),
        (f"{window}_band_points", f"{zh}得分", g("band_points")),
        (f"{window}_coverage", f"{zh}数据覆盖率", g("coverage")),
        (f"{window}_provenance", f"{zh}数据来源", g("provenance")),
        (f"{window}_flags", f"{zh}标记", lambda ind: " ".join(getattr(ind, window).flags)),
    ]


def indicator_columns(report: EvidenceReport) -> list[Column]:
    pid = report.project.id if report.project else None
    return [
        ("project_id", "改造项目编号", lambda _: pid),
        ("agent_id", "采集端", lambda _: report.agent_id),
        ("key", "指标键", lambda i: i.key),
        ("label_zh", "指标", lambda i: i.label.zh),
        ("label_en", "指标（英文）", lambda i: i.label.en),
        ("official", "官方指标", lambda i: i.official),
        ("scored", "计分", lambda i: i.scored),
        ("unit", "计数单位", lambda i: i.unit),
        ("numerator_label", "分子含义", lambda i: f"{i.numerator_label.zh} / {i.numerator_label.en}"),
        ("denominator_label", "分母含义", lambda i: f"{i.denominator_label.zh} / {i.denominator_label.en}"),
        *_side_columns("baseline", "基线"),
        *_side_columns("post", "改造后"),
        ("change", "变化", lambda i: i.change),
        ("change_points", "得分变化", lambda i: i.change_points),
        ("imported_baseline", "导入的基线（申报）", lambda i: i.imported_baseline),
        ("change_from_imported", "相对导入基线的变化", lambda i: i.change_from_imported),
    ]


def _ratio_columns(name: str, zh: str) -> list[Column]:
    return [
        (name, zh, lambda r: getattr(r[1], name).value),
        (f"{name}_numerator", f"{zh}分子", lambda r: getattr(r[1], name).numerator),
        (f"{name}_denominator", f"{zh}分母", lambda r: getattr(r[1], name).denominator),
        (f"{name}_null_reason", f"{zh}无定义原因", lambda r: getattr(r[1], name).null_reason),
    ]


ELEMENT_ZH = {
    "window_s": "窗口时长（秒）",
    "observed_s": "有效数据时长（秒）",
    "pot_s": "计划运行时间 POT（秒）",
    "pdot_s": "计划停机时间 PDOT（秒）",
    "apt_s": "实际生产时间 APT（秒）",
    "setup_s": "换型调整（秒）",
    "idle_s": "待机（秒）",
    "micro_stop_s": "短暂停机（秒）",
    "fault_s": "故障（秒）",
    "unknown_s": "无数据的计划忙碌时间（秒）",
    "running_in_planned_stop_s": "计划停机内运行（秒）",
    "pq": "产量 PQ",
    "sq": "废品数 SQ",
    "ideal_run_s": "Σ(理想节拍×产量)（秒）",
    "ideal_good_s": "Σ(理想节拍×合格数)（秒）",
    "counter_wraps": "计数器回绕次数",
    "counter_resets": "计数器复位次数",
    "counter_jumps": "被拒的计数跳变次数",
    "counter_duplicates": "重复时间的计数样本",
    "counter_late": "过迟而忽略的计数样本",
    "ideal_known": "理想节拍均已知",
    "energy_kwh": "有功电量（kWh）",
}


def _performance_columns() -> list[Column]:
    """Columns of a Performance (row[1]): coverage, the ratios with their bases, the time elements."""

    def elem(key: str) -> Callable[[Any], object]:
        return lambda r: getattr(r[1].elements, key)

    return [
        ("buckets", "时间桶数", lambda r: r[1].buckets),
        ("observed_s", "有效数据时长（秒）", lambda r: r[1].observed_s),
        ("coverage", "数据覆盖率", lambda r: r[1].coverage),
        *_ratio_columns("availability", "可用率"),
        *_ratio_columns("performance", "性能率"),
        *_ratio_columns("quality", "合格率"),
        *_ratio_columns("oee", "设备综合效率OEE"),
        *_ratio_columns("capacity_utilisation", "产能利用率"),
        *_ratio_columns("energy_per_good_part", "单件能耗kWh"),
        *[(f"elements.{k}", ELEMENT_ZH.get(k, k), elem(k)) for k in TimeElements.model_fields],
        ("flags", "标记", lambda r: " ".join(r[1].flags)),
    ]


def machine_columns(report: EvidenceReport) -> list[Column]:
    """Columns of evidence.machines.csv; a row is (MachineComparison, MachineWindow, window name)."""
    pid = report.project.id if report.project else None

    def mw(attr: str) -> Callable[[Any], object]:
        return lambda r: getattr(r[1], attr)

    return [
        ("project_id", "改造项目编号", lambda _: pid),
        ("agent_id", "采集端", lambda _: report.agent_id),
        ("machine_id", "设备编号", lambda r: r[0].machine_id),
        ("name", "名称", lambda r: r[0].name),
        ("machine_type", "类型", lambda r: r[0].machine_type),
        ("process", "工序", lambda r: r[0].process),
        ("key_process", "关键工序", lambda r: r[0].key_process),
        ("digital_basis", "数字化依据", lambda r: r[0].digital_basis),
        ("protocol", "采集协议", lambda r: r[0].protocol),
        ("first_seen", "首次采集到数据", lambda r: r[0].first_seen),
        ("last_seen", "最后采集到数据", lambda r: r[0].last_seen),
        ("window", "评价窗口", lambda r: r[2]),
        ("in_register", "在台账中", mw("in_register")),
        ("digital", "数字化", mw("digital")),
        ("nc_capable", "具备数控", mw("nc_capable")),
        ("acquired", "已接入采集", mw("acquired")),
        ("networked", "联网", mw("networked")),
        ("window_first_seen", "窗口内首次采集到数据", mw("first_seen")),
        ("window_last_seen", "窗口内最后采集到数据", mw("last_seen")),
        *_performance_columns(),
    ]


def line_columns(report: EvidenceReport) -> list[Column]:
    """Columns of evidence.lines.csv; a row is (LineComparison, Performance, window name)."""
    pid = report.project.id if report.project else None
    return [
        ("project_id", "改造项目编号", lambda _: pid),
        ("agent_id", "采集端", lambda _: report.agent_id),
        ("process", "工序", lambda r: r[0].process),
        ("key_process", "关键工序", lambda r: r[0].key_process),
        ("machines", "设备", lambda r: " ".join(r[0].machines)),
        ("window", "评价窗口", lambda r: r[2]),
        *_performance_columns(),
    ]


def month_rows(report: EvidenceReport) -> list[tuple[str, MonthRate]]:
    pass_rate = report.indicator("pass_rate")
    return [
        (name, m)
        for name, side in (("baseline", pass_rate.baseline), ("post", pass_rate.post))
        for m in side.months or []
    ]


def machine_rows(report: EvidenceReport) -> list[tuple[Any, MachineWindow, str]]:
    return [(m, w, name) for m in report.machines for name, w in (("baseline", m.baseline), ("post", m.post))]


def line_rows(report: EvidenceReport) -> list[tuple[Any, Performance, str]]:
    return [(x, w, name) for x in report.lines for name, w in (("baseline", x.baseline), ("post", x.post))]


def write_csv(report: EvidenceReport, out_dir: str | Path) -> list[Path]:
    """evidence.project.csv, .indicators.csv, .machines.csv, .lines.csv and .months.csv in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_cols: list[Column] = [
        ("field", "字段", lambda r: r[0]),
        ("label", "名称", lambda r: f"{r[1]} / {r[2]}"),
        ("value", "值", lambda r: r[3]),
    ]
    return [
        _write_csv(out / "evidence.project.csv", meta_cols, metadata_rows(report)),
        _write_csv(out / "evidence.indicators.csv", indicator_columns(report), report.indicators),
        _write_csv(out / "evidence.machines.csv", machine_columns(report), machine_rows(report)),
        _write_csv(out / "evidence.lines.csv", line_columns(report), line_rows(report)),
        _write_csv(out / "evidence.months.csv", month_columns(report), month_rows(report)),
        _write_csv(out / "evidence.imported.csv", imported_columns(report), imported_rows(report)),
    ]


def imported_rows(report: EvidenceReport) -> list[tuple[DeclaredImport, DeclaredFigure]]:
    return [(imp, f) for imp in report.imported for f in imp.figures]


def imported_columns(report: EvidenceReport) -> list[Column]:
    """Columns of evidence.imported.csv: the declared figures, each with who declared it and when."""
    pid = report.project.id if report.project else None
    return [
        ("project_id", "改造项目编号", lambda _: pid),
        ("provenance", "数据来源", lambda _: "imported"),
        ("indicator", "指标键", lambda r: r[1].indicator),
        ("window", "评价窗口", lambda r: r[1].window),
        ("machine_id", "设备编号", lambda r: r[1].machine_id),
        ("value", "数值", lambda r: r[1].value),
        ("numerator", "分子", lambda r: r[1].numerator),
        ("denominator", "分母", lambda r: r[1].denominator),
        ("period_start", "期间开始", lambda r: r[1].period_start),
        ("period_end", "期间结束", lambda r: r[1].period_end),
        ("source_document", "依据文件", lambda r: r[1].source_document),
        ("note", "备注", lambda r: r[1].note),
        ("declared_by", "申报人", lambda r: r[0].declared_by),
        ("declared_at", "申报时间", lambda r: r[0].declared_at),
        ("import_id", "导入编号", lambda r: r[0].import_id),
        ("file_name", "导入文件", lambda r: r[0].file_name),
        ("file_sha256", "文件 SHA-256", lambda r: r[0].file_sha256),
        ("imported_at", "导入时间", lambda r: r[0].imported_at),
        ("imported_by", "导入操作人", lambda r: r[0].imported_by),
    ]


def month_columns(report: EvidenceReport) -> list[Column]:
    """Columns of evidence.months.csv, the monthly pass rates behind the monthly average."""
    pid = report.project.id if report.project else None
    return [
        ("project_id", "改造项目编号", lambda _: pid),
        ("agent_id", "采集端", lambda _: report.agent_id),
        ("window", "评价窗口", lambda r: r[0]),
        ("month", "月份", lambda r: r[1].month),
        ("good", "合格数", lambda r: r[1].good),
        ("produced", "产量", lambda r: r[1].produced),
        ("pass_rate", "合格率", lambda r: r[1].value),
    ]


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of one of the CSV files keyed by the English column key (the heading's last word)."""
    with Path(path).open(encoding=CSV_ENCODING, newline="") as f:
        rows = list(csv.reader(f))
    keys = [h.split()[-1] for h in rows[0]]
    return [dict(zip(keys, r, strict=True)) for r in rows[1:]]


# -- PDF ------------------------------------------------------------------------------------------


def render_pdf(report: EvidenceReport, lang: Lang) -> bytes:
    """The HTML page of `lang` laid out as A4 landscape PDF with embedded, text-extractable fonts."""
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as e:  # OSError: the Pango shared libraries are missing
        raise PdfUnavailable(
            f"PDF output needs WeasyPrint and Pango (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0 "
            f"fonts-wqy-microhei): {e}"
        ) from e
    progress = logging.getLogger("weasyprint.progress")
    if progress.level == logging.NOTSET:  # a line per layout step is noise in a report run
        progress.setLevel(logging.WARNING)
    pdf = HTML(string=render_html(report, lang)).write_pdf()
    assert pdf is not None
    return pdf


def write_pdf(report: EvidenceReport, out_dir: str | Path) -> list[Path]:
    """evidence.zh-CN.pdf and evidence.en.pdf in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for lang in LANGS:
        path = out / f"evidence.{lang}.pdf"
        path.write_bytes(render_pdf(report, lang))
        paths.append(path)
    return paths


def write_record(report: EvidenceReport, out_dir: str | Path, pdf: bool = True) -> list[Path]:
    """Everything: JSON, HTML (zh-CN, en), PDF (zh-CN, en; unless pdf=False) and the CSV files."""
    paths = write_report(report, out_dir)
    if pdf:
        paths += write_pdf(report, out_dir)
    paths += write_csv(report, out_dir)
    log.info(
        "record written agent=%s project=%s dir=%s", report.agent_id, report.project and report.project.id, out_dir
    )
    return paths


__all__ = [
    "CSV_ENCODING",
    "PdfUnavailable",
    "build_project_reports",
    "metadata_rows",
    "read_csv",
    "render_pdf",
    "write_csv",
    "write_pdf",
    "write_record",
]
