"""Before/after evidence from hand-built messages whose indicators are worked out by hand below.

Plant of 4 machines (register): M1 CNC lathe (turning, key), M2 servo press (pressing, key),
M3 torque station (assembly, not key; digital instrument, not acquired), M4 welding cell
(welding, key; plain before the retrofit, PLC-retrofitted and acquired after). Windows are two
hours, 08:00-10:00 +08:00, with hourly buckets.

Baseline (7200 s window):
  M1: POT 7200, PDOT 600 → PBT 6600; APT 2700+2400=5100; PQ 150, SQ 6 → GQ 144; PRU 30 s →
      Σ PRU·PQ 4500, Σ PRU·GQ 4320; observed 7200 → coverage 100 %.
  M2: POT 7200, no data for 5400 s (UNKNOWN) → observed PBT 1800; APT 1200; PQ 100, SQ 10;
      PRU 10 s → 1000 / 900; observed 1800 → coverage 25 % (not networked at 90 %).
  plant: observed PBT 6600+1800 = 8400, APT 6300, Σ PRU·PQ 5500, Σ PRU·GQ 5220, PQ 250, GQ 234
      → A 6300/8400 = 0.75, P 5500/6300, Q 234/250 = 0.936, OEE 5220/8400 = 0.6214.
  site: networked {M1} → 1/4 = 25 % (3 points); digital {M1,M2,M3} → 3/4 = 75 % (6 points);
      networked ÷ digital 1/3; key processes: turning NC (measured), pressing not (M2 acquired but
      not networked), welding not (no NC machine) → 1/3.
Post:
  M1: PBT 6600, APT 3000+2700=5700, PQ 183, SQ 3, PRU 30 → 5490 / 5400.
  M2: PBT 7200, APT 3000+3300=6300, PQ 590, SQ 12, PRU 10 → 5900 / 5780.
  M4: PBT 7200, UNKNOWN 600 → 6600, APT 4200, PQ 70, SQ 2, PRU 60 → 4200 / 4080; observed 6600
      → coverage 91.7 % (networked).
  plant: observed PBT 20400, APT 16200, Σ PRU·PQ 15590, Σ PRU·GQ 15260, PQ 843, GQ 826.
  site: networked {M1,M2,M4} → 75 % (6 points); digital 4/4 = 100 % (6 points); NC 3/3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloud_ingest.declared import DeclaredFigure, DeclaredStore
from cloud_ingest.evidence import NO_KPI, EvidenceReport
from cloud_ingest.record import read_csv, write_csv
from cloud_ingest.report import ReportError, UnknownAgent, build_report, render_html, write_report
from cloud_ingest.store import Store
from edgeproof.contract import (
    BirthMessage,
    Firm,
    MachineKpi,
    RegisterEntry,
    SiteIdentity,
    SiteKpi,
    StateInterval,
    encode,
    topic,
)
from edgeproof.indicators import ProcessInfo, RegisteredMachine, TimeElements, oee, site_ratios

AGENT = "suzhou-demo-01"
CST = timezone(timedelta(hours=8))
BASE = (datetime(2024, 3, 1, 8, tzinfo=CST), datetime(2024, 3, 1, 10, tzinfo=CST))
POST = (datetime(2024, 6, 1, 8, tzinfo=CST), datetime(2024, 6, 1, 10, tzinfo=CST))
FIRM = "苏州示范精密机械有限公司"
PROCESSES = [
    ProcessInfo(process_id="turning", key=True),
    ProcessInfo(process_id="pressing", key=True),
    ProcessInfo(process_id="welding", key=True),
    ProcessInfo(process_id="assembly", key=False),
]


def assets(retrofitted: bool) -> list[RegisterEntry]:
    return [
        RegisterEntry(machine_id="M1", name="CNC lathe 1", machine_type="CNC lathe", process="turning", digital=True,
                      nc_capable=True, acquired=True, protocol="opcua", ideal_cycle_s=30),
        RegisterEntry(machine_id="M2", name="Servo press", machine_type="press", process="pressing", digital=True,
                      nc_capable=True, acquired=True, protocol="modbus", ideal_cycle_s=10),
        RegisterEntry(machine_id="M3", name="Torque station", machine_type="assembly station", process="assembly",
                      digital=True, digital_basis="digital torque instrument", nc_capable=False, acquired=False),
        RegisterEntry(machine_id="M4", name="Welding cell", machine_type="welding machine", process="welding",
                      digital=retrofitted, digital_basis="PLC retrofit" if retrofitted else None,
                      nc_capable=retrofitted, acquired=retrofitted, protocol="modbus" if retrofitted else None,
                      ideal_cycle_s=60 if retrofitted else None),
    ]


class Agent:
    """Numbers messages like the agent does; `skip()` loses some, as a broken uplink would."""

    def __init__(self) -> None:
        self.seq = 0
        self.sent: list[tuple[str, bytes]] = []

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def skip(self, n: int) -> None:
        self.seq += n

    def _send(self, message: Any) -> Any:
        self.sent.append((topic(message.agent_id, message.kind), encode(message)))
        return message

    def birth(self, at: datetime, retrofitted: bool) -> None:
        self._send(BirthMessage(
            agent_id=AGENT, boot_id=f"boot-{at:%m}", seq=self._next(), produced_at=at, agent_version="0.1.0",
            site=SiteIdentity(firm=Firm(name=FIRM, credit_code="91320500MA00000000", industry="C34"),
                              site="一号厂房", timezone="Asia/Shanghai"),
            processes=PROCESSES, assets=assets(retrofitted),
        ))

    def kpi(self, machine: str, start: datetime, hours: float = 1, **values: float) -> None:
        te = TimeElements(window_s=3600 * hours, **values)
        r = oee(te)
        end = start + timedelta(hours=hours)
        self._send(MachineKpi(
            agent_id=AGENT, boot_id="boot", seq=self._next(), produced_at=end + timedelta(seconds=5),
            machine_id=machine, bucket_start=start, bucket_end=end, elements=te,
            availability=r.availability.value, performance=r.performance.value, quality=r.quality.value,
            oee=r.oee.value, flags=r.flags,
        ))

    def site(self, start: datetime, retrofitted: bool, observed: dict[str, float]) -> None:
        machines = [RegisteredMachine(machine_id=a.machine_id, process=a.process, digital=a.digital,
                                      nc_capable=a.nc_capable, acquired=a.acquired) for a in assets(retrofitted)]
        self._send(SiteKpi(
            agent_id=AGENT, boot_id="boot", seq=self._next(), produced_at=start + timedelta(hours=1, seconds=6),
            bucket_start=start, bucket_end=start + timedelta(hours=1), machines=machines, processes=PROCESSES,
            ratios=site_ratios(machines, PROCESSES, observed, 3600, 0.9),
        ))

    def state(self, machine: str, start: datetime, minutes: int) -> None:
        self._send(StateInterval(
            agent_id=AGENT, boot_id="boot", seq=self._next(), produced_at=start + timedelta(minutes=minutes),
            machine_id=machine, state="FAULT", start=start, end=start + timedelta(minutes=minutes), reason="E-STOP",
        ))


def scenario() -> list[tuple[str, bytes]]:
    a = Agent()
    h8, h9 = BASE[0], BASE[0] + timedelta(hours=1)
    a.birth(h8 - timedelta(hours=1), retrofitted=False)                                         # seq 1
    a.kpi("M1", h8, observed_s=3600, pot_s=3600, apt_s=2700, idle_s=900, pq=80, sq=4,
          ideal_run_s=2400, ideal_good_s=2280)                                                  # seq 2
    a.kpi("M1", h9, observed_s=3600, pot_s=3600, pdot_s=600, apt_s=2400, idle_s=600, pq=70, sq=2,
          ideal_run_s=2100, ideal_good_s=2040)                                                  # seq 3
    a.kpi("M2", h8, observed_s=1800, pot_s=3600, unknown_s=1800, apt_s=1200, fault_s=600, pq=100, sq=10,
          ideal_run_s=1000, ideal_good_s=900)                                                   # seq 4
    a.kpi("M2", h9, observed_s=0, pot_s=3600, unknown_s=3600)                                   # seq 5
    a.state("M2", h8 + timedelta(minutes=20), 10)                                               # seq 6
    a.skip(2)                                                                                   # 7, 8 lost
    a.site(h9, retrofitted=False, observed={"M1": 3600, "M2": 0})                               # seq 9
    # A daily roll-up straddles the window: it must be left out, not summed.
    a.kpi("M1", datetime(2024, 3, 1, tzinfo=CST), hours=24, observed_s=86400, pot_s=28800, apt_s=20000,
          pq=600, sq=10, ideal_run_s=18000, ideal_good_s=17700)                                 # seq 10
    # The agent re-sent M2's first bucket after a restart: the later one supersedes, never both.
    a.kpi("M2", h8, observed_s=1800, pot_s=3600, unknown_s=1800, apt_s=1200, fault_s=600, pq=100, sq=10,
          ideal_run_s=1000, ideal_good_s=900)                                                   # seq 11

    p8, p9 = POST[0], POST[0] + timedelta(hours=1)
    a.birth(p8 - timedelta(hours=1), retrofitted=True)                                          # seq 12
    a.kpi("M1", p8, observed_s=3600, pot_s=3600, apt_s=3000, idle_s=600, pq=95, sq=1,
          ideal_run_s=2850, ideal_good_s=2820)
    a.kpi("M1", p9, observed_s=3600, pot_s=3600, pdot_s=600, apt_s=2700, idle_s=300, pq=88, sq=2,
          ideal_run_s=2640, ideal_good_s=2580)
    a.kpi("M2", p8, observed_s=3600, pot_s=3600, apt_s=3000, fault_s=600, pq=280, sq=7,
          ideal_run_s=2800, ideal_good_s=2730, energy_kwh=12.5)                                  # power meter
    a.kpi("M2", p9, observed_s=3600, pot_s=3600, apt_s=3300, idle_s=300, pq=310, sq=5,
          ideal_run_s=3100, ideal_good_s=3050, energy_kwh=14.0)
    a.kpi("M4", p8, observed_s=3600, pot_s=3600, apt_s=1800, idle_s=1800, pq=30, sq=0,
          ideal_run_s=1800, ideal_good_s=1800)
    a.kpi("M4", p9, observed_s=3000, pot_s=3600, unknown_s=600, apt_s=2400, idle_s=600, pq=40, sq=2,
          ideal_run_s=2400, ideal_good_s=2280)                                                  # seq 18
    a.site(p9, retrofitted=True, observed={"M1": 3600, "M2": 3600, "M4": 3000})                 # seq 19
    return a.sent


def seed(store: Store) -> None:
    messages = scenario()
    received = datetime(2024, 6, 2, tzinfo=CST)
    for name, payload in messages:
        assert store.ingest(name, payload, received) == "stored"
    assert store.ingest(*messages[1], received) == "duplicate"  # M1's first bucket delivered twice


GENERATED = datetime(2024, 6, 2, 9, 30, tzinfo=CST)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ingest.sqlite")
    seed(s)
    yield s
    s.close()


@pytest.fixture
def report(store: Store) -> EvidenceReport:
    return build_report(store, AGENT, BASE, POST, generated_at=GENERATED)


def test_site_ratios_before_and_after(report: EvidenceReport) -> None:
    net = report.indicator("networking_rate")
    assert (net.baseline.value, net.post.value, net.change) == (0.25, 0.75, 0.5)
    assert (net.baseline.numerator, net.baseline.denominator, net.post.numerator) == (1, 4, 3)
    assert (net.baseline.band_points, net.post.band_points, net.change_points) == (3.0, 6.0, 3.0)
    assert net.baseline.provenance == net.post.provenance == "measured"
    assert (net.official, net.scored) == (True, True)
    assert net.baseline.coverage == (7200 + 1800) / (2 * 7200)
    assert net.post.coverage == (7200 + 7200 + 6600) / (3 * 7200)
    assert net.label.zh == "设备联网率"

    dig = report.indicator("digitalisation_rate")
    assert (dig.baseline.value, dig.post.value, dig.change) == (0.75, 1.0, 0.25)
    assert (dig.baseline.band_points, dig.post.band_points, dig.change_points) == (6.0, 6.0, 0.0)
    assert dig.baseline.provenance == "declared"

    nod = report.indicator("networked_over_digital")
    assert (nod.baseline.value, nod.post.value, nod.official, nod.scored) == (1 / 3, 0.75, False, False)
    assert nod.baseline.band_points is None

    nc = report.indicator("nc_rate_key_processes")
    assert (nc.baseline.value, nc.post.value, nc.change) == (1 / 3, 1.0, 1.0 - 1 / 3)
    assert [(p.process_id, p.nc, p.basis) for p in nc.baseline.processes or []] == [
        ("turning", True, "measured"), ("pressing", False, "none"), ("welding", False, "none")
    ]
    assert nc.baseline.provenance == "measured+declared"  # pressing measured as not NC, welding declared
    assert nc.post.provenance == "measured"
    assert "No official formula was published" in nc.definition.en
    assert nc.scored is False


def test_plant_oee_sums_time_elements_then_divides(report: EvidenceReport) -> None:
    o = report.indicator("oee")
    assert (o.baseline.value, o.post.value) == (5220 / 8400, 15260 / 20400)
    assert o.change == 15260 / 20400 - 5220 / 8400
    assert (o.baseline.numerator, o.baseline.denominator) == (5220, 8400)
    assert o.baseline.coverage == 8400 / 13800
    assert o.post.coverage == 20400 / 21000
    assert o.baseline.elements is not None and o.baseline.elements.pq == 250 and o.baseline.elements.sq == 16
    assert o.baseline.provenance == "measured"
    assert report.indicator("availability").baseline.value == 0.75
    assert report.indicator("availability").post.value == 16200 / 20400
    assert report.indicator("performance").baseline.value == 5500 / 6300
    assert report.indicator("performance").post.value == 15590 / 16200
    assert report.indicator("quality").baseline.value == 234 / 250
    assert report.indicator("quality").post.value == 826 / 843
    pass_rate = report.indicator("pass_rate")
    assert (pass_rate.baseline.value, pass_rate.post.value) == (234 / 250, 826 / 843)
    # one month in each window: the monthly average is that month's GQ ÷ PQ
    assert (pass_rate.baseline.numerator, pass_rate.baseline.denominator, pass_rate.unit) == (234 / 250, 1, "months")
    assert pass_rate.baseline.months is not None
    assert [(m.month, m.good, m.produced) for m in pass_rate.baseline.months] == [("2024-03", 234, 250)]
    assert "arithmetic mean over the months with production" in pass_rate.definition.en
    assert pass_rate.label.zh == "月度平均产品合格率"


def test_machine_table(report: EvidenceReport) -> None:
    by_id = {m.machine_id: m for m in report.machines}
    assert list(by_id) == ["M1", "M2", "M3", "M4"]
    m1 = by_id["M1"]
    assert (m1.name, m1.machine_type, m1.process) == ("CNC lathe 1", "CNC lathe", "turning")
    assert (m1.baseline.availability.value, m1.baseline.performance.value) == (5100 / 6600, 4500 / 5100)
    assert (m1.baseline.quality.value, m1.baseline.oee.value) == (144 / 150, 4320 / 6600)
    assert (m1.baseline.buckets, m1.baseline.coverage, m1.baseline.networked) == (2, 1.0, True)
    m2 = by_id["M2"]
    assert (m2.baseline.buckets, m2.baseline.coverage, m2.baseline.networked) == (2, 0.25, False)
    assert m2.baseline.elements.unknown_s == 5400
    assert (m2.baseline.oee.value, m2.post.oee.value) == (900 / 1800, 5780 / 7200)
    m3 = by_id["M3"]
    assert (m3.baseline.digital, m3.baseline.coverage, m3.baseline.networked) == (True, 0.0, False)
    assert (m3.baseline.oee.value, m3.baseline.oee.null_reason) == (None, NO_KPI)
    m4 = by_id["M4"]
    assert (m4.name, m4.baseline.digital, m4.post.digital) == ("Welding cell", False, True)
    assert (m4.post.coverage, m4.post.networked) == (6600 / 7200, True)
    assert m4.post.performance.value == 1.0


def test_data_quality(report: EvidenceReport) -> None:
    q = report.data_quality
    assert (q.messages_received, q.highest_seq, q.missing_messages, q.duplicates_received) == (17, 19, 2, 1)
    [gap] = q.sequence_gaps
    assert (gap.first, gap.last, gap.count) == (7, 8, 2)
    assert gap.after == BASE[0] + timedelta(minutes=30)  # the state interval, seq 6
    assert gap.before == BASE[0] + timedelta(hours=2, seconds=6)  # the site KPI, seq 9
    assert q.baseline.message_counts == {"kpi": 5, "site": 1, "state": 1}
    assert q.post.message_counts == {"kpi": 6, "site": 1}
    assert (q.baseline.kpi_buckets, q.baseline.partial_buckets_excluded, q.baseline.superseded_buckets) == (4, 1, 1)
    assert (q.post.kpi_buckets, q.post.partial_buckets_excluded, q.post.superseded_buckets) == (6, 0, 0)
    assert (q.baseline.register_source, q.baseline.networked_min_coverage) == ("site", 0.9)
    assert report.generated_at == GENERATED
    assert report.site is not None and report.site.firm.name == FIRM


def test_register_as_measured(report: EvidenceReport) -> None:
    by_id = {m.machine_id: m for m in report.machines}
    m2, m3, m4 = by_id["M2"], by_id["M3"], by_id["M4"]
    assert (m2.key_process, m2.protocol, m2.digital_basis) == (True, "modbus", None)
    assert (m3.key_process, m3.protocol, m3.digital_basis) == (False, None, "digital torque instrument")
    assert (m4.key_process, m4.protocol, m4.digital_basis) == (True, "modbus", "PLC retrofit")
    # seen = the span of its states that need data: M2's one FAULT interval, 08:20-08:30
    fault = (BASE[0] + timedelta(minutes=20), BASE[0] + timedelta(minutes=30))
    assert (m2.first_seen, m2.last_seen) == fault
    assert (m2.baseline.first_seen, m2.baseline.last_seen) == fault
    assert (m2.post.first_seen, m2.post.last_seen) == (None, None)
    assert (by_id["M1"].first_seen, by_id["M1"].baseline.first_seen) == (None, None)


def test_capacity_utilisation_and_energy_per_good_part(report: EvidenceReport) -> None:
    cap = report.indicator("capacity_utilisation")
    assert (cap.baseline.numerator, cap.baseline.denominator, cap.baseline.value) == (5500, 8400, 5500 / 8400)
    assert cap.post.value == 15590 / 20400
    m1 = next(m for m in report.machines if m.machine_id == "M1")
    assert m1.baseline.capacity_utilisation.value == 4500 / 6600
    energy = report.indicator("energy_per_good_part")
    assert energy.unit == "kWh/part"
    # no meter before the retrofit; after it only M2 has one: its kWh over its own good parts
    assert (energy.baseline.value, energy.baseline.null_reason) == (None, "no power meter")
    assert (energy.post.numerator, energy.post.denominator, energy.post.value) == (26.5, 578, 26.5 / 578)
    by_id = {m.machine_id: m for m in report.machines}
    assert by_id["M2"].post.energy_per_good_part.value == 26.5 / 578
    assert by_id["M2"].post.elements.energy_kwh == 26.5
    assert by_id["M1"].post.energy_per_good_part.null_reason == "no power meter"


def test_lines_sum_their_machines(report: EvidenceReport) -> None:
    lines = {line.process: line for line in report.lines}
    assert list(lines) == ["turning", "pressing", "assembly", "welding"]
    pressing = lines["pressing"]
    assert (pressing.key_process, pressing.machines) == (True, ["M2"])
    assert pressing.post.oee.value == 5780 / 7200
    assert pressing.baseline.coverage == 1800 / 7200
    assert lines["assembly"].post.oee.null_reason == NO_KPI
    assert lines["welding"].post.capacity_utilisation.value == 4200 / 6600


def test_monthly_pass_rate_averages_plant_local_months(tmp_path: Path) -> None:
    """Jan: 90 of 100 good, Feb: 294 of 300 → monthly average 0.94, not the pooled 384/400 = 0.96.

    The February bucket starts at 00:00 +08:00, still January in UTC: months are the site's.
    """
    a = Agent()
    jan, feb = datetime(2024, 1, 31, 22, tzinfo=CST), datetime(2024, 2, 1, 0, tzinfo=CST)
    a.birth(jan - timedelta(hours=1), retrofitted=True)
    a.kpi("M1", jan, observed_s=3600, pot_s=3600, apt_s=3000, pq=100, sq=10, ideal_run_s=3000, ideal_good_s=2700)
    a.kpi("M1", feb, observed_s=3600, pot_s=3600, apt_s=3000, pq=300, sq=6, ideal_run_s=3000, ideal_good_s=2940)
    with Store(tmp_path / "s.sqlite") as store:
        for name, payload in a.sent:
            store.ingest(name, payload)
        r = build_report(store, AGENT, (jan, feb + timedelta(hours=1)), POST)
    pass_rate = r.indicator("pass_rate").baseline
    assert pass_rate.months is not None
    assert [(m.month, m.value) for m in pass_rate.months] == [("2024-01", 0.9), ("2024-02", 0.98)]
    assert (pass_rate.numerator, pass_rate.denominator, pass_rate.value) == (0.9 + 0.98, 2, (0.9 + 0.98) / 2)
    assert r.indicator("quality").baseline.value == 384 / 400
    assert r.indicator("pass_rate").post.null_reason == NO_KPI


def test_data_quality_shows_signatures_and_gaps_per_window(report: EvidenceReport) -> None:
    q = report.data_quality
    assert (q.verification, q.held) == ({"verified": 0, "unsigned": 17}, [])
    [gap] = q.baseline.gaps
    assert (gap.first, gap.last) == (7, 8)
    assert (q.post.gaps, q.baseline.evicted_messages, q.post.evicted_messages) == ([], 0, 0)


def test_report_without_site_kpi_falls_back_to_the_birth_register(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        for name, payload in scenario():
            if not name.endswith("/site"):
                store.ingest(name, payload)
        r = build_report(store, AGENT, BASE, POST)
    assert r.data_quality.baseline.register_source == "birth"
    assert r.indicator("networking_rate").baseline.value == 0.25
    assert r.indicator("digitalisation_rate").post.value == 1.0


def test_bad_windows_and_unknown_agents_are_refused(store: Store) -> None:
    with pytest.raises(ReportError, match="overlap"):
        build_report(store, AGENT, BASE, (BASE[0] + timedelta(hours=1), BASE[1] + timedelta(hours=1)))
    with pytest.raises(ReportError, match="must end after it starts"):
        build_report(store, AGENT, (BASE[1], BASE[0]), POST)
    with pytest.raises(ReportError, match="timezone-aware"):
        build_report(store, AGENT, (BASE[0].replace(tzinfo=None), BASE[1]), POST)
    with pytest.raises(UnknownAgent, match="no messages from agent 'ghost'"):
        build_report(store, "ghost", BASE, POST)


def test_html_in_both_languages(report: EvidenceReport) -> None:
    zh = render_html(report, "zh-CN")
    for text in ("设备联网率", "设备数字化率", "联网设备占数字化设备比例（非官方指标）", "关键工序数控化率",
                 "设备综合效率 OEE（ISO 22400-2）", "可用率", "性能率", "合格率", "月度平均产品合格率",
                 "官方未发布计算公式", FIRM, "25.0%", "75.0%", "+50.0 个百分点", "3 → 6 (+3)", "62.1%", "74.8%",
                 "+12.7 个百分点", "93.6%", "#7–#8 (2)", "实测+申报", "2024-03-01 08:00 +0800"):
        assert text in zh, text
    assert 'title="窗口内无 KPI 数据"' in zh
    en = render_html(report, "en")
    for text in ("Networking rate of production equipment", "Digitalisation rate of production equipment",
                 "Networked share of digital equipment (non-official ratio)", "NC rate of key processes",
                 "OEE, overall equipment effectiveness (ISO 22400-2)", "Availability", "Performance", "Quality",
                 "Monthly average product pass rate", "arithmetic mean over the months",
                 "No official formula was published",
                 "+50.0 pp", "33.3%", "100.0%", "Welding cell", "measured + declared"):
        assert text in en, text
    assert 'title="no KPI data in the window"' in en
    for page in (zh, en):
        assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
        assert "<style>" in page


def test_write_report_writes_json_and_both_pages(report: EvidenceReport, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == ["evidence.json", "evidence.zh-CN.html", "evidence.en.html"]
    assert EvidenceReport.model_validate(json.loads(paths[0].read_text(encoding="utf-8"))) == report
    assert "设备联网率" in paths[1].read_text(encoding="utf-8")
    assert "Networking rate" in paths[2].read_text(encoding="utf-8")


def test_overlapping_buckets_are_counted_under_data_quality(tmp_path: Path) -> None:
    a = Agent()
    h8 = BASE[0]
    a.birth(h8 - timedelta(hours=1), retrofitted=False)
    a.kpi("M1", h8, hours=2, observed_s=7200, pot_s=7200, apt_s=7200)
    a.kpi("M1", h8, hours=0.5, observed_s=1800, pot_s=1800, apt_s=1800)  # inside the 2 h bucket
    a.kpi("M1", h8 + timedelta(hours=1), observed_s=3600, pot_s=3600, apt_s=3600)  # also inside it
    a.kpi("M2", h8, observed_s=3600, pot_s=3600, apt_s=3600)
    with Store(tmp_path / "s.sqlite") as store:
        for name, payload in a.sent:
            store.ingest(name, payload)
        r = build_report(store, AGENT, BASE, POST)
    assert r.data_quality.baseline.overlapping_buckets == 2
    assert r.data_quality.baseline.kpi_buckets == 4


def test_imported_figures_are_shown_apart_with_who_and_when(store: Store, tmp_path: Path) -> None:
    """A declared baseline never replaces or enters a measured number: it travels in `imported`, and the
    indicators only set the measured post value against it, in a column of its own."""
    with DeclaredStore(store.path) as declared:
        declared.add(
            "sz-2024-001",
            [
                DeclaredFigure(window="baseline", indicator="oee", machine_id=None, value=0.5, row=2,
                               source_document="2024年2月生产日报表"),
                DeclaredFigure(window="baseline", indicator="oee", machine_id="M2", value=0.4, row=3),
            ],
            declared_by="李工 生产部", declared_at=datetime(2024, 6, 20, 9, tzinfo=CST), file_name="baseline.csv",
            file_sha256="ab" * 32, imported_by="ops",
        )  # fmt: skip
        imported = declared.imports("sz-2024-001")
    r = build_report(store, AGENT, BASE, POST, generated_at=GENERATED, imported=imported)
    oee_ = r.indicator("oee")
    assert (oee_.baseline.value, oee_.baseline.provenance, oee_.change) == (5220 / 8400, "measured", oee_.change)
    assert (oee_.imported_baseline, oee_.change_from_imported) == (0.5, 15260 / 20400 - 0.5)
    assert r.indicator("availability").imported_baseline is None
    m2 = next(m for m in r.machines if m.machine_id == "M2")
    assert m2.baseline.oee.value == 900 / 1800  # the declared 0.4 for M2 is listed, not used
    zh, en = render_html(r, "zh-CN"), render_html(r, "en")
    assert "企业申报导入的数值（非实测）" in zh and "李工 生产部" in zh and "2024年2月生产日报表" in zh
    assert "相对导入基线 50.0%: +24.8 个百分点" in zh
    assert "Figures imported from the firm&#39;s manual records (declared, not measured)" in en
    write_csv(r, tmp_path)
    rows = read_csv(tmp_path / "evidence.imported.csv")
    assert [(x["provenance"], x["machine_id"], x["value"], x["declared_by"]) for x in rows] == [
        ("imported", "", "0.5", "李工 生产部"),
        ("imported", "M2", "0.4", "李工 生产部"),
    ]
    [oee_row] = [x for x in read_csv(tmp_path / "evidence.indicators.csv") if x["key"] == "oee"]
    assert (oee_row["imported_baseline"], float(oee_row["change_from_imported"])) == ("0.5", 15260 / 20400 - 0.5)
