"""Wiring only: build the parts from a Config, start them in order, stop them in reverse.

Start order puts the first row first: the GNSS receiver is opened, then the recorder
(which first recovers leftovers of a power cut) and the trip summary writer (likewise) are
built and started (a fix that came meanwhile makes the first row then), all before
python-OBD, boto3 or the front ends' libraries are imported, so GNSS rows are written
while the rest starts (the first file does not wait for python-OBD's units: see
CommandInfo). Then the OBD link, started as soon as python-OBD is imported (with pint's
cache of its unit definitions, eccm/obd/importing.py; the adapter's reset and the car's
answers are waited for while the rest starts), then the uploader, the trouble-code
poller, the control socket, the web page and MQTT (eccm/frontends.py). A file closed
before the uploader listens is found by its first scan. Stop order is the reverse but
for MQTT: the front ends taking requests, the poller, the link and GNSS; then the hub
closes the current file and ends the trip (the trip computer hands its summary to the
writer) while MQTT still runs, so that this trip is published too; then MQTT, the
writer's bounded last write, and the uploader's one bounded last attempt.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING

from eccm.clock import Clock, SystemClock
from eccm.config import Config
from eccm.gnss.fix import Fix
from eccm.hub import CorrectedClock, Hub
from eccm.sample import Layout
from eccm.signals import stop_signals
from eccm.store.columns import recall, remember
from eccm.store.instance import AlreadyRunning, InstanceLock
from eccm.trip.segment import TripSegmenter

if TYPE_CHECKING:
    from eccm.backend import DaemonBackend
    from eccm.control.authlimit import AuthLimiter
    from eccm.control.server import ControlServer
    from eccm.gnss.source import GnssSource
    from eccm.mqtt.publisher import MqttPublisher
    from eccm.obd.dtc_poller import DtcPoller
    from eccm.obd.link import ObdLink
    from eccm.service import Credentials, Service
    from eccm.store.recorder import Recorder
    from eccm.trip.computer import TripComputer
    from eccm.trip.summary import SummaryWriter
    from eccm.upload.uploader import Uploader
    from eccm.web.server import WebServer

log = logging.getLogger(__name__)

# SIGTERM must end the daemon well inside systemd's TimeoutStopSec (25 s in our unit):
# the last upload gets at most this long.
LAST_UPLOAD_SECONDS = 10.0
LAST_SUMMARY_SECONDS = 5.0
# The car's columns (a small file, written by a thread of its own) at most this long.
COLUMNS_SECONDS = 2.0
DISK_CHECK_SECONDS = 60.0
# A front end that cannot listen (its port taken by another program, its address not up
# yet at boot) is tried again this often; the recording does not wait for it.
LISTEN_RETRY_SECONDS = 10.0
# The trip summary is checkpointed this often: the power cut at ignition off, the usual
# end of a trip in a car, costs the summary at most this much of the trip.
SUMMARY_CHECKPOINT_SECONDS = 10.0


class CommandInfo(Mapping[str, tuple[str, str]]):
    """(unit, description) of named commands, found through python-OBD.

    Importing python-OBD (pint with it, half a second here, seconds on a Pi) must
    not come before the first GNSS row: the daemon calls :meth:`load` once the OBD link
    has imported it. Until then :attr:`ready` is False and the recorder opens its first
    file without these units, filling them in as soon as they are (see
    eccm/store/writer.py). Reading an item before then waits for the import.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._lock = threading.Lock()
        self._info: dict[str, tuple[str, str]] | None = None

    @property
    def ready(self) -> bool:
        """Loaded: reading an item does not wait."""
        return self._info is not None

    def load(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            if self._info is None:
                import obd

                from eccm.obd.values import describe

                self._info = {name: describe(obd.commands[name]) for name in self._names}
            return self._info

    def __getitem__(self, name: str) -> tuple[str, str]:
        return self.load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())


def initial_layout(cfg: Config) -> Layout:
    """Columns used until the car tells which commands it supports: those it gave last
    time under this configuration (eccm/store/columns.py), else the configured ones."""
    fast = cfg.obd_fast_commands
    slow = () if cfg.obd_slow_commands == ("ALL",) else cfg.obd_slow_commands
    remembered = recall(cfg.record_dir, cfg.car_identifier, fast, cfg.obd_slow_commands)
    if remembered is not None:
        fast, slow = remembered
    info = CommandInfo((*fast, *slow))
    return Layout(fast=fast, slow=slow, gps=cfg.gps_position_monitoring, info=info)


class Daemon:
    def __init__(self, cfg: Config, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock: Clock = clock or SystemClock()
        self.started_at = self.clock.monotonic()
        # TRIP_END_TIMEOUT, as for the engine: how young a GNSS-only segment is adopted by
        # the engine trip, how long one may go without a position.
        trips = TripSegmenter(adopt_within=cfg.trip_end_timeout, gnss_timeout=cfg.trip_end_timeout)
        self._first_layout = initial_layout(cfg)
        self.hub = Hub(self.clock, cfg.gps_max_fix_age, self._first_layout, trips=trips)
        self._columns_lock = threading.Lock()
        self._columns_thread: threading.Thread | None = None
        self.hub.watch_layout(self._remember_columns)
        # Ages of files are judged against trip ids, which are GNSS-corrected.
        self.corrected_clock = CorrectedClock(self.hub)
        self._stop = threading.Event()
        # Held while a front end starts late (see _listen) and while stop() closes them.
        self._front_lock = threading.Lock()
        self._listening: dict[str, bool] = {}
        self._last_gnss_row = float("-inf")
        self._last_epoch: tuple[float | None, float | None, float | None] | None = None
        self._gnss_row_lock = threading.Lock()
        # Clear while start() builds the recording parts: the receiver is read already,
        # GNSS rows wait for the parts that write them (see _open_gnss_rows).
        self._gnss_rows = threading.Event()
        self._gnss_rows.set()
        self.recorder: Recorder | None = None
        self.uploader: Uploader | None = None
        self.gnss: GnssSource | None = None
        self.link: ObdLink | None = None
        self.server: ControlServer | None = None
        self.web: WebServer | None = None
        self.mqtt: MqttPublisher | None = None
        self.backend: DaemonBackend | None = None
        self.trip: TripComputer | None = None
        self.summaries: SummaryWriter | None = None
        self.diagnostics: DtcPoller | None = None
        # Built with the front ends (start()): what every front end is handed.
        self.service: Service | None = None
        self.credentials: Credentials | None = None  # None: no SOCKET_SERVER_SECRET
        self.auth_limiter: AuthLimiter | None = None
        self._disk_thread: threading.Thread | None = None
        self._instance = InstanceLock(
            cfg.record_dir, f"RECORD_DIRECTORY_LOCATION={cfg.record_directory_location}"
        )
        self._folder_there = False  # the record folder existed at the last look (_hold_folder)

    # -- building ----------------------------------------------------------------------
    def _build_recording(self) -> None:
        """The parts a GNSS row goes through (eccm/recording.py): none imports python-OBD,
        boto3 or aiohttp, so they start (and the first file opens) while those import."""
        from eccm.recording import build_recording

        parts = build_recording(self.cfg, self.clock, self.hub, SUMMARY_CHECKPOINT_SECONDS)
        self.recorder, self.summaries, self.trip = parts.recorder, parts.summaries, parts.trip

    def _build_gnss(self) -> None:
        if self.cfg.gps_position_monitoring:
            from eccm.gnss.source import GnssSource

            cfg = self.cfg
            self.gnss = GnssSource(cfg.gps_interface, cfg.gps_baudrate, self._on_fix, self.clock)

    def _build_link(self) -> ObdLink:
        """The OBD link: imports python-OBD (pint's definitions from its cache)."""
        from eccm.obd.importing import import_python_obd

        import_python_obd()
        from eccm.obd.link import ObdLink
        from eccm.obd.settings import ObdSettings

        self.link = ObdLink(ObdSettings.from_config(self.cfg), self.hub, self.clock)
        return self.link

    def _build_diagnostics(self, link: ObdLink) -> None:
        """The trouble-code poller, and the first layout's units: python-OBD is imported."""
        info = self._first_layout.info
        if isinstance(info, CommandInfo):
            info.load()  # a file opened before now has them in its meta from its next row
        from eccm.obd.dtc_poller import DtcPoller

        hub = self.hub
        assert self.trip is not None  # _build_recording
        self.diagnostics = DtcPoller(
            link,
            self.trip,
            interval=self.cfg.obd_dtc_interval,
            clock=self.clock,
            trip=lambda: hub.engine_trip_id,
            now=hub.now,
        )

    def _build_uploader(self) -> None:
        if not self.cfg.s3_enabled:
            return
        from eccm.upload.settings import UploadSettings
        from eccm.upload.uploader import Uploader

        self.uploader = Uploader(UploadSettings.from_config(self.cfg), self.corrected_clock)
        uploader = self.uploader
        if self.recorder is not None:
            self.recorder.add_closed_listener(lambda _path: uploader.wake())
        if self.summaries is not None:
            self.summaries.add_written_listener(lambda _path: uploader.wake())

    def _build_front_ends(self) -> None:
        """The one service every front end calls, then the socket, the web page and MQTT."""
        from eccm.frontends import build_control, build_mqtt, build_service, build_web

        cfg, clock = self.cfg, self.clock
        shared = build_service(
            cfg,
            clock,
            hub=self.hub,
            link=self.link,
            recorder=self.recorder,
            uploader=self.uploader,
            started_at=self.started_at,
            trip=self.trip,
            gnss=self.gnss,
        )
        self.service, self.backend = shared.service, shared.backend
        self.credentials, self.auth_limiter = shared.credentials, shared.limiter
        self.server = build_control(cfg, shared, clock)
        self.web = build_web(cfg, shared, clock)
        self.mqtt = build_mqtt(cfg, shared, clock)

    def _keep_disk_budget(self) -> None:
        """With S3 off nobody else applies MAX_LOCAL_STORAGE_MB: newest data still wins."""
        from eccm.store.budget import DiskSettings, enforce

        while not self._stop.wait(DISK_CHECK_SECONDS):
            try:
                enforce(DiskSettings.from_config(self.cfg), self.corrected_clock)
            except OSError as exc:
                log.warning("disk budget check of %s failed: %s", self.cfg.record_dir, exc)

    def _on_fix(self, fix: Fix) -> None:
        """GNSS thread: keep the latest fix; write GNSS-only rows while the car is silent."""
        self.hub.update_fix(fix)
        if not fix.has_position:
            self.hub.end_idle_gnss_trip()
            return
        epoch = (fix.time_utc, fix.latitude, fix.longitude)
        same_epoch = fix.time_utc is not None and epoch == self._last_epoch
        self._last_epoch = epoch
        if same_epoch:
            # A second report of the epoch: gpsd, for its first cycles after it starts,
            # reports the RMC (no altitude) and then the GGA of one epoch. The fix is
            # completed, the epoch keeps its one row. (A receiver whose time is stuck
            # while the car moves still gets its rows: the position differs.)
            return
        self._gnss_row()

    def _gnss_row(self) -> None:
        """A GNSS-only row now, unless the car answers (the OBD link writes the rows of an
        engine trip: the hub drops this one), the recording parts are not up yet, or
        SAMPLE_INTERVAL has not passed since the last one."""
        if not self._gnss_rows.is_set():
            return
        if self._stop.is_set():
            # Stopping: the OBD link has ended the engine trip, the receiver is closed next;
            # a fix in between must not open a one-row trip of its own.
            return
        now = self.clock.monotonic()
        if self.hub.timebase.settling(self.clock.time(), now):
            # The first epochs say the clock is off: a row now would open a trip on the
            # wrong date that ends when GNSS time is adopted, epochs later.
            return
        with self._gnss_row_lock:  # the GNSS thread, and start() once (_open_gnss_rows)
            if now - self._last_gnss_row < self.cfg.sample_interval:
                return
            self._last_gnss_row = now
        self.hub.emit(engine=False)

    def _remember_columns(self, layout: Layout) -> None:
        """The car's columns, for the first file of the next start (eccm/store/columns.py).

        Written by a thread of its own: the caller is the OBD link, which never waits for
        the SD card (a rename can wait seconds on a busy one, and the drive's first rows
        come right after).
        """
        if not self.cfg.file_recording:
            return  # nothing is written into the folder
        thread = threading.Thread(target=self._write_columns, name="eccm-columns", daemon=True)
        thread.start()
        self._columns_thread = thread

    def _write_columns(self) -> None:
        cfg = self.cfg
        with self._columns_lock:
            # The newest layout, whichever of two quick reconnections' threads comes last.
            layout = self.hub.layout
            remember(
                cfg.record_dir,
                cfg.car_identifier,
                cfg.obd_fast_commands,
                cfg.obd_slow_commands,
                layout.fast,
                layout.slow,
            )

    def _open_gnss_rows(self) -> None:
        """The recording parts are up: fixes make rows from now on, and a fix that came
        while they were built makes one now (the next may be a second away)."""
        self._gnss_rows.set()
        fix = self.hub.fresh_fix()
        if fix is not None and fix.has_position:
            self._gnss_row()

    # -- running -----------------------------------------------------------------------
    def start(self) -> None:
        # Recording first: every second before the first row is a second of the drive not
        # logged. Then the OBD link, started at once (python-OBD's connection spends a
        # second waiting on the adapter's reset while the rest starts), then the uploader
        # and the front ends, whose libraries import while the first rows are written.
        # Before anything: a second ECCM on this folder would take the first one's open
        # file for a power cut's leftover (eccm/store/instance.py). With FILE_RECORDING=no
        # the folder is not touched at all.
        if self.cfg.file_recording:
            self._instance.acquire()
            self._folder_there = os.path.isdir(self.cfg.record_dir)
            if self.cfg.file_encryption_recipients:
                # Before the first file opens: it is plaintext until it is closed and sealed.
                from eccm.crypto.encrypt import keep_folder_private

                keep_folder_private(self.cfg.record_dir)
        self._gnss_rows.clear()
        self._build_gnss()
        if self.gnss is not None:
            # Opened first: the receiver's next epoch may be up to a second away, and an
            # epoch that comes while the recording parts are built is not lost.
            self.gnss.start()
        self._build_recording()
        if self.recorder is not None:
            self.recorder.start()
        if self.summaries is not None:
            self.summaries.start()
        self._open_gnss_rows()
        link = self._build_link()
        link.start()
        self._build_diagnostics(link)
        if self.cfg.file_encryption_recipients:
            # What a power cut left half-sealed, or plaintext from before encryption was on.
            from eccm.crypto.encrypt import seal_pending

            seal_pending(self.cfg.record_dir, self.cfg.file_encryption_recipients)
        self._build_uploader()
        self._build_front_ends()
        if self.uploader is not None:
            self.uploader.start()
        elif self.recorder is not None:
            self._disk_thread = threading.Thread(
                target=self._keep_disk_budget, name="eccm-disk", daemon=True
            )
            self._disk_thread.start()
        if self.diagnostics is not None:
            self.diagnostics.start()
        if self.server is not None:
            self._listen("socket", self.server.start)
        if self.web is not None:
            self._listen("web", self.web.start)
        if self.mqtt is not None:
            self.mqtt.start()
        log.info(
            "ECCM running: car %s, recording %s, GNSS %s, S3 %s, socket %s",
            self.cfg.car_identifier,
            self._recording_shown(),
            self.cfg.gps_interface if self.gnss else "off",
            self.cfg.s3_server_endpoint or "off",
            (
                f"{self.cfg.socket_server_bind}:{self.cfg.socket_server_port}"
                + ("" if self._listening.get("socket") else " (not listening yet)")
            )
            if self.server
            else "off",
        )

    def _listen(self, name: str, start: Callable[[], None]) -> None:
        """Start a front end (``name``: socket, web); one that cannot listen is said once
        and tried again in the background. Before, the daemon refused to start: a port
        taken by another program (8080 often is) or an address not up yet at boot cost
        every row, and a cron @reboot start never came back."""
        from eccm.errors import ConfigError

        try:
            start()
        except ConfigError as exc:
            log.error(
                "%s; ECCM records without it and tries again every %g s",
                exc,
                LISTEN_RETRY_SECONDS,
            )
        else:
            self._listening[name] = True
            return

        def later() -> None:
            while not self._stop.wait(LISTEN_RETRY_SECONDS):
                with self._front_lock:
                    if self._stop.is_set():
                        return
                    try:
                        start()  # logs its "listening on" line
                    except ConfigError as exc:
                        log.debug("%s still cannot listen: %s", name, exc)
                        continue
                    self._listening[name] = True
                    return

        threading.Thread(target=later, name=f"eccm-listen-{name}", daemon=True).start()

    def _recording_shown(self) -> str:
        """Where the start line says rows go: a folder the recorder could not make or write
        is said to be so there too (its ERROR line came before, and would otherwise be
        contradicted by "recording to ...")."""
        if self.recorder is None:
            return "off"
        where = self.cfg.record_dir
        if os.path.isdir(where) and os.access(where, os.W_OK | os.X_OK):
            return f"to {where}"
        return f"to {where} (not writable now: rows are dropped until it is, see above)"

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    def stop(self) -> None:
        t0 = time.monotonic()
        self._stop.set()
        log.info("stopping")
        with self._front_lock:  # a late start (see _listen) is done, or will not happen
            if self.web is not None:
                self.web.stop()
            if self.server is not None:
                self.server.stop()
        if self.diagnostics is not None:
            self.diagnostics.stop()
        if self.link is not None:
            self.link.stop()
        if self.gnss is not None:
            self.gnss.stop()
        # Ends the trip: the recorder closes its file, the trip computer hands its summary
        # to the writer, which writes it before the uploader's last attempt. Before MQTT
        # stops, so that the trip this stop ends is published on P/trip like any other.
        self.hub.close()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.hub.stop()
        if self.summaries is not None:
            self.summaries.stop(timeout=LAST_SUMMARY_SECONDS)
        if self.uploader is not None:
            self.uploader.stop(timeout=LAST_UPLOAD_SECONDS)
        if (columns := self._columns_thread) is not None:
            columns.join(COLUMNS_SECONDS)  # written before the folder is let go
        self._instance.release()
        log.info("stopped in %.1f s", time.monotonic() - t0)

    def run(self, early_stop: threading.Event | None = None) -> int:
        """Run until SIGTERM, SIGINT or SIGHUP (a closed terminal); returns the exit code.

        ``early_stop`` is set by the caller's own handlers when a signal came before these
        are installed (while the libraries were still importing).
        """

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self._stop.set()

        # After cmd_run's early handlers, SIGHUP is in the list only if it was there.
        for signum in stop_signals():
            signal.signal(signum, on_signal)
        if early_stop is not None and early_stop.is_set():
            log.info("stopped before it started")
            return 0
        self.start()
        try:
            while not self._stop.wait(1.0):
                self._hold_folder()
        finally:
            self.stop()
        return 0

    def _hold_folder(self) -> None:
        """Lock a record folder that could not be made at start once it is there (a drive
        mounted later), so that a second ECCM started after that is refused as at start."""
        if not self.cfg.file_recording or self._instance.held:
            return
        there = os.path.isdir(self.cfg.record_dir)
        appeared, self._folder_there = there and not self._folder_there, there
        if not appeared:
            return  # one try each time it appears: a warning of acquire() said once
        try:
            if self._instance.acquire():
                log.info("%s is there now: locked against a second ECCM", self._instance.what)
        except AlreadyRunning as exc:
            log.error("%s (it started while this one waited for the folder)", exc)
