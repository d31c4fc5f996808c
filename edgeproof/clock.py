"""Clocks shared by the simulator and the agent.

A demo compresses hours of plant time into seconds of wall time. Both sides must then agree on
"now" without talking to each other, so the scaled clock is a pure function of the wall clock and
three published parameters (sim origin, wall origin, speed), which can cross process boundaries
as a small JSON document.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import AwareDatetime, BaseModel, Field


class Clock(Protocol):
    speed: float

    def now(self) -> datetime: ...

    async def sleep(self, sim_seconds: float) -> None: ...


class WallClock:
    """Real time, UTC."""

    speed: float = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds))


class ClockSpec(BaseModel):
    """Serializable description of a clock; `speed == 1` with no origin means wall time."""

    sim_origin: AwareDatetime | None = Field(
        default=None, description="plant time at wall_origin; None means real time"
    )
    wall_origin: float = Field(default=0.0, description="unix time (s) at which plant time was sim_origin")
    speed: float = Field(default=1.0, gt=0, description="plant seconds per wall second")

    def build(self) -> Clock:
        if self.sim_origin is None:
            return WallClock()
        return ScaledClock(self.sim_origin, self.wall_origin, self.speed)


class ScaledClock:
    """Plant time = sim_origin + (wall time - wall_origin) * speed.

    A clock built without a wall origin is paused at sim_origin until `start()`: a simulator can
    take as long as it needs to come up, then start plant time and publish the clock.
    """

    def __init__(self, sim_origin: datetime, wall_origin: float | None, speed: float) -> None:
        if sim_origin.tzinfo is None:
            raise ValueError("sim_origin must be timezone-aware")
        self.sim_origin = sim_origin.astimezone(UTC)
        self.wall_origin = wall_origin
        self.speed = speed

    @classmethod
    def starting_now(cls, sim_origin: datetime, speed: float) -> ScaledClock:
        return cls(sim_origin, time.time(), speed)

    def start(self) -> None:
        if self.wall_origin is None:
            self.wall_origin = time.time()

    def now(self) -> datetime:
        if self.wall_origin is None:
            return self.sim_origin
        return self.sim_origin + timedelta(seconds=(time.time() - self.wall_origin) * self.speed)

    def wall_time_at(self, sim_time: datetime) -> float:
        if self.wall_origin is None:
            raise RuntimeError("the clock has not been started")
        return self.wall_origin + (sim_time - self.sim_origin).total_seconds() / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds / self.speed))

    def spec(self) -> ClockSpec:
        if self.wall_origin is None:
            raise RuntimeError("the clock has not been started")
        return ClockSpec(sim_origin=self.sim_origin, wall_origin=self.wall_origin, speed=self.speed)
