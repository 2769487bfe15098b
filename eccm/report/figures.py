"""The report's plots as inline SVG, drawn with matplotlib (the ``report`` extra).

Each figure is one ``<svg>`` element to put straight into the page: no image files, no
fonts or scripts from the network, so the report opens offline.
"""

from __future__ import annotations

import io
from typing import Any

from eccm.report import need
from eccm.report.series import Series

WIDTH, HEIGHT = 9.0, 3.0  # inches: a page's width at matplotlib's 72 points an inch


def _pyplot() -> Any:
    mpl = need("matplotlib", "report")
    mpl.use("Agg")  # no display on a server or in a test
    mpl.rcParams["svg.fonttype"] = "none"  # text as text: small files, searchable
    mpl.rcParams["svg.hashsalt"] = "eccm"  # the same trip gives the same file
    import matplotlib.pyplot as plt

    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    # No date in the metadata: the same trip gives the same page.
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def _lines(s: Series, title: str, left: list[tuple[str, str]], right: list[tuple[str, str]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    ax.set_title(title, loc="left", fontsize=11)
    for i, (col, label) in enumerate(left):
        ax.plot(s.times, _values(s, col), label=label, color=f"C{i}", linewidth=1)
    ax.set_ylabel(" / ".join(label for _, label in left))
    handles, labels = ax.get_legend_handles_labels()
    if right:
        ax2 = ax.twinx()
        for i, (col, label) in enumerate(right, start=len(left)):
            ax2.plot(s.times, _values(s, col), label=label, color=f"C{i}", linewidth=1)
        ax2.set_ylabel(" / ".join(label for _, label in right))
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _svg(fig)


def _values(s: Series, col: str) -> list[float]:
    if col == "FUEL_LPH":
        raw = s.fuel_lph
    elif col == "FUEL_CUM":
        return list(s.fuel_cum_l)
    else:
        raw = s.values.get(col, [])
    return [float("nan") if v is None else v for v in raw]


def figures(s: Series) -> list[tuple[str, str]]:
    """(title, svg) of every plot the trip's columns allow."""
    out: list[tuple[str, str]] = []
    if not s.times:
        return out
    if s.has("SPEED") or s.has("RPM"):
        title = "Speed and engine speed"
        out.append((title, _lines(s, title, [("SPEED", "km/h")], [("RPM", "rpm")])))
    if any(v is not None for v in s.fuel_lph):
        title = "Fuel rate and fuel used"
        out.append((title, _lines(s, title, [("FUEL_LPH", "L/h")], [("FUEL_CUM", "L used")])))
    if s.has("COOLANT_TEMP"):
        title = "Coolant temperature"
        out.append((title, _lines(s, title, [("COOLANT_TEMP", "°C")], [])))
    if s.has("THROTTLE_POS") or s.has("ENGINE_LOAD"):
        title = "Throttle and engine load"
        cols = [("THROTTLE_POS", "throttle %"), ("ENGINE_LOAD", "load %")]
        out.append((title, _lines(s, title, cols, [])))
    if s.track:
        out.append(("Track", track(s)))
    return out


def track(s: Series) -> str:
    """The GNSS track coloured by speed: no map tiles, so it works offline."""
    import math

    plt = _pyplot()
    lats = [p[0] for p in s.track]
    lons = [p[1] for p in s.track]
    speeds = [p[2] if p[2] is not None else 0.0 for p in s.track]
    fig, ax = plt.subplots(figsize=(WIDTH * 0.7, WIDTH * 0.7))
    ax.set_title("Track (colour: speed)", loc="left", fontsize=11)
    ax.plot(lons, lats, color="0.8", linewidth=1, zorder=1)
    dots = ax.scatter(lons, lats, c=speeds, cmap="viridis", s=6, zorder=2)
    ax.plot(lons[:1], lats[:1], "o", color="green", label="start")
    ax.plot(lons[-1:], lats[-1:], "s", color="red", label="end")
    # Degrees of longitude shrink with latitude: keep the map's proportions.
    ax.set_aspect(1.0 / max(math.cos(math.radians(sum(lats) / len(lats))), 0.01))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.ticklabel_format(useOffset=False)
    ax.legend(loc="best", fontsize=8)
    fig.colorbar(dots, ax=ax, label="km/h", shrink=0.8)
    return _svg(fig)
