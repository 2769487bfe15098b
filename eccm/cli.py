"""The `eccm` command: run, check-config, query, upload, gen-secret, login-link, demo,
keygen, decrypt, and the report commands (trips, report, fleet, schema: SPEC §9).

The only module (with the query and demo bodies it calls) that prints: everything else
logs. The uploader reports each file through a callback and returns its report; `eccm
upload`'s progress bar and messages are made here (``upload_backlog``). A foreseeable
problem ends with one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, tzinfo
from types import FrameType
from typing import Any

from eccm import __version__
from eccm.config import Config, load
from eccm.errors import ConfigError, EccmError

log = logging.getLogger("eccm")

DEFAULT_CONFIG = "config.ini"


# syslog priorities of the levels (sd-daemon(3) line prefixes).
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


def _stderr_is_the_journal() -> bool:
    """Under systemd with StandardError=journal (the unit in systemd/): JOURNAL_STREAM
    names the stream's device and inode, which a redirection elsewhere would not have."""
    named = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in named.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _SyslogPrefix(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.syslog = _SYSLOG_PRIORITY.get(record.levelno, 2)
        return True


def setup_logging(level: str) -> None:
    journal = _stderr_is_the_journal()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        # In the journal: its own time stamps, and each line's priority as a "<N>" prefix,
        # so that `journalctl -u eccm -p warning` shows the warnings and errors.
        format="<%(syslog)d>%(levelname)s %(name)s: %(message)s"
        if journal
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if journal:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_SyslogPrefix())
    # pint warns about python-OBD's unit redefinitions at every start ("WARNING pint.util:
    # Redefining 'percent'"): python-OBD's doing, never a problem of the car or the
    # configuration, so not shown even when debugging.
    logging.getLogger("pint").setLevel(logging.ERROR)
    # python-OBD logs every failed query at WARNING/ERROR on its own logger; our link
    # reports outages once, so keep the library quiet unless debugging.
    if level != "DEBUG":
        logging.getLogger("obd").setLevel(logging.CRITICAL)
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _config_path(arg: str | None) -> str:
    # expanduser: ECCM_CONFIG=~/eccm/config.ini in a systemd unit or a crontab reaches us
    # with its "~", which no shell expanded.
    return os.path.expanduser(arg or os.environ.get("ECCM_CONFIG") or DEFAULT_CONFIG)


def _config_named(arg: str | None) -> bool:
    """The user named a configuration file (--config or $ECCM_CONFIG): a missing one is an
    error, not a reason to go on without one."""
    return bool(arg or os.environ.get("ECCM_CONFIG"))


def _source_config(arg: str | None, command: str, bucket: bool) -> Callable[[], Config]:
    """The configuration a report command reads when --from does not say where the data
    is: a missing default config.ini is told as such, with what to give instead."""

    def load_it() -> Config:
        path = _config_path(arg)
        if not _config_named(arg) and not os.path.exists(path):
            if bucket:
                raise EccmError(
                    f"--bucket reads the S3 settings of a configuration file, and there is "
                    f"no {path}: give eccm {command} --bucket --config PATH"
                )
            raise EccmError(
                f"no --from DIR, and no configuration file {path} to take "
                f"RECORD_DIRECTORY_LOCATION from: give eccm {command} --from DIR (a record "
                "folder), or --config PATH"
            )
        return load(path)

    return load_it


def _load(arg: str | None) -> Config:
    return load(_config_path(arg))


def cmd_run(args: argparse.Namespace) -> int:
    # A SIGTERM while python-OBD and boto3 are importing (half a second on a Pi) must still
    # be a clean stop with exit 0, not the default handler's death with 143.
    early_stop = threading.Event()

    def on_early_signal(_signum: int, _frame: FrameType | None) -> None:
        early_stop.set()

    # SIGHUP too: a terminal closed under `./start.sh` must close the file, not kill
    # (unless nohup ignores it: eccm.signals).
    from eccm.signals import stop_signals

    for signum in stop_signals():
        signal.signal(signum, on_early_signal)
    # Before python-OBD (pint) is imported and before any thread starts: see eccm.memory.
    from eccm.memory import lean_daemon

    lean_daemon()
    cfg = _load(args.config)
    setup_logging(cfg.log_level)
    for note in (s3_off_note(cfg), exposed_config_note(_config_path(args.config))):
        if note is not None:
            log.warning("%s", note)
    from eccm.app import Daemon

    if early_stop.is_set():
        return 0
    return Daemon(cfg).run(early_stop)


def check_files(cfg: Config) -> None:
    """Load the PEM files as the daemon will: the parser only knows that they exist, and
    `eccm run` refuses a certificate or key it cannot load (check-config said "valid")."""
    import ssl

    from eccm.tls import server_context

    for prefix, cert, key in (
        ("SOCKET_SERVER", cfg.socket_server_tls_cert, cfg.socket_server_tls_key),
        ("WEB_SERVER", cfg.web_server_tls_cert, cfg.web_server_tls_key),
    ):
        if cert and key:
            server_context(cert, key, prefix)
    bundles = [("MQTT_CA_FILE", cfg.mqtt_ca_file)]
    if isinstance(cfg.s3_verify_tls, str):
        bundles.append(("S3_VERIFY_TLS", cfg.s3_verify_tls))
    for key_name, bundle in bundles:
        if not bundle:
            continue
        try:
            ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{key_name}={bundle!r} cannot be loaded: {exc}; expected a PEM file of CA "
                "certificates"
            ) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    cfg = load(path)
    check_files(cfg)
    print(f"# {path}: valid")
    print("[DEFAULT]")
    for key, value in cfg.effective(mask_secrets=True).items():
        if "{CAR_IDENTIFIER}" in value and key in ("MQTT_CLIENT_ID", "MQTT_TOPIC_PREFIX"):
            # The value used, not its pattern: what a broker's ACL and a subscriber need.
            value = value.replace("{CAR_IDENTIFIER}", cfg.car_identifier)
        print(f"{key}={value}")
    exposed = exposed_config_note(path)
    for note in device_notes(cfg) + setting_notes(cfg) + ([exposed] if exposed else []):
        print(f"eccm: note: {note}", file=sys.stderr)
    return 0


def _not_a_serial_device(key: str, path: str) -> str | None:
    """A path that exists but can be no serial port (a file, a folder): a typo, not a
    device that is still to be plugged in."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode):
        return None
    kind = "a folder" if stat.S_ISDIR(mode) else "a file"
    return f"{key}={path} is {kind}, not a serial device: ECCM cannot read it; name the device"


def device_notes(cfg: Config) -> list[str]:
    """What is valid but will not work right now (a device that is not there)."""
    notes = []
    if cfg.obd_interface and not os.path.exists(cfg.obd_interface):
        notes.append(
            f"OBD_INTERFACE={cfg.obd_interface} does not exist now: plug the adapter in, "
            "or install the udev rules (udev/99-eccm.rules) that name it; ECCM waits for it"
        )
    elif cfg.obd_interface:
        notes.append(_not_a_serial_device("OBD_INTERFACE", cfg.obd_interface) or "")
    gps = cfg.gps_interface
    if cfg.gps_position_monitoring and not gps.startswith("gpsd://") and not os.path.exists(gps):
        notes.append(
            f"GPS_INTERFACE={gps} does not exist now: plug the receiver in, install the "
            "udev rules, or set GPS_POSITION_MONITORING=no; ECCM logs without position meanwhile"
        )
    elif cfg.gps_position_monitoring and not gps.startswith("gpsd://"):
        notes.append(_not_a_serial_device("GPS_INTERFACE", gps) or "")
    return [n for n in notes if n]


def s3_off_note(cfg: Config) -> str | None:
    """A bucket without an endpoint: valid (empty = S3 off, SPEC §3), but likely a slip."""
    if cfg.s3_server_bucket and not cfg.s3_enabled:
        return (
            f"S3_SERVER_BUCKET={cfg.s3_server_bucket} is set but S3_SERVER_ENDPOINT is empty, "
            "so uploads are off: set S3_SERVER_ENDPOINT (https://host[:port]) to upload"
        )
    return None


def exposed_config_note(path: str) -> str | None:
    """A configuration file holding secrets that other users of the machine may read (or
    write): ``cp config.ini.template config.ini`` under the usual umask makes it 0644, and
    every account on the Pi (a web server's, a guest's) then has the S3 key and the
    socket's secret. Only the file's own secrets count: ones from the environment do not."""
    import stat

    from eccm.config import secrets_in_file

    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        keys = secrets_in_file(path)
    except (OSError, EccmError):
        return None  # no file (or unreadable): load() has said so already
    if not keys or not mode & 0o006:
        return None
    return (
        f"{path} holds {', '.join(keys)} and other users of this machine may read it "
        f"(mode {mode:04o}): chmod 600 {path}"
    )


def record_dir_note(cfg: Config) -> str | None:
    """RECORD_DIRECTORY_LOCATION that cannot be created or written now. A note, not an
    error: the folder may appear later (a USB stick mounted after boot)."""
    path = cfg.record_dir.absolute()
    missing = None  # the topmost folder that does not exist
    where = f"RECORD_DIRECTORY_LOCATION={cfg.record_directory_location}"
    try:
        while not path.exists():
            missing, path = path, path.parent
    except OSError as exc:  # a folder on the way that this user may not enter
        return (
            f"{where} cannot be reached now ({exc.strerror}: {exc.filename}): give the "
            "user ECCM runs as the right to enter every folder on the way; ECCM writes no "
            "file until it can"
        )
    if missing is None:
        if not os.access(path, os.W_OK | os.X_OK):
            return (
                f"{where} is not writable now: give the user ECCM runs as the right to write there"
            )
        return None
    try:
        # The only sure test (root passes os.access on /proc): make it, and remove it again.
        missing.mkdir()
        missing.rmdir()
    except OSError as exc:
        return (
            f"{where} cannot be created now (mkdir {missing}: {exc.strerror}): ECCM writes "
            "no file until it can; create it, or mount the drive it is on"
        )
    return None


def unlogged_notes(cfg: Config) -> list[str]:
    """Names that SUMMARY_COMMANDS or MQTT_VALUES take from the logged values while no
    command key logs them: valid, but they stay empty (OBD_SLOW_COMMANDS=ALL logs every
    value the car has)."""
    if cfg.obd_slow_commands == ("ALL",):
        return []
    logged = set(cfg.obd_fast_commands) | set(cfg.obd_slow_commands)
    keys = [("SUMMARY_COMMANDS", cfg.summary_commands, "its minutes stay empty")]
    if cfg.mqtt_broker:
        keys.append(("MQTT_VALUES", cfg.mqtt_values, "it is never published"))
    notes = []
    for key, names, effect in keys:
        for name in names:
            if name not in logged:
                notes.append(
                    f"{key} names {name}, which OBD_FAST_COMMANDS and OBD_SLOW_COMMANDS do not "
                    f"log: {effect}; add it to OBD_SLOW_COMMANDS (or set it to ALL)"
                )
    return notes


def setting_notes(cfg: Config) -> list[str]:
    """What is valid but will not work as it stands (a setting, not a device)."""
    notes = [n for n in (s3_off_note(cfg), record_dir_note(cfg)) if n is not None]
    return notes + unlogged_notes(cfg)


def cmd_query(args: argparse.Namespace) -> int:
    from eccm.control.client import run_query

    cfg: Config | None = None
    path = _config_path(args.config)
    if _config_named(args.config) or os.path.exists(path):
        cfg = load(path)
    host = args.host or (cfg.socket_server_bind if cfg else "127.0.0.1")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # "[::1]" as in a URL: getaddrinfo knows no brackets
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    # "is None", not "or": --port 0 is refused as a port, not replaced by the default.
    port = args.port if args.port is not None else (cfg.socket_server_port if cfg else 8765)
    tls = args.tls or bool(cfg and cfg.socket_tls)
    # --read-only: the secret of the read scope, for a dashboard or a shared account.
    key = "SOCKET_SERVER_READ_SECRET" if args.read_only else "SOCKET_SERVER_SECRET"
    secret = os.environ.get(f"ECCM_{key}") or (getattr(cfg, key.lower()) if cfg else None)
    if cfg is None and not secret:
        # No file was read at all: "set it in the config" would not say which one.
        print(
            f"eccm query: no secret: no configuration file {path} (give --config PATH, "
            f"e.g. the daemon's config.ini) and no ECCM_{key} environment variable",
            file=sys.stderr,
        )
        return 2
    if cfg is not None and not cfg.enable_socket_server and not secret and args.host is None:
        # The cause of the missing secret: this daemon has no control socket at all.
        print(
            f"eccm query: the control socket is off in {path} (ENABLE_SOCKET_SERVER=no): set "
            "ENABLE_SOCKET_SERVER=yes and SOCKET_SERVER_SECRET (make one with `eccm "
            "gen-secret`) there and restart eccm run",
            file=sys.stderr,
        )
        return 2
    return run_query(host, port, tls, args.cafile, list(args.words), secret, secret_key=key)


def cmd_upload(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    setup_logging("WARNING" if cfg.log_level == "INFO" else cfg.log_level)
    return upload_backlog(cfg, progress=True)  # says so and returns 2 when S3 is off


def upload_backlog(cfg: Config, progress: bool = True) -> int:
    """The body of ``eccm upload``: every closed file now, with a progress bar.

    Returns 0 when nothing is left to upload, 1 otherwise (the reason on stderr), 2 when
    S3 is not configured, 130 when interrupted.
    """
    from eccm.upload.settings import UploadSettings

    settings = UploadSettings.from_config(cfg)
    if not settings.enabled:
        print(
            "eccm upload: S3_SERVER_ENDPOINT is empty, so uploads are off: set it (and "
            "S3_SERVER_BUCKET) in the configuration",
            file=sys.stderr,
        )
        return 2
    try:
        folder = settings.record_dir.is_dir()
    except PermissionError:  # a mount point this user may not enter
        print(
            f"eccm upload: RECORD_DIRECTORY_LOCATION={settings.record_dir} cannot be read "
            "by this user (permission denied: a drive not mounted yet, or ECCM runs as "
            "another user?): no file to upload there",
            file=sys.stderr,
        )
        return 1
    if not folder:
        # "nothing to upload" (exit 0) would hide a typo or a drive that is not mounted.
        print(
            f"eccm upload: RECORD_DIRECTORY_LOCATION={settings.record_dir} is not a folder "
            "(a typo, or a drive not mounted?): no file to upload there",
            file=sys.stderr,
        )
        return 1
    from tqdm import tqdm  # type: ignore[import-untyped]

    from eccm.clock import SystemClock
    from eccm.upload.uploader import Uploader

    # log_outcome=False: the outcome is printed below, not logged across the bar.
    uploader = Uploader(settings, SystemClock(), log_outcome=False)
    waiting = uploader.queue_length()
    try:
        with tqdm(
            total=waiting, unit="file", disable=not progress or not waiting, file=sys.stderr
        ) as bar:
            report = uploader.run_once(on_file=lambda _name: bar.update(1))
    except KeyboardInterrupt:
        # Nothing to undo: a file is deleted only after its verified upload, and whatever
        # was in flight is found in the bucket (or sent again) by the next run.
        print(
            f"eccm upload: interrupted; {uploader.queue_length()} file(s) still waiting in "
            f"{settings.record_dir}, nothing lost: run it again to finish",
            file=sys.stderr,
        )
        return 130
    if report.error is not None:
        print(f"eccm upload: {report.error}", file=sys.stderr)
        return 1
    for reason in report.kept:
        print(f"eccm upload: {reason}", file=sys.stderr)
    if report.remaining:
        print(
            f"eccm upload: {report.remaining} file(s) still waiting in {settings.record_dir}",
            file=sys.stderr,
        )
        return 1
    if not waiting and not report.uploaded:
        print(f"nothing to upload in {settings.record_dir}")
        return 0
    print(
        f"uploaded {report.uploaded} file(s) to {settings.destinations(report.cars)}; nothing left"
    )
    return 0


def cmd_gen_secret(_args: argparse.Namespace) -> int:
    from eccm.control.client import gen_secret

    print(gen_secret())
    return 0


# A DNS name: labels of 1 to 63 letters, digits and '-' (not at either end), an optional
# final dot.
_HOST_NAME = re.compile(
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)


def _link_host(text: str) -> str | None:
    """``--host`` of login-link as the URL needs it (an IPv6 address without its brackets:
    base_url adds them), or None when it is no host: "pi.local:8080" or a blank would
    make a link that opens nothing."""
    import ipaddress

    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    return host if _HOST_NAME.fullmatch(host) else None


def cmd_login_link(args: argparse.Namespace) -> int:
    import time

    from eccm.web.loginlink import TTL, base_url, link, mint

    cfg = _load(args.config)
    if not cfg.enable_web_server:
        print(
            "eccm login-link: the web page is off: set ENABLE_WEB_SERVER=yes in the "
            "configuration (and restart eccm run)",
            file=sys.stderr,
        )
        return 1
    secret = cfg.socket_server_read_secret if args.read_only else cfg.socket_server_secret
    if not secret:
        print(
            "eccm login-link: --read-only needs SOCKET_SERVER_READ_SECRET in the configuration",
            file=sys.stderr,
        )
        return 1
    host = cfg.web_server_bind
    if args.host:
        checked = _link_host(args.host)
        if checked is None:
            print(
                f"eccm login-link: --host {args.host!r} is not a host name or address: "
                "expected e.g. pi.local, 192.168.4.1 or fd00::1, without a port "
                f"(the port is WEB_SERVER_PORT={cfg.web_server_port})",
                file=sys.stderr,
            )
            return 2
        host = checked
    url = base_url(host, cfg.web_server_port, cfg.web_tls)
    print(link(url, mint(secret, time.time())))
    print(
        f"eccm login-link: open it within {TTL / 60:g} minutes; it works once, "
        f"{'read only' if args.read_only else 'with every scope'}",
        file=sys.stderr,
    )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eccm.crypto.decrypt import keygen

    recipient = keygen(Path(args.output))
    # The recipient alone on stdout (a script takes it); the advice on stderr.
    print(
        f"identity (private key) written to {args.output}, readable by you only: keep it "
        "off the car. Public key for FILE_ENCRYPTION_RECIPIENTS:",
        file=sys.stderr,
    )
    print(recipient)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eccm.crypto.decrypt import DecryptFailed, decrypt_file, load_identities

    identities = load_identities(Path(args.identity))
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        # Before any download: a typo in -o is told at once, in words, not after the bucket.
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EccmError(
                f"-o {args.out}: cannot make this folder ({exc.strerror or exc}): "
                "expected a folder to write the decrypted files in"
            ) from None
    files = [Path(f) for f in args.files]
    if args.bucket is not None:
        from eccm.crypto.decrypt import download_encrypted
        from eccm.upload.s3client import build_client
        from eccm.upload.settings import UploadSettings

        settings = UploadSettings.from_config(_load(args.config))
        if not settings.enabled:
            raise EccmError("--bucket needs S3_SERVER_ENDPOINT and S3_SERVER_BUCKET in the config")
        out_dir = out_dir or Path(".")
        fetched = download_encrypted(build_client(settings), settings.bucket, args.bucket, out_dir)
        if not fetched and not files:
            raise EccmError(
                f"no .age object under s3://{settings.bucket}/{args.bucket}: nothing to "
                f"decrypt (this car's objects are under {settings.car_prefix}; only files "
                "closed while FILE_ENCRYPTION_RECIPIENTS was set are encrypted)"
            )
        files += fetched
        out_dir = None  # each next to its downloaded .age, in its partition folder
    if not files:
        raise EccmError("nothing to decrypt: name .age files or --bucket PREFIX")
    failed = 0
    for path in files:
        try:
            print(decrypt_file(path, identities, out_dir))
        except DecryptFailed as exc:
            print(f"eccm decrypt: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from eccm.sim.demo import run_demo

    return run_demo(
        duration=args.duration, directory=args.dir, mqtt=args.mqtt, encrypt=args.encrypt
    )


def cmd_trips(args: argparse.Namespace) -> int:
    from eccm.report.logbook import as_csv, as_json, as_table, selected
    from eccm.report.open import encrypted_note, logbook, open_source

    source = open_source(
        args.source, args.bucket, _source_config(args.config, "trips", args.bucket), "trips"
    )
    if args.since is not None and args.until is not None and args.since > args.until:
        print(
            f"eccm trips: --since {args.since} is after --until {args.until}: no day is in between",
            file=sys.stderr,
        )
        return 2
    every = logbook(source, args.car)
    entries = selected(every, args.since, args.until, args.tz)
    render = {"table": as_table, "csv": as_csv, "json": as_json}[args.format]
    if not entries:
        if args.format != "table":
            # A script's export stays a valid file: the CSV header alone, or "[]".
            sys.stdout.write(render(entries, args.tz))
        what = f" of car {args.car}" if args.car else ""
        if every:
            # There are trips, just none in those days: "no trip summary" would send the
            # user looking for a missing folder.
            days = " ".join(
                f"{flag} {day}"
                for flag, day in (("--since", args.since), ("--until", args.until))
                if day is not None
            )
            print(
                f"eccm trips: no trip{what} in {source.description} within {days} "
                f"(its {len(every)} trip(s) lie outside; times and days in {args.tz})",
                file=sys.stderr,
            )
            return 1
        skipped = encrypted_note(source, args.car, "trips")
        print(
            f"eccm trips: no trip summary{what} in {source.description}{skipped}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(render(entries, args.tz))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from eccm.report import need
    from eccm.report.open import open_source, report_html

    need("matplotlib", "report")  # before any file is read: say so at once
    source = open_source(
        args.source, args.bucket, _source_config(args.config, "report", args.bucket), "report"
    )
    car = args.car
    if car is None and args.bucket:
        car = _load(args.config).car_identifier  # the bucket holds a fleet: this car's trips
    bars: list[Any] = []

    def progress(total: int) -> Callable[[], None]:
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=total, unit="file", file=sys.stderr, disable=not args.bucket)
        bars.append(bar)
        return lambda: bar.update(1)

    try:
        page, ref = report_html(source, args.trip, car, progress)
    finally:
        for bar in bars:
            bar.close()
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(page)
    except OSError as exc:
        print(f"eccm report: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: trip {ref.trip} of {ref.car}")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from eccm.report import need
    from eccm.report.fleet import as_csv, as_table
    from eccm.report.open import fleet_rows

    need("duckdb", "fleet")  # before the configuration: say so at once
    if not args.bucket:
        print("eccm fleet: reads the bucket only: add --bucket", file=sys.stderr)
        return 2
    rows = fleet_rows(_load(args.config), args.since)
    sys.stdout.write(as_csv(rows) if args.format == "csv" else as_table(rows))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from eccm.report.open import open_source, schema_text

    if args.location is not None:
        refused = _location_refusal(args.engine, args.location)
        if refused:
            print(f"eccm schema: --location {args.location!r} {refused}", file=sys.stderr)
            return 2
    cfg: Config | None = None
    path = _config_path(args.config)
    if _config_named(args.config) or args.bucket or os.path.exists(path):
        cfg = load(path)
    source = None
    if args.source is not None or args.bucket or cfg is not None:
        source = open_source(args.source, args.bucket, lambda: _load(args.config), "schema")

    def note(text: str) -> None:
        print(f"eccm schema: {text}", file=sys.stderr)

    sys.stdout.write(schema_text(args.engine, source, cfg, args.car, args.location, note))
    return 0


def _location_refusal(engine: str, location: str) -> str | None:
    """Why ``engine`` cannot read data at ``location``; None when it can.

    Athena reads S3 only, Trino's Hive connector a file system URL; DuckDB and Spark also
    read a local folder. Refused here, a typo does not become a definition that fails in
    the query engine (an Athena table over 'notaurl/' is created and reads nothing).
    """
    scheme, sep, rest = location.partition("://")
    if not location.strip():
        return "is empty: expected s3://bucket/prefix/"
    if sep and not rest.strip("/"):
        return f"names no bucket: expected {scheme}://bucket/prefix/"
    if engine == "athena" and scheme != "s3":
        return "is not valid for athena, which reads S3 only: expected s3://bucket/prefix/"
    if engine == "trino" and not sep:
        return "is not valid for trino: expected a URL such as s3://bucket/prefix/"
    folder = rest if scheme == "file" else None if sep else location
    if folder is not None and os.path.isdir(folder):
        entries = os.listdir(folder)
        if not any(e.startswith("car=") for e in entries) and any(
            e.endswith((".json", ".gz", ".csv", ".tsv", ".age")) for e in entries
        ):
            # A record folder holds the files side by side: the views' car=*/date=*/
            # pattern finds none of them, and the query engine says only "no files".
            return (
                "is a record folder, not laid out like the bucket (car=.../date=.../): "
                "give the bucket's s3:// URL, or a folder that `eccm decrypt --bucket` wrote"
            )
    return None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-03-01") from None


def _zone(text: str) -> tzinfo:
    if text == "local":
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time zone (e.g. UTC, local, Europe/Berlin)"
        ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eccm", description="Electronic Centralized Car Monitoring")
    p.add_argument("--version", action="version", version=f"eccm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            metavar="PATH",
            help=f"config.ini to read (default: $ECCM_CONFIG or {DEFAULT_CONFIG})",
        )

    r = sub.add_parser("run", help="run the logger (the daemon)")
    with_config(r)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate the configuration and print it")
    with_config(c)
    c.set_defaults(func=cmd_check_config)

    q = sub.add_parser("query", help="send one command to the control socket")
    with_config(q)
    q.add_argument("--host", help="address of the daemon (default: SOCKET_SERVER_BIND)")
    q.add_argument("--port", type=int, help="port (default: SOCKET_SERVER_PORT)")
    q.add_argument("--tls", action="store_true", help="connect with TLS")
    q.add_argument("--cafile", metavar="PEM", help="CA or self-signed certificate to trust")
    q.add_argument(
        "--read-only",
        action="store_true",
        help="authenticate with SOCKET_SERVER_READ_SECRET (the read scope only)",
    )
    q.add_argument("words", nargs="+", metavar="COMMAND", help="e.g. STATUS, GET RPM SPEED, DTC")
    q.set_defaults(func=cmd_query)

    u = sub.add_parser("upload", help="upload every closed file now")
    with_config(u)
    u.set_defaults(func=cmd_upload)

    g = sub.add_parser("gen-secret", help="print a new random SOCKET_SERVER_SECRET")
    g.set_defaults(func=cmd_gen_secret)

    ll = sub.add_parser("login-link", help="print a one-time login URL for the web page")
    with_config(ll)
    ll.add_argument(
        "--host",
        help="host name or address in the URL (default: WEB_SERVER_BIND, or this machine's name)",
    )
    ll.add_argument(
        "--read-only",
        action="store_true",
        help="a link that grants the read scope only (signed with SOCKET_SERVER_READ_SECRET)",
    )
    ll.set_defaults(func=cmd_login_link)

    def with_source(sp: argparse.ArgumentParser) -> None:
        where = sp.add_mutually_exclusive_group()
        where.add_argument(
            "--from",
            dest="source",
            metavar="DIR",
            help="a record folder (closed files and uploaded/; default: RECORD_DIRECTORY_LOCATION)",
        )
        where.add_argument(
            "--bucket",
            action="store_true",
            help="read the bucket, with the S3 settings of the configuration",
        )
        with_config(sp)

    t = sub.add_parser("trips", help="the logbook: one line per trip")
    with_source(t)
    t.add_argument("--car", help="only this car")
    t.add_argument("--since", type=_date, metavar="DATE", help="trips from this day on")
    t.add_argument("--until", type=_date, metavar="DATE", help="trips up to this day")
    t.add_argument(
        "--tz",
        type=_zone,
        default=UTC,
        metavar="ZONE",
        help="time zone of times and days: UTC (default), local, or a name like Europe/Berlin",
    )
    t.add_argument("--format", choices=("table", "csv", "json"), default="table")
    t.set_defaults(func=cmd_trips)

    rp = sub.add_parser("report", help="one trip as a self-contained HTML page")
    rp.add_argument("trip", nargs="?", default="latest", help="trip id (default: latest)")
    with_source(rp)
    rp.add_argument("--car", help="the car (default: any in a folder, this car's in the bucket)")
    rp.add_argument("-o", "--output", required=True, metavar="FILE.html", help="where to write")
    rp.set_defaults(func=cmd_report)

    f = sub.add_parser("fleet", help="per car and day: rows, hours, km, fuel, trouble codes")
    f.add_argument("--bucket", action="store_true", help="read the bucket (the only source)")
    with_config(f)
    f.add_argument("--since", type=_date, metavar="DATE", help="days from this one on (UTC)")
    f.add_argument("--format", choices=("table", "csv"), default="table")
    f.set_defaults(func=cmd_fleet)

    sc = sub.add_parser("schema", help="table definitions of the bucket for a query engine")
    sc.add_argument("--engine", choices=("duckdb", "athena", "trino", "spark"), required=True)
    with_source(sc)
    sc.add_argument("--car", help="the columns of this car's files (default: every car's)")
    sc.add_argument(
        "--location",
        metavar="URL",
        help="s3://bucket/prefix/ (default: S3_SERVER_BUCKET and S3_KEY_PREFIX)",
    )
    sc.set_defaults(func=cmd_schema)

    k = sub.add_parser("keygen", help="make an age key pair for FILE_ENCRYPTION_RECIPIENTS")
    k.add_argument("-o", "--output", required=True, metavar="FILE", help="identity file to write")
    k.set_defaults(func=cmd_keygen)

    x = sub.add_parser("decrypt", help="decrypt .age files (local, or downloaded from the bucket)")
    with_config(x)
    x.add_argument(
        "-i", "--identity", default="key.txt", metavar="FILE", help="identity file (key.txt)"
    )
    x.add_argument("-o", "--out", metavar="DIR", help="write here (default: next to each file)")
    x.add_argument(
        "--bucket",
        metavar="PREFIX",
        help="download every .age object under this S3 key prefix first (S3 settings of --config)",
    )
    x.add_argument("files", nargs="*", metavar="FILE", help="x.tsv.gz.age ... (sidecars checked)")
    x.set_defaults(func=cmd_decrypt)

    d = sub.add_parser("demo", help="the whole pipeline on a simulated car (no hardware)")
    d.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    d.add_argument("--dir", default="demo-data", help="working directory (default: demo-data)")
    d.add_argument(
        "--mqtt",
        metavar="URL",
        help="also publish to this MQTT broker: mqtt[s]://[user:password@]host[:port] "
        "(or set ECCM_MQTT_BROKER and the other ECCM_MQTT_* variables)",
    )
    d.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt closed files: makes a key pair in the demo folder and says where",
    )
    d.set_defaults(func=cmd_demo)
    for command in sub.choices.values():
        # Which command's usage to show for an argument it does not know (see main).
        command.set_defaults(command_parser=command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # parse_known_args: argparse reports an unknown argument with the usage of `eccm`
    # alone ("eccm [-h] [--version] COMMAND ..."), not of the command it was given to.
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        code: int = args.func(args)
        return code
    except EccmError as exc:
        print(f"eccm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `eccm check-config | head`: the reader left; say nothing more, like other tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
