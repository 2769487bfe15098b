"""Opening the source the user named (``--from DIR``, ``--bucket`` or the configuration's
record folder) and reading the logbook from it: the thin I/O around the pure parts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from eccm.config import Config
from eccm.report import ReportError, need
from eccm.report.datafile import Row, parse_checked
from eccm.report.logbook import (
    Ends,
    Entry,
    Span,
    ends_of,
    entry,
    row_times,
    span_of,
    without_summary,
)
from eccm.report.source import (
    BucketSource,
    FolderSource,
    Ref,
    Source,
    load_summary,
    newest_data_file,
)
from eccm.store.names import AGE

log = logging.getLogger(__name__)


def bucket_source(cfg: Config, command: str) -> BucketSource:
    """The bucket of the configuration, through the uploader's settings and client."""
    from eccm.upload.s3client import build_client, classify
    from eccm.upload.settings import UploadSettings

    settings = UploadSettings.from_config(cfg)
    if not settings.enabled:
        # eccm fleet reads the bucket only: it has no --from to offer.
        other = "" if command == "fleet" else f", or use eccm {command} --from DIR"
        raise ReportError(
            f"--bucket: S3_SERVER_ENDPOINT is empty in the configuration, so there is no "
            f"bucket to read: set it (and S3_SERVER_BUCKET){other}"
        )

    def explain(exc: BaseException) -> str:
        # The uploader's sentence names the cause; its tail is about files it keeps.
        return classify(exc, settings).message.split("; files are kept")[0]

    return BucketSource(build_client(settings), settings.bucket, settings.key_prefix, explain)


def open_source(
    folder: str | None, bucket: bool, load_cfg: Callable[[], Config], command: str
) -> Source:
    if folder is not None:
        return FolderSource(Path(folder))
    cfg = load_cfg()
    if bucket:
        return bucket_source(cfg, command)
    return FolderSource(cfg.record_dir)


def read_rows(source: Source, ref: Ref) -> tuple[list[Row], str | None]:
    """The rows of a data file, and what was wrong with it (said on stderr: the rows
    before the damage are used, never silently)."""
    rows, problem = parse_checked(source.read(ref))
    if problem is not None:
        log.warning("%s: %s; read the %d rows before the damage", ref.name, problem, len(rows))
    return rows, problem


def trip_ends(source: Source, car: str, trip: str, every: bool = False) -> tuple[Ends, Span]:
    """Positions and odometer at both ends, and the first and last row times, from the
    first and the last data file; with ``every`` (the clock stepped during the trip) also
    the earliest and latest row times of every data file."""
    files = source.data_files(car, trip)
    if not files:
        return Ends(), Span()
    first, _ = read_rows(source, files[0])
    last = first if len(files) == 1 else read_rows(source, files[-1])[0]
    span = span_of(first, last)
    if every:
        times = [t for f in files for t in row_times(read_rows(source, f)[0])]
        if times:
            span = replace(span, earliest=min(times), latest=max(times))
    return ends_of(first, last), span


def logbook(source: Source, car: str | None) -> list[Entry]:
    """A line per readable summary. One that cannot be read (edited by hand, damaged) is
    named on stderr and left out: it does not cost the other trips their lines; when no
    summary can be read, its error is the command's."""
    out = []
    unreadable: list[ReportError] = []
    # Trips with a summary (readable or not, or sealed): the others are listed from their rows.
    summarised = {(r.car, r.trip) for r in source.encrypted_summaries()}
    for ref in source.summaries():
        if car is not None and ref.car != car:
            continue
        summarised.add((ref.car, ref.trip))
        try:
            doc = load_summary(source, ref)
        except ReportError as exc:
            unreadable.append(exc)
            continue
        totals = doc.get("totals")
        # The clock stepped during the trip: its rows may lie outside its first and last.
        stepped = isinstance(totals, dict) and bool(totals.get("clock_steps"))
        ends, span = trip_ends(source, ref.car, ref.trip, every=stepped)
        try:
            out.append(entry(doc, ends, span))
        except (AttributeError, KeyError, ValueError, TypeError) as exc:
            why = f"{ref.name} is not a trip summary ECCM can read ({exc})"
            unreadable.append(ReportError(why))
    bare = sorted({(r.car, r.trip) for r in source.all_data_files()} - summarised)
    for trip_car, trip in bare:
        if car is not None and trip_car != car:
            continue
        found = without_summary(trip_car, trip, *trip_ends(source, trip_car, trip))
        if found is not None:
            out.append(found)
    if unreadable and not out:
        if len(unreadable) == 1:
            raise unreadable[0]
        # Every one damaged: name them all (one line each), not the first alone, which
        # sent the user to mend one file and meet the next error.
        raise ReportError(
            f"none of the {len(unreadable)} trip summaries can be read:\n"
            + "\n".join(f"  {problem}" for problem in unreadable)
        )
    for problem in unreadable:
        log.warning("%s: left out of the logbook", problem)
    return out


def encrypted_note(source: Source, car: str | None, command: str) -> str:
    """What a command that found no readable summary says of the encrypted ones it left
    out (on purpose: no key here, but never silently), or ``""``."""
    sealed = [r for r in source.encrypted_summaries() if car in (None, r.car)]
    if not sealed:
        return ""
    ones = "summary was" if len(sealed) == 1 else "summaries were"
    return (
        f"; {len(sealed)} encrypted trip {ones} skipped (.age): `eccm decrypt -i "
        f"KEY.txt FILE.age` (or --bucket PREFIX) reads them, then run eccm {command} --from "
        "the folder of the decrypted files"
    )


def pick_summary(source: Source, trip: str, car: str | None) -> Ref:
    """The summary of ``trip`` (or the latest trip) of ``car`` (or of any car)."""
    refs = [r for r in source.summaries() if car is None or r.car == car]
    whose = f" of car {car}" if car else ""
    if not refs:
        note = encrypted_note(source, car, "report")
        raise ReportError(f"no trip summary{whose} in {source.description}{note}")
    if trip == "latest":
        return source.latest(refs)
    found = [r for r in refs if r.trip == trip]
    if not found:
        latest = source.latest(refs).trip
        raise ReportError(
            f"no trip {trip}{whose} in {source.description} (the latest is {latest}; "
            "`eccm trips` lists them)"
        )
    if len(found) > 1:
        cars = ", ".join(sorted(r.car for r in found))
        raise ReportError(f"trip {trip} exists for several cars ({cars}): name one with --car")
    return found[0]


def report_html(
    source: Source,
    trip: str,
    car: str | None,
    progress: Callable[[int], Callable[[], None]] | None = None,
) -> tuple[str, Ref]:
    """The HTML of a trip's report, and the summary it came from. ``progress(n)`` is told
    the number of data files and returns what to call after each (the CLI's bar)."""
    from eccm.report.figures import figures
    from eccm.report.page import FileInfo, render
    from eccm.report.series import series

    ref = pick_summary(source, trip, car)
    doc = load_summary(source, ref)
    files = source.data_files(ref.car, ref.trip)
    step = progress(len(files)) if progress is not None else None
    rows = []
    infos = []
    for f in files:
        got, problem = read_rows(source, f)
        rows.extend(got)
        infos.append(FileInfo(f.name, f.size, len(got), f.uploaded, problem))
        if step is not None:
            step()
    try:
        plots = figures(series(rows, doc.get("settings") or {}))
        return render(doc, plots, infos), ref
    except (AttributeError, KeyError, ValueError, TypeError) as exc:  # e.g. edited by hand
        raise ReportError(f"{ref.name} is not a trip summary ECCM can read ({exc})") from None


def fleet_rows(cfg: Config, since: date | None) -> list[tuple[Any, ...]]:
    """``eccm fleet``'s lines: DuckDB with httpfs over the bucket's closed objects."""
    from eccm.report import fleet
    from eccm.upload.s3client import is_aws
    from eccm.upload.settings import UploadSettings

    duckdb = need("duckdb", "fleet")
    extension = fleet.httpfs_path(duckdb.__version__)
    source = bucket_source(cfg, "fleet")
    keys = source.keys()
    data, summaries = fleet.pick(keys, since)
    if not data and not summaries:
        after = f" from {since}" if since else ""
        # Encrypted objects are left out on purpose (no key here), never silently.
        sealed = sum(1 for key in keys if key.endswith(AGE))
        note = (
            f"; {sealed} encrypted object(s) (.age) left out: fleet reads plain files only; "
            "`eccm decrypt -i KEY.txt --bucket PREFIX -o DIR` reads them, then query the "
            "decrypted files with DuckDB (README, Privacy)"
            if sealed
            else ""
        )
        raise ReportError(f"no data files or trip summaries{after} in {source.description}{note}")
    settings = UploadSettings.from_config(cfg)
    if not settings.access_key:
        raise ReportError(
            "eccm fleet reads the bucket with S3_SERVER_AK and S3_SERVER_SK: set them in the "
            "configuration (or ECCM_S3_SERVER_AK / ECCM_S3_SERVER_SK)"
        )
    url = f"s3://{source.bucket}/"
    try:
        conn = duckdb.connect()
        conn.execute(f"LOAD '{extension}'")
        if settings.verify_tls is False:
            conn.execute("SET enable_server_cert_verification = false")
        conn.execute(
            fleet.s3_secret_sql(
                settings.endpoint,
                settings.region,
                settings.access_key,
                settings.secret_key,
                path_style=not is_aws(settings.endpoint),
            )
        )
        return fleet.run(
            conn, fleet.fleet_sql([url + k for k in data], [url + k for k in summaries])
        )
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"DuckDB could not read {source.description}: {first}") from None


def _sidecar_of(source: Source, ref: Ref) -> dict[str, Any] | None:
    """The sidecar of a data file: its own, or the one its encrypted copy left beside it
    (``x.tsv.gz.age.json``, which keeps the columns and the separator): a folder that
    ``eccm decrypt --bucket`` wrote holds only that one."""
    import dataclasses
    import json

    from eccm.store.names import SIDECAR

    for suffix in (SIDECAR, AGE + SIDECAR):
        side = dataclasses.replace(ref, name=ref.name + suffix, where=ref.where + suffix)
        try:
            doc = json.loads(source.read(side))
        except (ReportError, ValueError):
            continue
        if isinstance(doc, dict):
            return doc
    return None  # no sidecar: the columns of the others (or the defaults)


def schema_text(
    engine: str,
    source: Source | None,
    cfg: Config | None,
    car: str | None,
    location: str | None,
    note: Callable[[str], None] | None = None,
) -> str:
    """``eccm schema``: the columns from the newest sidecar of each car of ``source``.

    ``note`` is told when ``source`` holds no sidecar to take them from (an empty folder,
    a --car with no file): the definition then has the default columns only.
    """
    from eccm.report import schema

    sidecars: list[dict[str, Any]] = []
    formats: list[tuple[str, str, str]] = []  # (car, separator, file name) of each sidecar
    names: list[str] = []
    cars: set[str] = set()
    newest: dict[str, Ref] = {}
    any_summary = source is None  # the views read every car's: any summary will do
    if source is not None:
        by_car: dict[str, list[Ref]] = {}
        for s in source.summaries():
            any_summary = True
            if car is None or s.car == car:
                by_car.setdefault(s.car, []).append(s)
        # The trip recorded last, not the one whose id sorts last: a Pi without a real-time
        # clock may name its newest drive (with the columns it logs now) before older ones.
        newest = {c: source.latest(refs) for c, refs in by_car.items()}
        lasts = []
        for ref in newest.values():
            files = source.data_files(ref.car, ref.trip)
            if files:
                lasts.append(files[-1])
        # A car without a summary yet (its first trip still runs): its newest closed file.
        for c, last in newest_data_file(source.all_data_files()).items():
            if c not in newest and (car is None or c == car):
                lasts.append(last)
        for last in lasts:
            names.append(last.name)
            cars.add(last.car)
            doc = _sidecar_of(source, last)
            if doc is not None:
                sidecars.append(doc)
                formats.append((last.car, str(doc.get("separator") or "\t"), last.name))
    if source is not None and not sidecars and note is not None:
        which = f" of car {car}" if car is not None else ""
        note(
            f"no closed data file{which} with a sidecar in {source.description} (encrypted "
            ".age files are not read: `eccm decrypt` them first): these are the default "
            "columns only (TIME_UTC, CAR_ID, TRIP_ID and the default fast values); run it "
            "again once a file is closed"
        )
    if location is None:
        if cfg is not None and cfg.s3_server_bucket:
            prefix = cfg.s3_key_prefix.strip("/")
            location = f"s3://{cfg.s3_server_bucket}/{prefix + '/' if prefix else ''}"
        else:
            location = "s3://BUCKET/car-logs/"
            if note is not None:
                # Pasted as it is, it fails later in the query engine with "bucket BUCKET
                # does not exist": say here where the name would have come from.
                why = (
                    "S3_SERVER_BUCKET is empty in the configuration"
                    if cfg is not None
                    else "no config.ini was read"
                )
                note(
                    f"{why}: the definitions read the placeholder s3://BUCKET/car-logs/; "
                    "replace BUCKET, or give --location s3://your-bucket/prefix/ "
                    "(or --config with S3_SERVER_BUCKET set)"
                )
    if not location.endswith("/"):
        location += "/"
    separator = next((str(s["separator"]) for s in sidecars if s.get("separator")), "\t")
    ending = schema.ending_of(names) or ".tsv.gz"
    if formats:  # the format most cars write (the first car's on a tie) ...
        separator, ending = schema.common_format(formats)
        # ... and its columns first: Athena, Trino and Spark read by position.
        sidecars = [
            doc
            for _, doc in sorted(
                zip(formats, sidecars, strict=True),
                key=lambda fd: schema.format_of(fd[0]) != (separator, ending),
            )
        ]
    if note is not None:
        other = schema.other_formats(formats, separator, ending)
        if other:
            note(other)
    layout = schema.Layout(
        location=location,
        columns=schema.columns_of(sidecars),
        separator=separator,
        ending=ending,
        cars=tuple(sorted(cars)),
        summaries=any_summary,
    )
    if note is not None and source is not None and engine in POSITIONAL_ENGINES:
        shifted = shifted_first_files(source, car, [c.name for c in layout.columns])
        if shifted:
            note(
                f"{'; '.join(shifted)}: {engine} reads the columns of a file by position, "
                "so its values would land in other columns of the table (GNSS values "
                "read as engine values). Such a file comes from a car's first drive, "
                "before its columns were known, or from a change of OBD_FAST_COMMANDS/"
                "OBD_SLOW_COMMANDS: keep it out of the table's location, or query it with "
                "--engine duckdb, which reads columns by name"
            )
    return schema.definition(engine, layout)


# Engines whose text tables read a file's columns by position, not by its header's names.
POSITIONAL_ENGINES = frozenset({"athena", "trino", "spark"})


def shifted_first_files(source: Source, car: str | None, columns: list[str]) -> list[str]:
    """Each car's oldest data file whose columns are not the first of ``columns`` (the
    definition's), as "car C's file F (n columns)". One sidecar per car is read: a car's
    first file is the one a first drive (GNSS rows before the adapter connected) leaves
    with fewer, other columns."""
    oldest: dict[str, Ref] = {}
    for ref in source.all_data_files():
        if car is not None and ref.car != car:
            continue
        best = oldest.get(ref.car)
        if best is None or (ref.trip, ref.name) < (best.trip, best.name):
            oldest[ref.car] = ref
    out = []
    for c, ref in sorted(oldest.items()):
        doc = _sidecar_of(source, ref)
        cols = (doc or {}).get("columns")
        names = (
            [str(x.get("name")) for x in cols if isinstance(x, dict)]
            if isinstance(cols, list)
            else []
        )
        if names and names != columns[: len(names)]:
            out.append(f"car {c}'s first file {ref.name} ({len(names)} columns)")
    return out
