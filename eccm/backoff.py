"""Capped exponential backoff with jitter, as an immutable value (urllib3's Retry is the model).

Used for OBD reconnection, reopening the GNSS receiver and upload retries. Pure: the
caller supplies the random draw, so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.0  # fraction of the delay drawn at random and added (0.25 = up to +25 %)
    attempt: int = 0

    def delay(self, draw: float | None = None) -> float:
        """Seconds to wait before the next attempt (``draw`` in [0, 1), random if None)."""
        if self.attempt == 0:
            return 0.0
        raw = min(self.cap, self.base * self.factor ** (self.attempt - 1))
        if self.jitter:
            u = random.random() if draw is None else draw
            raw = min(self.cap, raw * (1.0 + self.jitter * u))
        return raw

    def failed(self) -> Backoff:
        return replace(self, attempt=min(self.attempt + 1, 64))

    def succeeded(self) -> Backoff:
        # Itself when already reset: the OBD link calls this for every row.
        return self if self.attempt == 0 else replace(self, attempt=0)
