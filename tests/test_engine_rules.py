"""Issue #5 rules on hand-computed timelines: micro-stops, debounce, late reasons, calendar, counters, programs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connectors.sample import Sample
from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import AgentConfig, Calendar, Kpi, Machine
from edge_agent.counters import CounterTracker
from edge_agent.kpi import ClosedBucket, ClosedInterval, MachineAccumulator
from edge_agent.states import NO_RULE_MATCHED
from edgeproof.indicators import oee

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
    assert Calendar.model_validate({"holidays": ["2026-10-01"]}).holidays == [date(2026, 10, 1)]


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
