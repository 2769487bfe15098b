"""Draw images/architecture.png and images/architecture.svg, the data flow shown in the README.

A developer tool, not part of the package: matplotlib is deliberately not a dependency of
ECCM. To redraw the picture after changing this script:

    .venv/bin/pip install matplotlib
    .venv/bin/python images/make_architecture.py            # writes into images/
    .venv/bin/python images/make_architecture.py --out /tmp # or anywhere else

The PNG is reduced to a small palette so it stays well under 200 KB.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

# Figure without pyplot: no GUI backend is chosen, so this runs headless on a Pi or in CI.
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from PIL import Image  # a dependency of matplotlib

HERE = Path(__file__).resolve().parent

# Colours by kind of box, as in the legend.
HARDWARE = ("#eceff1", "#546e7a")  # (fill, edge)
THREAD = ("#e3f2fd", "#1565c0")
FILES = ("#fff8e1", "#ef8f00")
CLOUD = ("#e8f5e9", "#2e7d32")
CLIENT = ("#f3e5f5", "#7b1fa2")
INK = "#263238"
MUTED = "#455a64"

BOX_W = 2.5
BOX_H = 1.25


@dataclass(frozen=True)
class Box:
    x: float  # centre
    y: float
    title: str
    subtitle: str
    colours: tuple[str, str]
    width: float = BOX_W


def draw_box(ax: Axes, box: Box) -> FancyBboxPatch:
    fill, edge = box.colours
    patch = FancyBboxPatch(
        (box.x - box.width / 2, box.y - BOX_H / 2),
        box.width,
        BOX_H,
        boxstyle="round,pad=0,rounding_size=0.18",
        facecolor=fill,
        edgecolor=edge,
        linewidth=2.0,
        zorder=2,
    )
    ax.add_patch(patch)
    ax.text(
        box.x,
        box.y + 0.26,
        box.title,
        ha="center",
        va="center",
        fontsize=14,
        fontweight="bold",
        color=INK,
        zorder=3,
    )
    ax.text(
        box.x,
        box.y - 0.22,
        box.subtitle,
        ha="center",
        va="center",
        fontsize=11.5,
        color=MUTED,
        linespacing=1.15,
        zorder=3,
    )
    return patch


def arrow(
    ax: Axes,
    a: FancyBboxPatch,
    b: FancyBboxPatch,
    label: str = "",
    *,
    label_at: tuple[float, float] | None = None,
    both: bool = False,
    dashed: bool = False,
    rad: float = 0.0,
    colour: str = INK,
) -> None:
    ca = _centre(a)
    cb = _centre(b)
    ax.add_patch(
        FancyArrowPatch(
            ca,
            cb,
            patchA=a,
            patchB=b,
            arrowstyle="<|-|>" if both else "-|>",
            mutation_scale=20,
            linewidth=2.0,
            linestyle=(0, (5, 3)) if dashed else "-",
            color=colour,
            shrinkA=4,
            shrinkB=4,
            connectionstyle=f"arc3,rad={rad}",
            zorder=1,
        )
    )
    if label:
        x, y = label_at if label_at else ((ca[0] + cb[0]) / 2, (ca[1] + cb[1]) / 2 + 0.3)
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=11,
            color=colour,
            linespacing=1.1,
            zorder=4,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )


def _centre(p: FancyBboxPatch) -> tuple[float, float]:
    return (p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2)


def straight(ax: Axes, a: tuple[float, float], b: tuple[float, float], label: str = "") -> None:
    """An arrow between two points, for boxes that are not facing each other centre to centre."""
    ax.add_patch(
        FancyArrowPatch(
            a, b, arrowstyle="-|>", mutation_scale=20, linewidth=2.0, color=INK, zorder=1
        )
    )
    if label:
        ax.text(
            a[0] - 0.2, (a[1] + b[1]) / 2, label, fontsize=11, color=INK, va="center", ha="right"
        )


def draw() -> Figure:
    fig = Figure(figsize=(12, 6.6))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 15.2)
    ax.set_ylim(0, 8.36)
    ax.set_axis_off()

    cols = (1.4, 4.5, 7.6, 10.7, 13.8)
    top, mid, low = 6.6, 4.0, 1.25

    elm = draw_box(ax, Box(cols[0], top, "ELM327", "OBD-II adapter\n/dev/obd", HARDWARE))
    link = draw_box(ax, Box(cols[1], top, "obd/link", "owns the adapter\ncommand queue", THREAD))
    hub = draw_box(ax, Box(cols[2], top, "hub", "latest sample\nto listeners", THREAD))
    src = draw_box(ax, Box(cols[3], top, "gnss/source", "NMEA or gpsd\nfixes", THREAD))
    rcv = draw_box(ax, Box(cols[4], top, "GNSS receiver", "NMEA serial\n/dev/gnss", HARDWARE))

    server = draw_box(
        ax,
        Box(cols[1], mid, "service", "socket · web · MQTT\nscopes · DTC rules", THREAD),
    )
    rec = draw_box(
        ax, Box(cols[2], mid, "store/recorder", "rotating TSV/CSV\nfsync, atomic close", THREAD)
    )
    closed = draw_box(ax, Box(cols[3], mid, "closed files", ".tsv.gz\n+ .json sidecar", FILES))
    up = draw_box(
        ax, Box(cols[4], mid, "upload/uploader", "verified, never doubled\ndisk budget", THREAD)
    )

    client = draw_box(
        ax, Box(cols[1], low, "clients", "eccm query, nc, curl,\nbrowser, MQTT broker", CLIENT)
    )
    s3_left = cols[2] - BOX_W / 2
    s3_width = cols[4] + BOX_W / 2 - s3_left
    draw_box(
        ax,
        Box(
            s3_left + s3_width / 2,
            low,
            "S3 bucket",
            "car-logs/car=<id>/date=<YYYY-MM-DD>/<file>",
            CLOUD,
            width=s3_width,
        ),
    )

    arrow(ax, elm, link)
    arrow(ax, link, hub)
    arrow(ax, src, hub)
    arrow(ax, rcv, src)
    arrow(ax, hub, rec, "samples", label_at=(cols[2] + 0.6, (top + mid) / 2))
    arrow(ax, rec, closed)
    arrow(ax, closed, up)
    straight(
        ax, (cols[4], mid - BOX_H / 2 - 0.04), (cols[4], low + BOX_H / 2 + 0.04), "PUT + verify"
    )
    arrow(
        ax,
        client,
        server,
        "commands\nJSON replies",
        both=True,
        colour=CLIENT[1],
        label_at=(cols[1] + 0.75, (mid + low) / 2),
    )
    arrow(ax, hub, server, "reads latest", dashed=True, colour=THREAD[1], label_at=(6.8, 5.1))
    arrow(
        ax,
        server,
        link,
        "DTC, on-demand GET\n→ link's queue\n(a bounded share)",
        colour=THREAD[1],
        label_at=(cols[1] - 1.15, (top + mid) / 2),
    )

    ax.text(0.25, 7.95, "ECCM data flow", fontsize=17, fontweight="bold", color=INK, va="center")
    ax.text(
        3.05,
        7.95,
        "one process on the Raspberry Pi · one owner per device · data flows one way",
        fontsize=12,
        color=MUTED,
        va="center",
    )

    legend = (
        (HARDWARE, "device"),
        (THREAD, "ECCM part"),
        (FILES, "files on the Pi"),
        (CLOUD, "cloud storage"),
        (CLIENT, "client"),
    )
    for i, ((fill, edge), text) in enumerate(legend):
        y = 4.55 - i * 0.5
        ax.add_patch(
            FancyBboxPatch(
                (0.3, y - 0.15),
                0.5,
                0.3,
                boxstyle="round,pad=0,rounding_size=0.06",
                facecolor=fill,
                edgecolor=edge,
                linewidth=1.6,
            )
        )
        ax.text(0.98, y, text, fontsize=12, color=INK, va="center")
    return fig


def save(fig: Figure, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    svg = out / "architecture.svg"
    png = out / "architecture.png"
    # Fixed hash salt and no date keep the SVG byte-identical between runs.
    with rc_context({"svg.hashsalt": "eccm", "svg.fonttype": "none"}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, facecolor="white")
    buf.seek(0)
    with Image.open(buf) as img:
        # Flat colours and anti-aliased text fit in a small palette with no visible loss.
        small = img.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
        small.save(png, optimize=True)
    return svg, png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    args = parser.parse_args(argv)
    fig = draw()
    for path in save(fig, args.out):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
