"""Issue #5 rules on hand-computed timelines: micro-stops, debounce, late reasons, calendar, counters, programs."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connectors.sample import Sample
from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import AgentConfig, Calendar, Kpi, Machine
from edge_agent.counters import CounterTracker
from edge_agent.engine import STALE_REASON, PlantEngine, config_fingerprint
from edge_agent.eventlog import Event, SampleLine, StartLine, TickLine
from edge_agent.kpi import ClosedBucket, ClosedInterval, MachineAccumulator
from edge_agent.recompute import replay
from edge_agent.states import NO_RULE_MATCHED
from edgeproof.indicators import oee, total
from tests.test_recompute import one_machine_raw

TZ = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
DAY = Calendar.model_validate(
    {"shifts": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "14:00"}]}
)


def at(h: int, m: int = 0, s: float = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, h, m, tzinfo=TZ) + timedelta(seconds=s)  # 2026-03-02 is a Monday


def accumulator(cal: Calendar = DAY, cycle: float | None = 60.0, **kw: object) -> MachineAccumulator:
    acc = MachineAccumulator("M1", cycle, ShiftCalendar(cal, TZ), Buckets(60, TZ), **kw)  # type: ignore[arg-type]
    acc.start(at(7))
    return acc


Change = tuple[datetime, str, str | None]


def play(
    acc: MachineAccumulator, changes: list[Change], end: datetime
) -> tuple[list[ClosedInterval], list[ClosedBucket]]:
    out: list[ClosedInterval] = []
    for t, state, reason in changes:
        out += acc.advance(t, state, reason)
    out += acc.advance(end, changes[-1][1], changes[-1][2])
    return out, acc.close_buckets(end)


def hm(iv: ClosedInterval) -> tuple[str, str, str, str | None]:
    return (
        iv.state,
        iv.start.astimezone(TZ).strftime("%H:%M:%S.%f"),
        iv.end.astimezone(TZ).strftime("%H:%M:%S.%f"),
        iv.reason,
    )


# --- micro-stops, debounce, reasons ---------------------------------------------------------


def test_micro_stop_threshold_edges_and_reasons() -> None:
    acc = accumulator(micro_stop_s=120)
    changes: list[Change] = [
        (at(7), "RUNNING", None),
        (at(7, 10), "IDLE", None),
        (at(7, 11, 59), "RUNNING", None),  # 119 s: micro-stop
        (at(7, 20), "IDLE", None),
        (at(7, 22), "RUNNING", None),  # 120 s: not shorter than the threshold, IDLE
        (at(7, 30), "IDLE", "no material"),
        (at(7, 30, 30), "RUNNING", None),  # 30 s with a reason: IDLE
        (at(7, 40), "IDLE", NO_RULE_MATCHED),
        (at(7, 40, 30), "RUNNING", None),  # 30 s, no rule matched is no reason: micro-stop
        (at(7, 50), "IDLE", None),
        (at(7, 51, 59.999999), "RUNNING", None),  # 119.999999 s: micro-stop
    ]
    intervals, (h7,) = play(acc, changes, at(8))
    te = h7.elements
    assert te.micro_stop_s == 119 + 30 + 119.999999
    assert te.idle_s == 120 + 30
    assert te.apt_s == 3600 - 119 - 30 - 119.999999 - 150
    stops = [hm(i)[0] for i in intervals if i.state != "RUNNING"]
    assert stops == ["MICRO_STOP", "IDLE", "IDLE", "MICRO_STOP", "MICRO_STOP"]
    assert [i.reason for i in intervals if i.state != "RUNNING"] == [None, None, "no material", NO_RULE_MATCHED, None]


def test_micro_stop_is_decided_when_the_stop_ends_and_holds_its_bucket() -> None:
    acc = accumulator(micro_stop_s=120)
    acc.advance(at(7), "RUNNING", None)
    acc.advance(at(7, 59), "IDLE", None)
    acc.advance(at(8, 0, 30), "IDLE", None)
    assert acc.close_buckets(at(8, 0, 30)) == []  # the 07:59 stop may still become a micro-stop
    out = acc.advance(at(8, 0, 50), "RUNNING", None)  # 110 s
    assert [hm(i) for i in out] == [("MICRO_STOP", "07:59:00.000000", "08:00:50.000000", None)]
    (h7,) = acc.close_buckets(at(8, 0, 50))
    assert (h7.elements.micro_stop_s, h7.elements.idle_s, h7.elements.apt_s) == (60, 0, 3540)

    other = accumulator(micro_stop_s=120)
    other.advance(at(7), "RUNNING", None)
    other.advance(at(7, 59), "IDLE", None)
    other.advance(at(8, 1), "IDLE", None)  # 120 s reached while still stopped: IDLE, known before it ends
    (h7,) = other.close_buckets(at(8, 1))
    assert (h7.elements.idle_s, h7.elements.micro_stop_s) == (60, 0)


def test_short_run_after_a_stop_does_not_interrupt_it() -> None:
    acc = accumulator(micro_stop_s=120, min_running_s=10)
    changes: list[Change] = [
        (at(7), "RUNNING", None),
        (at(7, 10), "IDLE", None),
        (at(7, 11), "RUNNING", None),  # 9 s jog: part of the stop, which lasts 139 s in all -> IDLE
        (at(7, 11, 9), "IDLE", None),
        (at(7, 12, 19), "RUNNING", None),
        (at(7, 30), "IDLE", None),
        (at(7, 31), "RUNNING", None),  # exactly 10 s: a run; the stops around it are 60 s and 70 s micro-stops
        (at(7, 31, 10), "IDLE", None),
        (at(7, 32, 20), "RUNNING", None),
        (at(7, 40), "IDLE", None),
        (at(7, 41), "RUNNING", None),  # 5 s, then a fault: the run joins the idle stop (65 s, micro)
        (at(7, 41, 5), "FAULT", "E9"),
        (at(7, 45), "RUNNING", None),
    ]
    intervals, (h7,) = play(acc, changes, at(8))
    te = h7.elements
    assert (te.idle_s, te.micro_stop_s, te.fault_s) == (139, 60 + 70 + 65, 235)
    assert te.apt_s == 3600 - 139 - 195 - 235
    assert [hm(i)[:3] for i in intervals] == [
        ("RUNNING", "07:00:00.000000", "07:10:00.000000"),
        ("IDLE", "07:10:00.000000", "07:12:19.000000"),
        ("RUNNING", "07:12:19.000000", "07:30:00.000000"),
        ("MICRO_STOP", "07:30:00.000000", "07:31:00.000000"),
        ("RUNNING", "07:31:00.000000", "07:31:10.000000"),
        ("MICRO_STOP", "07:31:10.000000", "07:32:20.000000"),
        ("RUNNING", "07:32:20.000000", "07:40:00.000000"),
        ("MICRO_STOP", "07:40:00.000000", "07:41:05.000000"),
        ("FAULT", "07:41:05.000000", "07:45:00.000000"),
    ]


def test_late_reason_applies_to_the_whole_stop() -> None:
    acc = accumulator(micro_stop_s=120)
    changes: list[Change] = [
        (at(7), "IDLE", NO_RULE_MATCHED),
        (at(7, 0, 30), "IDLE", "E5"),  # a real reason 30 s in: the 60 s stop is reasoned, so IDLE
        (at(7, 1), "RUNNING", None),
        (at(7, 30), "FAULT", None),
        (at(7, 40), "FAULT", "E42"),  # the alarm code ten minutes into the fault
        (at(7, 45), "FAULT", "E43"),  # the first reason stays
        (at(8, 5), "RUNNING", None),
    ]
    intervals, (h7,) = play(acc, changes, at(8, 10))
    assert [hm(i) for i in intervals if i.state != "RUNNING"] == [
        ("IDLE", "07:00:00.000000", "07:01:00.000000", "E5"),
        ("FAULT", "07:30:00.000000", "08:05:00.000000", "E42"),
    ]
    assert (h7.elements.idle_s, h7.elements.micro_stop_s, h7.elements.fault_s) == (60, 0, 1800)


def test_micro_stops_and_setup_against_performance() -> None:
    changes: list[Change] = [
        (at(7), "RUNNING", None),
        (at(7, 10), "IDLE", None),
        (at(7, 11), "RUNNING", None),
        (at(7, 20), "SETUP", None),
        (at(7, 30), "RUNNING", None),
    ]
    iso = accumulator(micro_stop_s=120)
    tpm = accumulator(micro_stop_s=120, micro_stop_loss="performance", setup_loss="performance")
    for acc in (iso, tpm):
        acc.count(at(7), 0, None)
        acc.count(at(7, 59), 50, None)
    (a,) = play(iso, changes, at(8))[1]
    (b,) = play(tpm, changes, at(8))[1]
    assert (a.elements.apt_s, a.elements.micro_stop_s, a.elements.setup_s) == (2940, 60, 600)
    assert (b.elements.apt_s, b.elements.micro_stop_s, b.elements.setup_s) == (3600, 60, 600)
    ra, rb = oee(a.elements), oee(b.elements)
    assert (ra.availability.value, ra.performance.value) == (2940 / 3600, 3000 / 2940)
    assert (rb.availability.value, rb.performance.value) == (1.0, 3000 / 3600)
    assert ra.oee.value == rb.oee.value == 3000 / 3600  # where a loss is booked never changes OEE


def test_stop_across_a_bucket_boundary_is_split_between_buckets() -> None:
    acc = accumulator(micro_stop_s=120)
    intervals, (h7, h8) = play(
        acc, [(at(7), "RUNNING", None), (at(7, 50), "FAULT", "E1"), (at(8, 20), "RUNNING", None)], at(9)
    )
    assert (h7.elements.fault_s, h8.elements.fault_s, h8.elements.apt_s) == (600, 1200, 2400)
    assert [hm(i) for i in intervals][1] == ("FAULT", "07:50:00.000000", "08:20:00.000000", "E1")


# --- calendar -------------------------------------------------------------------------------


def _hhmm(segs: tuple[tuple[datetime, datetime, str], ...], tz: ZoneInfo = TZ) -> list[tuple[str, str, str]]:
    return [(a.astimezone(tz).strftime("%d %H:%M"), b.astimezone(tz).strftime("%d %H:%M"), s) for a, b, s in segs]


def test_holiday_has_no_shift_but_the_night_shift_before_it_runs_on() -> None:
    cal = Calendar.model_validate(
        {
            "shifts": [
                {"days": ["mon", "tue"], "start": "06:00", "end": "14:00"},
                {"days": ["sun"], "start": "22:00", "end": "06:00"},
            ],
            "holidays": ["2026-03-02"],
        }
    )
    sc = ShiftCalendar(cal, TZ)
    assert _hhmm(sc.segments(at(0), at(0, day=3))) == [
        ("02 00:00", "02 06:00", "work"),
        ("02 06:00", "03 00:00", "off"),
    ]
    assert sc.status_at(at(7, day=3)) == "work"


def test_planned_downtime_is_a_planned_stop_inside_shifts_only() -> None:
    cal = DAY.model_copy(
        update={
            "planned_downtime": Calendar.model_validate(
                {
                    "planned_downtime": [
                        {"start": "2026-03-03T10:00", "end": "2026-03-03T11:30", "reason": "maintenance"},
                        {"start": "2026-03-03T13:30", "end": "2026-03-03T15:00"},
                    ]
                }
            ).planned_downtime
        }
    )
    sc = ShiftCalendar(cal, TZ)
    assert _hhmm(sc.segments(at(6, day=3), at(16, day=3))) == [
        ("03 06:00", "03 10:00", "work"),
        ("03 10:00", "03 11:30", "break"),
        ("03 11:30", "03 13:30", "work"),
        ("03 13:30", "03 14:00", "break"),
        ("03 14:00", "03 16:00", "off"),
    ]
    acc = MachineAccumulator("M1", 60.0, sc, Buckets(60, TZ))
    acc.start(at(10, day=3))
    intervals, buckets = play(acc, [(at(10, day=3), "RUNNING", None)], at(15, day=3))
    by_hour = {b.start.astimezone(TZ).hour: b.elements for b in buckets}
    assert [(by_hour[h].pot_s, by_hour[h].pdot_s, by_hour[h].apt_s) for h in (10, 11, 12, 13, 14)] == [
        (3600, 3600, 0),
        (3600, 1800, 1800),
        (3600, 0, 3600),
        (3600, 1800, 1800),
        (0, 0, 0),
    ]
    assert by_hour[10].running_in_planned_stop_s == 3600
    assert [hm(i)[:3] for i in intervals] == [
        ("PLANNED_STOP", "10:00:00.000000", "11:30:00.000000"),
        ("RUNNING", "11:30:00.000000", "13:30:00.000000"),
        ("PLANNED_STOP", "13:30:00.000000", "14:00:00.000000"),
    ]
    with pytest.raises(ValidationError, match="without a zone"):
        Calendar.model_validate(
            {"planned_downtime": [{"start": "2026-03-03T10:00+08:00", "end": "2026-03-03T11:00+08:00"}]}
        )


def _bucket_lengths(buckets: Buckets, first: datetime, until: datetime) -> list[float]:
    t, out = buckets.start_of(first), []
    while t < until:
        end = buckets.end_of(t)
        out.append((end - t).total_seconds())
        t = end
    return out


def test_dst_days_in_berlin_have_23_and_25_hours() -> None:
    daily = Buckets(1440, BERLIN)
    spring, autumn = datetime(2026, 3, 29, 12, tzinfo=BERLIN), datetime(2026, 10, 25, 12, tzinfo=BERLIN)
    assert daily.start_of(spring) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert (daily.end_of(daily.start_of(spring)) - daily.start_of(spring)).total_seconds() == 82_800
    assert (daily.end_of(daily.start_of(autumn)) - daily.start_of(autumn)).total_seconds() == 90_000
    hourly = Buckets(60, BERLIN)
    autumn_hours = _bucket_lengths(
        hourly, datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC)
    )
    assert autumn_hours == [3600.0] * 25  # 02:00 CEST and 02:00 CET each start a bucket
    assert hourly.start_of(datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == datetime(2026, 10, 25, 1, tzinfo=UTC)
    quarter = _bucket_lengths(
        Buckets(15, BERLIN), datetime(2026, 3, 29, 0, 45, tzinfo=UTC), datetime(2026, 3, 29, 1, 15, tzinfo=UTC)
    )
    assert quarter == [900.0, 900.0]  # 01:45 CET -> 03:00 CEST -> 03:15 CEST


def test_dst_night_shift_and_whole_day_accounting() -> None:
    night = ShiftCalendar(
        Calendar.model_validate({"shifts": [{"days": ["sat"], "start": "22:00", "end": "06:00"}]}), BERLIN
    )

    def planned_s(day: int, month: int) -> float:
        segs = night.segments(
            datetime(2026, month, day, 12, tzinfo=BERLIN), datetime(2026, month, day + 1, 12, tzinfo=BERLIN)
        )
        return sum((b - a).total_seconds() for a, b, s in segs if s == "work")

    assert planned_s(28, 3) == 7 * 3600  # 22:00 CET -> 06:00 CEST
    assert planned_s(24, 10) == 9 * 3600  # 22:00 CEST -> 06:00 CET
    always = ShiftCalendar(
        Calendar.model_validate({"shifts": [{"days": ["sun"], "start": "00:00", "end": "00:00"}]}), BERLIN
    )
    acc = MachineAccumulator("M1", None, always, Buckets(1440, BERLIN))
    acc.start(datetime(2026, 10, 25, 12, tzinfo=BERLIN))
    _, (day,) = play(
        acc, [(datetime(2026, 10, 24, 22, tzinfo=UTC), "RUNNING", None)], datetime(2026, 10, 25, 23, tzinfo=UTC)
    )
    assert (day.elements.window_s, day.elements.pot_s, day.elements.apt_s) == (90_000, 90_000, 90_000)


def _config(kpi: dict[str, object], shifts: list[dict[str, object]]) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"id": "a"},
            "site": {"name": "s", "firm": {"name": "f"}},
            "machines": [{"id": "M1", "name": "m", "type": "t", "digital": True}],
            "calendar": {"shifts": shifts},
            "kpi": kpi,
        }
    )


def test_buckets_aligned_to_shift_starts() -> None:
    shifts = [
        {"days": ["mon"], "start": s, "end": e} for s, e in (("06:00", "14:00"), ("14:00", "22:00"), ("22:00", "06:00"))
    ]
    config = _config({"bucket_minutes": 480, "bucket_align": "shift"}, shifts)
    b = Buckets.configured(config.kpi, config.calendar, TZ)
    assert b.start_of(at(3)) == at(22, day=1) and b.end_of(at(22, day=1)) == at(6)
    assert b.start_of(at(14)) == at(14) and b.end_of(at(14)) == at(22)
    assert Buckets.configured(Kpi(bucket_minutes=480), config.calendar, TZ).start_of(at(3)) == at(0)
    with pytest.raises(ValidationError, match="14:30 is not on the 480-minute bucket grid from 06:00"):
        _config(
            {"bucket_minutes": 480, "bucket_align": "shift"},
            [shifts[0], {"days": ["mon"], "start": "14:30", "end": "22:00"}],
        )


# --- counters -------------------------------------------------------------------------------


def test_counter_wraps_resets_and_implausible_jumps() -> None:
    c32 = CounterTracker(32)
    assert [c32.update(v) for v in (4_294_967_290, 5)] == [0, 11] and c32.wraps == 1
    t0 = at(7)
    c = CounterTracker(32, jump_factor=3.0, jump_min=10)
    steps = [(100, 0), (110, 60), (121, 120), (151, 720), (182, 1320), (190, 1380)]
    deltas = [c.update(v, t0 + timedelta(seconds=s), 60.0) for v, s in steps]
    # limit = max(10, 3 x elapsed / 60 s): 60 s -> 10, 600 s -> 30; a rejected value becomes the baseline
    assert deltas == [0, 10, 0, 30, 0, 8]
    assert c.jumps == 2
    assert c.update(5, t0 + timedelta(seconds=1440), 60.0) == 5 and c.resets == 1
    assert c.update(1_000_000, t0 + timedelta(seconds=1441), None) == 999_995  # no cycle time: nothing to check
    c16 = CounterTracker(16)
    assert [c16.update(v, t0 + timedelta(seconds=s), 60.0) for v, s in ((65530, 0), (3, 60))] == [0, 9]
    assert c16.wraps == 1


def test_counts_out_of_order_within_lateness_duplicates_and_late_samples() -> None:
    acc = accumulator(counter_bits=16, max_lateness_s=30)
    acc.advance(at(7), "RUNNING", None)
    acc.count(at(7), 65530, None)
    acc.count(at(7, 0, 20), 4, None)  # arrives before the 07:00:10 sample
    acc.count(at(7, 0, 10), 65535, None)
    acc.count(at(7, 0, 10), 65535, None)  # the same sample again
    acc.advance(at(7, 1), "RUNNING", None)
    assert acc.close_buckets(at(7, 1)) == []
    acc.count(at(7, 0, 5), 65533, None)  # older than a processed sample: too late to be put in order
    acc.count(at(7, 0, 20), 4, None)  # a duplicate of a processed sample
    acc.count(at(7, 30), 14, None)
    acc.advance(at(8, 0, 30), "RUNNING", None)
    (h7,) = acc.close_buckets(at(8, 0, 30))
    te = h7.elements
    # in order: 65530 -> 65535 -> 4 (wrap) -> 14: 5 + 5 + 10 parts
    assert (te.pq, te.counter_wraps, te.counter_resets, te.counter_duplicates, te.counter_late) == (20, 1, 0, 2, 1)


def test_rejected_jump_is_counted_and_flagged() -> None:
    acc = accumulator()
    acc.advance(at(7), "RUNNING", None)
    for s, v in ((0, 100), (60, 105), (120, 5000), (180, 5004)):
        acc.count(at(7, 0, s), v, None)
    acc.advance(at(8), "RUNNING", None)
    (h7,) = acc.close_buckets(at(8))
    assert (h7.elements.pq, h7.elements.counter_jumps) == (9, 1)
    assert "counter_jumps_rejected" in oee(h7.elements).flags


def test_ideal_run_time_follows_the_program_of_each_part() -> None:
    machine = Machine.model_validate(
        {
            "id": "M1",
            "name": "m",
            "type": "t",
            "digital": True,
            "ideal_cycle_s": 60,
            "program": "prog",
            "ideal_cycle_by_program": {"O1001": 42.0, 2002: 90.0},
        }
    )
    assert machine.ideal_cycle_by_program == {"O1001": 42.0, "2002": 90.0}
    acc = MachineAccumulator.for_machine(machine, Kpi(max_lateness_s=0), ShiftCalendar(DAY, TZ), Buckets(60, TZ))
    acc.start(at(7))
    acc.advance(at(7), "RUNNING", None)

    def prog(value: object) -> str | None:
        return acc.program_in({"prog": Sample("d", "prog", value, True, at(7))})  # type: ignore[arg-type]

    assert prog(2002) == "2002" and acc.program_in({}) is None
    acc.count(at(7), 0, 0, prog("O1001"))
    acc.count(at(7, 10), 10, 0, prog("O1001"))
    acc.count(at(7, 20), 15, 1, prog(2002))
    acc.count(at(7, 30), 17, 1, prog("O9999"))  # not in the table: the machine's 60 s
    _, (h7,) = play(acc, [(at(7), "RUNNING", None)], at(8))
    te = h7.elements
    assert (te.pq, te.sq) == (17, 1)
    assert te.ideal_run_s == 42 * 10 + 90 * 5 + 60 * 2
    assert te.ideal_good_s == 990 - 90
    assert oee(te).oee.value == 900 / 3600


def test_unknown_program_without_fallback_makes_performance_null() -> None:
    acc = accumulator(cycle=None, ideal_cycle_by_program={"O1001": 42.0})
    acc.advance(at(7), "RUNNING", None)
    acc.count(at(7), 0, None, "O1001")
    acc.count(at(7, 10), 10, None, "O1001")
    acc.count(at(7, 20), 12, None, "O7")
    _, (h7,) = play(acc, [(at(7), "RUNNING", None)], at(8))
    assert (h7.elements.pq, h7.elements.ideal_run_s, h7.elements.ideal_known) == (12, 420, False)
    r = oee(h7.elements)
    assert r.performance.value is None and r.performance.null_reason == "unknown cycle time"


def test_holiday_date_validates_as_local_date() -> None:
    holidays = Calendar.model_validate({"holidays": ["2026-10-01", {"date": "2026-10-02", "name": "国庆"}]}).holidays
    assert [(h.date, h.name) for h in holidays] == [(date(2026, 10, 1), None), (date(2026, 10, 2), "国庆")]
    # unnamed holidays and breaks dump as before they had names: older logs keep their config fingerprint
    assert Calendar.model_validate({"holidays": ["2026-10-01"]}).model_dump(mode="json")["holidays"] == ["2026-10-01"]
    assert CALENDAR_REASONS.model_dump(mode="json")["shifts"][0]["breaks"] == [
        {"start": "08:00:00", "end": "08:15:00", "name": "tea"},
        {"start": "11:30:00", "end": "12:00:00"},
    ]


# --- calendar reason codes ------------------------------------------------------------------

CALENDAR_REASONS = Calendar.model_validate(
    {
        "shifts": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "06:00",
                "end": "14:00",
                "breaks": [{"start": "08:00", "end": "08:15", "name": "tea"}, {"start": "11:30", "end": "12:00"}],
            }
        ],
        "holidays": [{"date": "2026-03-04", "name": "spring festival"}, "2026-03-05"],
        "planned_downtime": [
            {"start": "2026-03-03T10:00", "end": "2026-03-03T11:30", "reason": "maintenance"},
            {"start": "2026-03-03T11:20", "end": "2026-03-03T11:40"},  # overlaps both the one above and a break
        ],
    }
)


def _spans(spans: tuple[tuple[datetime, datetime, str, str | None], ...]) -> list[tuple[str, str, str, str | None]]:
    return [(*_hhmm(((a, b, s),))[0], r) for a, b, s, r in spans]


def test_calendar_spans_carry_reason_codes() -> None:
    sc = ShiftCalendar(CALENDAR_REASONS, TZ)
    assert _spans(sc.spans(at(5, day=3), at(15, day=3))) == [
        ("03 05:00", "03 06:00", "off", "no_shift"),
        ("03 06:00", "03 08:00", "work", None),
        ("03 08:00", "03 08:15", "break", "break:tea"),
        ("03 08:15", "03 10:00", "work", None),
        ("03 10:00", "03 11:30", "break", "planned_downtime:maintenance"),  # the first listed wins 11:20-11:30
        ("03 11:30", "03 11:40", "break", "planned_downtime"),  # planned downtime wins over the break
        ("03 11:40", "03 12:00", "break", "break"),
        ("03 12:00", "03 14:00", "work", None),
        ("03 14:00", "03 15:00", "off", "no_shift"),
    ]
    # Tuesday 14:00 to Friday 06:00: off all along, the two holidays (local dates) with their own reason
    assert _spans(sc.spans(at(14, day=3), at(6, day=6))) == [
        ("03 14:00", "04 00:00", "off", "no_shift"),
        ("04 00:00", "05 00:00", "off", "holiday:spring festival"),
        ("05 00:00", "06 00:00", "off", "holiday"),
        ("06 00:00", "06 06:00", "off", "no_shift"),
    ]
    assert _hhmm(sc.segments(at(14, day=3), at(6, day=6))) == [("03 14:00", "06 06:00", "off")]  # status only
    assert sc.at(at(11, 35, day=3)) == ("break", "planned_downtime")


def test_calendar_stops_reach_the_state_intervals_with_their_reasons() -> None:
    acc = MachineAccumulator("M1", 60.0, ShiftCalendar(CALENDAR_REASONS, TZ), Buckets(60, TZ))
    acc.start(at(5, day=3))
    changes: list[Change] = [
        (at(5, day=3), "RUNNING", None),
        (at(7, 50, day=3), "FAULT", "E7"),  # a fault running into the tea break: the machine's reason around it
        (at(8, 30, day=3), "RUNNING", None),
    ]
    intervals, buckets = play(acc, changes, at(15, day=3))
    assert [hm(i) for i in intervals] == [
        ("NOT_SCHEDULED", "05:00:00.000000", "06:00:00.000000", "no_shift"),
        ("RUNNING", "06:00:00.000000", "07:50:00.000000", None),
        ("FAULT", "07:50:00.000000", "08:00:00.000000", "E7"),
        ("PLANNED_STOP", "08:00:00.000000", "08:15:00.000000", "break:tea"),
        ("FAULT", "08:15:00.000000", "08:30:00.000000", "E7"),
        ("RUNNING", "08:30:00.000000", "10:00:00.000000", None),
        # one PLANNED_STOP state, three calendar reasons: three intervals
        ("PLANNED_STOP", "10:00:00.000000", "11:30:00.000000", "planned_downtime:maintenance"),
        ("PLANNED_STOP", "11:30:00.000000", "11:40:00.000000", "planned_downtime"),
        ("PLANNED_STOP", "11:40:00.000000", "12:00:00.000000", "break"),
        ("RUNNING", "12:00:00.000000", "14:00:00.000000", None),
    ]
    # reasons split intervals, not time: 8 h planned, 15 + 90 + 10 + 20 min of planned stops
    te = total(b.elements for b in buckets)
    assert len(buckets) == 10
    assert (te.pot_s, te.pdot_s, te.fault_s, te.apt_s) == (28800, 8100, 1500, 19200)
    assert te.running_in_planned_stop_s == 7200  # 10:00-12:00 running through the planned stops

    holidays = MachineAccumulator("M1", 60.0, ShiftCalendar(CALENDAR_REASONS, TZ), Buckets(60, TZ))
    holidays.start(at(14, day=3))
    intervals, _ = play(holidays, [(at(14, day=3), "IDLE", None)], at(7, day=6))
    assert [hm(i) for i in intervals] == [
        ("NOT_SCHEDULED", "14:00:00.000000", "00:00:00.000000", "no_shift"),
        ("NOT_SCHEDULED", "00:00:00.000000", "00:00:00.000000", "holiday:spring festival"),
        ("NOT_SCHEDULED", "00:00:00.000000", "00:00:00.000000", "holiday"),
        ("NOT_SCHEDULED", "00:00:00.000000", "06:00:00.000000", "no_shift"),
    ]
    assert [i.end - i.start for i in intervals] == [timedelta(hours=h) for h in (10, 24, 24, 6)]


# --- counters ordered by source time ----------------------------------------------------------


def counter_engine(bits: int = 16) -> PlantEngine:
    """One machine on one Modbus unit counting parts, planned all Monday (UTC), lateness 10 s, no cycle time."""
    raw = one_machine_raw()
    raw["machines"][0]["counters"]["bits"] = bits
    raw["kpi"] = {"max_lateness_s": 10}
    engine = PlantEngine(AgentConfig.model_validate(raw))
    engine.start(utc(8))
    return engine


def utc(h: int, m: int = 0, s: float = 0) -> datetime:
    return datetime(2026, 3, 2, h, m, tzinfo=UTC) + timedelta(seconds=s)  # a Monday


def parts(value: int, read: datetime, source: datetime | None) -> Sample:
    return Sample("plc", "parts", value, True, read, source)


@pytest.mark.parametrize(
    ("arrivals", "with_source", "expected"),
    [
        # (value, source second): 65535 was stamped before 4 but reached the agent after it
        ([(65530, 0.5), (4, 1.8), (65535, 1.2)], True, (10, 1)),
        ([(65530, 0.5), (65535, 1.2), (4, 1.8)], True, (10, 1)),  # the same samples in source order
        # without source times the arrival order is the order: 65530 -> 4 wraps (10), 4 -> 65535 is +65531
        ([(65530, 0.5), (4, 1.8), (65535, 1.2)], False, (65541, 1)),
    ],
)
def test_counter_samples_are_ordered_by_their_source_time(
    arrivals: list[tuple[int, float]], with_source: bool, expected: tuple[int, int]
) -> None:
    engine = counter_engine()
    for second, (value, source) in enumerate(arrivals, start=1):
        engine.ingest([parts(value, utc(8, 0, second), utc(8, 0, source) if with_source else None)])
    # the subscription's cache delivers the last reading again at the next poll: the same sample, no duplicate
    value, source = arrivals[-1]
    engine.ingest([parts(value, utc(8, 0, 4), utc(8, 0, source) if with_source else None)])
    engine.evaluate(utc(8, 0, 5))
    (h8,) = engine.evaluate(utc(9, 0, 11)).buckets["M1"]  # 09:00 plus the lateness has passed
    te = h8.elements
    assert (te.pq, te.counter_wraps) == expected
    assert (te.counter_duplicates, te.counter_late, te.counter_resets) == (0, 0, 0)


def test_counter_source_times_beyond_the_lateness() -> None:
    engine = counter_engine(bits=32)
    engine.ingest([parts(100, utc(8, 0, 0.1), utc(8))])
    engine.evaluate(utc(8, 0, 1))
    engine.ingest([parts(110, utc(8, 0, 20.1), utc(8, 0, 20))])
    engine.evaluate(utc(8, 0, 40))  # settled to 08:00:30: 100 -> 110 processed
    engine.ingest([parts(107, utc(8, 0, 41), utc(8, 0, 15))])  # stamped before 08:00:20, processed: too late
    engine.ingest([parts(115, utc(8, 0, 51), utc(8, 0, 50))])  # counts the parts the late one saw: +5
    engine.evaluate(utc(8, 59, 50))
    (h8,) = engine.evaluate(utc(9, 0, 20)).buckets["M1"]
    # 08:59:55 reaches the agent at 09:00:25 (30 s on its way): newer than any processed, so counted,
    # in the first open bucket since its own has closed
    engine.ingest([parts(120, utc(9, 0, 25), utc(8, 59, 55))])
    engine.evaluate(utc(9, 0, 40))
    # a source clock 3 s ahead: read at 09:59:59, stamped 10:00:02; it cannot have been made after it was read
    engine.ingest([parts(122, utc(9, 59, 59), utc(10, 0, 2))])
    (h9,) = engine.evaluate(utc(10, 0, 20)).buckets["M1"]
    assert (h8.elements.pq, h8.elements.counter_late) == (15, 1)
    assert (h9.elements.pq, h9.elements.counter_late) == (7, 0)


def test_scrap_beyond_a_buckets_parts_moves_to_the_next_bucket_with_parts() -> None:
    """Parts made at 07:59, found bad at 08:01: the 08:00 bucket has no parts of its own yet."""
    acc = accumulator(max_lateness_s=0)
    acc.advance(at(7), "RUNNING", None)
    acc.count(at(7), 0, 0)
    acc.count(at(7, 59), 5, 0)
    acc.count(at(8, 1), 5, 2)  # scrap counted, no new parts in this hour
    acc.count(at(9, 30), 8, 2)  # three parts in the 09:00 hour
    _, (h7, h8, h9) = play(acc, [(at(7), "RUNNING", None)], at(10))
    assert [(b.elements.pq, b.elements.sq) for b in (h7, h8, h9)] == [(5, 0), (0, 0), (3, 2)]
    assert [b.elements.ideal_good_s for b in (h7, h8, h9)] == [300.0, 0.0, 60.0]
    # over the window nothing is lost: 8 parts, 2 scrap
    assert sum(b.elements.pq for b in (h7, h8, h9)) == 8 and sum(b.elements.sq for b in (h7, h8, h9)) == 2


@pytest.mark.parametrize("garbage", [math.nan, math.inf, -math.inf])
def test_a_counter_value_that_is_no_number_is_not_a_count(garbage: float) -> None:
    engine = counter_engine(bits=32)
    engine.ingest([Sample("plc", "parts", 100, True, utc(8, 0, 1))])
    engine.ingest([Sample("plc", "parts", garbage, True, utc(8, 0, 2))])  # e.g. a float register misread
    engine.ingest([Sample("plc", "parts", 104, True, utc(8, 0, 3))])
    engine.evaluate(utc(8, 0, 4))
    (h8,) = engine.evaluate(utc(9, 0, 11)).buckets["M1"]
    te = h8.elements
    assert (te.pq, te.counter_resets, te.counter_jumps, te.counter_wraps) == (4, 0, 0, 0)


# --- resuming planned work: samples read before a break's end or a shift's start -------------------


def resume_config() -> AgentConfig:
    """One machine on a Modbus unit read every second (lifetime 3 x 1 s + 1 s timeout = 4 s), one run tag.

    Day shift 06:00-14:00 Monday to Friday with a break 10:00-10:15; micro-stops under 120 s.
    """
    return AgentConfig.model_validate(
        {
            "agent": {"id": "a"},
            "site": {"firm": {"name": "F"}, "name": "S", "timezone": "Asia/Shanghai"},
            "machines": [{"id": "M1", "name": "m", "type": "t", "digital": True, "device": "plc", "state_rules": "r"}],
            "devices": [
                {
                    "id": "plc",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "poll_interval_s": 1.0,
                    "tags": [{"name": "run", "area": "discrete", "address": 0, "type": "bool"}],
                }
            ],
            "state_rules": {"r": [{"state": "RUNNING", "when": {"all": [{"tag": "run", "value": True}]}}]},
            "calendar": {
                "shifts": [
                    {
                        "days": ["mon", "tue", "wed", "thu", "fri"],
                        "start": "06:00",
                        "end": "14:00",
                        "breaks": [{"start": "10:00", "end": "10:15"}],
                    }
                ]
            },
        }
    )


Read = Callable[[datetime], bool | str | None]  # the run tag read at t: a value, a read error's reason, or no read


def poll_log(start: datetime, end: datetime, read: Read, tick_after_s: float = 0.0) -> list[Event]:
    """The event log of an agent started at `start` reading every second until `end`.

    Each read is followed by a tick `tick_after_s` later (the first tick comes right after the first read).
    """
    config = resume_config()
    log: list[Event] = [StartLine(start=start, boot_id="b", speed=1.0, config_sha256=config_fingerprint(config))]
    t = start
    while t <= end:
        value = read(t)
        if isinstance(value, bool):
            log.append(SampleLine(device="plc", tag="run", value=value, good=True, at=t))
        elif value is not None:
            log.append(SampleLine(device="plc", tag="run", value=None, good=False, at=t, reason=value))
        log.append(TickLine(tick=t + timedelta(seconds=tick_after_s) if t > start else t))
        t += timedelta(seconds=1)
    return log


def run_live(log: list[Event]) -> tuple[list[ClosedInterval], list[ClosedBucket]]:
    """The log fed to a PlantEngine as the live agent does, and checked against `edgeproof kpi`'s replay of it."""
    engine = PlantEngine(resume_config())
    intervals: list[ClosedInterval] = []
    buckets: list[ClosedBucket] = []
    for event in log:
        if isinstance(event, StartLine):
            engine.start(event.start)
        elif isinstance(event, SampleLine):
            engine.ingest([event.sample()])
        else:
            evaluation = engine.evaluate(event.tick)
            intervals += [iv for _, iv in evaluation.intervals]
            buckets += evaluation.buckets.get("M1", [])
    replayed = replay(resume_config(), log, intervals=True)
    assert replayed.buckets["M1"] == buckets
    assert [iv for _, iv in replayed.intervals] == intervals
    return intervals, buckets


def test_a_machine_restarting_after_a_break_runs_from_the_breaks_end() -> None:
    """The last read before 10:15 says stopped (the break), the first after it, at 10:15:01, says running."""

    def read(t: datetime) -> bool | None:
        return None if t == at(10, 15) else not at(10) <= t < at(10, 15)

    intervals, buckets = run_live(poll_log(at(9, 30), at(11, 0, 10), read))
    # the 10:15:00 tick still holds the 10:14:59 sample: the state after 10:15 waits for 10:15:01
    assert [hm(i) for i in intervals] == [
        ("UNKNOWN", "09:00:00.000000", "09:30:00.000000", None),  # before the agent started
        ("RUNNING", "09:30:00.000000", "10:00:00.000000", None),
        ("PLANNED_STOP", "10:00:00.000000", "10:15:00.000000", "break"),
    ]
    h9, h10 = (b.elements for b in buckets)
    assert (h9.unknown_s, h9.apt_s) == (1800, 1800)
    assert (h10.window_s, h10.observed_s, h10.pot_s, h10.pdot_s, h10.apt_s) == (3600, 3600, 3600, 900, 2700)
    assert (h10.micro_stop_s, h10.idle_s, h10.unknown_s, h10.running_in_planned_stop_s) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("restart", "stop"),
    [
        (at(10, 15, 30), ("MICRO_STOP", "10:15:00.000000", "10:15:30.000000", NO_RULE_MATCHED)),
        (at(10, 17), ("IDLE", "10:15:00.000000", "10:17:00.000000", NO_RULE_MATCHED)),  # 120 s: not micro
    ],
)
def test_a_machine_still_stopped_after_a_break_is_stopped_from_the_breaks_end(
    restart: datetime, stop: tuple[str, str, str, str]
) -> None:
    def read(t: datetime) -> bool | None:
        return None if t == at(10, 15) else not at(10) <= t < restart

    intervals, buckets = run_live(poll_log(at(9, 30), at(11, 0, 10), read))
    assert [hm(i) for i in intervals][2:] == [
        ("PLANNED_STOP", "10:00:00.000000", "10:15:00.000000", "break"),
        stop,
    ]
    stopped_s = (restart - at(10, 15)).total_seconds()
    h10 = buckets[1].elements
    assert (h10.micro_stop_s + h10.idle_s, h10.apt_s, h10.pdot_s) == (stopped_s, 2700 - stopped_s, 900)


def test_a_shift_start_after_a_night_off_reads_the_machine_anew() -> None:
    """Stopped all night; reads on the second, ticks half a second later; the 06:00:00 read says running."""

    def read(t: datetime) -> bool:
        return t >= at(6, day=3)

    intervals, buckets = run_live(poll_log(at(5, day=3), at(7, 0, 10, day=3), read, tick_after_s=0.5))
    # the 06:00:00.5 tick credits 05:59:59.5-06:00 to the night and the rest to the state read at 06:00:00
    assert [hm(i) for i in intervals] == [("NOT_SCHEDULED", "05:00:00.000000", "06:00:00.000000", "no_shift")]
    h5, h6 = (b.elements for b in buckets)
    assert (h5.window_s, h5.observed_s, h5.pot_s) == (3600, 3600, 0)
    assert (h6.pot_s, h6.apt_s, h6.micro_stop_s, h6.idle_s, h6.unknown_s) == (3600, 3600, 0, 0, 0)


@pytest.mark.parametrize("gap", [None, "timeout"])  # no read at all (stale), or reads that fail
def test_no_fresh_sample_after_a_break_is_unknown_from_the_breaks_end(gap: str | None) -> None:
    """Reads stop at 10:14:59 and come back at 10:15:10 (running).

    Without reads, the 10:14:59 sample goes stale after 10:15:03; the 10:15:04 tick decides UNKNOWN,
    from 10:15:00. A failed read is UNKNOWN as soon as it is made, and also from 10:15:00.
    """

    def read(t: datetime) -> bool | str | None:
        if at(10, 15) <= t < at(10, 15, 10):
            return gap
        return not at(10) <= t < at(10, 15)

    intervals, buckets = run_live(poll_log(at(9, 30), at(11, 0, 10), read))
    assert [hm(i) for i in intervals][2:] == [
        ("PLANNED_STOP", "10:00:00.000000", "10:15:00.000000", "break"),
        ("UNKNOWN", "10:15:00.000000", "10:15:10.000000", STALE_REASON if gap is None else gap),
    ]
    h10 = buckets[1].elements
    assert (h10.unknown_s, h10.observed_s, h10.apt_s, h10.micro_stop_s, h10.idle_s) == (10, 3590, 2690, 0, 0)
