"""Building the recording parts from a Config: the recorder, the trip summary writer and
the trip computer, each listening to the hub, and the sealing of what they close when
FILE_ENCRYPTION_RECIPIENTS is set.

Wiring only, like eccm/app.py, which builds these right after opening the GNSS receiver:
none imports python-OBD, boto3 or aiohttp, so the first file opens while those import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eccm.clock import Clock
from eccm.config import Config
from eccm.hub import Hub
from eccm.store.recorder import Recorder, used_trip_ids
from eccm.store.settings import RecordSettings
from eccm.trip.computer import TripComputer, TripSettings
from eccm.trip.summary import SummaryWriter


@dataclass(frozen=True)
class Recording:
    recorder: Recorder | None  # None: FILE_RECORDING=no
    summaries: SummaryWriter | None  # likewise
    trip: TripComputer


def build_recording(cfg: Config, clock: Clock, hub: Hub, checkpoint_every: float) -> Recording:
    """The parts a row goes through, listening to ``hub``; none started. The trip summary
    is checkpointed every ``checkpoint_every`` seconds."""
    recorder = None
    if cfg.file_recording:
        recorder = Recorder(RecordSettings.from_config(cfg), clock, facts=hub.facts)
        hub.add_listener(recorder)
        # An earlier run's trip ids stay taken (a Pi without a clock may boot to the
        # same time twice): read before any part starts writing or moving files.
        hub.reserve_trip_ids(
            used_trip_ids(cfg.record_dir, cfg.car_identifier, cfg.monitoring_file_extension)
        )
    writer = SummaryWriter(cfg.record_dir, cfg.car_identifier) if cfg.file_recording else None
    trip = TripComputer(
        TripSettings.from_config(cfg),
        car=cfg.car_identifier,
        facts=hub.facts,
        on_checkpoint=None if writer is None else writer.checkpoint,
        on_finished=None if writer is None else writer.finish,
        checkpoint_every=checkpoint_every,
    )
    hub.add_listener(trip)
    if cfg.file_encryption_recipients:
        seal_on_close(cfg, recorder, writer)
    return Recording(recorder, writer, trip)


def seal_on_close(cfg: Config, recorder: Recorder | None, summaries: SummaryWriter | None) -> None:
    """Encrypt each closed file and summary as soon as it is final (issue 15): these
    listeners come before the uploader's, which only ever sends the .age files."""
    from eccm.crypto.encrypt import seal_pending

    folder, keys = cfg.record_dir, cfg.file_encryption_recipients

    def seal(_path: Path) -> None:
        seal_pending(folder, keys)

    if recorder is not None:
        recorder.add_closed_listener(seal)
    if summaries is not None:
        summaries.add_written_listener(seal)
