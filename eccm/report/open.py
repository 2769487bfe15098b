"""Opening the source the user named (``--from DIR``, ``--bucket`` or the configuration's
record folder) and reading the logbook from it: the thin I/O around the pure parts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eccm.config import Config
from eccm.report import ReportError
from eccm.report.datafile import parse
from eccm.report.logbook import Ends, Entry, ends_of, entry
from eccm.report.source import BucketSource, FolderSource, Source, load_summary


def bucket_source(cfg: Config, command: str) -> BucketSource:
    """The bucket of the configuration, through the uploader's settings and client."""
    from eccm.upload.s3client import build_client, classify
    from eccm.upload.settings import UploadSettings

    settings = UploadSettings.from_config(cfg)
    if not settings.enabled:
        raise ReportError(
            f"--bucket: S3_SERVER_ENDPOINT is empty in the configuration, so there is no "
            f"bucket to read: set it (and S3_SERVER_BUCKET), or use eccm {command} --from DIR"
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


def trip_ends(source: Source, car: str, trip: str) -> Ends:
    """Positions and odometer at both ends, from the first and the last data file."""
    files = source.data_files(car, trip)
    if not files:
        return Ends()
    first = parse(source.read(files[0]))
    last = first if len(files) == 1 else parse(source.read(files[-1]))
    return ends_of(first, last)


def logbook(source: Source, car: str | None) -> list[Entry]:
    out = []
    for ref in source.summaries():
        if car is not None and ref.car != car:
            continue
        doc = load_summary(source, ref)
        try:
            out.append(entry(doc, trip_ends(source, ref.car, ref.trip)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ReportError(f"{ref.name} is not a trip summary ECCM can read ({exc})") from None
    return out
