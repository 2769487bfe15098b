"""The running trip's track: the positions a map draws, kept in memory for the web page.

A page opened (or reloaded) in the middle of a drive must show where the car has been, not
only what it sees from then on. The files hold every row; this keeps one point per
MIN_GAP_S of the running trip, at most MAX_POINTS (beyond, every other point goes and
from then on every second candidate only, so that the points stay evenly spread over the
whole drive, however long), and forgets it when the trip ends.
"""

from __future__ import annotations

import threading

from eccm.sample import Sample

MIN_GAP_S = 1.0  # seconds between two kept points
MAX_POINTS = 10_000

Point = tuple[float, float]  # latitude, longitude (degrees)


class TrackKeeper:
    """A hub listener; :meth:`snapshot` may be called from any thread."""

    def __init__(self, min_gap: float = MIN_GAP_S, max_points: int = MAX_POINTS) -> None:
        self._min_gap = min_gap
        self._max = max(2, max_points)
        self._lock = threading.Lock()
        self._trip: str | None = None
        self._points: list[Point] = []
        self._last_mono = float("-inf")
        self._stride = 1  # one candidate point in this many is kept
        self._seen = 0  # candidate points of the trip so far
        self._newest: Point | None = None  # always drawn, kept or not

    def on_sample(self, sample: Sample) -> None:
        fix = sample.fix
        with self._lock:
            if sample.trip_id != self._trip:
                self._restart(sample.trip_id)
            if fix is None or fix.latitude is None or fix.longitude is None:
                return
            at = sample.time if sample.mono is None else sample.mono
            if at - self._last_mono < self._min_gap:
                return
            point = (fix.latitude, fix.longitude)
            if point == self._newest:
                return  # parked: no new point, the line does not thicken
            self._last_mono = at
            self._newest = point
            if self._seen % self._stride == 0:
                self._points.append(point)
                if len(self._points) > self._max:
                    self._points = self._points[::2]
                    self._stride *= 2
            self._seen += 1

    def _restart(self, trip: str | None) -> None:
        """Called under the lock."""
        self._trip, self._points, self._newest = trip, [], None
        self._last_mono, self._stride, self._seen = float("-inf"), 1, 0

    def on_trip_end(self, trip_id: str) -> None:
        with self._lock:
            if trip_id == self._trip:
                self._restart(None)

    def stop(self) -> None:
        pass

    def snapshot(self) -> tuple[str | None, list[Point]]:
        """(running trip id, its points oldest first)."""
        with self._lock:
            points = list(self._points)
            if self._newest is not None and (not points or points[-1] != self._newest):
                points.append(self._newest)
            return self._trip, points
