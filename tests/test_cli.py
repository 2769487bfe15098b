"""The `eccm` command as a user types it: one clear line and an exit code, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from eccm.cli import main
from tests.unprivileged import bound_by_permissions

ROOT = Path(__file__).resolve().parent.parent


def run_with_a_stand_in_daemon(cfg: Path) -> subprocess.CompletedProcess[str]:
    """`eccm run --config cfg` with a daemon that returns at once: what it logs before the
    daemon starts (no ECCM_* variables of this environment)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, eccm.app\n"
            "class Stub:\n"
            "    def __init__(self, cfg): pass\n"
            "    def run(self, stop): return 0\n"
            "eccm.app.Daemon = Stub\n"
            "from eccm.cli import main\n"
            "sys.exit(main(['run', '--config', sys.argv[1]]))\n",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ECCM_")},
    )


def eccm(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ECCM_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "eccm.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=full_env,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_check_config_prints_the_effective_configuration_with_secrets_masked(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        "[DEFAULT]\nCAR_IDENTIFIER=c1\nENABLE_SOCKET_SERVER=yes\nSOCKET_SERVER_SECRET=topsecret\n"
    )
    proc = eccm(
        "check-config",
        "--config",
        str(cfg),
        env={"ECCM_S3_SERVER_SK": "sk", "ECCM_S3_SERVER_AK": "ak"},
    )
    assert proc.returncode == 0
    assert "CAR_IDENTIFIER=c1" in proc.stdout
    assert "SOCKET_SERVER_SECRET=********" in proc.stdout
    assert "S3_SERVER_SK=********" in proc.stdout
    assert "topsecret" not in proc.stdout + proc.stderr
    assert "MONITORING_FILE_SEPARATION_CHARACTER=\\t" in proc.stdout
    # The MQTT ids as used, not their {CAR_IDENTIFIER} pattern (a trial's find).
    assert "MQTT_CLIENT_ID=eccm-c1\n" in proc.stdout
    assert "MQTT_TOPIC_PREFIX=eccm/c1\n" in proc.stdout


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.ini"
    cfg.write_text("[DEFAULT]\nCAR_IDENTIFIER=c1\nFILE_COMPRESSION=zip\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "eccm: error: FILE_COMPRESSION='zip' is not valid: expected gzip or none"
    )


def test_a_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    proc = eccm("run", cwd=tmp_path)
    assert proc.returncode == 1
    assert "config.ini" in proc.stderr and "config.ini.template" in proc.stderr


def test_eccm_config_variable_chooses_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "other.ini"
    cfg.write_text("CAR_IDENTIFIER=from-env-path\n")
    proc = eccm("check-config", cwd=tmp_path, env={"ECCM_CONFIG": str(cfg)})
    assert proc.returncode == 0 and "CAR_IDENTIFIER=from-env-path" in proc.stdout


def test_gen_secret_is_long_and_random() -> None:
    a, b = eccm("gen-secret").stdout.strip(), eccm("gen-secret").stdout.strip()
    assert len(a) >= 32 and a != b


def test_query_without_a_daemon_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    proc = eccm(
        "query",
        "--port",
        str(port),
        "PING",
        cwd=tmp_path,
        env={"ECCM_SOCKET_SERVER_SECRET": "x" * 32},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip()


def test_upload_with_s3_off_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "config.ini"
    cfg.write_text("CAR_IDENTIFIER=c1\n")
    proc = eccm("upload", "--config", str(cfg))
    assert proc.returncode == 2  # a configuration that cannot upload, not a failed upload
    assert "S3_SERVER_ENDPOINT" in proc.stderr


def test_the_template_is_a_valid_configuration() -> None:
    proc = eccm("check-config", "--config", str(ROOT / "config.ini.template"))
    assert proc.returncode == 0, proc.stderr


def test_a_bucket_without_an_endpoint_gets_a_note_at_check_config_and_a_log_line_at_run(
    tmp_path: Path,
) -> None:
    # Empty S3_SERVER_ENDPOINT means S3 off (SPEC §3): valid, but the bucket says it was meant.
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        f"CAR_IDENTIFIER=c1\nS3_SERVER_BUCKET=car-logs\nRECORD_DIRECTORY_LOCATION={tmp_path}\n"
    )
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "eccm: note: S3_SERVER_BUCKET=car-logs is set but S3_SERVER_ENDPOINT is empty, so "
        "uploads are off: set S3_SERVER_ENDPOINT (https://host[:port]) to upload"
    ]
    # `eccm run` logs the same before the daemon starts (a stand-in daemon here).
    run = run_with_a_stand_in_daemon(cfg)
    assert run.returncode == 0, run.stderr
    assert (
        "WARNING eccm: S3_SERVER_BUCKET=car-logs is set but S3_SERVER_ENDPOINT is empty, so uploads are off"
        in run.stderr
    )


def test_check_config_notes_a_record_folder_on_a_path_it_may_not_enter(tmp_path: Path) -> None:
    # A root-owned 0700 mount point (or a drive automounted under /media/<user>): Python's
    # Path.exists raised PermissionError there, a traceback from the diagnosing command.
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o000)
    cfg = tmp_path / "config.ini"
    cfg.write_text(f"CAR_IDENTIFIER=c1\nRECORD_DIRECTORY_LOCATION={closed}/records\n")
    try:
        proc = eccm("check-config", "--config", str(cfg), prefix=bound_by_permissions())
    finally:
        closed.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"eccm: note: RECORD_DIRECTORY_LOCATION={closed}/records cannot be reached now "
        f"(Permission denied: {closed}/records): give the user ECCM runs as the right to "
        "enter every folder on the way; ECCM writes no file until it can"
    ]


def test_check_config_notes_a_record_folder_that_cannot_be_created(tmp_path: Path) -> None:
    # A note, not an error: the folder may appear later (a USB stick mounted after boot).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = tmp_path / "config.ini"
    cfg.write_text(f"CAR_IDENTIFIER=c1\nRECORD_DIRECTORY_LOCATION={blocker}/records\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"eccm: note: RECORD_DIRECTORY_LOCATION={blocker}/records cannot be created now "
        f"(mkdir {blocker}/records: Not a directory): ECCM writes no file until it can; "
        "create it, or mount the drive it is on"
    ]
    assert not (tmp_path / "records").exists()
    if Path("/proc/self").exists():  # the user's trial: a folder under /proc
        proc = eccm(
            "check-config",
            "--config",
            str(cfg),
            env={"ECCM_RECORD_DIRECTORY_LOCATION": "/proc/foo"},
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            "RECORD_DIRECTORY_LOCATION=/proc/foo cannot be created now (mkdir /proc/foo:"
            in proc.stderr
        )
    # A folder that is missing but can be made gets no note, and is not left behind.
    cfg.write_text(f"CAR_IDENTIFIER=c1\nRECORD_DIRECTORY_LOCATION={tmp_path}/new/records\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0 and proc.stderr == ""
    assert not (tmp_path / "new").exists()


def test_query_with_the_socket_off_in_the_config_says_so_rather_than_no_secret(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.ini"
    cfg.write_text("CAR_IDENTIFIER=c1\nENABLE_SOCKET_SERVER=no\n")
    proc = eccm("query", "--config", str(cfg), "STATUS")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"eccm query: the control socket is off in {cfg} (ENABLE_SOCKET_SERVER=no): set "
        "ENABLE_SOCKET_SERVER=yes and SOCKET_SERVER_SECRET (make one with `eccm gen-secret`) "
        "there and restart eccm run"
    ]
    # A daemon elsewhere (--host) is not this config's: the secret is what is missing.
    proc = eccm("query", "--config", str(cfg), "--host", "127.0.0.1", "STATUS")
    assert proc.returncode == 2 and "no secret" in proc.stderr


def test_query_port_0_is_refused_not_replaced_by_the_default(tmp_path: Path) -> None:
    # `--port 0` was falsy, so the query went to SOCKET_SERVER_PORT (8765) instead.
    proc = eccm(
        "query", "--port", "0", "PING", cwd=tmp_path, env={"ECCM_SOCKET_SERVER_SECRET": "s"}
    )
    assert proc.returncode == 2
    assert proc.stderr == "eccm query: --port 0 is not a TCP port (1 to 65535)\n"


def test_login_link_host_is_checked_and_ipv6_is_bracketed_once(tmp_path: Path) -> None:
    # "[::1]" gave http://[[::1]]:8080/..., "pi.local:8080" and "bad host" links that open
    # nothing.
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        "[DEFAULT]\nCAR_IDENTIFIER=c1\nENABLE_WEB_SERVER=yes\nSOCKET_SERVER_SECRET=s3cret\n"
    )
    for host, start in [
        ("[::1]", "http://[::1]:8080/login/"),
        ("::1", "http://[::1]:8080/login/"),
        ("pi.local", "http://pi.local:8080/login/"),
        ("192.168.4.1", "http://192.168.4.1:8080/login/"),
    ]:
        proc = eccm("login-link", "--config", str(cfg), "--host", host)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(start), (host, proc.stdout)
    for host in ("pi.local:8080", "bad host", "[pi.local]", "http://pi.local", "pi..local"):
        proc = eccm("login-link", "--config", str(cfg), "--host", host)
        assert proc.returncode == 2, (host, proc.stdout)
        assert proc.stdout == ""
        assert proc.stderr.startswith(
            f"eccm login-link: --host {host!r} is not a host name or address"
        ), proc.stderr
        assert "WEB_SERVER_PORT=8080" in proc.stderr


def test_query_takes_an_ipv6_host_in_brackets(tmp_path: Path) -> None:
    # "[::1]" (as written in URLs) was "Name or service not known".
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        port = listener.getsockname()[1]
    # Nothing listens there now: refused, which shows the address was understood.
    proc = eccm(
        "query",
        "--host",
        "[::1]",
        "--port",
        str(port),
        "PING",
        cwd=tmp_path,
        env={"ECCM_SOCKET_SERVER_SECRET": "s"},
    )
    assert proc.returncode == 2
    assert "Connection refused" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("engine", "location", "expected"),
    [
        ("athena", "notaurl", "is not valid for athena, which reads S3 only"),
        ("athena", "file:///data/", "is not valid for athena, which reads S3 only"),
        ("trino", "data/logs", "is not valid for trino: expected a URL"),
        ("duckdb", "s3://", "names no bucket: expected s3://bucket/prefix/"),
        ("spark", " ", "is empty"),
    ],
)
def test_schema_refuses_a_location_the_engine_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str, location: str, expected: str
) -> None:
    # An Athena table over 'notaurl/' was written out, to be created and read nothing.
    args = ["schema", "--engine", engine, "--from", str(tmp_path), "--location", location]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"eccm schema: --location {location!r} {expected}")
    assert err.count("\n") == 1, err


def test_schema_refuses_a_record_folder_as_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Accepted, it gave views over car=*/date=*/ that found none of the folder's files.
    records = tmp_path / "records"
    records.mkdir()
    (records / "car_20260301T081500Z_0001.tsv.gz").write_bytes(b"")
    for location in (str(records), f"file://{records}"):
        args = ["schema", "--engine", "duckdb", "--from", str(tmp_path), "--location", location]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is a record folder, not laid out like the bucket" in err, err
    (records / "car=car").mkdir()  # laid out like the bucket: taken
    assert main(["schema", "--engine", "duckdb", "--location", str(records)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("engine", "location"),
    [("athena", "s3://fleet/logs/"), ("trino", "s3a://fleet/"), ("duckdb", "/srv/eccm/")],
)
def test_schema_takes_a_location_the_engine_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str, location: str
) -> None:
    args = ["schema", "--engine", engine, "--from", str(tmp_path), "--location", location]
    assert main(args) == 0
    assert location in capsys.readouterr().out


def test_schema_says_when_no_sidecar_gave_the_columns(tmp_path: Path) -> None:
    # An empty folder (or a --car with a typo) gave the default columns without a word.
    proc = eccm("schema", "--engine", "duckdb", "--from", str(tmp_path), "--car", "my-cra")
    assert proc.returncode == 0
    assert "CREATE OR REPLACE VIEW eccm_rows" in proc.stdout
    assert proc.stderr == (
        f"eccm schema: no closed data file of car my-cra with a sidecar in {tmp_path} "
        "(encrypted .age files are not read: `eccm decrypt` them first): these are the "
        "default columns only (TIME_UTC, CAR_ID, TRIP_ID and the default fast values); run "
        "it again once a file is closed\n"
        # No configuration named the bucket: the placeholder is said, not left to fail in
        # the query engine.
        "eccm schema: no config.ini was read: the definitions read the placeholder "
        "s3://BUCKET/car-logs/; replace BUCKET, or give --location s3://your-bucket/prefix/ "
        "(or --config with S3_SERVER_BUCKET set)\n"
    )
    located = ("--location", "s3://fleet/logs/")
    proc = eccm("schema", "--engine", "duckdb", "--from", str(tmp_path), *located)
    assert "s3://fleet/logs/car=*/" in proc.stdout and "BUCKET" not in proc.stderr


def test_query_without_any_configuration_says_which_file_it_looked_for(tmp_path: Path) -> None:
    # It said "set SOCKET_SERVER_SECRET in the config" when no config had been read at all.
    proc = eccm("query", "STATUS", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "eccm query: no secret: no configuration file config.ini (give --config PATH, e.g. "
        "the daemon's config.ini) and no ECCM_SOCKET_SERVER_SECRET environment variable\n"
    )


def test_a_missing_file_named_by_eccm_config_is_an_error_for_query_and_schema(
    tmp_path: Path,
) -> None:
    # Both went on without any configuration, as if none had been named.
    missing = str(tmp_path / "car.ini")
    env = {"ECCM_CONFIG": missing, "ECCM_SOCKET_SERVER_SECRET": "s"}
    for args in (("query", "STATUS"), ("schema", "--engine", "duckdb")):
        proc = eccm(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 1, args
        assert proc.stderr == (
            f"eccm: error: configuration file {missing!r} does not exist "
            "(copy config.ini.template)\n"
        ), args
        assert proc.stdout == ""


def test_report_commands_without_a_configuration_say_to_give_from_or_config(
    tmp_path: Path,
) -> None:
    # They said only "configuration file 'config.ini' does not exist (copy
    # config.ini.template)": at a desk there is none to copy, --from DIR is the way.
    for command in ("trips", "report"):
        extra = ("-o", "x.html") if command == "report" else ()
        proc = eccm(command, *extra, cwd=tmp_path)
        assert proc.returncode == 1
        assert proc.stderr == (
            "eccm: error: no --from DIR, and no configuration file config.ini to take "
            f"RECORD_DIRECTORY_LOCATION from: give eccm {command} --from DIR (a record "
            "folder), or --config PATH\n"
        )
    proc = eccm("trips", "--bucket", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "eccm: error: --bucket reads the S3 settings of a configuration file, and there is "
        "no config.ini: give eccm trips --bucket --config PATH\n"
    )


def test_check_config_loads_the_pem_files_as_the_daemon_does(tmp_path: Path) -> None:
    # check-config said "valid" for a certificate `eccm run` then refused to load.
    from tests.s3server import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    base = "[DEFAULT]\nCAR_IDENTIFIER=c1\nENABLE_SOCKET_SERVER=yes\nSOCKET_SERVER_SECRET=s\n"
    cfg = tmp_path / "config.ini"
    cfg.write_text(base + f"SOCKET_SERVER_TLS_CERT={cert}\nSOCKET_SERVER_TLS_KEY={key}\n")
    assert eccm("check-config", "--config", str(cfg)).returncode == 0
    cfg.write_text(base + f"SOCKET_SERVER_TLS_CERT={not_pem}\nSOCKET_SERVER_TLS_KEY={key}\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(
        f"eccm: error: SOCKET_SERVER_TLS_CERT='{not_pem}' / SOCKET_SERVER_TLS_KEY='{key}' "
        "cannot be loaded: "
    ), proc.stderr
    cfg.write_text(f"[DEFAULT]\nCAR_IDENTIFIER=c1\nS3_VERIFY_TLS={not_pem}\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"eccm: error: S3_VERIFY_TLS='{not_pem}' cannot be loaded: ")
    assert proc.stderr.rstrip().endswith("expected a PEM file of CA certificates")
    cfg.write_text(f"[DEFAULT]\nCAR_IDENTIFIER=c1\nS3_VERIFY_TLS={cert}\n")
    assert eccm("check-config", "--config", str(cfg)).returncode == 0


def test_check_config_notes_a_device_path_that_is_a_file_or_a_folder(tmp_path: Path) -> None:
    # A typo such as OBD_INTERFACE=/dev/serial (a folder) or a file passed as "valid" with no
    # note, and eccm run then failed to open it every 10 s.
    a_file = tmp_path / "obd.txt"
    a_file.write_text("x\n")
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        f"CAR_IDENTIFIER=c1\nOBD_INTERFACE={a_file}\nGPS_POSITION_MONITORING=yes\n"
        f"GPS_INTERFACE={tmp_path}\n"
    )
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        f"eccm: note: OBD_INTERFACE={a_file} is a file, not a serial device: ECCM cannot "
        "read it; name the device",
        f"eccm: note: GPS_INTERFACE={tmp_path} is a folder, not a serial device: ECCM "
        "cannot read it; name the device",
    ]
    cfg.write_text("CAR_IDENTIFIER=c1\nOBD_INTERFACE=/dev/null\n")  # a character device
    assert eccm("check-config", "--config", str(cfg)).stderr == ""


def test_an_unknown_argument_shows_the_usage_of_its_command(tmp_path: Path) -> None:
    # It showed `usage: eccm [-h] [--version] COMMAND ...` and "eccm: error:", which
    # does not say what the command takes.
    proc = eccm("run", "--confg", "x.ini", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "usage: eccm run [-h] [--config PATH]\n"
        "eccm run: error: unrecognized arguments: --confg x.ini\n"
    )


def test_debug_logging_does_not_show_pints_redefinition_warnings() -> None:
    # LOG_LEVEL=DEBUG started with three "WARNING pint.util: Redefining 'percent'" lines:
    # python-OBD's unit table, nothing the user can act on.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from eccm.cli import setup_logging; setup_logging('DEBUG'); import obd",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Redefining" not in proc.stderr, proc.stderr


def test_eccm_config_may_start_with_a_tilde(tmp_path: Path) -> None:
    # A systemd Environment= or a crontab line passes "~" on as it is: "does not exist".
    (tmp_path / "car.ini").write_text("CAR_IDENTIFIER=c1\n")
    proc = eccm("check-config", env={"HOME": str(tmp_path), "ECCM_CONFIG": "~/car.ini"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# {tmp_path / 'car.ini'}: valid\n")


def test_query_host_with_an_empty_label_is_one_line(tmp_path: Path) -> None:
    # "pi..local" was a UnicodeError traceback from the resolver's IDNA codec.
    proc = eccm(
        "query", "--host", "pi..local", "PING", cwd=tmp_path, env={"ECCM_SOCKET_SERVER_SECRET": "s"}
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "eccm query: --host 'pi..local' is not a host name or address: expected e.g. "
        "127.0.0.1, pi.local or ::1\n"
    )


def test_check_config_notes_summary_and_mqtt_names_no_command_key_logs(tmp_path: Path) -> None:
    # Valid names, but taken from the logged values: with OBD_SLOW_COMMANDS listing values,
    # a name in neither list stayed empty in every summary and MQTT message without a word.
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        "CAR_IDENTIFIER=c1\nOBD_FAST_COMMANDS=RPM,SPEED\nOBD_SLOW_COMMANDS=COOLANT_TEMP\n"
        "SUMMARY_COMMANDS=RPM,MAF\nMQTT_VALUES=SPEED,FUEL_LEVEL\n"
    )
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    # MQTT is off (no MQTT_BROKER): its names matter only once it is on.
    assert proc.stderr.splitlines() == [
        "eccm: note: SUMMARY_COMMANDS names MAF, which OBD_FAST_COMMANDS and "
        "OBD_SLOW_COMMANDS do not log: its minutes stay empty; add it to OBD_SLOW_COMMANDS "
        "(or set it to ALL)"
    ]
    cfg.write_text(cfg.read_text() + "MQTT_BROKER=mqtt://127.0.0.1:1883\n")
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert [line.split(", which")[0] for line in proc.stderr.splitlines()] == [
        "eccm: note: SUMMARY_COMMANDS names MAF",
        "eccm: note: MQTT_VALUES names FUEL_LEVEL",
    ]
    cfg.write_text(cfg.read_text().replace("OBD_SLOW_COMMANDS=COOLANT_TEMP", ""))  # ALL
    assert eccm("check-config", "--config", str(cfg)).stderr == ""


def test_a_configuration_with_secrets_that_others_may_read_gets_a_note_and_a_warning(
    tmp_path: Path,
) -> None:
    # `cp config.ini.template config.ini` under the usual umask 022 makes it 0644: every
    # user of the Pi (and any service account) read the S3 key and the socket's secret.
    cfg = tmp_path / "config.ini"
    cfg.write_text(
        "CAR_IDENTIFIER=c1\nSOCKET_SERVER_SECRET=topsecret\nS3_SERVER_SK=sk-in-the-file\nS3_SERVER_AK=ak\n"
        f"RECORD_DIRECTORY_LOCATION={tmp_path}\n"
    )
    cfg.chmod(0o644)
    proc = eccm("check-config", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    note = (
        f"eccm: note: {cfg} holds S3_SERVER_AK, S3_SERVER_SK, SOCKET_SERVER_SECRET and other users of "
        f"this machine may read it (mode 0644): chmod 600 {cfg}"
    )
    assert note in proc.stderr.splitlines(), proc.stderr
    assert "topsecret" not in proc.stderr and "sk-in-the-file" not in proc.stderr
    cfg.chmod(0o600)
    assert "chmod" not in eccm("check-config", "--config", str(cfg)).stderr
    # A file without secrets (they come from the environment) may be read by anyone.
    public = tmp_path / "public.ini"
    public.write_text(f"CAR_IDENTIFIER=c1\nRECORD_DIRECTORY_LOCATION={tmp_path}\n")
    public.chmod(0o644)
    proc = eccm(
        "check-config",
        "--config",
        str(public),
        env={"ECCM_S3_SERVER_SK": "x", "ECCM_S3_SERVER_AK": "y"},
    )
    assert "chmod" not in proc.stderr, proc.stderr
    # `eccm run` says it in its log before the daemon starts (a stand-in daemon here).
    cfg.chmod(0o604)
    run = run_with_a_stand_in_daemon(cfg)
    assert run.returncode == 0, run.stderr
    assert f"WARNING eccm: {cfg} holds S3_SERVER_AK, S3_SERVER_SK" in run.stderr, run.stderr
    assert "(mode 0604)" in run.stderr


_JOURNAL_PROBE = """
import logging, os, sys
st = os.fstat(2)
if sys.argv[1] == "journal":
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
elif sys.argv[1] == "elsewhere":  # inherited from a unit, stderr redirected since
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
from eccm.cli import setup_logging
setup_logging("INFO")
logging.getLogger("eccm.x").error("boom")
logging.getLogger("eccm.x").warning("hm")
logging.getLogger("eccm.x").info("fine")
"""


@pytest.mark.parametrize("where", ["journal", "elsewhere", "terminal"])
def test_under_systemd_each_line_carries_its_priority_for_the_journal(where: str) -> None:
    # Found: every line went to the journal at the unit's priority (info), so
    # `journalctl -u eccm -p err` showed nothing, and each line had two time stamps.
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    done = subprocess.run(
        [sys.executable, "-c", _JOURNAL_PROBE, where],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    lines = done.stderr.splitlines()
    if where == "journal":
        assert lines == ["<3>ERROR eccm.x: boom", "<4>WARNING eccm.x: hm", "<6>INFO eccm.x: fine"]
    else:
        assert [ln.split(" ", 2)[2] for ln in lines] == [
            "ERROR eccm.x: boom",
            "WARNING eccm.x: hm",
            "INFO eccm.x: fine",
        ]
        assert not any(ln.startswith("<") for ln in lines)
