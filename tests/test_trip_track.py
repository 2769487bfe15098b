"""The running trip's track kept for a map opened mid-drive (eccm/trip/track.py)."""

from __future__ import annotations

import itertools

from eccm.gnss.fix import Fix
from eccm.sample import Layout, Sample
from eccm.trip.track import TrackKeeper

LAYOUT = Layout((), (), True)


def fix(lat: float | None, lon: float | None) -> Fix:
    return Fix(
        time_utc=None,
        latitude=lat,
        longitude=lon,
        altitude=None,
        speed=None,
        track=None,
        quality=1,
        satellites=8,
        hdop=1.0,
        received=0.0,
        received_wall=0.0,
    )


def row(trip: str, mono: float, position: Fix | None) -> Sample:
    return Sample(
        time=1_800_000_000 + mono, trip_id=trip, values={}, fix=position, layout=LAYOUT, mono=mono
    )


def test_one_point_per_second_of_the_running_trip_none_while_parked_or_without_fix() -> None:
    keeper = TrackKeeper()
    for i in range(50):  # 5 rows a second for 10 s, moving
        keeper.on_sample(row("A", i * 0.2, fix(48.0 + i * 1e-4, 2.0)))
    trip, points = keeper.snapshot()
    assert trip == "A" and len(points) == 10
    assert points[0] == (48.0, 2.0) and points[1] == (48.0 + 5e-4, 2.0)
    for i in range(50, 60):  # parked: the same position, and rows without a fix
        keeper.on_sample(row("A", i * 1.0, fix(48.0 + 49e-4, 2.0)))
        keeper.on_sample(row("A", i * 1.0 + 0.5, None))
        keeper.on_sample(row("A", i * 1.0 + 0.6, fix(None, None)))
    assert len(keeper.snapshot()[1]) == 11


def test_a_new_trip_starts_a_new_track_and_its_end_forgets_it() -> None:
    keeper = TrackKeeper()
    keeper.on_sample(row("A", 0.0, fix(48.0, 2.0)))
    keeper.on_sample(row("B", 5.0, fix(49.0, 3.0)))
    assert keeper.snapshot() == ("B", [(49.0, 3.0)])
    keeper.on_trip_end("A")  # a late end of the old trip changes nothing
    assert keeper.snapshot() == ("B", [(49.0, 3.0)])
    keeper.on_trip_end("B")
    assert keeper.snapshot() == (None, [])


def test_a_long_drive_keeps_its_shape_within_the_bound() -> None:
    keeper = TrackKeeper(max_points=100)
    for i in range(1000):
        keeper.on_sample(row("A", float(i), fix(48.0 + i * 1e-4, 2.0)))
    points = keeper.snapshot()[1]
    assert len(points) <= 101  # the newest point is always drawn too
    assert points[0] == (48.0, 2.0)  # the start is kept
    assert points[-1] == (48.0 + 999e-4, 2.0)  # and the newest
    lats = [p[0] for p in points]
    assert lats == sorted(lats)  # in order, spread over the whole drive
    assert max(b - a for a, b in itertools.pairwise(lats)) <= 0.0016 + 1e-9  # evenly: 16 s
