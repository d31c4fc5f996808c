"""The plant's shift calendar turned into absolute time: busy, break and off segments.

Shifts and breaks are wall-clock times in the plant's time zone (zoneinfo), so a shift keeps its
local 06:00-14:00 across daylight-saving changes. Times are whole Unix seconds: every boundary
the simulator produces is a whole second, which keeps the ground truth exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

from simulators.scenario import WEEKDAYS, Calendar


class Plan(StrEnum):
    BUSY = "busy"  # inside a shift, outside breaks: planned busy time
    BREAK = "break"  # a break inside a shift: planned downtime
    OFF = "off"  # outside every shift: not scheduled


@dataclass(frozen=True, slots=True)
class Segment:
    start: int
    end: int
    plan: Plan


def epoch(t: datetime) -> int:
    """Whole Unix seconds of an aware datetime."""
    return round(t.timestamp())


def _periods(calendar: Calendar, tz: ZoneInfo, first: date, last: date) -> tuple[list[tuple[int, int]], ...]:
    shifts: list[tuple[int, int]] = []
    breaks: list[tuple[int, int]] = []
    day = first
    while day <= last:
        for shift in calendar.shifts:
            if WEEKDAYS[day.weekday()] not in shift.days:
                continue
            start = datetime.combine(day, shift.start, tzinfo=tz)
            end_day = day + timedelta(days=1) if shift.end <= shift.start else day
            shifts.append((epoch(start), epoch(datetime.combine(end_day, shift.end, tzinfo=tz))))
            for b in shift.breaks:
                # A break earlier on the clock than the shift start belongs to the next day (night shift).
                b_day = day + timedelta(days=1) if b.start < shift.start else day
                b_end_day = b_day + timedelta(days=1) if b.end <= b.start else b_day
                breaks.append(
                    (
                        epoch(datetime.combine(b_day, b.start, tzinfo=tz)),
                        epoch(datetime.combine(b_end_day, b.end, tzinfo=tz)),
                    )
                )
        day += timedelta(days=1)
    return shifts, breaks


def calendar_segments(calendar: Calendar, tz: ZoneInfo, start: datetime, end: datetime) -> list[Segment]:
    """Consecutive segments exactly covering [start, end), each busy, break or off."""
    a, b = epoch(start), epoch(end)
    # One day of margin on both sides catches night shifts that started the day before.
    first = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    shifts, breaks = _periods(calendar, tz, first, last)
    cuts = sorted({a, b} | {x for s, e in shifts + breaks for x in (s, e) if a < x < b})
    out: list[Segment] = []
    for lo, hi in pairwise(cuts):
        mid = (lo + hi) / 2
        if any(s <= mid < e for s, e in breaks):
            plan = Plan.BREAK
        elif any(s <= mid < e for s, e in shifts):
            plan = Plan.BUSY
        else:
            plan = Plan.OFF
        if out and out[-1].plan == plan:
            out[-1] = Segment(out[-1].start, hi, plan)
        else:
            out.append(Segment(lo, hi, plan))
    return out
