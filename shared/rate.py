"""Deadline scheduling on a monotonic clock, for the actor's loop and for envs that keep time."""

from __future__ import annotations

import time


class RateKeeper:
    """Deadline scheduling: step k starts at t0 + k*T. A late step is not caught up with a burst:
    the schedule restarts from now (and the overrun is counted)."""

    SPIN = 0.0015  # s; sleep until this close to the deadline, then spin

    def __init__(self, hz: float) -> None:
        self.period = 1.0 / hz if hz > 0 else 0.0
        self._next: float | None = None
        self._last: float | None = None
        self.overruns = 0

    def wait(self) -> float | None:
        """Block until the next deadline; returns the period just ended (s), None the first time."""
        now = time.perf_counter()
        if self.period > 0:
            if self._next is None:
                self._next = now
            elif now > self._next + self.period:
                self.overruns += 1
                self._next = now
            else:
                remaining = self._next - now
                if remaining > self.SPIN:
                    time.sleep(remaining - self.SPIN)
                while time.perf_counter() < self._next:
                    pass
            now = time.perf_counter()
            self._next += self.period
        period = None if self._last is None else now - self._last
        self._last = now
        return period
