from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.clock import FakeClock
from eccm.config import parse
from eccm.gnss.fix import Fix
from eccm.hub import Hub
from eccm.sample import Layout, Reading, Sample, format_value, iso_utc, trip_id_for
from eccm.timebase import TimeBase
from eccm.trip.segment import TripSegmenter

LAYOUT = Layout(fast=("RPM", "SPEED"), slow=("COOLANT_TEMP",), gps=True)


class Collect:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.ends: list[str] = []
        self.stopped = False

    def on_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def on_trip_end(self, trip_id: str) -> None:
        self.ends.append(trip_id)

    def stop(self) -> None:
        self.stopped = True


def fix_at(clock: FakeClock, gnss_time: float | None, lat: float | None = 45.0) -> Fix:
    return Fix(
        time_utc=gnss_time,
        latitude=lat,
        longitude=None if lat is None else 7.0,
        altitude=300.0,
        speed=10.0,
        track=90.0,
        quality=1 if lat is not None else 0,
        satellites=8,
        hdop=0.9,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )


def make(adopt_within: float = 30.0) -> tuple[FakeClock, Hub, Collect]:
    clock = FakeClock(start=1_800_000_000.0)
    trips = TripSegmenter(adopt_within=adopt_within)
    hub = Hub(clock, max_fix_age=2.0, layout=LAYOUT, trips=trips)
    listener = Collect()
    hub.add_listener(listener)
    return clock, hub, listener


def test_engine_rows_carry_the_latest_values_and_a_fresh_fix_only() -> None:
    clock, hub, got = make()
    trip = hub.begin_trip()
    hub.update_fix(fix_at(clock, clock.time()))
    hub.update_values({"RPM": Reading(850.0, "revolutions_per_minute", clock.monotonic())})
    s1 = hub.emit()
    clock.advance(2.5)  # the fix is now older than GPS_MAX_FIX_AGE
    # Read again (an engine value as old as the fix would be left out too).
    hub.update_values({"RPM": Reading(850.0, "revolutions_per_minute", clock.monotonic())})
    s2 = hub.emit()
    assert s1 is not None and s2 is not None
    assert s1.trip_id == s2.trip_id == trip
    assert s1.fix is not None and s2.fix is None
    assert s2.values["RPM"].value == 850.0
    assert got.samples == [s1, s2]
    assert s1.layout == LAYOUT


def test_gnss_only_rows_open_a_segment_and_are_dropped_during_an_engine_trip() -> None:
    clock, hub, _got = make()
    hub.update_fix(fix_at(clock, clock.time()))
    s = hub.emit(engine=False)
    assert s is not None and s.values == {} and not s.engine
    assert hub.trip == s.trip_id and not hub.engine_trip
    hub.begin_trip()
    assert hub.emit(engine=False) is None


def test_a_slow_car_waits_longer_before_position_rows_fill_in_its_trip() -> None:
    clock, hub, _got = make()
    hub.update_fix(fix_at(clock, clock.time()))
    hub.set_max_ages(fast=2.5, slow=10.0)  # a K-line car: a row's reads take ~1.7 s
    trip = hub.begin_trip()
    clock.advance(4.0)
    assert hub.emit(engine=False) is None
    clock.advance(1.5)
    hub.update_fix(fix_at(clock, clock.time()))
    s = hub.emit(engine=False)
    assert s is not None and s.trip_id == trip and s.values == {} and s.fix is not None


def test_a_young_gnss_segment_becomes_the_start_of_the_engine_trip() -> None:
    clock, hub, got = make(adopt_within=30)
    gnss = hub.emit(engine=False)
    clock.advance(5)
    assert gnss is not None
    assert hub.begin_trip() == gnss.trip_id
    assert got.ends == []


def test_an_old_gnss_segment_ends_before_the_engine_trip() -> None:
    clock, hub, got = make(adopt_within=30)
    gnss = hub.emit(engine=False)
    clock.advance(31)
    assert gnss is not None
    trip = hub.begin_trip()
    assert trip != gnss.trip_id
    assert got.ends == [gnss.trip_id]
    hub.end_trip()
    assert got.ends == [gnss.trip_id, trip]
    assert hub.trip is None


def test_a_gnss_row_while_an_engine_trip_begins_opens_no_trip_that_never_ends() -> None:
    """begin_trip used to end the old trip, release its lock, then open the new one: a GNSS
    row in that gap opened a GNSS-only trip that the engine trip then replaced without
    ending it (a stray one-row file and summary). The interleaving is forced here: the
    row comes from a listener of the trip end, which begin_trip calls in that gap."""
    clock, hub, got = make(adopt_within=30)
    old = hub.emit(engine=False)
    assert old is not None
    clock.advance(31)
    hub.update_fix(fix_at(clock, None))  # a fresh fix: GNSS rows have a position

    class RowAtTripEnd(Collect):
        def on_trip_end(self, trip_id: str) -> None:
            super().on_trip_end(trip_id)
            if trip_id == old.trip_id:
                hub.emit(engine=False)  # the GNSS thread's next row, just then

    hub.add_listener(RowAtTripEnd())
    trip = hub.begin_trip()
    hub.end_trip()
    opened = {s.trip_id for s in got.samples}
    assert opened <= set(got.ends), (opened, got.ends)  # every trip with rows ended
    assert got.ends == [old.trip_id, trip]


def test_stop_ends_the_trip_and_stops_listeners() -> None:
    _clock, hub, got = make()
    trip = hub.begin_trip()
    hub.stop()
    assert got.ends == [trip] and got.stopped


def test_no_row_is_taken_after_stop() -> None:
    """A link thread that outlived its stop (python-OBD mid-answer) publishes once more:
    the row is neither counted nor handed to listeners that stopped (the recorder would
    drop it, and ``rows`` would count a row that no file holds)."""
    _clock, hub, got = make()
    hub.begin_trip()
    assert hub.emit() is not None
    hub.stop()
    assert hub.emit() is None and hub.emit(engine=False) is None
    assert hub.rows == 1 and len(got.samples) == 1


def test_stop_waits_for_a_row_being_handed_out() -> None:
    _clock, hub, _ = make()
    order: list[str] = []
    entered, release = threading.Event(), threading.Event()

    class Slow(Collect):
        def on_sample(self, sample: Sample) -> None:
            entered.set()
            assert release.wait(30)
            order.append("sample")

        def on_trip_end(self, trip_id: str) -> None:
            order.append("end")

        def stop(self) -> None:
            order.append("stop")

    hub.add_listener(Slow())
    hub.begin_trip()
    emitter = threading.Thread(target=hub.emit)
    emitter.start()
    assert entered.wait(30)
    stopper = threading.Thread(target=hub.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop() went on while a row was being handed out"
    release.set()
    emitter.join(30)
    stopper.join(30)
    assert order == ["sample", "end", "stop"] and hub.rows == 1


def test_a_failing_listener_does_not_stop_the_others() -> None:
    make()

    class Broken(Collect):
        def on_sample(self, sample: Sample) -> None:
            raise RuntimeError("boom")

    hub2 = Hub(FakeClock(), 2.0, LAYOUT)
    good = Collect()
    hub2.add_listener(Broken())
    hub2.add_listener(good)
    hub2.begin_trip()
    hub2.emit()
    assert len(good.samples) == 1


def test_clock_off_by_more_than_two_seconds_is_corrected_from_gnss() -> None:
    clock, hub, _ = make()
    clock.set_wall(946_684_800.0)  # the Pi booted thinking it is 2000-01-01
    true_time = 1_800_000_000.0 - 2.0
    # GNSS time is adopted once CONFIRM_EPOCHS (3) consecutive 1 Hz epochs agree.
    for second in range(3):
        clock.advance(1.0 if second else 0.0)
        hub.update_fix(fix_at(clock, true_time + second))
    true_time += 2.0
    assert hub.timebase.source == "gnss"
    assert abs(hub.now() - true_time) < 1e-6
    s = hub.emit()
    assert s is not None and s.time_source == "gnss"
    assert s.trip_id == trip_id_for(true_time)
    # NTP later sets the clock: back to the system time
    clock.advance(10.0)
    clock.set_wall(true_time + 10)
    hub.update_fix(fix_at(clock, true_time + 10))
    assert hub.timebase.source == "system"


def test_a_fix_without_position_or_date_does_not_move_the_time() -> None:
    tb = TimeBase()
    clock = FakeClock()
    tb.observe(fix_at(clock, clock.time() + 100, lat=None))
    tb.observe(fix_at(clock, None))
    assert tb.source == "system" and tb.offset == 0.0
    tb.observe(fix_at(clock, clock.time() + 1.5))  # within 2 s: the system clock is fine
    assert tb.source == "system"


def test_cells_are_plain_numbers_or_text_never_none_or_nan() -> None:
    assert format_value(None) == ""
    assert format_value(float("nan")) == ""
    assert format_value(float("inf")) == ""
    assert format_value(850.0) == "850"
    assert format_value(16.862745098039216) == "16.8627451"
    assert format_value(45.123456789) == "45.1234568"
    assert format_value(7) == "7"
    assert format_value(True) == "1"
    assert format_value("Closed loop") == "Closed loop"


def test_iso_time_has_milliseconds_and_z() -> None:
    assert iso_utc(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"
    assert trip_id_for(1_800_000_000.9) == "20270115T080000Z"


def test_row_follows_the_header_and_leaves_unknowns_empty() -> None:
    clock, hub, _ = make()
    hub.begin_trip()
    hub.update_values({"SPEED": Reading(42, "kilometer_per_hour", clock.monotonic())})
    s = hub.emit()
    assert s is not None
    row = LAYOUT.row(s, "car")
    header = LAYOUT.header
    assert len(row) == len(header)
    assert header[:5] == ["TIME_UTC", "CAR_ID", "TRIP_ID", "RPM", "SPEED"]
    assert row[3] == "" and row[4] == "42"
    assert row[header.index("GPS_LATITUDE")] == ""
    with_fix = replace(s, fix=fix_at(clock, clock.time()))
    row = LAYOUT.row(with_fix, "car")
    assert row[header.index("GPS_LATITUDE")] == "45"
    assert row[header.index("GPS_SPEED")] == "10"


def test_a_listener_failing_at_a_trip_end_or_at_stop_does_not_stop_the_others() -> None:
    class Broken(Collect):
        def on_trip_end(self, trip_id: str) -> None:
            raise RuntimeError("boom")

        def stop(self) -> None:
            raise RuntimeError("boom")

    _clock, hub, _ = make()
    good = Collect()
    hub.add_listener(Broken())
    hub.add_listener(good)
    trip = hub.begin_trip()
    hub.stop()
    assert good.ends == [trip] and good.stopped


def test_trip_ends_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    hub = Hub(clock, 2.0, LAYOUT, trips=TripSegmenter(gnss_timeout=30.0))
    caplog.set_level(logging.INFO, logger="eccm.hub")
    gnss = hub.emit(engine=False)
    clock.advance(31.0)
    hub.end_idle_gnss_trip()
    engine = hub.begin_trip()
    clock.advance(1.0)
    clock.set_wall(clock.time() + 3600.0)
    stepped = hub.emit()
    assert gnss is not None and stepped is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"trip {gnss.trip_id} ended: no position for over 30 s",
        f"trip {engine} started",
        f"the clock stepped by 3600 s: trip {engine} ends, the drive goes on as trip "
        f"{stepped.trip_id}",
    ]


def test_the_daemon_never_reuses_the_trip_id_of_an_earlier_runs_file(tmp_path: Path) -> None:
    """A Pi without a clock boots to the same second as a run whose file was uploaded
    since: the new trip must not take that id (its S3 keys would be overwritten)."""
    clock = FakeClock(start=1_800_000_000.0)
    cfg = parse(
        {
            "CAR_IDENTIFIER": "car",
            "RECORD_DIRECTORY_LOCATION": str(tmp_path),
            "ENABLE_SOCKET_SERVER": "no",
        }
    )
    (tmp_path / "uploaded").mkdir()
    taken = trip_id_for(clock.time())
    (tmp_path / "uploaded" / f"car_{taken}_0001.tsv.gz").write_bytes(b"")
    daemon = Daemon(cfg, clock)
    daemon._build_recording()  # wiring only: no thread starts
    assert daemon.hub.begin_trip() == trip_id_for(clock.time() + 1.0)
