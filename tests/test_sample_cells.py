"""The fast ways of the recorder's cells give exactly what the plain ways give.

``iso_utc`` formats each second once (the datetime way: ``_iso_utc_datetime``);
``RowCells`` remembers each column's last cell (the plain way: ``Layout.row`` and
``clean_cell``).
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from eccm.gnss.fix import Fix
from eccm.sample import (
    Layout,
    Reading,
    RowCells,
    Sample,
    _iso_utc_datetime,
    clean_cell,
    iso_utc,
)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_iso_utc_is_the_datetime_way(epoch: float) -> None:
    assert iso_utc(epoch) == _iso_utc_datetime(epoch)


def test_iso_utc_at_the_edges_of_a_second_and_of_the_range() -> None:
    base = 1_795_000_000
    for second in (0, 1, base, 4_102_444_799):
        for offset in (0.0, 1e-7, 4.999e-7, 5e-7, 5.001e-7, 0.0005, 0.0015, 0.9994999, 0.9995):
            for epoch in (second + offset, math.nextafter(second + offset, 0)):
                if epoch >= 0:
                    assert iso_utc(epoch) == _iso_utc_datetime(epoch), epoch
        nearly = math.nextafter(float(second + 1), 0)
        assert iso_utc(nearly) == _iso_utc_datetime(nearly)
    # Whole seconds given as int (file times), and times the fast way leaves to datetime.
    assert iso_utc(base) == _iso_utc_datetime(base)
    assert iso_utc(-1.5) == _iso_utc_datetime(-1.5)
    assert iso_utc(253_402_300_799.5) == _iso_utc_datetime(253_402_300_799.5)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.5, 16.862745098039216, 1e-9, 123456.7]),
    st.text(max_size=12),
    st.sampled_from(["line\nbreak", "cr\r\nlf", "a\rb", "tab\there", "MIL=off DTC_count=0"]),
)
NAMES = ("RPM", "SPEED", "COOLANT_TEMP", "FUEL_STATUS", "VIN")
FIXES = st.one_of(
    st.none(),
    st.builds(
        Fix,
        time_utc=st.one_of(st.none(), st.floats(0, 4e9)),
        latitude=st.one_of(st.none(), st.floats(-90, 90)),
        longitude=st.one_of(st.none(), st.floats(-180, 180)),
        altitude=st.one_of(st.none(), st.floats(-500, 9000)),
        speed=st.one_of(st.none(), st.floats(0, 90)),
        track=st.one_of(st.none(), st.floats(0, 360)),
        quality=st.one_of(st.none(), st.integers(0, 8)),
        satellites=st.one_of(st.none(), st.integers(0, 40)),
        hdop=st.one_of(st.none(), st.floats(0, 50)),
        received=st.just(0.0),
        received_wall=st.just(0.0),
    ),
)


@st.composite
def rows(draw: st.DrawFn) -> list[Sample]:
    """Rows of one or two layouts, whose values are often the very objects of the row
    before (as the decode cache hands them out) and sometimes equal but new objects."""
    layouts = [
        Layout(("RPM", "SPEED"), ("COOLANT_TEMP", "FUEL_STATUS", "SPEED"), gps=True),
        Layout(("RPM",), ("VIN", "SPEED"), gps=draw(st.booleans())),
    ]
    out: list[Sample] = []
    values: dict[str, Reading] = {}
    fix = draw(FIXES)
    for _ in range(draw(st.integers(1, 12))):
        for name in NAMES:
            choice = draw(st.sampled_from(["keep", "new", "copy", "drop"]))
            if choice == "new" or (choice == "keep" and name not in values):
                values[name] = Reading(draw(VALUES), None, 0.0)
            elif choice == "copy" and name in values:
                old = values[name].value
                # An equal value in a new object (floats and big ints are not interned).
                twin = float(str(old)) if isinstance(old, float) and math.isfinite(old) else old
                values[name] = Reading(twin, None, 0.0)
            elif choice == "drop":
                values.pop(name, None)
        if draw(st.booleans()):
            fix = draw(FIXES)
        out.append(
            Sample(
                time=draw(st.floats(0, 4e9)),
                trip_id=draw(st.sampled_from(["20261122T022005Z", "trip\nodd"])),
                values=dict(values),
                fix=fix,
                layout=draw(st.sampled_from(layouts)),
            )
        )
    return out


@settings(max_examples=150)
@given(rows(), st.sampled_from(["car", "car\nid"]), st.sampled_from(["\t", ",", ";", "|"]))
def test_row_cells_are_the_layouts_cells_cleaned(samples: list[Sample], car: str, sep: str) -> None:
    cells = RowCells(sep)
    for sample in samples:
        expected = [clean_cell(c, sep) for c in sample.layout.row(sample, car)]
        row = cells.row(sample, car)
        assert row == expected
        # Nothing the csv module would have to quote.
        assert not any(sep in c or '"' in c or "\n" in c or "\r" in c for c in row)
