"""What a connector hands to the agent: one value of one tag, with its quality and times."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

Value = bool | int | float | str | None


class Sample(NamedTuple):
    """Immutable; a NamedTuple because one is built per tag per poll (3x cheaper than a frozen dataclass)."""

    device_id: str
    tag: str
    value: Value
    good: bool
    agent_time: datetime
    source_time: datetime | None = None
    reason: str | None = None

    @classmethod
    def bad(cls, device_id: str, tag: str, agent_time: datetime, reason: str) -> Sample:
        """No value: a lost connection never re-sends the last value as if it were new."""
        return cls(device_id, tag, None, False, agent_time, None, reason)
