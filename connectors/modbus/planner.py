"""Request planning: as few reads as the device allows, every value inside one read.

Tags are grouped by poll interval, then by area (function code); neighbours are merged into one
read while the gap between them is at most `max_gap` and the read stays within the device's
limit. A tag is never split across reads, so a 32- or 64-bit value is always read whole.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from connectors.modbus.config import BIT_AREAS, Area, ModbusDeviceConfig, ModbusTag


@dataclass(frozen=True)
class Read:
    area: Area
    start: int  # protocol address
    count: int
    tags: tuple[ModbusTag, ...]


@dataclass(frozen=True)
class PollGroup:
    interval_s: float
    reads: tuple[Read, ...]

    @property
    def tags(self) -> list[ModbusTag]:
        return [t for r in self.reads for t in r.tags]


def plan(device: ModbusDeviceConfig, per_tag: bool = False, max_gap: int | None = None) -> list[PollGroup]:
    """Poll groups of the device; `max_gap` overrides the device's (0: merge only adjacent tags)."""
    gap = device.max_gap if max_gap is None else max_gap
    by_interval: dict[float, dict[Area, list[ModbusTag]]] = defaultdict(lambda: defaultdict(list))
    for tag in device.tags:
        by_interval[tag.poll_interval_s or device.poll_interval_s][tag.area].append(tag)
    groups = []
    for interval, areas in sorted(by_interval.items()):
        reads: list[Read] = []
        for area, tags in areas.items():
            reads += _merge(device, area, tags, per_tag or not device.coalesce, gap)
        groups.append(PollGroup(interval, tuple(reads)))
    return groups


def _merge(device: ModbusDeviceConfig, area: Area, tags: list[ModbusTag], per_tag: bool, gap: int) -> list[Read]:
    limit = device.max_bits if area in BIT_AREAS else device.max_registers
    reads: list[Read] = []
    for tag in sorted(tags, key=lambda t: (device.protocol_address(t), t.width)):
        start = device.protocol_address(tag)
        end = start + tag.width
        if reads and not per_tag:
            last = reads[-1]
            last_end = last.start + last.count
            if start - last_end <= gap and max(end, last_end) - last.start <= limit:
                reads[-1] = Read(area, last.start, max(end, last_end) - last.start, (*last.tags, tag))
                continue
        reads.append(Read(area, start, tag.width, (tag,)))
    return reads


def requests_per_cycle(groups: list[PollGroup]) -> int:
    return sum(len(g.reads) for g in groups)
