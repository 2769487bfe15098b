"""The trip segmenter, pure: rows, engine begins and ends on a fake clock, no hub, no thread."""

from __future__ import annotations

import pytest

from eccm.clock import FakeClock
from eccm.sample import trip_id_for
from eccm.trip.segment import ENGINE_QUIET, REDATE_STEP, Row, TripEnd, TripSegmenter, Why

T0 = 1_795_000_000.0  # 2026-11-18


class Car:
    """A segmenter and a fake clock: the plain inputs the hub gives it."""

    def __init__(self, adopt_within: float = 30.0, gnss_timeout: float | None = 30.0) -> None:
        self.clock = FakeClock(start=T0, monotonic_start=500.0)
        self.seg = TripSegmenter(adopt_within=adopt_within, gnss_timeout=gnss_timeout)

    def now(self) -> tuple[float, float]:
        return self.clock.time(), self.clock.monotonic()

    def gnss_row(self) -> str | None:
        row = self.seg.row(*self.now(), engine=False)
        return row.trip

    def engine_row(self) -> str | None:
        return self.seg.row(*self.now(), engine=True).trip

    def begin(self) -> str:
        return self.seg.begin_engine(*self.now()).trip


def test_a_gnss_row_opens_a_segment_named_after_its_time() -> None:
    car = Car()
    assert car.seg.trip is None and not car.seg.engine
    row = car.seg.row(*car.now(), engine=False)
    assert row.trip == trip_id_for(T0) and row.ended is None
    assert car.seg.trip == row.trip and not car.seg.engine
    car.clock.advance(1.0)
    assert car.gnss_row() == row.trip


def test_an_engine_trip_begins_and_its_rows_carry_its_id() -> None:
    car = Car()
    begin = car.seg.begin_engine(*car.now())
    assert begin.trip == trip_id_for(T0) and begin.ended is None and not begin.adopted
    assert car.seg.engine
    car.clock.advance(0.5)
    assert car.engine_row() == begin.trip
    assert car.seg.end() == TripEnd(begin.trip, Why.ENDED)
    assert car.seg.trip is None and car.seg.end() is None


def test_an_engine_row_without_a_begin_opens_an_engine_trip() -> None:
    car = Car()
    trip = car.engine_row()
    assert trip is not None and car.seg.engine


def test_gnss_rows_are_dropped_while_an_engine_trip_runs() -> None:
    car = Car()
    trip = car.begin()
    car.clock.advance(0.2)
    assert car.seg.row(*car.now(), engine=False).trip is None
    assert car.seg.trip == trip and car.seg.engine


def test_gnss_rows_fill_in_the_engine_trip_while_the_car_is_silent() -> None:
    """A car answering NO DATA or CAN ERROR keeps its trip for TRIP_END_TIMEOUT: position
    rows were dropped all that time (up to 30 s of track lost mid-drive)."""
    car = Car()
    trip = car.begin()
    car.clock.advance(0.2)
    assert car.engine_row() == trip
    car.clock.advance(ENGINE_QUIET - 0.1)
    assert car.gnss_row() is None  # a car answering late, still within its pace
    car.clock.advance(0.2)
    row = car.seg.row(*car.now(), engine=False)
    assert row == Row(trip=trip)  # the engine trip's, no trip ended or opened
    assert car.seg.engine
    car.clock.advance(1.0)
    assert car.gnss_row() == trip
    car.clock.advance(0.2)
    assert car.engine_row() == trip  # the car answers again: the same trip goes on
    car.clock.advance(0.2)
    assert car.gnss_row() is None


def test_a_young_gnss_segment_becomes_the_engine_trip() -> None:
    car = Car(adopt_within=30.0)
    gnss = car.gnss_row()
    car.clock.advance(29.0)
    begin = car.seg.begin_engine(*car.now())
    assert begin.adopted and begin.trip == gnss and begin.ended is None
    assert car.seg.engine and car.seg.trip == gnss


def test_an_old_gnss_segment_ends_and_the_engine_trip_opens_in_one_step() -> None:
    """No state between the end and the opening: a GNSS row right after the call is the
    engine trip's to drop, it cannot open a trip of its own that nobody ends."""
    car = Car(adopt_within=30.0)
    gnss = car.gnss_row()
    assert gnss is not None
    car.clock.advance(30.0)
    begin = car.seg.begin_engine(*car.now())
    assert not begin.adopted
    assert begin.ended == TripEnd(gnss, Why.REPLACED)
    assert begin.trip == trip_id_for(T0 + 30.0) and car.seg.trip == begin.trip
    assert car.seg.engine
    assert car.seg.row(*car.now(), engine=False).trip is None


def test_a_begin_while_an_engine_trip_runs_ends_it_and_opens_the_next() -> None:
    car = Car()
    first = car.begin()
    car.clock.advance(5.0)
    begin = car.seg.begin_engine(*car.now())
    assert begin.ended == TripEnd(first, Why.REPLACED) and begin.trip != first


def test_a_clock_step_at_the_begin_keeps_a_young_segment_from_being_adopted() -> None:
    """Its id says the wrong date: the engine trip gets one from the corrected time."""
    car = Car(adopt_within=30.0)
    car.clock.set_wall(T0 - 10 * 365 * 86400.0)  # booted ten years off
    gnss = car.gnss_row()
    assert gnss is not None and gnss.startswith("2016")
    car.clock.advance(2.0)
    car.clock.set_wall(T0 + 2.0)  # the first fix corrected the time
    begin = car.seg.begin_engine(*car.now())
    assert not begin.adopted and begin.ended == TripEnd(gnss, Why.REPLACED)
    assert begin.trip == trip_id_for(T0 + 2.0)


def test_a_clock_step_ends_the_trip_and_the_rows_go_on_in_a_corrected_one() -> None:
    car = Car()
    car.clock.set_wall(T0 - 3600.0)
    old = car.begin()
    car.clock.advance(1.0)
    assert car.engine_row() == old
    car.clock.set_wall(T0)  # one hour ahead at once
    row = car.seg.row(*car.now(), engine=True)
    assert row.ended is not None and row.ended.trip == old and row.ended.why is Why.CLOCK_STEP
    assert row.ended.step == pytest.approx(3599.0)
    assert row.trip == trip_id_for(T0) and car.seg.engine


def test_a_step_within_redate_step_keeps_the_trip() -> None:
    car = Car()
    trip = car.begin()
    car.clock.advance(1.0)
    car.clock.set_wall(car.clock.time() + REDATE_STEP - 1.0)
    row = car.seg.row(*car.now(), engine=True)
    assert row.trip == trip and row.ended is None


def test_an_idle_gnss_segment_ends_after_the_timeout_only() -> None:
    car = Car(gnss_timeout=30.0)
    gnss = car.gnss_row()
    assert gnss is not None
    car.clock.advance(30.0)
    assert car.seg.end_if_idle(car.clock.monotonic()) is None
    car.clock.advance(0.5)
    assert car.seg.end_if_idle(car.clock.monotonic()) == TripEnd(gnss, Why.NO_POSITION)
    assert car.seg.trip is None
    assert car.seg.end_if_idle(car.clock.monotonic()) is None


def test_a_position_after_a_long_silence_ends_the_segment_and_opens_the_next() -> None:
    car = Car(gnss_timeout=30.0)
    first = car.gnss_row()
    assert first is not None
    car.clock.advance(8 * 3600.0)  # no report at all overnight
    row = car.seg.row(*car.now(), engine=False)
    assert row.ended == TripEnd(first, Why.NO_POSITION)
    assert row.trip == trip_id_for(T0 + 8 * 3600.0)


def test_rows_keep_a_gnss_segment_alive() -> None:
    car = Car(gnss_timeout=30.0)
    gnss = car.gnss_row()
    for _ in range(10):
        car.clock.advance(20.0)
        assert car.gnss_row() == gnss
        assert car.seg.end_if_idle(car.clock.monotonic()) is None


def test_an_engine_trip_and_a_segment_without_timeout_never_end_idle() -> None:
    car = Car(gnss_timeout=30.0)
    car.begin()
    car.clock.advance(3600.0)
    assert car.seg.end_if_idle(car.clock.monotonic()) is None
    endless = Car(gnss_timeout=None)
    endless.gnss_row()
    endless.clock.advance(3600.0)
    assert endless.seg.end_if_idle(endless.clock.monotonic()) is None
    assert endless.seg.row(*endless.now(), engine=False).ended is None


def test_end_can_be_limited_to_one_kind_of_trip() -> None:
    car = Car()
    gnss = car.gnss_row()
    assert gnss is not None
    assert car.seg.end(only_engine=True) is None and car.seg.trip == gnss
    assert car.seg.end(only_engine=False) == TripEnd(gnss, Why.ENDED)
    engine = car.begin()
    assert car.seg.end(only_engine=False) is None and car.seg.trip == engine
    assert car.seg.end(only_engine=True) == TripEnd(engine, Why.ENDED)


def test_trip_ids_are_never_reused_within_a_run_nor_across_runs() -> None:
    car = Car()
    first = car.begin()
    car.seg.end()
    car.clock.advance(0.3)  # another trip in the same second
    second = car.begin()
    assert second == trip_id_for(T0 + 1.0) != first
    car.seg.end()
    # an earlier run (a Pi whose clock boots to the same time) used the next two seconds
    car.seg.reserve({trip_id_for(T0 + 2.0), trip_id_for(T0 + 3.0)})
    car.clock.advance(1.0)
    assert car.begin() == trip_id_for(T0 + 4.0)
    # the same for a GNSS-only segment
    car.seg.end()
    assert car.gnss_row() == trip_id_for(T0 + 5.0)
