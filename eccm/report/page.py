"""The report's HTML: one self-contained page (inline CSS and SVG, no script, nothing from
the network), so it opens offline with a double click.

Pure: the figures of the totals are printed from the trip summary as it holds them
(each cell carries ``data-key`` so a test can compare the page with the summary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

# (key in the summary's totals, label, unit)
TOTALS = (
    ("duration_s", "Duration", "s"),
    ("moving_s", "Moving", "s"),
    ("idle_s", "Idle", "s"),
    ("distance_km", "Distance", "km"),
    ("gnss_distance_km", "Distance by GNSS", "km"),
    ("avg_speed_kmh", "Average speed", "km/h"),
    ("avg_moving_speed_kmh", "Average moving speed", "km/h"),
    ("max_speed_kmh", "Top speed", "km/h"),
    ("max_rpm", "Top engine speed", "rpm"),
    ("fuel_l", "Fuel", "L"),
    ("fuel_method", "Fuel from", ""),
    ("avg_fuel_rate_lph", "Average fuel rate", "L/h"),
    ("l_per_100km", "Economy", "L/100 km"),
    ("mpg_us", "Economy", "mpg (US)"),
    ("fuel_cost", "Cost", ""),
)

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.2em .6em;border-bottom:1px solid #eee;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}.minutes{overflow-x:auto}
.warn{color:#a40}
"""


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    rows: int
    uploaded: bool
    problem: str | None = None  # a damaged file: its rows are those before the damage


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _totals(summary: Mapping[str, Any]) -> str:
    totals = summary.get("totals") or {}
    rows = []
    for key, label, unit in TOTALS:
        if key not in totals:
            continue
        value = totals[key]
        rows.append(
            f'<tr><th>{escape(label)}</th><td class="n" data-key="{key}">'
            f"{escape(_fmt(value))}</td><td>{escape(unit)}</td></tr>"
        )
    return '<table class="totals">' + "".join(rows) + "</table>"


def _minutes(summary: Mapping[str, Any]) -> str:
    minutes = summary.get("minutes") or []
    commands = list(summary.get("summary_commands") or [])
    if not minutes or not commands:
        return "<p>No per-minute statistics.</p>"
    head = "".join(f"<th>{escape(c)}<br>mean · min · max</th>" for c in commands)
    rows = []
    for m in minutes:
        cells = []
        for c in commands:
            st = (m.get("values") or {}).get(c)
            if not st:
                cells.append("<td></td>")
                continue
            cells.append(
                f'<td class="n">{escape(_fmt(_round(st.get("mean"))))} · '
                f"{escape(_fmt(st.get('min')))} · {escape(_fmt(st.get('max')))}</td>"
            )
        minute = str(m.get("minute", ""))[11:16]
        rows.append(
            f"<tr><th>{escape(minute)}</th><td class='n'>{m.get('rows', '')}</td>"
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<div class="minutes"><table><tr><th>minute (UTC)</th><th>rows</th>'
        + head
        + "</tr>"
        + "".join(rows)
        + "</table></div>"
    )


def _round(v: Any) -> Any:
    return round(v, 2) if isinstance(v, float) else v


def _event_text(ev: Mapping[str, Any]) -> str:
    kind = ev.get("event")
    if kind == "initial":
        codes = [d.get("code", "") for d in (ev.get("stored") or []) + (ev.get("pending") or [])]
        mil = "MIL on" if ev.get("mil") else "MIL off"
        return f"first read: {mil}, " + (", ".join(codes) if codes else "no trouble codes")
    if kind in ("mil_on", "mil_off"):
        return "MIL on" if kind == "mil_on" else "MIL off"
    if kind in ("dtc_added", "dtc_removed"):
        verb = "new" if kind == "dtc_added" else "gone"
        return f"{verb} {ev.get('kind', '')} code {ev.get('code', '')}: {ev.get('description', '')}"
    return str(kind)


def _diagnostics(summary: Mapping[str, Any]) -> str:
    diag = summary.get("diagnostics") or {}
    events = diag.get("events") or []
    if not events:
        return "<p>No trouble-code reads in this trip.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(ev.get('time', '')))}</td><td>{escape(_event_text(ev))}</td></tr>"
        for ev in events
    )
    extra = ""
    if diag.get("failed_reads"):
        extra = f'<p class="warn">{diag["failed_reads"]} read(s) failed: {escape(str(diag.get("last_error")))}</p>'
    return f'<table class="dtc">{rows}</table>{extra}'


def _quality(summary: Mapping[str, Any], files: Sequence[FileInfo]) -> str:
    totals = summary.get("totals") or {}
    items = [
        ("Rows in the summary", summary.get("rows")),
        ("Rows in the data files", sum(f.rows for f in files)),
        ("Data files", len(files)),
        ("Gaps", f"{_fmt(totals.get('gaps'))} ({_fmt(totals.get('gap_s'))} s)"),
        ("Clock steps", totals.get("clock_steps")),
        ("Time source", summary.get("time_source")),
        ("Summary complete", summary.get("complete")),
        ("Recovered after a power cut", bool(summary.get("recovered"))),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in items)
    file_rows = "".join(
        f"<tr><td>{escape(f.name)}</td><td class='n'>{f.rows}</td><td class='n'>{f.size}</td>"
        f"<td>{'uploaded' if f.uploaded else ''}"
        + (f" <span class='warn'>{escape(f.problem)}</span>" if f.problem else "")
        + "</td></tr>"
        for f in files
    )
    return (
        f'<table class="quality">{rows}</table>'
        f"<table><tr><th>file</th><th>rows</th><th>bytes</th><th></th></tr>{file_rows}</table>"
    )


def render(
    summary: Mapping[str, Any], plots: Sequence[tuple[str, str]], files: Sequence[FileInfo]
) -> str:
    car, trip = str(summary.get("car", "")), str(summary.get("trip", ""))
    vehicle = " · ".join(
        escape(str(summary[k])) for k in ("vin", "protocol", "adapter") if summary.get(k)
    )
    figures = "".join(
        f'<figure class="plot" data-title="{escape(title)}">{svg}</figure>' for title, svg in plots
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ECCM trip {escape(car)} {escape(trip)}</title><style>{CSS}</style></head><body>"
        f"<h1>Trip {escape(trip)} · {escape(car)}</h1>"
        f"<p>{escape(str(summary.get('first_time', '')))} → "
        f"{escape(str(summary.get('last_time', '')))}"
        + (f"<br>{vehicle}" if vehicle else "")
        + "</p>"
        "<h2>Totals</h2>"
        + _totals(summary)
        + "<h2>Plots</h2>"
        + (figures or "<p>No rows to plot.</p>")
        + "<h2>Per minute</h2>"
        + _minutes(summary)
        + "<h2>Trouble codes</h2>"
        + _diagnostics(summary)
        + "<h2>Data quality</h2>"
        + _quality(summary, files)
        + f"<p><small>eccm {escape(str(summary.get('eccm_version', '')))}</small></p>"
        "</body></html>\n"
    )
