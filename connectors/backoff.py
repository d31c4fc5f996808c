"""Retry schedules: exponential back-off, optionally jittered.

Without jitter (devices that stopped answering) the delays are initial, 2x, 4x, ... up to the
maximum. With jitter (the MQTT uplink) every delay is drawn at random inside growing bounds, so a
fleet of clients that lost the same server at the same instant does not come back in step.
"""

from __future__ import annotations

import random
import time
from typing import Literal

Jitter = Literal["none", "full", "decorrelated"]


class Backoff:
    """Delays after consecutive failures; `succeeded()` starts the schedule again.

    - `none`: initial, 2 x initial, 4 x initial, ... capped at the maximum.
    - `full`: uniform in [initial, ceiling], the ceiling doubling from 2 x initial up to the maximum.
    - `decorrelated`: uniform in [initial, 3 x the previous delay], capped at the maximum.

    Every delay lies in [min(initial, maximum), maximum].
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        maximum_s: float = 30.0,
        jitter: Jitter = "none",
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._delay = 0.0
        self._ceiling = 0.0
        self._next_try = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._next_try

    def next_delay(self) -> float:
        """The delay after one more failure (advances the schedule, does not arm `ready`)."""
        low = min(self.initial_s, self.maximum_s)
        if self.jitter == "none":
            self._delay = min(self.maximum_s, self._delay * 2 if self._delay else self.initial_s)
        elif self.jitter == "full":
            # the ceiling doubles rather than the delay, so the window widens even after a short draw
            self._ceiling = min(self.maximum_s, (self._ceiling or low) * 2)
            self._delay = self._rng.uniform(low, self._ceiling)
        else:
            self._delay = min(self.maximum_s, self._rng.uniform(low, (self._delay or low) * 3))
        return self._delay

    def failed(self) -> float:
        delay = self.next_delay()
        self._next_try = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self._ceiling = 0.0
        self._next_try = 0.0
