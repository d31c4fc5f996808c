"""Calendar, state rules, counters and the bucket integrator, on hand-computed timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connectors.sample import Sample
from edge_agent.calendar import Buckets, ShiftCalendar
from edge_agent.config import Calendar, StateRule
from edge_agent.counters import CounterTracker
from edge_agent.kpi import MachineAccumulator
from edge_agent.states import StateRules

TZ = ZoneInfo("Asia/Shanghai")
CAL = Calendar.model_validate(
    {
        "shifts": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "06:00",
                "end": "14:00",
                "breaks": [{"start": "08:00", "end": "08:15"}],
            }
        ]
    }
)


def local(h: int, m: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, h, m, tzinfo=TZ)  # 2026-03-02 is a Monday


def test_calendar_segments_split_at_shift_and_break_edges() -> None:
    cal = ShiftCalendar(CAL, TZ)
    segs = [
        (a.astimezone(TZ).strftime("%H:%M"), b.astimezone(TZ).strftime("%H:%M"), s)
        for a, b, s in cal.segments(local(5, 30), local(9))
    ]
    assert segs == [
        ("05:30", "06:00", "off"),
        ("06:00", "08:00", "work"),
        ("08:00", "08:15", "break"),
        ("08:15", "09:00", "work"),
    ]
    assert cal.status_at(local(7)) == "work"
    assert cal.status_at(local(7, day=7)) == "off"  # Saturday


def test_work_resumes_where_a_break_or_time_off_ends() -> None:
    cal = ShiftCalendar(CAL, TZ)  # Monday to Friday 06:00-14:00, break 08:00-08:15
    assert cal.work_resumed(local(7, 59), local(8, 20)) == local(8, 15)
    assert cal.work_resumed(local(8, 14), local(8, 15)) == local(8, 15)  # the end is included
    assert cal.work_resumed(local(8, 15), local(8, 16)) is None  # the start is not
    assert cal.work_resumed(local(7), local(7, 30)) is None  # work all along
    assert cal.work_resumed(local(13), local(6, 30, day=3)) == local(6, day=3)  # the next morning's shift
    assert cal.work_resumed(local(5), local(8, 20)) == local(8, 15)  # of two, the later
    assert cal.work_resumed(local(8, 20), local(8, 20)) is None


def test_overnight_shift_ends_next_day() -> None:
    cal = ShiftCalendar(Calendar.model_validate({"shifts": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]}), TZ)
    assert cal.status_at(local(23)) == "work"
    assert cal.status_at(local(5, 59, day=3)) == "work"
    assert cal.status_at(local(6, 0, day=3)) == "off"


def test_buckets_align_to_local_midnight_across_dst() -> None:
    berlin = Buckets(60, ZoneInfo("Europe/Berlin"))
    # 2026-03-29: clocks jump 02:00 -> 03:00 local, so that local day has 23 hourly buckets
    start = berlin.start_of(datetime(2026, 3, 28, 23, 0, tzinfo=UTC))  # local midnight
    t, n = start, 0
    while t < datetime(2026, 3, 29, 22, 0, tzinfo=UTC):  # next local midnight (CEST)
        t = berlin.end_of(t)
        n += 1
    assert n == 23
    quarter = Buckets(15, TZ)
    assert quarter.start_of(local(7, 44)) == local(7, 30)
    assert quarter.end_of(local(23, 45)) == local(0, 0, day=3)


RULES = StateRules(
    [
        StateRule.model_validate(
            {"state": "FAULT", "when": {"any": [{"tag": "fault", "op": "ne", "value": 0}]}, "reason": "{fault}"}
        ),
        StateRule.model_validate({"state": "SETUP", "when": {"all": [{"tag": "mode", "op": "in", "value": [1, 3]}]}}),
        StateRule.model_validate({"state": "RUNNING", "when": {"all": [{"tag": "run", "value": 1}]}}),
        StateRule.model_validate({"state": "IDLE"}),
    ]
)


def values(run: int, fault: int = 0, mode: int = 0, good: bool = True) -> dict[str, Sample]:
    now = local(7)
    if not good:
        return {t: Sample.bad("d", t, now, "timeout") for t in ("run", "fault", "mode")}
    return {t: Sample("d", t, v, True, now) for t, v in (("run", run), ("fault", fault), ("mode", mode))}


def test_state_rules_first_match_wins_and_bad_data_is_unknown() -> None:
    assert RULES.evaluate(values(1)) == ("RUNNING", None)
    assert RULES.evaluate(values(1, fault=104)) == ("FAULT", "104")
    assert RULES.evaluate(values(0, mode=3)) == ("SETUP", None)
    assert RULES.evaluate(values(0)) == ("IDLE", None)
    assert RULES.evaluate(values(1, good=False)) == ("UNKNOWN", "timeout")
    assert RULES.evaluate({}) == ("UNKNOWN", "no data yet")


def test_counter_wrap_and_reset() -> None:
    c = CounterTracker(16)
    assert [c.update(v) for v in (65530, 65535, 3, 3, 10)] == [0, 5, 4, 0, 7]
    assert c.wraps == 1
    assert c.update(2) == 2  # 10 -> 2 is far from the top: a reset, counted from zero
    assert c.resets == 1


def accumulator(cycle: float | None = 60.0) -> MachineAccumulator:
    acc = MachineAccumulator("M1", cycle, ShiftCalendar(CAL, TZ), Buckets(60, TZ), 32)
    acc.start(local(7, 30))
    return acc


def test_bucket_integration_by_hand() -> None:
    acc = accumulator()
    # 07:00-07:30 before the agent started: UNKNOWN; 07:30 running, 07:50 fault, 08:10 running, 08:30 idle
    acc.advance(local(7, 30), "RUNNING", None)
    acc.count(local(7, 30), 1000, 10)
    acc.advance(local(7, 50), "FAULT", "E7")
    acc.count(local(7, 50), 1018, 11)
    acc.advance(local(8, 10), "RUNNING", None)
    acc.advance(local(8, 30), "IDLE", None)
    acc.count(local(8, 30), 1033, 11)
    acc.advance(local(9), "IDLE", None)
    closed = acc.close_buckets(local(9))
    assert [b.start for b in closed] == [local(7), local(8)]
    h7, h8 = closed[0].elements, closed[1].elements
    assert (h7.window_s, h7.observed_s, h7.pot_s, h7.pdot_s) == (3600, 1800, 3600, 0)
    assert (h7.unknown_s, h7.apt_s, h7.fault_s) == (1800, 1200, 600)
    assert (h7.pq, h7.sq, h7.ideal_run_s, h7.ideal_good_s) == (18, 1, 1080, 1020)
    # 08:00-08:15 is a break: the fault from 08:00-08:10 and the run 08:10-08:15 are planned downtime
    assert (h8.pot_s, h8.pdot_s, h8.fault_s, h8.apt_s, h8.idle_s) == (3600, 900, 0, 900, 1800)
    assert h8.running_in_planned_stop_s == 300
    assert h8.pq == 15


def test_state_intervals_close_at_changes_and_calendar_edges_with_late_reason() -> None:
    acc = accumulator()
    out = acc.advance(local(7, 30), "FAULT", None)
    out += acc.advance(local(7, 40), "FAULT", "E42")  # the reason arrives ten minutes into the stop
    out += acc.advance(local(8, 5), "RUNNING", None)
    out += acc.advance(local(8, 20), "RUNNING", None)
    states = [
        (i.state, i.start.astimezone(TZ).strftime("%H:%M"), i.end.astimezone(TZ).strftime("%H:%M"), i.reason)
        for i in out
    ]
    assert states == [
        ("UNKNOWN", "07:00", "07:30", None),
        ("FAULT", "07:30", "08:00", "E42"),
        ("PLANNED_STOP", "08:00", "08:15", "break"),  # the calendar's reason: an unnamed break
    ]


def test_buckets_stay_open_until_time_passes_their_end() -> None:
    acc = accumulator()
    acc.advance(local(7, 59), "RUNNING", None)
    assert acc.close_buckets(local(7, 59)) == []
    acc.advance(local(8, 0) + timedelta(seconds=1), "RUNNING", None)
    (bucket,) = acc.close_buckets(local(8, 0) + timedelta(seconds=1))
    assert bucket.elements.window_s == pytest.approx(3600)
