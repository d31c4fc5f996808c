"""Shift calendar and bucket boundaries, both in the plant's local time zone.

Everything stored and published is UTC; local time is used only to decide what is planned and
where buckets start, so a day of 23 or 25 hours yields buckets on the local wall-clock grid.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from edge_agent.config import Calendar, Kpi

Planned = Literal["work", "break", "off"]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Interval = tuple[datetime, datetime]
Stop = tuple[datetime, datetime, str]  # a span the calendar takes out of work, with its reason code
Span = tuple[datetime, datetime, Planned, str | None]  # the calendar's reason: None while planned "work"

NO_SHIFT = "no_shift"


def _at(day: date, t: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, t, tzinfo=tz)


def _code(kind: str, name: str | None) -> str:
    return f"{kind}:{name}" if name else kind


class ShiftCalendar:
    def __init__(self, calendar: Calendar, tz: ZoneInfo) -> None:
        self.calendar = calendar
        self.tz = tz
        self.holidays: dict[date, str] = {}
        for h in calendar.holidays:
            self.holidays.setdefault(h.date, _code("holiday", h.name))
        self.downtime: list[Stop] = [
            (d.start.replace(tzinfo=tz), d.end.replace(tzinfo=tz), _code("planned_downtime", d.reason))
            for d in calendar.planned_downtime
        ]
        self._day_cached = lru_cache(maxsize=64)(self._day)
        # every machine asks for the same span on each evaluation tick: compute it once per tick
        self._spans_cached = lru_cache(maxsize=16)(self._spans)
        self._segments_cached = lru_cache(maxsize=16)(self._segments)

    def _day(self, day: date) -> tuple[list[Interval], list[Stop]]:
        """(work, break) intervals of the shifts that start on local date `day`."""
        work: list[Interval] = []
        breaks: list[Stop] = []
        if day in self.holidays:  # a night shift that began the day before still runs into it
            return work, breaks
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
                breaks.append((max(b_start, start), min(b_end, end), _code("break", b.name)))
        return work, breaks

    def spans(self, start: datetime, end: datetime) -> tuple[Span, ...]:
        """Split [start, end) where the planned status or the calendar's reason changes.

        Reasons: `break` / `break:<name>`, `planned_downtime` / `planned_downtime:<reason>` (it wins
        over a break it overlaps; of two, the one listed first), `holiday` / `holiday:<name>` for
        time off on a holiday's local date, `no_shift` for any other time off.
        """
        return self._spans_cached(start, end)

    def _spans(self, start: datetime, end: datetime) -> tuple[Span, ...]:
        if end <= start:
            return ()
        first = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date()
        work: list[Interval] = []
        breaks: list[Stop] = []
        holidays: list[Stop] = []
        day = first
        while day <= last:
            w, b = self._day_cached(day)
            work += w
            breaks += b
            if day in self.holidays:
                holidays.append(
                    (_at(day, time(), self.tz), _at(day + timedelta(days=1), time(), self.tz), self.holidays[day])
                )
            day += timedelta(days=1)
        stops = [d for d in self.downtime if d[0] < end and d[1] > start] + breaks  # planned downtime first: it wins
        cuts = {start, end}
        for a, b in work:
            cuts.update(t for t in (a, b) if start < t < end)
        for a, b, _ in stops + holidays:
            cuts.update(t for t in (a, b) if start < t < end)
        # in UTC: subtracting two datetimes of one zone gives wall-clock time, wrong across a DST change
        points = sorted({t.astimezone(UTC) for t in cuts})
        out: list[Span] = []
        for a, b in pairwise(points):
            status: Planned
            reason: str | None
            if not any(s <= a < e for s, e in work):
                # planned downtime outside every shift stays off: it is not taken from planned time
                status = "off"
                reason = next((r for s, e, r in holidays if s <= a < e), NO_SHIFT)
            else:
                reason = next((r for s, e, r in stops if s <= a < e), None)
                status = "work" if reason is None else "break"
            if out and out[-1][2] == status and out[-1][3] == reason:
                out[-1] = (out[-1][0], b, status, reason)
            else:
                out.append((a, b, status, reason))
        return tuple(out)

    def segments(self, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, Planned], ...]:
        """Split [start, end) where the planned status changes."""
        return self._segments_cached(start, end)

    def _segments(self, start: datetime, end: datetime) -> tuple[tuple[datetime, datetime, Planned], ...]:
        out: list[tuple[datetime, datetime, Planned]] = []
        for a, b, status, _ in self.spans(start, end):
            if out and out[-1][2] == status:
                out[-1] = (out[-1][0], b, status)
            else:
                out.append((a, b, status))
        return tuple(out)

    def at(self, t: datetime) -> tuple[Planned, str | None]:
        """Planned status and the calendar's reason at instant t."""
        _, _, status, reason = self.spans(t, t + timedelta(microseconds=1))[0]
        return status, reason

    def status_at(self, t: datetime) -> Planned:
        return self.at(t)[0]

    def work_resumed(self, start: datetime, end: datetime) -> datetime | None:
        """The last instant in (start, end] at which planned work begins after a break or time off.

        Asks for the same spans the accumulators credit on the tick from `start` to `end`: cached.
        """
        if end <= start:
            return None
        spans = self.spans(start, end)
        if spans[-1][2] != "work" and self.at(end)[0] == "work":
            return end
        # two work spans never touch (they would have been merged), so a later one follows a stop
        return next((a for a, _, status, _ in reversed(spans[1:]) if status == "work"), None)


class Buckets:
    """Buckets on the local wall-clock grid: boundaries at `offset_minutes` plus multiples of `minutes`.

    A boundary the clock shows twice (the repeated hour when DST ends) starts a bucket each time;
    one the clock skips (the hour lost when DST begins) starts none. So hourly buckets number 23
    and 25 on those days, each one hour long, and a daily bucket lasts 23 or 25 hours.
    """

    def __init__(self, minutes: int, tz: ZoneInfo, offset_minutes: int = 0) -> None:
        self.minutes = minutes
        self.tz = tz
        self.offset_minutes = offset_minutes % minutes
        self._bounds_cached = lru_cache(maxsize=16)(self._bounds)
        # the bounds around one local day, joined once: with 1-minute buckets that is 5,760 instants
        self._around_day = lru_cache(maxsize=8)(self._joined_bounds)

    @classmethod
    def configured(cls, kpi: Kpi, calendar: Calendar, tz: ZoneInfo) -> Buckets:
        """The agent's buckets: `bucket_align: shift` anchors the grid at the first shift's start."""
        anchor = calendar.shifts[0].start if kpi.bucket_align == "shift" and calendar.shifts else time()
        return cls(kpi.bucket_minutes, tz, anchor.hour * 60 + anchor.minute)

    def _bounds(self, day: date) -> list[datetime]:
        """UTC instants at which the buckets of local date `day` start."""
        out: set[datetime] = set()
        for minute in range(self.offset_minutes, 1440, self.minutes):
            wall = datetime.combine(day, time(minute // 60, minute % 60))
            for fold in (0, 1):
                utc = wall.replace(tzinfo=self.tz, fold=fold).astimezone(UTC)
                if utc.astimezone(self.tz).replace(tzinfo=None) == wall:  # skipped wall times do not round-trip
                    out.add(utc)
        return sorted(out)

    def _joined_bounds(self, day: date) -> list[datetime]:
        return [b for d in (-1, 0, 1, 2) for b in self._bounds_cached(day + timedelta(days=d))]

    def _around(self, t: datetime) -> list[datetime]:
        return self._around_day(t.astimezone(self.tz).date())

    def start_of(self, t: datetime) -> datetime:
        bounds = self._around(t)
        return bounds[bisect_right(bounds, t) - 1]

    def end_of(self, bucket_start: datetime) -> datetime:
        bounds = self._around(bucket_start)
        return bounds[bisect_left(bounds, bucket_start + timedelta(microseconds=1))]
