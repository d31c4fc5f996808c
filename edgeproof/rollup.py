"""Roll-ups: the time elements and counts of any set of buckets, summed per group, divided once.

Group by anything a bucket knows (machine, process, site, local day, shift, evidence window): a
group's OEE is computed from its summed elements, never as an average of its buckets' ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from edgeproof.indicators import Oee, TimeElements, oee

K = TypeVar("K", bound=Hashable)


class BucketRecord(BaseModel):
    """One machine's elements over one bucket [start, end)."""

    model_config = ConfigDict(frozen=True)

    machine_id: str
    start: datetime
    end: datetime
    elements: TimeElements


def rollup(buckets: Iterable[BucketRecord], key: Callable[[BucketRecord], K]) -> dict[K, TimeElements]:
    """Sum of the elements of the buckets in each group."""
    out: dict[K, TimeElements] = {}
    for b in buckets:
        k = key(b)
        out[k] = out.get(k, TimeElements()) + b.elements
    return out


def rollup_oee(buckets: Iterable[BucketRecord], key: Callable[[BucketRecord], K]) -> dict[K, Oee]:
    return {k: oee(te) for k, te in rollup(buckets, key).items()}


def within(buckets: Iterable[BucketRecord], start: datetime, end: datetime) -> list[BucketRecord]:
    """Buckets wholly inside the window [start, end); a bucket is never split, so windows should follow bucket edges."""
    return [b for b in buckets if start <= b.start and b.end <= end]


def by_machine(b: BucketRecord) -> str:
    return b.machine_id


def by_site(b: BucketRecord) -> str:
    return "site"


def by_process(process_of: Mapping[str, str | None]) -> Callable[[BucketRecord], str | None]:
    """Group by the process (line) each machine serves, from the asset register."""
    return lambda b: process_of.get(b.machine_id)


def by_local_day(tz: ZoneInfo) -> Callable[[BucketRecord], date]:
    """Group by the local date the bucket starts on (a day of 23 or 25 hours sums what it has)."""
    return lambda b: b.start.astimezone(tz).date()
