"""Shift calendar and bucket boundaries, both in the plant's local time zone.

Everything stored and published is UTC; local time is used only to decide what is planned and
where buckets start, so a day of 23 or 25 hours yields buckets aligned to local midnight.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from edge_agent.config import Calendar

Planned = Literal["work", "break", "off"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Interval = tuple[datetime, datetime]


def _at(day: date, t: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, t, tzinfo=tz)


class ShiftCalendar:
    def __init__(self, calendar: Calendar, tz: ZoneInfo) -> None:
        self.calendar = calendar
        self.tz = tz
        self._day_cached = lru_cache(maxsize=64)(self._day)
        # every machine asks for the same span on each evaluation tick: compute it once per tick
        self._segments_cached = lru_cache(maxsize=16)(self._segments)

    def _day(self, day: date) -> tuple[list[Interval], list[Interval]]:
        """(work, break) intervals of the shifts that start on local date `day`."""
        work: list[Interval] = []
        breaks: list[Interval] = []
        for shift in self.calendar.shifts:
            if _WEEKDAYS[day.weekday()] not in shift.days:
                continue
            start = _at(day, shift.start, self.tz)
            end_day = day if shift.end > shift.start else day + timedelta(days=1)
            end = _at(end_day, shift.end, self.tz)
            work.append((start, end))
            for b in shift.breaks:
                b_day = day if b.start >= shift.start else day + timedelta(days=1)
                b_start = _at(b_day, b.start, self.tz)
                b_end = _at(b_day if b.end > b.start else b_day + timedelta(days=1), b.end, self.tz)
                breaks.append((max(b_start, start), min(b_end, end)))
        return work, breaks

    def segments(self, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, Planned], ...]:
        """Split [start, end) where the planned status changes."""
        return self._segments_cached(start, end)

    def _segments(self, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, Planned], ...]:
        if end <= start:
            return ()
        first = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date()
        work: list[Interval] = []
        breaks: list[Interval] = []
        day = first
        while day <= last:
            w, b = self._day_cached(day)
            work += w
            breaks += b
            day += timedelta(days=1)
        cuts = {start, end}
        for a, b in work + breaks:
            cuts.update(t for t in (a, b) if start < t < end)
        points = sorted(cuts)
        out: list[tuple[datetime, datetime, Planned]] = []
        for a, b in pairwise(points):
            status: Planned = (
                "break" if any(s <= a < e for s, e in breaks) else "work" if any(s <= a < e for s, e in work) else "off"
            )
            if out and out[-1][2] == status:
                out[-1] = (out[-1][0], b, status)
            else:
                out.append((a, b, status))
        return tuple(out)

    def status_at(self, t: datetime) -> Planned:
        return self.segments(t, t + timedelta(microseconds=1))[0][2]


class Buckets:
    """Fixed-length buckets aligned to local midnight (bucket length divides a day)."""

    def __init__(self, minutes: int, tz: ZoneInfo) -> None:
        self.minutes = minutes
        self.tz = tz

    def start_of(self, t: datetime) -> datetime:
        local = t.astimezone(self.tz)
        minute_of_day = (local.hour * 60 + local.minute) // self.minutes * self.minutes
        return _at(local.date(), time(minute_of_day // 60, minute_of_day % 60), self.tz).astimezone(t.tzinfo)

    def end_of(self, bucket_start: datetime) -> datetime:
        local = bucket_start.astimezone(self.tz)
        minute_of_day = local.hour * 60 + local.minute + self.minutes
        day = local.date() + timedelta(days=minute_of_day // 1440)
        minute_of_day %= 1440
        return _at(day, time(minute_of_day // 60, minute_of_day % 60), self.tz).astimezone(bucket_start.tzinfo)
