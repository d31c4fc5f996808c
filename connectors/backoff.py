"""Reconnect schedule for a device that stopped answering, so it does not eat its link's time."""

from __future__ import annotations

import time


class Backoff:
    def __init__(self, initial_s: float = 0.5, maximum_s: float = 30.0) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._delay = 0.0
        self._next_try = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._next_try

    def failed(self) -> float:
        self._delay = min(self.maximum_s, self._delay * 2 if self._delay else self.initial_s)
        self._next_try = time.monotonic() + self._delay
        return self._delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self._next_try = 0.0
