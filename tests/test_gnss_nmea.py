"""NmeaDecoder against real receiver captures (tests/data/nmea, from the GPSD project)."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import logging
import tracemalloc
from pathlib import Path

import pynmea2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eccm.clock import FakeClock
from eccm.gnss.fix import Fix
from eccm.gnss.nmea import KNOT, MAX_SENTENCE, UNCHECKED_TO_TRUST, NmeaDecoder
from tests.nmea_sentences import REPLAY_PIVOT, sentence

DATA = Path(__file__).parent / "data" / "nmea"
CAPTURES = (
    "haicom-305N.log",
    "telit-he910.log",
    "sirfstarv-nmea.log",
    "skytraq-dgps.log",
    "ublox-8.log",
    "beidou-gb.log",
)


def stream(name: str) -> bytes:
    """The bytes the receiver sent: the capture without its '#' header lines."""
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"#"))


def by_line(name: str) -> list[tuple[bytes, list[Fix]]]:
    """Each line of the capture with the fixes the decoder emitted for it."""
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    return [(line, decoder.feed(line)) for line in stream(name).splitlines(keepends=True)]


def fix_after(name: str, line: str) -> Fix:
    """The fix of ``line``'s epoch: emitted at that line or at the next one that completes it."""
    lines = by_line(name)
    for i, (raw, _) in enumerate(lines):
        if raw.strip().endswith(line.encode()):
            for _, fixes in lines[i : i + 20]:
                if fixes:
                    assert len(fixes) == 1, fixes
                    return fixes[0]
            raise AssertionError(f"no fix for the epoch of {line!r}")
    raise AssertionError(f"{line!r} not in {name}")


def utc(y: int, mo: int, d: int, h: int, mi: int, s: float) -> float:
    return calendar.timegm((y, mo, d, h, mi, 0, 0, 0, 0)) + s


def dm(deg: int, minutes: float) -> float:
    return deg + minutes / 60.0


def check(fix: Fix, **expected: float | int | None) -> None:
    for name, want in expected.items():
        got = getattr(fix, name)
        if want is None or isinstance(want, int):
            assert got == want, (name, got, want)
        else:
            tol = 1e-6 if name in ("latitude", "longitude", "time_utc") else 1e-9
            assert got == pytest.approx(want, abs=tol), (name, got, want)


# ---------------------------------------------------------------- real captures
def test_haicom_2d_fix_has_no_altitude() -> None:
    """The Haicom's first fixes are 2D (GSA mode 2, sent every third epoch) and its GGA
    repeats 3.0 m meanwhile: GPS_ALTITUDE said 3 m (gpsd, on the same bytes, none)."""
    lines = by_line("haicom-305N.log")
    fixes = [f for _, got in lines for f in got if f.has_position]
    by_time = {round(f.time_utc or 0, 1): f for f in fixes}
    for second in (4.8, 5.8, 6.8, 7.8, 8.8, 9.8):  # GSA mode 2 at 09:53:04 and 09:53:07
        fix = by_time[round(utc(2007, 4, 8, 9, 53, second), 1)]
        assert fix.altitude is None and fix.has_position and fix.quality == 1, fix
    # GSA mode 3 in the epoch of 09:53:10: altitude again, the GGA's.
    check(by_time[round(utc(2007, 4, 8, 9, 53, 10.8), 1)], altitude=3.0)
    check(by_time[round(utc(2007, 4, 8, 9, 53, 11.8), 1)], altitude=4.1)


def test_a_2d_mode_that_is_no_longer_said_is_not_held() -> None:
    clock = FakeClock()
    decoder = NmeaDecoder(clock, REPLAY_PIVOT)
    decoder.feed(stream("haicom-305N.log").split(b"$GPGGA,095310")[0])  # last GSA: 2D
    clock.advance(6.0)
    (fix,) = decoder.feed(
        sentence("GPGGA,095317.800,2712.6400,S,15303.1170,E,1,05,07.5,4.5,M,42.2,M,,")
        + sentence("GPRMC,095317.800,A,2712.6400,S,15303.1170,E,0.00,0.00,080407,,,A")
    )
    assert fix.altitude == 4.5


def test_haicom_no_fix_first_then_merged_rmc_and_gga_of_one_epoch() -> None:
    first = fix_after(
        "haicom-305N.log", "$GPRMC,095255.810,V,2712.6404,S,15303.1201,E,0.00,0.00,080407,,,A*6E"
    )
    check(first, time_utc=utc(2007, 4, 8, 9, 52, 55.81), latitude=None, longitude=None)
    # GGA quality 0 with coordinates: the receiver says they are not a fix.
    gga0 = fix_after(
        "haicom-305N.log", "$GPGGA,095257.809,2712.6404,S,15303.1201,E,0,00,00.0,4.0,M,42.2,M,,*7B"
    )
    assert not gga0.has_position and gga0.quality == 0

    moving = fix_after(
        "haicom-305N.log", "$GPRMC,095319.799,A,2712.6420,S,15303.1303,E,5.09,100.78,080407,,,A*79"
    )
    check(
        moving,
        time_utc=utc(2007, 4, 8, 9, 53, 19.799),
        latitude=-dm(27, 12.6420),
        longitude=dm(153, 3.1303),
        altitude=22.8,  # from the GGA of the same epoch, two lines earlier
        speed=5.09 * 1852 / 3600,
        track=100.78,
        quality=1,
        satellites=5,
        hdop=7.5,
    )
    assert moving.speed == pytest.approx(2.6185, abs=1e-4)


def test_telit_no_fix_then_fix_and_no_time_before_a_date() -> None:
    lines = by_line("telit-he910.log")
    assert lines[0][1][0] == Fix(
        None, None, None, None, None, None, 0, None, None, 1000.0, 1_700_000_000.0
    )
    gga = fix_after(
        "telit-he910.log", "$GPGGA,105153.71,5050.4122,N,00420.8266,E,1,04,2.25,109.44,M,,M,,*77"
    )
    # A position, but no RMC has given the date yet.
    check(gga, time_utc=None, latitude=dm(50, 50.4122), longitude=dm(4, 20.8266), altitude=109.44)
    rmc = fix_after(
        "telit-he910.log", "$GPRMC,105153.71,A,5050.4122,N,00420.8266,E,0.14,303.60,120319,,,A*59"
    )
    check(
        rmc,
        time_utc=utc(2019, 3, 12, 10, 51, 53.71),
        latitude=dm(50, 50.4122),
        longitude=dm(4, 20.8266),
        altitude=109.44,
        speed=0.14 * KNOT,
        track=303.60,
        quality=1,
        satellites=4,
        hdop=2.25,
    )
    # Before that GGA (line 260 of the capture), no fix carried a position.
    index = next(i for i, (raw, _) in enumerate(lines) if raw.startswith(b"$GPGGA,105153.71"))
    earlier = [f for _, fs in lines[:index] for f in fs]
    assert len(earlier) > 30 and not any(f.has_position for f in earlier)


def test_sirfstarv_gn_talkers_and_per_constellation_gga() -> None:
    fix = fix_after(
        "sirfstarv-nmea.log",
        "$GNRMC,020935.000,A,4404.1351,N,12118.8556,W,0.04,359.11,050219,,,A*6C",
    )
    check(
        fix,
        time_utc=utc(2019, 2, 5, 2, 9, 35.0),
        latitude=dm(44, 4.1351),
        longitude=-dm(121, 18.8556),
        altitude=1123.9,
        speed=0.04 * KNOT,
        track=359.11,
        quality=1,
        hdop=0.9,
        # GPGGA counts 8 GPS satellites and GLGGA 2 GLONASS ones (see the GNGSA lines).
        satellites=10,
    )


def test_skytraq_dgps_with_seven_decimal_minutes() -> None:
    fix = fix_after(
        "skytraq-dgps.log",
        "$GPRMC,213121.000,A,4404.1295864,N,12118.8685453,W,000.0,122.7,070416,,,D*72",
    )
    check(
        fix,
        time_utc=utc(2016, 4, 7, 21, 31, 21.0),
        latitude=dm(44, 4.1295864),
        longitude=-dm(121, 18.8685453),
        altitude=1102.537,
        speed=0.0,
        track=122.7,
        quality=2,
        satellites=7,
        hdop=1.2,
    )
    assert fix.latitude == pytest.approx(44.06882644, abs=1e-8)


def test_ublox_binary_frames_and_a_truncated_sentence_are_skipped() -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes = decoder.feed(stream("ublox-8.log"))
    # The first line is UBX binary glued to "$GNRMC,000941.00,...": the sentence survives.
    check(
        fixes[0],
        time_utc=utc(2017, 1, 10, 0, 9, 41.0),
        latitude=dm(44, 4.13387),
        longitude=-dm(121, 18.85628),
        speed=0.029 * KNOT,
        track=None,
        altitude=None,
        quality=None,
    )
    check(
        fixes[1],
        time_utc=utc(2017, 1, 10, 0, 9, 41.0),
        altitude=1144.8,
        satellites=12,
        hdop=1.01,
        quality=1,
        speed=0.029 * KNOT,
    )
    # The capture ends inside "$GNRMC,001053.00,...": no fix for it.
    assert fixes[-1].time_utc == utc(2017, 1, 10, 0, 10, 52.0)
    assert decoder.skipped == 2  # the binary run and the truncated sentence
    assert all(f.has_position for f in fixes)


def test_beidou_no_fix_at_first_gives_no_position() -> None:
    lines = by_line("beidou-gb.log")
    fixes = [f for _, fs in lines for f in fs]
    first_valid = next(i for i, f in enumerate(fixes) if f.has_position)
    assert first_valid > 0
    assert all(not f.has_position for f in fixes[:first_valid])
    assert fixes[0].time_utc is None  # GGA before any RMC: no date yet
    check(
        fix_after(
            "beidou-gb.log",
            "$GPGGA,053232.438,3114.8789,N,12135.2442,E,1,06,1.2,153.8,M,8.3,M,,0000*6A",
        ),
        time_utc=utc(2015, 3, 2, 5, 32, 32.438),  # date from the earlier RMC with status V
        latitude=dm(31, 14.8789),
        longitude=dm(121, 35.2442),
        altitude=153.8,
        # GPGGA says 6 (GPS only), GNGNS 7: 6 GPS and 1 BeiDou used, as its GNGSA list.
        satellites=7,
        hdop=1.2,
        quality=1,
    )
    check(
        fix_after(
            "beidou-gb.log",
            "$GNRMC,053232.438,A,3114.8789,N,12135.2442,E,0.26,167.42,020315,,,A*70",
        ),
        speed=0.26 * KNOT,
        track=167.42,
        altitude=153.8,
    )


def test_a_gns_without_a_time_does_not_cut_the_epoch() -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    decoder.feed(stream("beidou-gb.log"))
    got = decoder.feed(
        sentence("GPGGA,053234.438,3114.8821,N,12135.2428,E,1,06,1.2,167.2,M,8.3,M,,0000")
        + sentence("GNGNS,,3114.8821,N,12135.2428,E,ANNA,07,1.2,167.2,8.3,,0000")
        + sentence("GNRMC,053234.438,A,3114.8821,N,12135.2428,E,0.07,167.42,020315,,,A")
    )
    assert len(got) == 1 and got[0].altitude == 167.2 and got[0].satellites == 7


def test_one_complete_fix_per_epoch_and_counters() -> None:
    data = stream("skytraq-dgps.log")
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes = decoder.feed(data)
    lines = data.splitlines()
    epochs = {line.split(b",")[1] for line in lines if line[3:6] in (b"RMC", b"GGA")}
    # The very first sentence gives a fix at once (the decoder does not know yet what the
    # receiver sends), then one per epoch, once its RMC and its GGA are both in.
    assert len(fixes) == len(epochs) + 1
    for fix in fixes[1:]:
        assert fix.quality is not None and fix.speed is not None and fix.time_utc is not None
    assert decoder.sentences == len(lines)
    assert decoder.skipped == 0


def epoch_at(second: int) -> tuple[bytes, bytes]:
    """The RMC and the GGA of the epoch at 12:00:0<second>."""
    rmc, gga = list(RMC_FIELDS), list(GGA_FIELDS)
    rmc[0] = gga[0] = f"12000{second}.00"
    return render("RMC", rmc), render("GGA", gga)


def test_rows_never_get_half_an_epoch() -> None:
    """A fix between the RMC and the GGA of one epoch would lack altitude and quality."""
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes: list[Fix] = []
    for second in range(3):
        rmc, gga = epoch_at(second)
        fixes += decoder.feed(rmc)
        fixes += decoder.feed(render("VTG", ["84.4", "T", "", "M", "22.4", "N", "41.5", "K", "A"]))
        fixes += decoder.feed(gga)
    assert len(fixes) == 4  # the first RMC alone, then each complete epoch
    for fix in fixes[1:]:
        check(fix, altitude=545.4, quality=1, satellites=8, hdop=0.9, speed=22.4 * KNOT)


@pytest.mark.parametrize("kept", ["RMC", "GGA"])
def test_a_receiver_that_stops_sending_one_kind_still_gives_fixes(kept: str) -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    both = render("RMC", RMC_FIELDS) + render("GGA", GGA_FIELDS)
    assert len(decoder.feed(both)) == 2
    fixes: list[Fix] = []
    for second in range(1, 5):
        fields = list(RMC_FIELDS if kept == "RMC" else GGA_FIELDS)
        fields[0] = f"12000{second}.00"
        fixes += decoder.feed(render(kept, fields))
    # Two epochs wait for the missing kind (one lost sentence is no change of what the
    # receiver sends); from the next on, each sentence is a fix.
    assert len(fixes) == 2
    assert all(f.has_position for f in fixes)


def test_gga_only_receiver_has_no_time_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes: list[Fix] = []
    with caplog.at_level(logging.WARNING, logger="eccm.gnss.nmea"):
        for second in range(30):
            gga = list(GGA_FIELDS)
            gga[0] = f"1200{second:02d}.00"
            fixes += decoder.feed(render("GGA", gga))
    assert len(fixes) == 30
    assert all(f.has_position and f.time_utc is None for f in fixes)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no RMC" in warnings[0] and "GPS_TIME_UTC" in warnings[0]


def test_received_times_come_from_the_clock_at_feed() -> None:
    clock = FakeClock(start=1_000_000.0, monotonic_start=5.0)
    decoder = NmeaDecoder(clock, REPLAY_PIVOT)
    clock.advance(2.5)
    (fix,) = decoder.feed(
        b"$GPRMC,105153.71,A,5050.4122,N,00420.8266,E,0.14,303.60,120319,,,A*59\r\n"
    )
    assert (fix.received, fix.received_wall) == (7.5, 1_000_002.5)


# ---------------------------------------------------------------- synthetic sentences
def render(kind: str, fields: list[str], talker: str = "GP") -> bytes:
    cls = {"RMC": pynmea2.RMC, "GGA": pynmea2.GGA, "VTG": pynmea2.VTG}[kind]
    return (cls(talker, kind, fields).render() + "\r\n").encode()


RMC_FIELDS = [
    "120000.00",
    "A",
    "4807.038",
    "N",
    "01131.000",
    "E",
    "022.4",
    "084.4",
    "230304",
    "",
    "",
]
GGA_FIELDS = [
    "120000.00",
    "4807.038",
    "N",
    "01131.000",
    "E",
    "1",
    "08",
    "0.9",
    "545.4",
    "M",
    "46.9",
    "M",
    "",
    "",
]


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "BD", "GB", "GA"])
def test_any_talker(talker: str) -> None:
    (fix,) = NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(render("RMC", RMC_FIELDS, talker))
    check(fix, latitude=dm(48, 7.038), longitude=dm(11, 31.0), time_utc=utc(2004, 3, 23, 12, 0, 0))


def test_vtg_fills_speed_and_track_of_its_epoch() -> None:
    rmc = list(RMC_FIELDS)
    rmc[6:8] = ["", ""]
    vtg = ["90.0", "T", "", "M", "10.0", "N", "18.52", "K", "A"]
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes = decoder.feed(render("RMC", rmc) + render("VTG", vtg) + render("GGA", GGA_FIELDS))
    assert fixes[0].speed is None
    check(fixes[1], speed=10.0 * KNOT, track=90.0, altitude=545.4, satellites=8)
    # A new epoch does not inherit the old epoch's speed.
    later, later_rmc = list(GGA_FIELDS), list(rmc)
    later[0] = later_rmc[0] = "120001.00"
    (fix,) = decoder.feed(render("RMC", later_rmc) + render("GGA", later))
    assert fix.speed is None and fix.track is None


@pytest.mark.parametrize(
    ("kind", "index", "value"),
    [
        ("RMC", 1, "V"),
        ("RMC", 2, ""),
        ("RMC", 4, ""),
        ("GGA", 5, "0"),
        ("GGA", 1, ""),
        ("GGA", 5, ""),
    ],
)
def test_no_position_when_the_receiver_says_so_or_fields_are_empty(
    kind: str, index: int, value: str
) -> None:
    fields = list(RMC_FIELDS if kind == "RMC" else GGA_FIELDS)
    fields[index] = value
    (fix,) = NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(render(kind, fields))
    assert fix.latitude is None and fix.longitude is None and not fix.has_position


def test_an_invalid_gga_voids_the_position_of_its_epoch() -> None:
    gga = list(GGA_FIELDS)
    gga[5] = "0"
    fixes = NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(
        render("RMC", RMC_FIELDS) + render("GGA", gga)
    )
    assert fixes[0].has_position and not fixes[1].has_position


def test_midnight_gga_before_the_rmc_of_the_new_day() -> None:
    decoder = NmeaDecoder(FakeClock(), dt.date(1990, 1, 1))  # 1999 is no rollover here
    rmc = list(RMC_FIELDS)
    rmc[0], rmc[8] = "235959.00", "311299"
    gga = list(GGA_FIELDS)
    gga[0] = "000000.00"
    later, last = list(GGA_FIELDS), list(GGA_FIELDS)
    later[0], last[0] = "000001.00", "000002.00"
    # The receiver sends no RMC after midnight: its GGA epochs are dated from the last RMC
    # (a fix again from the third, once the decoder has learnt that only GGA comes).
    fixes = decoder.feed(
        render("RMC", rmc) + render("GGA", gga) + render("GGA", later) + render("GGA", last)
    )
    assert fixes[0].time_utc == utc(1999, 12, 31, 23, 59, 59)
    assert fixes[1].time_utc == utc(2000, 1, 1, 0, 0, 2)


def test_bad_checksum_and_garbage_are_skipped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = render("RMC", RMC_FIELDS)
    bad = good[: good.index(b"*")] + b"*00\r\n"
    assert bad != good
    unknown = b"$GPXYZ,1,2*%02X\r\n" % pynmea2.NMEASentence.checksum("GPXYZ,1,2")
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.nmea"):
        fixes = decoder.feed(b"\xb5\x62\x01\x07 noise\r\n" + bad + unknown + good)
    assert len(fixes) == 1 and fixes[0].has_position
    assert decoder.skipped == 3
    assert decoder.sentences == 1
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 3
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_sentence_without_newline_ends_at_the_next_dollar() -> None:
    good = render("RMC", RMC_FIELDS).strip()
    truncated = good[:30]
    fixes = NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(truncated + good + b"\n")
    assert len(fixes) == 1 and fixes[0].has_position


def test_a_receiver_spewing_bytes_without_newline_does_not_grow_memory() -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    chunk = b"$" + b"A" * 65_535
    tracemalloc.start()
    try:
        for _ in range(256):  # 16 MiB, once as a '$...' line and then as plain garbage
            decoder.feed(chunk[1:] if _ else chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert decoder.skipped == 1
    fixes = decoder.feed(b"\r\n" + render("RMC", RMC_FIELDS))
    assert len(fixes) == 1 and decoder.skipped == 1


def test_an_overlong_line_is_skipped_however_it_is_chunked() -> None:
    line = b"$GP" + b"1" * (MAX_SENTENCE + 10) + b"\r\n" + b"xx\r\n" + render("RMC", RMC_FIELDS)
    whole = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    assert len(whole.feed(line)) == 1
    split = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    assert sum(len(split.feed(line[i : i + 7])) for i in range(0, len(line), 7)) == 1
    assert whole.skipped == split.skipped == 2


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(CAPTURES), cuts=st.lists(st.integers(min_value=0), max_size=60))
def test_chunking_does_not_change_the_fixes(name: str, cuts: list[int]) -> None:
    data = stream(name)
    whole = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    expected = whole.feed(data)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunked = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    got: list[Fix] = []
    for a, b in itertools.pairwise(points):
        got += chunked.feed(data[a:b])
    assert got == expected
    assert (chunked.sentences, chunked.skipped) == (whole.sentences, whole.skipped)


field_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="$*,"),
    max_size=12,
)


@st.composite
def checksummed(draw: st.DrawFn) -> bytes:
    """Sentences with a valid checksum and arbitrary fields: pynmea2 accepts them."""
    kind = draw(st.sampled_from(["RMC", "GGA", "VTG"]))
    n = {"RMC": 12, "GGA": 14, "VTG": 9}[kind]
    base = {
        "RMC": [*RMC_FIELDS, ""],
        "GGA": GGA_FIELDS,
        "VTG": ["90.0", "T", "", "M", "10.0", "N", "18.5", "K", "A"],
    }[kind]
    fields = [draw(st.one_of(st.just(base[i]), field_text)) for i in range(n)]
    talker = draw(st.sampled_from(["GP", "GN", "BD"]))
    return render(kind, fields, talker)


real_lines = st.sampled_from(stream("haicom-305N.log").splitlines(keepends=True)[:80])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(st.binary(max_size=200), checksummed(), real_lines), max_size=20))
def test_arbitrary_bytes_never_raise(parts: list[bytes]) -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    for part in parts:
        for fix in decoder.feed(part):
            assert isinstance(fix, Fix)
            if fix.has_position:
                assert fix.latitude is not None and -90 <= fix.latitude <= 90
                assert fix.longitude is not None and -180 <= fix.longitude <= 180
    assert decoder.skipped >= 0 and decoder.sentences >= 0


def test_one_lost_sentence_gives_no_half_epoch() -> None:
    """A GGA lost on the line (noise, a full buffer): that epoch gives no fix, and the next
    one still waits for both kinds: no fix without altitude, none twice for one time."""
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    fixes: list[Fix] = []
    for second in range(5):
        rmc, gga = epoch_at(second)
        fixes += decoder.feed(rmc)
        if second != 2:
            fixes += decoder.feed(gga)
    # The first RMC alone, then epochs 0, 1, 3 and 4, each whole.
    assert len(fixes) == 5
    for fix in fixes[1:]:
        check(fix, altitude=545.4, quality=1, satellites=8, hdop=0.9)
    times = [f.time_utc for f in fixes[1:]]
    assert len(set(times)) == len(times)


def _without_checksums(data: bytes) -> bytes:
    return b"".join(
        line.split(b"*")[0] + b"\r\n" if line.startswith(b"$") else line
        for line in data.splitlines()
    )


def test_a_receiver_that_sends_no_checksums_is_read_after_a_second_of_sentences() -> None:
    # A trial's find: such a receiver (gpsd takes it) gave nothing at all, and after 10 s
    # the log sent its user to GPS_BAUDRATE.
    checked = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    unchecked = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    want = checked.feed(stream("sirfstarv-nmea.log"))
    got = unchecked.feed(_without_checksums(stream("sirfstarv-nmea.log")))
    assert unchecked.trusts_unchecked and not checked.trusts_unchecked
    assert len(want) - 2 <= len(got) <= len(want)  # the first sentences wait for trust

    def full(f: Fix) -> tuple[object, ...]:
        return (f.time_utc, f.latitude, f.longitude, f.altitude, f.speed, f.satellites)

    # The first fix taken may be half an epoch (as from a decoder started mid-stream).
    assert [full(f) for f in got[1:]] == [full(f) for f in want[len(want) - len(got) + 1 :]]
    assert (got[0].time_utc, got[0].latitude) == (
        want[len(want) - len(got)].time_utc,
        want[len(want) - len(got)].latitude,
    )


def test_a_sentence_without_a_checksum_among_checked_ones_is_noise() -> None:
    decoder = NmeaDecoder(FakeClock(), REPLAY_PIVOT)
    rmc, gga = epoch_at(1)
    bogus = rmc.split(b"*")[0].replace(b"12000", b"13000") + b"\r\n"
    fixes = []
    for _ in range(UNCHECKED_TO_TRUST + 2):
        fixes += decoder.feed(rmc + bogus + gga)
    assert not decoder.trusts_unchecked
    assert all(f.time_utc == fixes[0].time_utc for f in fixes)  # never the bogus 13:00:01
