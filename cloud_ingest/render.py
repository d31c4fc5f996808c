"""Present an EvidenceReport: self-contained HTML pages (zh-CN, en) and the JSON record."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from cloud_ingest.evidence import LANGS, NO_KPI, NO_MONTH, NO_REGISTER, EvidenceReport, Lang, site_zone

log = logging.getLogger(__name__)

# UI text of the pages; indicator names and definitions travel in the report itself.
TEXT: dict[Lang, dict[str, str]] = {
    "zh-CN": {
        "title": "设备数字化改造前后对比证据",
        "firm": "企业",
        "credit_code": "统一社会信用代码",
        "project": "改造项目编号",
        "contract_no": "合同 / 项目编号",
        "provider": "数字化服务商",
        "project_agents": "项目采集端",
        "industry": "行业",
        "site": "厂区",
        "timezone": "时区",
        "agent": "采集端",
        "agent_version": "采集端版本",
        "baseline": "基线（改造前）",
        "post": "改造后",
        "baseline_short": "基线",
        "post_short": "改造后",
        "window": "评价窗口",
        "generated_at": "生成时间",
        "indicators": "指标对比",
        "indicator": "指标",
        "change": "变化",
        "points": "得分（基线 → 改造后）",
        "provenance": "数据来源",
        "basis": "计算依据（分子 / 分母）",
        "coverage": "数据覆盖率",
        "definitions": "指标定义",
        "non_official": "非官方指标",
        "key_processes": "关键工序数控化",
        "process": "工序",
        "nc": "数控化",
        "machines": "设备",
        "machine_table": "设备明细",
        "machine_id": "设备编号",
        "name": "名称",
        "type": "类型",
        "digital": "数字化",
        "networked": "联网",
        "buckets": "时间桶数",
        "time_elements": "时间要素（小时）与数量",
        "data_quality": "数据质量",
        "messages_received": "收到的消息数",
        "highest_seq": "最大序号",
        "gaps": "序号缺口",
        "no_gaps": "无",
        "missing": "缺失消息数",
        "duplicates": "重复收到（已去重）",
        "dead_letters": "被拒消息（死信）",
        "message_counts": "窗口内消息数（按类型）",
        "kpi_buckets": "计入的 KPI 时间桶",
        "partial": "跨越窗口边界而未计入的时间桶",
        "superseded": "被更新序号取代的时间桶",
        "overlapping": "相互重叠的时间桶",
        "register_source": "资产台账来源",
        "threshold": "联网覆盖率阈值",
        "last_status": "采集端最新状态",
        "online": "在线",
        "offline": "离线",
        "notes": "说明",
        "footnotes": "注",
        "yes": "是",
        "no": "否",
        "measured": "实测",
        "declared": "申报",
        "measured+declared": "实测+申报",
        "none": "无",
        "site_src": "窗口内最新的厂区 KPI（SiteKpi）",
        "birth_src": "采集端上线消息（BirthMessage）",
        "none_src": "无",
        "pp": "个百分点",
        "h": "小时",
        "unit_machines": "台",
        "unit_processes": "道",
        "unit_parts": "件",
        "unit_seconds": "小时",
        "between": "介于",
        "and": "与",
        "flags": "标记",
        "not_in_register": "不在台账中",
        "imported": "导入（手工记录）",
        "unit_months": "个月",
        "unit_kWh/part": "kWh / 件",
        "month": "月份",
        "good": "合格数",
        "produced": "产量",
        "pass_rate": "合格率",
        "register": "设备台账（实测）",
        "key_process": "关键工序",
        "digital_basis": "数字化依据",
        "protocol": "采集协议",
        "first_seen": "首次采集到数据",
        "last_seen": "最后采集到数据",
        "energy_per_part": "单件能耗（kWh/件）",
        "lines": "产线（按工序）",
        "verification": "消息签名",
        "held": "隔离的消息（未使用）",
        "evicted": "采集端声明丢弃的消息",
        "v_verified": "签名已验证",
        "v_unsigned": "未签名",
        "v_pending": "待登记公钥",
        "v_rejected": "签名被拒",
        "vs_imported": "相对导入基线",
        "imported_title": "企业申报导入的数值（非实测）",
        "imported_note": "以下数值由企业从手工记录导入（申报），注明申报人与时间；它们不参与任何实测指标的计算，"
        "仅在“相对导入基线”一栏与实测的改造后数值对照。",
        "value": "数值",
        "period": "期间",
        "source_document": "依据文件",
        "declared_by": "申报人",
        "declared_at": "申报时间",
        "import_file": "导入文件",
        "imported_at": "导入于",
        "whole_plant": "全厂",
    },
    "en": {
        "title": "Before/after evidence of equipment digitalisation",
        "firm": "Firm",
        "credit_code": "Unified social credit code",
        "project": "Retrofit project",
        "contract_no": "Contract / project number",
        "provider": "Service provider",
        "project_agents": "Agents of the project",
        "industry": "Industry",
        "site": "Site",
        "timezone": "Time zone",
        "agent": "Edge agent",
        "agent_version": "Agent version",
        "baseline": "Baseline (before)",
        "post": "Post (after)",
        "baseline_short": "Baseline",
        "post_short": "Post",
        "window": "Window",
        "generated_at": "Generated at",
        "indicators": "Indicators",
        "indicator": "Indicator",
        "change": "Change",
        "points": "Points (baseline → post)",
        "provenance": "Provenance",
        "basis": "Basis (numerator / denominator)",
        "coverage": "Data coverage",
        "definitions": "Definitions",
        "non_official": "non-official",
        "key_processes": "NC of key processes",
        "process": "Process",
        "nc": "NC",
        "machines": "Machines",
        "machine_table": "Machines",
        "machine_id": "Machine",
        "name": "Name",
        "type": "Type",
        "digital": "Digital",
        "networked": "Networked",
        "buckets": "Buckets",
        "time_elements": "Time elements (hours) and counts",
        "data_quality": "Data quality",
        "messages_received": "Messages received",
        "highest_seq": "Highest sequence number",
        "gaps": "Sequence gaps",
        "no_gaps": "none",
        "missing": "Missing messages",
        "duplicates": "Received twice (deduplicated)",
        "dead_letters": "Rejected messages (dead letters)",
        "message_counts": "Messages in the window, by kind",
        "kpi_buckets": "KPI buckets counted",
        "partial": "Buckets straddling a window boundary, left out",
        "superseded": "Buckets superseded by a later sequence number",
        "overlapping": "Overlapping buckets",
        "register_source": "Asset register from",
        "threshold": "Networked coverage threshold",
        "last_status": "Last agent status",
        "online": "online",
        "offline": "offline",
        "notes": "Notes",
        "footnotes": "Notes on missing values",
        "yes": "yes",
        "no": "no",
        "measured": "measured",
        "declared": "declared",
        "measured+declared": "measured + declared",
        "none": "none",
        "site_src": "latest site KPI (SiteKpi) in the window",
        "birth_src": "agent birth message",
        "none_src": "none",
        "pp": "pp",
        "h": "h",
        "unit_machines": "machines",
        "unit_processes": "processes",
        "unit_parts": "parts",
        "unit_seconds": "h",
        "between": "between",
        "and": "and",
        "flags": "Flags",
        "not_in_register": "not in register",
        "imported": "imported (manual records)",
        "unit_months": "months",
        "unit_kWh/part": "kWh / part",
        "month": "Month",
        "good": "Good",
        "produced": "Produced",
        "pass_rate": "Pass rate",
        "register": "Equipment register as measured",
        "key_process": "Key process",
        "digital_basis": "Digital because",
        "protocol": "Protocol",
        "first_seen": "First seen with data",
        "last_seen": "Last seen with data",
        "energy_per_part": "Energy per good part (kWh)",
        "lines": "Lines (by process)",
        "verification": "Message signatures",
        "held": "Messages held apart (not used)",
        "evicted": "Messages the agent declared evicted",
        "v_verified": "verified",
        "v_unsigned": "unsigned",
        "v_pending": "pending key enrolment",
        "v_rejected": "rejected",
        "vs_imported": "vs imported baseline",
        "imported_title": "Figures imported from the firm's manual records (declared, not measured)",
        "imported_note": "The firm imported these figures from its manual records (declared), with who and when. "
        "They enter no measured indicator; they are only set against the measured post value under “vs imported "
        "baseline”.",
        "value": "Value",
        "period": "Period",
        "source_document": "Source document",
        "declared_by": "Declared by",
        "declared_at": "Declared at",
        "import_file": "Imported file",
        "imported_at": "imported",
        "whole_plant": "whole plant",
    },
}

# Reasons and flags produced by edgeproof.indicators and the report, in Chinese.
ZH_REASONS: dict[str, str] = {
    "zero denominator": "分母为零",
    "no planned busy time": "无计划忙碌时间",
    "no data in planned busy time": "计划忙碌时间内无有效数据",
    "no production": "无产量",
    "unknown cycle time": "理想节拍未知",
    "no running time": "无实际生产时间",
    "empty asset register": "资产台账为空",
    "no digital equipment": "无数字化设备",
    "no key processes": "无关键工序",
    NO_KPI: "窗口内无 KPI 数据",
    NO_REGISTER: "库中无资产台账（窗口内无厂区 KPI，亦无上线消息）",
    "performance_over_100": "性能率超过 100%（理想节拍可能配置有误）",
    "running_in_planned_stop": "计划停机期间设备在运行",
    "no power meter": "未装电能表",
    "no good parts": "无合格品",
    NO_MONTH: "窗口内没有有产量的月份",
    "baseline or post undefined": "基线或改造后数值无定义",
    "undefined": "无定义",
}
EN_FLAGS: dict[str, str] = {
    "performance_over_100": "performance above 100 % (ideal cycle time probably wrong)",
    "running_in_planned_stop": "running during planned stop",
}


class Footnotes:
    """Numbers the reasons behind "—" in order of first use, for the list at the page's end."""

    def __init__(self, translate: dict[str, str]) -> None:
        self._translate = translate
        self.items: list[str] = []

    def text(self, reason: str | None) -> str:
        reason = reason or "undefined"
        return self._translate.get(reason, reason)

    def __call__(self, reason: str | None) -> int:
        text = self.text(reason)
        if text not in self.items:
            self.items.append(text)
        return self.items.index(text) + 1


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _kwh(value: float | None) -> str:
    return "—" if value is None else f"{value:,.3f} kWh"


def _signed_kwh(value: float | None) -> str:
    return "—" if value is None else f"{value:+,.3f} kWh"


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:,.2f}"


def _points(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _signed_points(value: float | None) -> str:
    return "—" if value is None else f"{value:+g}"


def template_environment(folder: str) -> Environment:
    """Jinja for the package's HTML templates in `folder`: escaped, and a missing variable is an error."""
    return Environment(
        loader=PackageLoader("cloud_ingest", folder),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: EvidenceReport, lang: Lang) -> str:
    """One self-contained, printable HTML page of the report in `lang`."""
    if lang not in LANGS:
        raise ValueError(f"unsupported language {lang!r}; use one of {', '.join(LANGS)}")
    t = TEXT[lang]
    zone = site_zone(report.site.timezone if report.site else None)

    def when(value: datetime | None) -> str:
        return "—" if value is None else value.astimezone(zone).strftime("%Y-%m-%d %H:%M %z")

    def signed_pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:+.1f} {t['pp']}"

    def flag(name: str) -> str:
        return (ZH_REASONS if lang == "zh-CN" else EN_FLAGS).get(name, name)

    env = template_environment("templates")
    env.filters.update(
        pct=pct,
        num=_num,
        hours=_hours,
        kwh=_kwh,
        signed_kwh=_signed_kwh,
        points=_points,
        signed_points=_signed_points,
        when=when,
        signed_pct=signed_pct,
        flag=flag,
    )
    template = env.get_template("evidence.html.j2")
    footnotes = Footnotes(ZH_REASONS if lang == "zh-CN" else {})
    keys = {i.key for i in report.indicators}
    return template.render(r=report, t=t, lang=lang, fn=footnotes, zh=lang == "zh-CN", keys=keys)


def write_report(report: EvidenceReport, out_dir: str | Path) -> list[Path]:
    """Write evidence.json, evidence.zh-CN.html and evidence.en.html into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "evidence.json"]
    paths[0].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    for lang in LANGS:
        path = out / f"evidence.{lang}.html"
        path.write_text(render_html(report, lang), encoding="utf-8")
        paths.append(path)
    log.info("evidence written agent=%s dir=%s", report.agent_id, out)
    return paths
