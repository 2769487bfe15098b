"""Chaos: a drive with a GNSS receiver and no OBD adapter (unplugged, or never bought).

What a user expects: a row for every position (engine columns empty), no row without a
position, trips split where the receiver had no fix for TRIP_END_TIMEOUT (a night in a
garage is not part of the drive), a summary per trip with the GNSS distance; with
FILE_RECORDING=no, no file at all but the live trip computer still works.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from datetime import datetime
from pathlib import Path

from eccm.app import Daemon
from eccm.clock import FakeClock
from eccm.config import parse
from eccm.gnss.fix import Fix
from eccm.hub import Hub
from eccm.sample import GPS_COLUMNS, Layout, trip_id_for
from eccm.sim.gnss import NmeaPty, Route
from eccm.trip.segment import TripSegmenter
from tests.listeners import Events, OffsetClock
from tests.waiting import wait_until

LAYOUT = Layout(fast=("RPM", "SPEED"), slow=(), gps=True)
ROUTE = Route(latitude=45.0, longitude=7.0, radius=200.0, speed=15.0)


def position(clock: FakeClock, lat: float | None = 45.0) -> Fix:
    return Fix(
        time_utc=clock.time(),
        latitude=lat,
        longitude=None if lat is None else 7.0,
        altitude=None,
        speed=15.0 if lat is not None else None,
        track=None,
        quality=1 if lat is not None else 0,
        satellites=None,
        hdop=None,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )


def gnss_hub() -> tuple[FakeClock, Hub, Events]:
    clock = FakeClock(start=1_795_000_000.0)
    hub = Hub(clock, max_fix_age=2.0, layout=LAYOUT, trips=TripSegmenter(gnss_timeout=30.0))
    events = Events()
    hub.add_listener(events)
    return clock, hub, events


def test_a_gnss_only_segment_ends_when_the_fix_is_gone_for_trip_end_timeout() -> None:
    clock, hub, events = gnss_hub()
    hub.update_fix(position(clock))
    first = hub.emit(engine=False)
    assert first is not None
    clock.advance(20.0)
    hub.update_fix(position(clock, lat=None))
    hub.end_idle_gnss_trip()
    assert hub.trip == first.trip_id, "20 s without a fix: still the same trip"
    clock.advance(11.0)
    hub.end_idle_gnss_trip()
    assert events.ends == [first.trip_id] and hub.trip is None
    # the morning after: a new trip
    clock.advance(8 * 3600)
    hub.update_fix(position(clock))
    second = hub.emit(engine=False)
    assert second is not None and second.trip_id == trip_id_for(clock.time())


def test_a_position_after_a_long_silence_starts_a_new_trip_even_without_no_fix_reports() -> None:
    clock, hub, events = gnss_hub()
    hub.update_fix(position(clock))
    first = hub.emit(engine=False)
    clock.advance(3600.0)  # the receiver was unplugged: no report at all
    hub.update_fix(position(clock))
    second = hub.emit(engine=False)
    assert first is not None and second is not None
    assert second.trip_id != first.trip_id
    assert events.ends == [first.trip_id]
    assert events.log.index(("end", first.trip_id)) < events.log.index(("sample", second))


def test_an_engine_trip_is_not_ended_by_a_lost_fix() -> None:
    clock, hub, events = gnss_hub()
    trip = hub.begin_trip()
    hub.emit()
    clock.advance(60.0)
    hub.end_idle_gnss_trip()
    assert hub.trip == trip and events.ends == []


def test_gnss_rows_right_after_the_adapter_is_unplugged_get_a_trip_of_their_own() -> None:
    clock, hub, events = gnss_hub()
    engine = hub.begin_trip()
    hub.emit()
    clock.advance(0.2)
    hub.end_trip()  # the adapter disappears
    clock.advance(0.2)  # same second
    hub.update_fix(position(clock))
    gnss = hub.emit(engine=False)
    assert gnss is not None and gnss.trip_id != engine
    assert events.ends == [engine]


def rows_of(path: Path) -> list[dict[str, str]]:
    text = gzip.decompress(path.read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def test_a_gnss_only_drive_without_adapter(tmp_path: Path) -> None:
    records = tmp_path / "records"
    with NmeaPty(ROUTE, rate_hz=4.0, no_fix_periods=[(3.0, 6.0)]) as gnss:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "gnss-car",
                "OBD_INTERFACE": str(tmp_path / "no-adapter"),
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
                "TRIP_END_TIMEOUT": "1.5",
                "FILE_ROTATION_SECONDS": "60",
            }
        )
        daemon = Daemon(cfg)
        daemon.start()
        try:
            wait_until(lambda: daemon.trip is not None and daemon.trip.trips_finished >= 1, 60)
            second = wait_until(lambda: daemon.hub.trip, 30, "the trip after the fix is back")
            recorder = daemon.recorder
            assert recorder is not None
            wait_until(lambda: recorder.rows_in_file > 4, 30, "rows of the second trip")
        finally:
            daemon.stop()
    summaries = sorted(records.glob("*_summary.json"))
    assert len(summaries) == 2, [p.name for p in records.iterdir()]
    files = sorted(records.glob("*.tsv.gz"))
    trips = {p.name.split("_")[1] for p in files}
    assert len(trips) == 2 and second in trips
    for path in files:
        side = json.loads(Path(f"{path}.json").read_text())
        rows = rows_of(path)
        assert side["rows"] == len(rows) > 0
        for row in rows:
            assert row["GPS_LATITUDE"] and row["GPS_LONGITUDE"], "a row without position"
            assert row["RPM"] == "" and row["SPEED"] == ""
            assert set(GPS_COLUMNS) <= set(row)
    for path in summaries:
        doc = json.loads(path.read_text())
        assert doc["engine_rows"] == 0 and doc["rows"] > 0
        assert doc["totals"]["distance_km"] is None
        assert doc["totals"]["gaps"] == 0, "the fix loss must end the trip, not be a gap in it"


def test_file_recording_off_writes_nothing_but_keeps_the_trip_computer(tmp_path: Path) -> None:
    records = tmp_path / "records"
    with NmeaPty(ROUTE, rate_hz=4.0) as gnss:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "gnss-car",
                "FILE_RECORDING": "no",
                "OBD_INTERFACE": str(tmp_path / "no-adapter"),
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
            }
        )
        daemon = Daemon(cfg)
        daemon.start()
        try:
            assert daemon.trip is not None
            trip = daemon.trip
            wait_until(lambda: trip.live()["active"] and trip.live()["rows"] >= 8, 60)
            live = trip.live()
            assert live["totals"]["gnss_distance_km"] > 0
        finally:
            daemon.stop()
    assert not records.exists() or not any(records.iterdir())
    assert daemon.trip.live()["previous"]["trip"] == live["trip"]


def test_a_gnss_only_start_on_a_clock_a_day_off_makes_no_trip_on_the_wrong_date(
    tmp_path: Path,
) -> None:
    """A Pi without a real-time clock boots a day behind (fake-hwclock) with the car off:
    the first epochs of the receiver wait for GNSS time to be confirmed instead of opening
    a trip, a file and a summary on the wrong date that ends two rows later."""

    records = tmp_path / "records"
    clock = OffsetClock(-86_400.0)
    with NmeaPty(ROUTE, rate_hz=2.0) as gnss:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "gnss-car",
                "OBD_INTERFACE": str(tmp_path / "no-adapter"),
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
                "FILE_ROTATION_SECONDS": "60",
            }
        )
        daemon = Daemon(cfg, clock)
        daemon.start()
        try:
            wait_until(lambda: daemon.hub.timebase.source == "gnss", 60, "GNSS time adopted")
            wait_until(lambda: daemon.hub.rows >= 4, 30, "rows on GNSS time")
        finally:
            daemon.stop()
    files = sorted(records.glob("*.tsv.gz"))
    trips = {p.name.split("_")[1] for p in files}
    assert len(trips) == 1, [p.name for p in records.iterdir()]
    assert len(list(records.glob("*_summary.json"))) == 1
    for path in files:
        for row in rows_of(path):
            assert abs(datetime.fromisoformat(row["TIME_UTC"]).timestamp() - time.time()) < 120


def test_no_gnss_row_opens_a_trip_once_the_daemon_is_stopping(tmp_path: Path) -> None:
    """At stop the OBD link ends the engine trip before the receiver is closed: a fix in
    between opened a one-row GNSS-only trip (its own file, summary and upload) at every
    shutdown on a loaded machine."""
    clock = FakeClock(start=1_795_000_000.0)
    cfg = parse(
        {
            "CAR_IDENTIFIER": "stop-car",
            "RECORD_DIRECTORY_LOCATION": str(tmp_path),
            "GPS_POSITION_MONITORING": "yes",
            "GPS_INTERFACE": "/dev/null",
            "SAMPLE_INTERVAL": "0",
        }
    )
    daemon = Daemon(cfg, clock)
    events = Events()
    daemon.hub.add_listener(events)
    engine = daemon.hub.begin_trip()
    daemon.hub.emit()
    daemon.request_stop()
    daemon.hub.end_trip()  # what ObdLink.stop does
    clock.advance(0.5)
    daemon._on_fix(position(clock))
    assert daemon.hub.trip is None
    assert {s.trip_id for s in events.samples} == {engine}
