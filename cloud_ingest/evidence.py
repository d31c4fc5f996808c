"""The before/after evidence report as data: pydantic models and the bilingual vocabulary.

`report.build_report` fills these from the store; `render` turns them into JSON and HTML. The JSON
form (`EvidenceReport.model_dump_json`) is the record of truth; the HTML pages only present it.
"""

from __future__ import annotations

import logging
from datetime import UTC, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, Field

from cloud_ingest.declared import DeclaredImport
from cloud_ingest.projects import Project
from edgeproof.contract import SiteIdentity
from edgeproof.indicators import ProcessNc, Ratio, TimeElements

log = logging.getLogger(__name__)

REPORT_VERSION = 1
Lang = Literal["zh-CN", "en"]
LANGS: tuple[Lang, ...] = ("zh-CN", "en")
Provenance = Literal["measured", "declared", "measured+declared", "imported", "none"]
BasisUnit = Literal["machines", "processes", "seconds", "parts", "months", "kWh/part"]

NO_KPI = "no KPI data in the window"
NO_REGISTER = "no asset register in the store (no SiteKpi in the window, no birth message)"
NO_MONTH = "no month with production in the window"


class Label(BaseModel):
    zh: str
    en: str

    def get(self, lang: Lang) -> str:
        return self.zh if lang == "zh-CN" else self.en


class Window(BaseModel):
    start: AwareDatetime
    end: AwareDatetime
    length_s: float


class MonthRate(BaseModel):
    """The pass rate of one plant-local calendar month (the part of it inside the window)."""

    month: str = Field(description="YYYY-MM in the site's time zone")
    good: float = Field(description="good quantity GQ")
    produced: float = Field(description="produced quantity PQ")
    value: float | None = Field(description="GQ ÷ PQ; None without production")


class Side(BaseModel):
    """One indicator in one window, with what it was computed from."""

    value: float | None
    null_reason: str | None = None
    numerator: float | None = None
    denominator: float | None = None
    band_points: float | None = Field(None, description="points of the official form's band, where it scores")
    coverage: float | None = Field(None, description="share of the relevant time with good data")
    provenance: Provenance
    elements: TimeElements | None = Field(None, description="summed ISO 22400-2 time elements behind it")
    processes: list[ProcessNc] | None = Field(None, description="key processes, for the NC rate")
    months: list[MonthRate] | None = Field(None, description="monthly pass rates, for the monthly average")
    flags: list[str] = Field(default_factory=list)


class Indicator(BaseModel):
    key: str
    label: Label
    official: bool = Field(description="an item of the official 2024 form (or ISO 22400-2 for OEE)")
    scored: bool = Field(description="the official form awards band points for it")
    definition: Label
    numerator_label: Label
    denominator_label: Label
    unit: BasisUnit
    baseline: Side
    post: Side
    change: float | None = Field(description="post − baseline; None if either is undefined")
    change_points: float | None = None
    imported_baseline: float | None = Field(
        None, description="the plant-wide baseline figure imported from manual records, when exactly one was declared"
    )
    change_from_imported: float | None = Field(
        None,
        description="post (measured) − the plant-wide baseline figure imported from manual records, when exactly "
        "one was declared; None otherwise. Never mixed into `change`.",
    )


class Performance(BaseModel):
    """OEE and the other production ratios of a machine or line over one window, with the sums behind them."""

    buckets: int
    observed_s: float
    coverage: float | None
    availability: Ratio
    performance: Ratio
    quality: Ratio
    oee: Ratio
    capacity_utilisation: Ratio
    energy_per_good_part: Ratio
    elements: TimeElements
    flags: list[str] = Field(default_factory=list)


class MachineWindow(Performance):
    """One machine over one window."""

    in_register: bool
    digital: bool | None
    nc_capable: bool | None
    acquired: bool | None
    networked: bool | None = Field(description="None when the machine is not in the window's register")
    first_seen: AwareDatetime | None = Field(description="start of its first state with data in the window")
    last_seen: AwareDatetime | None = Field(description="end of its last state with data in the window")


class MachineComparison(BaseModel):
    """A machine of the equipment register as measured, before and after."""

    machine_id: str
    name: str | None
    machine_type: str | None
    process: str | None
    key_process: bool | None = Field(description="its process is a key process (关键工序)")
    digital_basis: str | None = Field(description="why it is (or is not) digital, as declared")
    protocol: str | None = Field(description="how the agent reads it; None when not acquired")
    first_seen: AwareDatetime | None = Field(description="start of its first state with data, in all stored data")
    last_seen: AwareDatetime | None = Field(description="end of its last state with data, in all stored data")
    baseline: MachineWindow
    post: MachineWindow


class LineComparison(BaseModel):
    """A line (the machines of one process) before and after: time elements summed, then divided."""

    process: str
    key_process: bool | None
    machines: list[str]
    baseline: Performance
    post: Performance


class SeqGap(BaseModel):
    first: int
    last: int
    count: int
    after: AwareDatetime | None = Field(None, description="produced_at of the message before the gap")
    before: AwareDatetime | None = Field(None, description="produced_at of the message after the gap")


class WindowQuality(BaseModel):
    message_counts: dict[str, int] = Field(
        description="messages per kind about the window (bucket / interval start, birth time inside it)"
    )
    kpi_buckets: int = Field(description="MachineKpi buckets summed (inside the window, after supersession)")
    partial_buckets_excluded: int = Field(description="buckets straddling a window boundary, left out")
    superseded_buckets: int = Field(description="same machine and bucket sent again under a later seq")
    overlapping_buckets: int = Field(description="buckets of one machine overlapping another (summed, flagged)")
    gaps: list[SeqGap] = Field(
        default_factory=list, description="sequence gaps whose neighbouring messages were produced around the window"
    )
    evicted_messages: int = Field(0, description="messages the agent declared evicted, produced in the window")
    register_source: Literal["site", "birth", "none"]
    register_bucket: tuple[AwareDatetime, AwareDatetime] | None = None
    networked_min_coverage: float | None


class StatusSnapshot(BaseModel):
    online: bool
    boot_id: str
    at: AwareDatetime | None
    received_at: AwareDatetime


class HeldSummary(BaseModel):
    """A message kept out of the evidence: pending an enrolled key, or rejected."""

    seq: int
    kind: str
    status: Literal["pending", "rejected"]
    reason: str


class DataQuality(BaseModel):
    messages_received: int
    verification: dict[str, int] = Field(
        default_factory=dict, description="stored messages per signature status: verified / unsigned"
    )
    held: list[HeldSummary] = Field(default_factory=list, description="messages held apart, not used")
    highest_seq: int | None
    sequence_gaps: list[SeqGap]
    missing_messages: int
    duplicates_received: int
    dead_letters: int
    baseline: WindowQuality
    post: WindowQuality
    last_status: StatusSnapshot | None


class EvidenceReport(BaseModel):
    report_version: int = REPORT_VERSION
    contract_version: int
    agent_id: str
    agent_version: str | None
    site: SiteIdentity | None
    generated_at: AwareDatetime
    baseline: Window
    post: Window
    indicators: list[Indicator]
    machines: list[MachineComparison]
    lines: list[LineComparison] = Field(default_factory=list)
    data_quality: DataQuality
    notes: list[Label]
    project: Project | None = Field(
        None, description="the retrofit project the record was built for (`edgeproof report --project`)"
    )
    imported: list[DeclaredImport] = Field(
        default_factory=list,
        description="figures the firm declared from manual records (`edgeproof baseline import`), with who and "
        "when: shown apart, never used in a measured number",
    )

    def indicator(self, key: str) -> Indicator:
        for i in self.indicators:
            if i.key == key:
                return i
        raise KeyError(key)


def site_zone(name: str | None) -> tzinfo:
    """The site's time zone (months, page times); UTC when unknown or unset."""
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown site time zone %r; using UTC", name)
        return UTC


def L(zh: str, en: str) -> Label:  # short constructor for the vocabulary below
    return Label(zh=zh, en=en)


LABELS: dict[str, Label] = {
    "networking_rate": L("设备联网率", "Networking rate of production equipment"),
    "digitalisation_rate": L("设备数字化率", "Digitalisation rate of production equipment"),
    "networked_over_digital": L(
        "联网设备占数字化设备比例（非官方指标）", "Networked share of digital equipment (non-official ratio)"
    ),
    "nc_rate_key_processes": L("关键工序数控化率", "NC rate of key processes"),
    "oee": L("设备综合效率 OEE（ISO 22400-2）", "OEE, overall equipment effectiveness (ISO 22400-2)"),
    "availability": L("可用率", "Availability"),
    "performance": L("性能率", "Performance"),
    "quality": L("合格率", "Quality"),
    "pass_rate": L("月度平均产品合格率", "Monthly average product pass rate"),
    "capacity_utilisation": L("产能利用率", "Capacity utilisation"),
    "energy_per_good_part": L("单件能耗（每合格件）", "Energy per good part"),
}

FRACTION_LABELS: dict[str, tuple[Label, Label]] = {
    "networking_rate": (L("联网设备数", "networked equipment"), L("生产设备总数", "all production equipment")),
    "digitalisation_rate": (L("数字化设备数", "digital equipment"), L("生产设备总数", "all production equipment")),
    "networked_over_digital": (
        L("联网的数字化设备数", "networked digital equipment"),
        L("数字化设备数", "digital equipment"),
    ),
    "nc_rate_key_processes": (L("数控化关键工序数", "key processes with NC"), L("关键工序总数", "all key processes")),
    "oee": (L("Σ(理想节拍×合格数)", "Σ(PRU × GQ)"), L("有数据的计划忙碌时间 PBT", "planned busy time with data (PBT)")),
    "availability": (
        L("实际生产时间 APT", "actual production time (APT)"),
        L("有数据的计划忙碌时间 PBT", "planned busy time with data (PBT)"),
    ),
    "performance": (L("Σ(理想节拍×产量)", "Σ(PRU × PQ)"), L("实际生产时间 APT", "actual production time (APT)")),
    "quality": (L("合格数 GQ", "good quantity (GQ)"), L("产量 PQ", "produced quantity (PQ)")),
    "pass_rate": (L("各月合格率之和", "sum of the monthly pass rates"), L("有产量的月数", "months with production")),
    "capacity_utilisation": (
        L("Σ(理想节拍×产量)", "Σ(PRU × PQ)"),
        L("有数据的计划忙碌时间 PBT", "planned busy time with data (PBT)"),
    ),
    "energy_per_good_part": (
        L("电能表计量的有功电量（kWh）", "metered active energy (kWh)"),
        L("装表设备的合格数 GQ", "good quantity of metered machines (GQ)"),
    ),
}


def definitions(threshold: str) -> dict[str, Label]:
    """How each indicator is computed; `threshold` is the networked coverage threshold as text."""
    return {
        "networking_rate": L(
            f"联网生产设备数 ÷ 资产台账中全部生产设备数。设备在评价窗口内由采集端收到的有效数据"
            f"覆盖率不低于 {threshold} 时计为联网（实测）。",
            f"Networked production equipment ÷ all production equipment in the asset register. A machine "
            f"counts as networked when the agent received good data from it for at least {threshold} of the "
            f"window (measured).",
        ),
        "digitalisation_rate": L(
            "数字化生产设备数 ÷ 全部生产设备数，依据资产台账申报"
            "（具备数控/PLC/数字仪表等数字接口，或经改造可数字化观测）。",
            "Digital production equipment ÷ all production equipment, as declared in the asset register "
            "(digital control or interface, or retrofitted to be digitally observable).",
        ),
        "networked_over_digital": L(
            "联网的数字化设备数 ÷ 数字化设备数。非 2024 年版评测指标，仅供与采用该口径的工具对照；"
            "计分以设备联网率（÷ 全部生产设备）为准。",
            "Networked digital equipment ÷ digital equipment. Not a ratio of the official 2024 form; shown "
            "for comparison with tools that use it. The score uses the networking rate (÷ all production "
            "equipment).",
        ),
        "nc_rate_key_processes": L(
            f"具备数控设备的关键工序数 ÷ 全部关键工序数。官方未发布计算公式，本报告采用的定义："
            f"关键工序中至少一台设备具备数控能力（CNC 或 PLC 控制），且若该设备已接入采集，"
            f"则其在窗口内的有效数据覆盖率不低于 {threshold}，该工序即计为数控化；"
            f"未接入采集的数控设备按台账申报计。",
            f"Key processes with numerically controlled equipment ÷ all key processes. No official formula "
            f"was published; definition used here: a key process counts as NC when at least one of its "
            f"machines is NC-capable (CNC or PLC-controlled) and, if it is acquired by the agent, produced "
            f"good data for at least {threshold} of the window; an NC-capable machine that is not acquired "
            f"counts on the register's word (declared).",
        ),
        "oee": L(
            "OEE = Σ(理想节拍×合格数) ÷ 有数据的计划忙碌时间，单一产品时等于 可用率 × 性能率 × 合格率；"
            "多台设备节拍与废品率不同时，汇总 OEE 与汇总后 A、P、Q 的乘积可略有差异。"
            "各设备、各时段的时间要素先求和再相除，不对比率求平均；"
            "无数据的计划时间不计入分母，单列为数据覆盖率。",
            "OEE = Σ(PRU × GQ) ÷ planned busy time with data, which equals A × P × Q for a single product; "
            "over machines with different cycle times and scrap rates the rolled-up OEE can differ slightly "
            "from the product of the rolled-up A, P and Q. Time elements of all machines and buckets are "
            "summed before dividing, ratios are never averaged; planned time without data is left out of the "
            "denominator and shown as coverage.",
        ),
        "availability": L("实际生产时间 APT ÷ 有数据的计划忙碌时间 PBT。", "APT ÷ planned busy time with data (PBT)."),
        "performance": L(
            "Σ(理想节拍 PRU × 产量 PQ) ÷ 实际生产时间 APT；超过 100% 时按实测保留并标记。",
            "Σ(PRU × PQ) ÷ APT; kept as measured and flagged when above 100 %.",
        ),
        "quality": L("合格数 GQ ÷ 产量 PQ。", "Good quantity (GQ) ÷ produced quantity (PQ)."),
        "pass_rate": L(
            "按厂区时区的自然月分别计算 合格数 ÷ 产量（只计窗口内的时间桶），再对有产量的月份取算术平均，"
            "即评价表的月度平均产品合格率；窗口合计的合格率见“合格率”。",
            "GQ ÷ PQ for each calendar month in the site's time zone (only the buckets inside the window), "
            "then the arithmetic mean over the months with production: the form's monthly average pass rate. "
            "The pass rate of the window as a whole is the Quality row.",
        ),
        "capacity_utilisation": L(
            "产能利用率 = Σ(理想节拍×产量) ÷ 有数据的计划忙碌时间，即按理想节拍计的实际产出占计划时间内"
            "可达产能的比例（含废品，等于 可用率 × 性能率）。ISO 22400-2 未定义该指标，此为本报告采用的定义。",
            "Capacity utilisation = Σ(PRU × PQ) ÷ planned busy time with data: the output made, at the ideal "
            "cycle time, as a share of what the planned time allows (scrap included; equals A × P). ISO 22400-2 "
            "defines no such ratio; this is the definition used here.",
        ),
        "energy_per_good_part": L(
            "装有电能表的设备在窗口内计量的有功电量之和 ÷ 这些设备的合格数之和（kWh/件）；"
            "未装表的设备不计入分子和分母。",
            "Active energy metered on the machines with a power meter, summed over the window, ÷ the good "
            "quantity of those machines (kWh per part); machines without a meter are in neither sum.",
        ),
    }


NOTES: list[Label] = [
    L(
        "数据来源：实测 = 采集端从设备读取的数据；申报 = 资产台账中企业的申报；"
        "导入 = 企业从手工记录导入的申报数值（注明申报人与时间），与实测数值分列，不参与实测计算。",
        "Provenance: measured = read from the machines by the edge agent; declared = stated in the asset register; "
        "imported = figures the firm imported from manual records (with who and when), shown apart from measured "
        "numbers and never used in them.",
    ),
    L(
        "评价窗口只统计完全落在窗口内的 KPI 时间桶；跨越窗口边界的时间桶不计入，并在数据质量中列出。",
        "A window sums only the KPI buckets lying wholly inside it; buckets straddling a window boundary are "
        "left out and counted under data quality.",
    ),
    L(
        "分母为零的比率无定义，显示为 “—” 并注明原因，不记为 0 或 100%。",
        "A ratio with a zero denominator is undefined and shown as “—” with the reason, never as 0 or 100 %.",
    ),
]
