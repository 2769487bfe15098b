"""Chaos: the Pi has no clock. Pure tests of the hub, the time base and the trip computer
against wall clocks that are years off, get corrected by a fix, or are set by NTP mid-trip.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eccm.clock import FakeClock
from eccm.config import parse
from eccm.gnss.fix import Fix
from eccm.hub import Hub
from eccm.sample import Layout, Reading, Sample, trip_id_for
from eccm.store.recorder import Recorder, used_trip_ids
from eccm.timebase import CONFIRM_EPOCHS, TimeBase
from eccm.trip.computer import Trip, TripComputer
from eccm.trip.segment import REDATE_STEP
from tests.listeners import Events
from tests.nmea_sentences import good_fix
from tests.trip_helpers import trip_settings

LAYOUT = Layout(fast=("RPM", "SPEED"), slow=(), gps=True)
TRUE = 1_795_000_000.0  # 2026-11-18
TEN_YEARS = 10 * 365.25 * 86400


fix = good_fix


def confirmed(clock: FakeClock, gnss_time: float) -> list[Fix]:
    """The receiver's last CONFIRM_EPOCHS epochs at 1 Hz, the newest saying ``gnss_time``
    now: GNSS time is adopted only once that many consecutive epochs agree."""
    newest = fix(clock, gnss_time)
    return [
        replace(newest, time_utc=gnss_time - k, received=newest.received - k)
        for k in range(CONFIRM_EPOCHS - 1, -1, -1)
    ]


def hub_at(wall: float) -> tuple[FakeClock, Hub, Events]:
    clock = FakeClock(start=wall, monotonic_start=500.0)
    hub = Hub(clock, max_fix_age=2.0, layout=LAYOUT)
    events = Events()
    hub.add_listener(events)
    return clock, hub, events


def engine_row(hub: Hub, clock: FakeClock, speed: float = 50.0) -> Sample:
    if not hub.engine_trip:
        hub.begin_trip()
    hub.update_values(
        {
            "RPM": Reading(2000.0, "revolutions_per_minute", clock.monotonic()),
            "SPEED": Reading(speed, "kilometer_per_hour", clock.monotonic()),
        }
    )
    sample = hub.emit()
    assert sample is not None
    return sample


def test_the_first_fix_ends_a_trip_stamped_years_off_and_the_drive_goes_on_in_a_corrected_trip() -> (
    None
):
    clock, hub, events = hub_at(TRUE - TEN_YEARS)
    before = [engine_row(hub, clock)]
    for _ in range(20):
        clock.advance(0.5)
        before.append(engine_row(hub, clock))
    old_trip = before[0].trip_id
    assert old_trip.startswith("2016") and all(s.trip_id == old_trip for s in before)
    assert all(s.time_source == "system" for s in before)

    for f in confirmed(clock, TRUE + 10.0):  # the receiver knows the true time
        hub.update_fix(f)
    clock.advance(0.5)
    after = [engine_row(hub, clock)]
    for _ in range(10):
        clock.advance(0.5)
        after.append(engine_row(hub, clock))

    new_trip = after[0].trip_id
    assert new_trip == trip_id_for(TRUE + 10.5)
    assert all(s.trip_id == new_trip and s.time_source == "gnss" for s in after)
    assert abs(after[0].time - (TRUE + 10.5)) < 1e-6
    # the old trip ends before the first row of the new one reaches any listener
    first_new = events.log.index(("sample", after[0]))
    assert events.log[first_new - 1] == ("end", old_trip)
    assert hub.trip == new_trip and hub.engine_trip


def test_a_clock_a_few_seconds_off_keeps_its_trip() -> None:
    clock, hub, events = hub_at(TRUE - 20.0)
    first = engine_row(hub, clock)
    for f in confirmed(clock, TRUE + 0.2):
        hub.update_fix(f)
    clock.advance(0.5)
    second = engine_row(hub, clock)
    assert second.time_source == "gnss"
    assert second.trip_id == first.trip_id
    assert events.ends == []
    assert REDATE_STEP > 20.0


def test_ntp_setting_the_clock_between_two_fixes_does_not_move_the_stamps() -> None:
    clock, hub, events = hub_at(TRUE - TEN_YEARS)
    for f in confirmed(clock, TRUE):
        hub.update_fix(f)
    first = engine_row(hub, clock)
    assert first.time_source == "gnss"
    clock.advance(0.4)
    clock.set_wall(TRUE + 0.4)  # NTP sets the clock: right now, before the next fix
    second = engine_row(hub, clock)
    assert abs(second.time - first.time - 0.4) < 1e-6, "a row stamped ten years ahead"
    assert second.time_source == "system"
    assert second.trip_id == first.trip_id and events.ends == []
    # the receiver lost its fix for a long while (a garage): the stamps stay right
    clock.advance(3600.0)
    third = engine_row(hub, clock)
    assert abs(third.time - (TRUE + 3600.4)) < 1e-6


def test_receiver_latency_jitter_never_makes_row_times_go_backwards() -> None:
    clock, hub, _events = hub_at(TRUE - TEN_YEARS)
    latencies = itertools.cycle([0.05, 0.9, 0.3, 0.02, 0.7, 0.45, 0.1, 0.95])
    times = []
    for i in range(200):
        hub.update_fix(fix(clock, TRUE + i * 0.25, next(latencies)))
        times.append(engine_row(hub, clock).time)
        clock.advance(0.125)
        times.append(engine_row(hub, clock).time)
        clock.advance(0.125)
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) > 0, "row times went backwards"
    # and the stamps are those of the least-delayed fixes: within 50 ms of the truth
    assert abs(times[-1] - (TRUE + 199 * 0.25 + 0.125)) < 0.05 + 1e-6


def test_a_clock_hovering_at_the_threshold_does_not_flip_the_time_source() -> None:
    clock = FakeClock(start=TRUE, monotonic_start=10.0)
    tb = TimeBase(threshold=2.0)
    sources = []
    for i in range(100):
        off = 2.0 + (0.02 if i % 2 else -0.02)  # 1.98, 2.02, 1.98...
        tb.observe(fix(clock, clock.time() + off))
        sources.append(tb.stamp(clock.time(), clock.monotonic())[1])
        clock.advance(1.0)
    changes = sum(a != b for a, b in itertools.pairwise(sources))
    assert changes <= 1, sources


def test_ntp_stepping_a_clock_without_gnss_mid_trip_redates_the_trip_without_absurd_durations() -> (
    None
):
    clock, hub, events = hub_at(TRUE - TEN_YEARS)
    trip = Trip("x", trip_settings())
    for _ in range(11):
        trip.add(engine_row(hub, clock))
        clock.advance(1.0)
    clock.set_wall(TRUE)  # NTP, no receiver: the rows jump ten years
    new = engine_row(hub, clock)
    assert events.ends == [trip_id_for(TRUE - TEN_YEARS)]
    assert new.trip_id == trip_id_for(TRUE) and new.time_source == "system"

    # a smaller step (30 s) keeps the trip; its computer counts the real time that passed
    clock2, hub2, events2 = hub_at(TRUE)
    trip2 = Trip("y", trip_settings())
    for _ in range(5):
        trip2.add(engine_row(hub2, clock2))
        clock2.advance(1.0)
    clock2.set_wall(clock2.time() + 30.0)
    for _ in range(5):
        trip2.add(engine_row(hub2, clock2))
        clock2.advance(1.0)
    assert events2.ends == []
    totals = trip2.totals()
    assert totals["duration_s"] == 9.0
    assert totals["gaps"] == 0 and totals["clock_steps"] == 1
    assert totals["distance_km"] == round(50.0 / 3.6 * 9.0 / 1000.0, 4)


def test_a_trip_across_the_gnss_correction_keeps_its_time_and_distance() -> None:
    # Smaller than REDATE_STEP, so one trip: the interval across the correction counts.
    clock, hub, _events = hub_at(TRUE - 40.0)
    trip = Trip("z", trip_settings())
    for i in range(10):
        if i == 5:
            for f in confirmed(clock, TRUE + clock.monotonic() - 500.0):
                hub.update_fix(f)
        trip.add(engine_row(hub, clock, speed=36.0))
        clock.advance(1.0)
    totals = trip.totals()
    assert totals["duration_s"] == 9.0
    assert totals["distance_km"] == 0.09
    assert totals["clock_steps"] == 1


def test_trip_ids_are_never_reused_even_when_the_clock_repeats_itself() -> None:
    clock, hub, events = hub_at(TRUE)
    first = hub.begin_trip()
    hub.end_trip()
    clock.advance(0.3)  # another trip in the same second
    second = hub.begin_trip()
    assert second != first and second == trip_id_for(TRUE + 1)
    hub.end_trip()
    # an earlier boot (whose clock started at the same time) used the next ids already
    taken = {trip_id_for(TRUE + 2), trip_id_for(TRUE + 3)}
    clock.advance(1.0)
    hub.reserve_trip_ids(taken)
    third = hub.begin_trip()
    assert third == trip_id_for(TRUE + 4)
    assert events.ends == [first, second]


def test_the_store_knows_the_trip_ids_of_earlier_runs(tmp_path: Path) -> None:
    (tmp_path / "uploaded").mkdir()
    (tmp_path / "uploaded" / "car_20261122T010203Z_0001.tsv.gz").write_bytes(b"")
    (tmp_path / "car_20261122T020000Z_summary.json").write_text("{}")
    (tmp_path / ".eccm-sequence").write_text("car_20261122T030000Z_0002.tsv\n")
    used = used_trip_ids(tmp_path, "car", ".tsv")
    assert "20261122T010203Z" in used
    assert "20261122T020000Z" in used
    assert "20261122T030000Z" in used
    assert "20261122T040000Z" not in used
    assert "20261122T010203Z" not in used_trip_ids(tmp_path, "other", ".tsv")
    assert used_trip_ids(tmp_path / "not-yet", "car", ".tsv") == frozenset()


def test_the_trip_summary_is_checkpointed_every_few_seconds_of_monotonic_time() -> None:
    """A power cut (the usual end of a trip in a car) costs at most that much summary; the
    first comes after FIRST_CHECKPOINT (2 s), so that a car moved and switched off at once
    still has its trip in the logbook."""
    checkpoints: list[dict[str, Any]] = []
    computer = TripComputer(
        trip_settings(), car="car", on_checkpoint=checkpoints.append, checkpoint_every=10.0
    )
    # 00:00:05 to 00:00:29 of one minute; the wall clock is stepped once (NTP) mid-way
    clock, hub, _events = hub_at(1_795_000_000.0 - 1_795_000_000.0 % 60 + 5)
    hub.add_listener(computer)
    for i in range(25):
        if i == 12:
            clock.set_wall(clock.time() + 30.0)
        engine_row(hub, clock)
        clock.advance(1.0)
    assert [c["rows"] for c in checkpoints] == [3, 13, 23]
    assert all(c["complete"] is False for c in checkpoints)
    assert checkpoints[0]["totals"]["duration_s"] == 2.0
    assert checkpoints[-1]["minutes"][-1]["rows"] == 23  # the minute in progress
    assert checkpoints[-1]["totals"]["duration_s"] == 22.0


def test_a_pi_booting_to_the_same_time_every_day_never_reuses_a_trip_id_or_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Months of trips from a Pi whose clock starts at the same second at every boot: the
    ledger is trimmed many times, yet every trip id stays taken and no file name comes
    back."""
    from eccm.store.names import next_seq, trim_ledger

    keep = 16  # the ledger's recent names, small so that it is trimmed often here
    monkeypatch.setattr("eccm.store.recorder._LEDGER_KEEP", keep)

    boot = 1_700_000_000.0
    cfg = parse({"CAR_IDENTIFIER": "car", "RECORD_DIRECTORY_LOCATION": str(tmp_path)})
    trips: list[str] = []
    for day in range(150):  # every trip: a fresh boot, a fresh hub, files uploaded + deleted
        rec = Recorder.from_config(cfg, FakeClock())
        clock = FakeClock(start=boot)
        hub = Hub(clock, max_fix_age=2.0, layout=LAYOUT)
        hub.reserve_trip_ids(used_trip_ids(tmp_path, "car", ".tsv"))  # as the daemon does
        trip = hub.begin_trip()
        assert trip not in trips, f"day {day}: trip id {trip} reused"
        trips.append(trip)
        for seq in range(1, 4 if day % 7 else 12):
            assert next_seq("car", trip, rec._known_names()) == seq
            rec._ledger_add(f"car_{trip}_{seq:04d}.tsv")
    rec = Recorder.from_config(cfg, FakeClock())
    lines = (tmp_path / ".eccm-sequence").read_text().splitlines()
    assert len(lines) < 150 + 3 * keep, "the ledger must stay bounded"
    assert used_trip_ids(tmp_path, "car", ".tsv") >= set(trips)
    # the highest file of an old trip is remembered: a reused id would continue after it
    assert next_seq("car", trips[0], rec._known_names()) == 12
    assert trim_ledger(["a", "b"], 5, 5) == ["a", "b"]


def test_a_ledger_line_torn_by_a_power_cut_does_not_swallow_the_next_name(tmp_path: Path) -> None:
    cfg = parse({"CAR_IDENTIFIER": "car", "RECORD_DIRECTORY_LOCATION": str(tmp_path)})
    rec = Recorder.from_config(cfg, FakeClock())
    (tmp_path / ".eccm-sequence").write_text("car_20261122T010000Z_0001.tsv\ncar_2026112")
    rec._ledger_add("car_20261122T020000Z_0001.tsv")
    assert "20261122T020000Z" in used_trip_ids(tmp_path, "car", ".tsv")
    assert "car_20261122T020000Z_0001.tsv" in rec._ledger()


def test_rotation_and_flushing_follow_the_monotonic_clock_whatever_ntp_does(
    tmp_path: Path,
) -> None:
    from tests.recorder_writer import config, sample
    from tests.waiting import wait_until

    cfg = config(tmp_path, FILE_ROTATION_SECONDS="10", FILE_FLUSH_INTERVAL="1")
    clock = FakeClock(start=TRUE)
    rec = Recorder.from_config(cfg, clock)
    rec.start()
    try:
        rec.on_sample(sample(0))
        wait_until(lambda: rec.rows_written == 1, 30)
        clock.set_wall(TRUE + TEN_YEARS)  # NTP steps ahead: the file is not ten years old
        clock.advance(0.5)
        rec.on_sample(sample(1))
        wait_until(lambda: rec.rows_written == 2, 30)
        clock.set_wall(TRUE - TEN_YEARS)  # and back: the file is not -10 years old either
        clock.advance(9.0)
        rec.on_sample(sample(2))
        wait_until(lambda: rec.rows_written == 3, 30)
        assert rec.files_closed == 0 and rec.rows_in_file == 3
        clock.advance(0.6)  # 10.1 s of monotonic time since the file opened
        wait_until(lambda: rec.files_closed == 1, 30, "the rotation by age")
    finally:
        rec.stop()


def test_a_receiver_with_the_gps_week_rollover_bug_does_not_send_the_rows_back_to_2007() -> None:
    import datetime as dt

    from eccm.gnss.nmea import NmeaDecoder
    from tests.nmea_sentences import epoch

    true = dt.datetime.fromtimestamp(TRUE, dt.UTC)
    rollover = dt.timedelta(weeks=1024)
    settle = CONFIRM_EPOCHS - 1  # seconds of epochs before the time is adopted
    clock, hub, events = hub_at(TRUE - settle)  # the system clock is right (NTP)
    first = engine_row(hub, clock)
    decoder = NmeaDecoder(clock)
    for k in range(settle, -1, -1):
        for f in decoder.feed(epoch(true - rollover - dt.timedelta(seconds=k))):  # 2007
            hub.update_fix(f)
        clock.advance(1.0 if k else 0.0)
    clock.advance(0.5)
    second = engine_row(hub, clock)
    assert second.time_source == "system" and abs(second.time - (TRUE + 0.5)) < 1e-6
    assert second.trip_id == first.trip_id and events.ends == []
    assert second.fix is not None and second.fix.time_utc == TRUE
    # and on a Pi without a clock, the rollover-bugged receiver still gives the right time
    clock2, hub2, _ = hub_at(TRUE - TEN_YEARS - settle)
    decoder2 = NmeaDecoder(clock2)
    for k in range(settle, -1, -1):
        for f in decoder2.feed(epoch(true - 2 * rollover - dt.timedelta(seconds=k))):
            hub2.update_fix(f)
        clock2.advance(1.0 if k else 0.0)
    assert abs(hub2.now() - TRUE) < 1e-6
