"""Trip summary files: ``{CAR}_{TRIP}_summary.json`` in RECORD_DIRECTORY_LOCATION.

The trip computer (trip.py) builds the document; this writer puts it on disk from a thread
of its own, so the OBD loop never waits for the SD card:

- each closed minute, a checkpoint ``{CAR}_{TRIP}_summary.json.part`` (atomic: temp,
  fsync, rename), so that a power cut in the middle of a trip loses at most a minute of
  its summary;
- when the trip ends, the summary itself (atomic), then the checkpoint is removed. A
  summary that exists is complete: the uploader takes it as it is. One the disk refuses
  (full, read-only, not writable) is kept and written as soon as it takes it again.

At start, :meth:`SummaryWriter.recover` turns a checkpoint left by a crash or a power cut
into the summary of that trip (``"complete": false, "recovered": true``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eccm.store.names import (
    PART,
    SUMMARY_SUFFIX,
    TMP,
    UPLOADED_DIR,
    parse_summary_name,
    summary_name,
)
from eccm.store.sidecar import fsync_dir, remove, write_atomic

log = logging.getLogger(__name__)

_QUEUE_SIZE = 64
# Summaries of ended trips the disk refused, kept until it has room: a few days of trips.
_UNSAVED_MAX = 64
# How often the writer thread tries them again when nothing else is written (a parked car).
RETRY_S = 2.0

WrittenListener = Callable[[Path], None]


def encode(doc: Mapping[str, Any]) -> bytes:
    # allow_nan=False: the trip computer only hands out finite numbers or None; a NaN
    # would make a file that strict JSON readers (Athena, DuckDB) refuse.
    return json.dumps(doc, ensure_ascii=False, indent=1, allow_nan=False).encode("utf-8") + b"\n"


class SummaryWriter:
    """Writes checkpoints and final trip summaries from its own thread.

    ``written_listeners`` run in the writer thread after each final summary (the daemon
    wakes the uploader there). ``written`` counts final summaries, ``last_error`` holds
    the last failure (None once a checkpoint or a summary is written again).
    """

    def __init__(self, directory: Path, car: str) -> None:
        self._dir = directory
        self._car = car
        self._queue: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue(_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._listeners: list[WrittenListener] = []
        self.written = 0
        self.last_error: str | None = None
        # Final summaries a full disk refused, oldest first (writer thread only).
        self._unsaved: list[dict[str, Any]] = []

    # -- names -----------------------------------------------------------------------
    def path_of(self, trip: str) -> Path:
        return self._dir / summary_name(self._car, trip)

    @staticmethod
    def checkpoint_of(final: Path) -> Path:
        return final.with_name(final.name + PART)

    # -- life cycle --------------------------------------------------------------------
    def add_written_listener(self, fn: WrittenListener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def start(self) -> None:
        """Finish what a crash left, then start the writer thread."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
        self.recover()
        thread = threading.Thread(target=self._run, name="eccm-summary", daemon=True)
        with self._lock:
            self._thread = thread
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (the summary of the trip that just ended), then end."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(("stop", None), timeout=timeout)
        except queue.Full:
            log.error("trip summary writer is stuck; the last summary may be lost")
            return
        thread.join(timeout)
        if thread.is_alive():
            log.error("trip summary writer did not finish within %g s", timeout)

    # -- what the trip computer calls (any thread, never blocks) ----------------------
    def checkpoint(self, doc: dict[str, Any]) -> None:
        self._offer("checkpoint", doc)

    def finish(self, doc: dict[str, Any]) -> None:
        self._offer("final", doc)

    def _offer(self, kind: str, doc: dict[str, Any]) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            # Not started, or already stopped: write here.
            self._handle(kind, doc)
            return
        try:
            self._queue.put_nowait((kind, doc))
        except queue.Full:
            if kind == "final":
                # The end of a trip matters more than a moment of the OBD loop.
                self._queue.put((kind, doc), timeout=5.0)
            else:
                log.warning("trip summary writer is behind: a checkpoint was skipped")

    # -- writing -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                kind, doc = self._queue.get(timeout=RETRY_S if self._unsaved else None)
            except queue.Empty:
                self._retry_unsaved()
                continue
            if kind == "stop":
                self._retry_unsaved()
                if self._unsaved:
                    log.error(
                        "the summary of %d ended trip(s) could not be written before the "
                        "stop (%s); their last checkpoints stand in for them",
                        len(self._unsaved),
                        self.last_error or "the disk refused them",
                    )
                return
            assert doc is not None
            self._handle(kind, doc)

    def _handle(self, kind: str, doc: dict[str, Any]) -> None:
        if self._unsaved and kind == "final":
            # After the ones that wait: their trips ended first.
            self._retry_unsaved()
        try:
            if kind == "final":
                self.write_final(doc)
            else:
                self.write_checkpoint(doc)
        except (OSError, ValueError, TypeError) as exc:
            message = f"cannot write the summary of trip {doc.get('trip')}: {exc}"
            # A full disk fails every checkpoint (one each 10 s) until it has room: said
            # once per outage, and once when it is over. The end of a trip (once per
            # trip) and a document that cannot be encoded (a bug) are said each time.
            if not isinstance(exc, OSError):
                log.error("%s", message)
            elif kind == "final":
                self._keep_unsaved(doc)
                log.error("%s; it is written once the disk takes it again", message)
            elif self.last_error is None:
                log.error("%s; trip summaries are not saved until the disk works again", message)
            else:
                log.debug("%s", message)
            self.last_error = message
            return
        self._back()
        self._retry_unsaved()

    def _back(self) -> None:
        if self.last_error is not None:
            log.info("trip summaries are written again (after: %s)", self.last_error)
            self.last_error = None

    def _keep_unsaved(self, doc: dict[str, Any]) -> None:
        self._unsaved.append(doc)
        if len(self._unsaved) > _UNSAVED_MAX:
            lost = self._unsaved.pop(0)
            log.error(
                "the summary of trip %s is given up after %d later ones could not be "
                "written either; its last checkpoint stands in for it",
                lost.get("trip"),
                _UNSAVED_MAX,
            )

    def _retry_unsaved(self) -> None:
        """Write the summaries a full disk refused, oldest first, until one fails."""
        while self._unsaved:
            doc = self._unsaved[0]
            try:
                self.write_final(doc)
            except OSError as exc:
                log.debug("the summary of trip %s still waits: %s", doc.get("trip"), exc)
                return
            self._unsaved.pop(0)
            self._back()

    def write_checkpoint(self, doc: Mapping[str, Any]) -> Path:
        final = self.path_of(str(doc["trip"]))
        part = self.checkpoint_of(final)
        self._dir.mkdir(parents=True, exist_ok=True)
        write_atomic(part, encode({**doc, "file": final.name}))
        return part

    def write_final(self, doc: Mapping[str, Any]) -> Path | None:
        """Write the summary of a finished trip; None if a summary of that name exists."""
        final = self.path_of(str(doc["trip"]))
        part = self.checkpoint_of(final)
        self._dir.mkdir(parents=True, exist_ok=True)
        if final.exists() or (self._dir / UPLOADED_DIR / final.name).exists():
            # Two trips started in the same second (a Pi without a real-time clock may
            # boot to the same time twice): the first summary stays, never overwritten.
            log.warning("%s exists already: the summary of this later trip is not written", final)
            remove(part)
            return None
        write_atomic(final, encode({**doc, "file": final.name}))
        if remove(part):
            fsync_dir(self._dir)
        self.written += 1
        log.info("wrote trip summary %s", final.name)
        self._notify(final)
        return final

    def _notify(self, path: Path) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(path)
            except Exception:
                log.exception("trip summary listener failed")

    # -- recovery ----------------------------------------------------------------------
    def recover(self) -> list[Path]:
        """Finish checkpoints a crash left: each becomes its trip's summary. Returns them."""
        try:
            names = sorted(os.listdir(self._dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            if not os.path.isdir(self._dir):
                return []  # it cannot be made: the recorder's ERROR line says so
            log.error("cannot read %s for trip summaries left by a crash: %s", self._dir, exc)
            return []
        done: list[Path] = []
        for name in names:
            path = self._dir / name
            if name.endswith(SUMMARY_SUFFIX + TMP) or name.endswith(SUMMARY_SUFFIX + PART + TMP):
                remove(path)  # a write cut short: the file it was replacing is intact
                continue
            if not name.endswith(SUMMARY_SUFFIX + PART):
                continue
            final_name = name[: -len(PART)]
            if parse_summary_name(final_name) is None:
                continue
            final = self._dir / final_name
            doc: Any = None
            try:
                if final.exists():
                    remove(path)
                    continue
                doc = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                doc.update(complete=False, recovered=True, file=final_name)
                write_atomic(final, encode(doc))
                remove(path)
                fsync_dir(self._dir)
            except (OSError, ValueError) as exc:
                if isinstance(exc, OSError) and isinstance(doc, dict):
                    # Read, not written (a full disk at start): written like an ended
                    # trip's summary once the disk has room, not at the next start only.
                    self._keep_unsaved(doc)
                    log.error(
                        "cannot recover the trip summary %s: %s; it is written once the "
                        "disk takes it again",
                        name,
                        exc,
                    )
                else:
                    log.error("cannot recover the trip summary %s: %s", name, exc)
                continue
            log.info("recovered trip summary %s (the trip ended without a clean stop)", final_name)
            done.append(final)
        for final in done:
            self._notify(final)
        return done
