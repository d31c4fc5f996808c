"""Cumulative counters (parts, scrap) to deltas, through wraps and resets."""

from __future__ import annotations


class CounterTracker:
    """A decrease is a wrap when the previous value was in the top tenth of the range, else a reset."""

    def __init__(self, bits: int) -> None:
        self.modulus = 1 << bits
        self.last: int | None = None
        self.wraps = 0
        self.resets = 0

    def update(self, value: float | int) -> int:
        current = int(value)
        previous, self.last = self.last, current
        if previous is None or current == previous:
            return 0
        if current > previous:
            return current - previous
        if previous >= self.modulus * 0.9:
            self.wraps += 1
            return current + self.modulus - previous
        self.resets += 1
        return current
