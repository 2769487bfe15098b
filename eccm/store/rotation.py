"""Pure decisions of the recorder: when to rotate and flush (file names: eccm.store.names).

No I/O here: the recorder asks, with the state of its open file and the time of its
clock, and does what the answer says (python-can's ``should_rollover`` is the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from eccm.sample import Layout


class Reason(StrEnum):
    AGE = "age"
    SIZE = "size"
    TRIP = "trip changed"
    LAYOUT = "columns changed"
    TRIP_END = "trip ended"
    REQUESTED = "requested"
    STOP = "stopping"


@dataclass(frozen=True, slots=True)
class OpenState:
    """What a rotation decision needs to know about the open file."""

    trip_id: str
    layout: Layout
    opened_at: float  # monotonic
    size: int  # bytes, header included
    rows: int


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    max_seconds: float
    max_bytes: int

    def before_row(
        self, state: OpenState | None, trip_id: str, layout: Layout, row_bytes: int, now: float
    ) -> Reason | None:
        """Whether the open file must be closed before this row is written to it."""
        if state is None:
            return None
        if trip_id != state.trip_id:
            return Reason.TRIP
        if layout != state.layout:
            return Reason.LAYOUT
        if now - state.opened_at >= self.max_seconds:
            return Reason.AGE
        # A single row larger than the limit still goes into a file of its own.
        if state.rows > 0 and state.size + row_bytes > self.max_bytes:
            return Reason.SIZE
        return None

    def idle(self, state: OpenState | None, now: float) -> Reason | None:
        """Whether a file that receives no rows is old enough to be closed anyway."""
        if state is not None and now - state.opened_at >= self.max_seconds:
            return Reason.AGE
        return None


def flush_due(interval: float, last_flush: float, now: float) -> bool:
    """FILE_FLUSH_INTERVAL=0 syncs every row; otherwise at most once per interval."""
    return interval <= 0 or now - last_flush >= interval
