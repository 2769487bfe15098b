from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from eccm.config import KEYS, load, parse, read_raw
from eccm.errors import ConfigError
from eccm.obd.settings import ObdSettings
from tests.unprivileged import bound_by_permissions

ROOT = Path(__file__).resolve().parent.parent
BASE = {"CAR_IDENTIFIER": "car-1"}


def cfg_of(**values: str):  # type: ignore[no-untyped-def]
    return parse({**BASE, **values})


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.ini"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_the_spec_defaults() -> None:
    c = cfg_of()
    assert c.file_recording is True
    assert c.gps_position_monitoring is False
    assert c.monitoring_file_extension == ".tsv"
    assert c.separator == "\t"
    assert c.record_directory_location == "."
    assert c.s3_enabled is False
    assert c.s3_server_region == "us-east-1"
    assert c.socket_server_port == 8765
    assert c.gps_interface == "/dev/gnss"
    assert c.gps_baudrate == 9600
    assert c.gps_max_fix_age == 2.0
    assert c.obd_fast_commands == (
        "RPM",
        "SPEED",
        "THROTTLE_POS",
        "ENGINE_LOAD",
        "MAF",
        "INTAKE_PRESSURE",
    )
    assert c.obd_slow_commands == ("ALL",)
    assert c.sample_interval == 0.2
    assert c.file_rotation_seconds == 300
    assert c.file_rotation_max_bytes == 16777216
    assert c.file_compression == "gzip"
    assert c.s3_key_prefix == "car-logs"
    assert c.s3_delete_after_upload is True
    assert c.s3_verify_tls is True
    assert c.local_retention_days == 15
    assert c.max_local_storage_mb == 1024
    assert c.socket_server_bind == "127.0.0.1"
    assert c.socket_server_allow_dtc_clear is True
    assert c.socket_server_max_clients == 8
    assert c.log_level == "INFO"


@pytest.mark.parametrize(
    ("ext", "sep"), [(".csv", ","), (".tsv", "\t"), (".txt", "|"), ("log", "|"), (".CSV", ",")]
)
def test_separator_follows_the_extension(ext: str, sep: str) -> None:
    assert cfg_of(MONITORING_FILE_EXTENSION=ext).separator == sep


def test_explicit_separator_and_backslash_t() -> None:
    assert cfg_of(MONITORING_FILE_SEPARATION_CHARACTER=";").separator == ";"
    assert cfg_of(MONITORING_FILE_SEPARATION_CHARACTER="\\t").separator == "\t"


def test_an_original_eccm_config_still_loads(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "[DEFAULT]\n"
        "CAR_IDENTIFIER=AB-123-CD\n"
        "FILE_RECORDING=yes\n"
        "GPS_POSITION_MONITORING=yes\n"
        "OBD_INTERFACE=/dev/ttyUSB0\n"
        "MONITORING_FILE_EXTENSION=.csv\n"
        "MONITORING_FILE_SEPARATION_CHARACTER=,\n"
        "RECORD_DIRECTORY_LOCATION=/home/pi/records\n"
        "S3_SERVER_ENDPOINT=s3.example.com\n"
        "S3_SERVER_AK=AKIA\n"
        "S3_SERVER_SK=secret%with%percent\n"
        "S3_SERVER_BUCKET=logs\n"
        "S3_SERVER_REGION=eu-west-3\n"
        "ENABLE_SOCKET_SERVER=yes\n"
        "SOCKET_SERVER_PORT=9000\n"
        "SOCKET_SERVER_SECRET=hunter2\n",
    )
    c = load(p, environ={})
    assert c.car_identifier == "AB-123-CD"
    assert c.s3_server_endpoint == "https://s3.example.com"  # a bare host means https
    assert c.s3_server_sk == "secret%with%percent"  # no interpolation
    assert c.socket_server_port == 9000
    assert c.separator == ","


def test_a_file_without_section_header_is_read(tmp_path: Path) -> None:
    p = write(tmp_path, "CAR_IDENTIFIER=x\nLOG_LEVEL=debug\n")
    c = load(p, environ={})
    assert c.log_level == "DEBUG"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[DEFAULT]\nCAR_IDENTIFIER=file-car\nSOCKET_SERVER_PORT=9000\n")
    c = load(p, environ={"ECCM_CAR_IDENTIFIER": "env-car", "ECCM_SOCKET_SERVER_PORT": "9100"})
    assert c.car_identifier == "env-car"
    assert c.socket_server_port == 9100


def test_environment_alone_is_enough() -> None:
    c = load(None, environ={"ECCM_CAR_IDENTIFIER": "env-car", "ECCM_CONFIG": "x.ini"})
    assert c.car_identifier == "env-car"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("FILE_RECORDING", "maybe", "yes/no"),
        ("SOCKET_SERVER_PORT", "70000", "at most 65535"),
        ("SOCKET_SERVER_PORT", "eighty", "whole number"),
        ("SAMPLE_INTERVAL", "-1", "at least 0"),
        ("SAMPLE_INTERVAL", "nan", "number"),
        # float() and int() take these as 5.0 and 8080: a typo became another value.
        ("SAMPLE_INTERVAL", "0_5", "number"),
        ("SOCKET_SERVER_PORT", "80_80", "whole number"),
        ("SOCKET_SERVER_PORT", "８０８０", "whole number"),  # full-width digits
        ("OBD_BAUDRATE", "٣٨٤٠٠", "serial speed"),  # Arabic-Indic digits
        ("GPS_MAX_FIX_AGE", "inf", "number"),
        ("FILE_COMPRESSION", "zstd", "gzip or none"),
        ("LOG_LEVEL", "LOUD", "DEBUG"),
        ("MONITORING_FILE_SEPARATION_CHARACTER", "ab", "one character"),
        ("MONITORING_FILE_EXTENSION", ".part", "extension"),
        ("S3_SERVER_ENDPOINT", "ftp://host", "https://"),
        ("S3_SERVER_ENDPOINT", "https://host:99999", "port"),
        ("S3_VERIFY_TLS", "/no/such/ca.pem", "CA bundle"),
        ("SOCKET_SERVER_BIND", "my-laptop", "IP address"),
        ("OBD_FAST_COMMANDS", "RPM,RPMM", "RPMM"),
        ("OBD_SLOW_COMMANDS", "ALL,RPM", "ALL alone"),
        ("OBD_PROTOCOL", "Z", "1-9 or A-C"),
        ("OBD_PROTOCOL", "auto", "or empty"),
        ("OBD_PROTOCOL", "0", "1-9 or A-C"),
        ("OBD_BAUDRATE", "fast", "serial speed"),
        ("OBD_BAUDRATE", "auto", "empty for auto"),
        ("OBD_BAUDRATE", "0", "serial speed"),
        ("OBD_BAUDRATE", "9" * 5000, "serial speed"),  # was int()'s own ValueError
        ("GPS_INTERFACE", "gpsd://", "gpsd://host:port"),
        ("CAR_IDENTIFIER", "my car", "A-Z"),
        ("CAR_IDENTIFIER", "x" * 65, "64"),
        ("S3_KEY_PREFIX", "bad prefix!", "S3 key prefix"),
        # botocore refuses these at the first upload only, without naming the key.
        ("S3_SERVER_REGION", "eu west 3", "region name"),
        ("S3_SERVER_REGION", "\"eu-west-3'", "region name"),
        ("S3_SERVER_REGION", "eu-west-3-", "region name"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_expected(
    key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    msg = str(err.value)
    assert key in msg
    assert repr(value.strip())[:30].strip("'") in msg
    assert expected in msg


def test_missing_car_identifier_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match="CAR_IDENTIFIER is required"):
        parse({})


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, "[DEFAULT]\nCAR_IDENTIFIER=x\nSAMPLE_INTERVALL=0.5\n")
    with pytest.raises(
        ConfigError, match=r"SAMPLE_INTERVALL in .* line 3 \(did you mean SAMPLE_INTERVAL"
    ):
        load(p, environ={})


def test_unknown_key_names_its_line_in_a_file_without_header(tmp_path: Path) -> None:
    p = write(tmp_path, "# my car\nCAR_IDENTIFIER=x\n\n  sample_intervall = 0.5 ; fast\n")
    with pytest.raises(ConfigError, match=r"SAMPLE_INTERVALL in .* line 4 "):
        load(p, environ={})


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ECCM_S3_SERVER_BUKET"):
        read_raw(None, {"ECCM_S3_SERVER_BUKET": "b"})


def test_other_sections_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "[DEFAULT]\nCAR_IDENTIFIER=x\n[extra]\nA=1\n")
    with pytest.raises(ConfigError, match="only a \\[DEFAULT\\] section"):
        load(p, environ={})


def test_missing_file_and_garbage_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.ini", environ={})
    p = tmp_path / "bin.ini"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        load(p, environ={})
    p.write_text("[DEFAULT]\nthis is not a key value line\n")
    with pytest.raises(ConfigError):
        load(p, environ={})


def test_conditional_requirements() -> None:
    with pytest.raises(ConfigError, match="S3_SERVER_BUCKET is required"):
        cfg_of(S3_SERVER_ENDPOINT="http://127.0.0.1:8333")
    with pytest.raises(ConfigError, match="S3_SERVER_SK"):
        cfg_of(S3_SERVER_ENDPOINT="http://h", S3_SERVER_BUCKET="b", S3_SERVER_AK="ak")
    with pytest.raises(ConfigError, match=r"SOCKET_SERVER_SECRET is required.*eccm gen-secret"):
        cfg_of(ENABLE_SOCKET_SERVER="yes")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        cfg_of(
            ENABLE_SOCKET_SERVER="yes", SOCKET_SERVER_SECRET="short", SOCKET_SERVER_BIND="0.0.0.0"
        )
    ok = cfg_of(
        ENABLE_SOCKET_SERVER="yes", SOCKET_SERVER_SECRET="s" * 32, SOCKET_SERVER_BIND="0.0.0.0"
    )
    assert ok.socket_server_bind == "0.0.0.0"
    assert cfg_of(ENABLE_SOCKET_SERVER="yes", SOCKET_SERVER_SECRET="short").enable_socket_server


def test_read_secret_follows_the_length_rule_and_differs() -> None:
    full, reader = "s" * 32, "r" * 32
    assert cfg_of().socket_server_read_secret == ""
    on = {"ENABLE_SOCKET_SERVER": "yes", "SOCKET_SERVER_SECRET": full}
    assert cfg_of(**on, SOCKET_SERVER_READ_SECRET="short").socket_server_read_secret == "short"
    net = {**on, "SOCKET_SERVER_BIND": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"SOCKET_SERVER_READ_SECRET is too short.*at least 32"):
        cfg_of(**net, SOCKET_SERVER_READ_SECRET="short")
    assert cfg_of(**net, SOCKET_SERVER_READ_SECRET=reader).socket_server_read_secret == reader
    assert cfg_of(**net).socket_server_read_secret == ""  # empty: no second secret
    for values in (on, net, {"SOCKET_SERVER_SECRET": full}):
        with pytest.raises(ConfigError, match="must differ") as err:
            cfg_of(**values, SOCKET_SERVER_READ_SECRET=full)
        assert full not in str(err.value)  # a secret is never echoed
    env = read_raw(None, {"ECCM_SOCKET_SERVER_READ_SECRET": reader})
    assert env["SOCKET_SERVER_READ_SECRET"] == reader


def test_obd_speed_and_protocol_are_typed_once_here() -> None:
    """The OBD link takes these as they are: no parsing of its own."""
    c = cfg_of(OBD_BAUDRATE=" 38400 ", OBD_PROTOCOL="a")
    assert c.obd_baudrate == 38400 and c.obd_protocol == "A"
    auto = cfg_of()
    assert auto.obd_baudrate is None and auto.obd_protocol is None
    assert auto.effective()["OBD_BAUDRATE"] == "" and auto.effective()["OBD_PROTOCOL"] == ""
    assert parse(c.effective()).obd_baudrate == 38400  # check-config's text reads back


def test_the_obd_settings_carry_only_the_keys_the_link_uses() -> None:
    c = cfg_of(
        OBD_INTERFACE="/dev/obd",
        OBD_BAUDRATE="115200",
        OBD_PROTOCOL="6",
        OBD_SLOW_INTERVAL="2",
        OBD_DTC_INTERVAL="30",
        GPS_POSITION_MONITORING="yes",
    )
    s = ObdSettings.from_config(c)
    assert (s.interface, s.baudrate, s.protocol, s.python_obd_protocol) == (
        "/dev/obd",
        115200,
        "6",
        "6",
    )
    assert (s.slow_interval, s.dtc_interval, s.gps_columns) == (2.0, 30.0, True)
    assert s.fast_commands == c.obd_fast_commands and s.slow_commands == ("ALL",)
    assert (s.sample_interval, s.trip_end_timeout) == (c.sample_interval, c.trip_end_timeout)
    assert s.reconnect_max_interval == c.obd_reconnect_max_interval
    # User-defined CAN (B, C): valid for the adapter, but python-OBD cannot decode it.
    assert ObdSettings.from_config(cfg_of(OBD_PROTOCOL="b")).python_obd_protocol is None
    assert ObdSettings.from_config(cfg_of()).interface_shown == "(auto-detect)"


def test_effective_configuration_masks_the_read_secret() -> None:
    c = cfg_of(SOCKET_SERVER_SECRET="s" * 32, SOCKET_SERVER_READ_SECRET="r" * 32)
    eff = c.effective()
    assert eff["SOCKET_SERVER_READ_SECRET"] == "********"
    assert eff["SOCKET_SERVER_SECRET"] == "********"
    assert "r" * 32 not in repr(eff)
    assert parse(c.effective(mask_secrets=False)).socket_server_read_secret == "r" * 32
    assert cfg_of().effective()["SOCKET_SERVER_READ_SECRET"] == ""


def test_effective_configuration_masks_secrets() -> None:
    c = cfg_of(
        S3_SERVER_ENDPOINT="http://h", S3_SERVER_BUCKET="b", S3_SERVER_AK="AK", S3_SERVER_SK="SK"
    )
    eff = c.effective()
    assert list(eff) == list(KEYS)
    assert eff["S3_SERVER_SK"] == "********"
    assert eff["S3_SERVER_AK"] == "********"
    assert eff["SOCKET_SERVER_SECRET"] == ""
    assert eff["MONITORING_FILE_SEPARATION_CHARACTER"] == "\\t"
    # what check-config prints loads back to the same configuration
    again = parse({k: v for k, v in c.effective(mask_secrets=False).items()})
    assert again.effective(mask_secrets=False) == c.effective(mask_secrets=False)


def test_template_documents_every_key_in_order_and_loads() -> None:
    text = (ROOT / "config.ini.template").read_text()
    keys = re.findall(r"^([A-Z0-9_]+)=", text, flags=re.M)
    assert keys == list(KEYS)
    for key in KEYS:
        assert re.search(rf"^# .*{key}", text, flags=re.M), f"{key} has no comment line"
    originals = [k for k, s in KEYS.items() if s.original]
    assert keys[: len(originals)] == originals
    load(ROOT / "config.ini.template", environ={})


def test_trip_computer_keys() -> None:
    c = cfg_of()
    assert c.fuel_type == "gasoline"
    assert c.fuel_price is None
    assert c.engine_displacement_l is None
    assert c.volumetric_efficiency == 0.85
    assert c.summary_commands == (
        "RPM",
        "SPEED",
        "ENGINE_LOAD",
        "THROTTLE_POS",
        "COOLANT_TEMP",
        "MAF",
    )
    assert c.obd_dtc_interval == 60
    c = cfg_of(
        FUEL_TYPE="Petrol",
        FUEL_PRICE="1.859",
        ENGINE_DISPLACEMENT_L="1.6",
        VOLUMETRIC_EFFICIENCY="1.2",
        SUMMARY_COMMANDS="rpm, speed",
        OBD_DTC_INTERVAL="30",
    )
    assert (c.fuel_type, c.fuel_price, c.engine_displacement_l) == ("gasoline", 1.859, 1.6)
    assert (c.volumetric_efficiency, c.summary_commands, c.obd_dtc_interval) == (
        1.2,
        ("RPM", "SPEED"),
        30,
    )
    assert cfg_of(FUEL_TYPE="diesel").fuel_type == "diesel"
    eff = c.effective(mask_secrets=False)
    assert eff["FUEL_PRICE"] == "1.859" and cfg_of().effective()["FUEL_PRICE"] == ""
    assert parse(eff).effective(mask_secrets=False) == eff


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("FUEL_TYPE", "lpg", "gasoline (or petrol) or diesel"),
        ("FUEL_PRICE", "-1", "at least 0"),
        ("FUEL_PRICE", "1,80", "a number"),
        ("ENGINE_DISPLACEMENT_L", "1600", "at most 30"),
        ("ENGINE_DISPLACEMENT_L", "0", "at least 0.05"),
        ("VOLUMETRIC_EFFICIENCY", "85", "at most 2"),
        ("SUMMARY_COMMANDS", "RPM,SPEEDO", "SPEEDO"),
        ("OBD_DTC_INTERVAL", "1", "at least 5"),
    ],
)
def test_trip_computer_keys_name_the_key_the_value_and_what_is_expected(
    key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    msg = str(err.value)
    assert key in msg and repr(value) in msg and expected in msg


# -- config.ini as people write it (Windows editors, habits from other formats) ---------


@pytest.mark.parametrize(
    "raw",
    [
        b"CAR_IDENTIFIER=my-car\r\nSAMPLE_INTERVAL=0.5\r\n",  # Windows line endings
        # Old Mac line endings (CR alone): with a header, every key was silently ignored.
        b"[DEFAULT]\rCAR_IDENTIFIER=my-car\rSAMPLE_INTERVAL=0.5\r",
        b"CAR_IDENTIFIER=my-car\rSAMPLE_INTERVAL=0.5\r",
        b"\xef\xbb\xbf[DEFAULT]\nCAR_IDENTIFIER=my-car\nSAMPLE_INTERVAL=0.5\n",  # BOM
        b"\xef\xbb\xbfCAR_IDENTIFIER=my-car\r\nSAMPLE_INTERVAL=0.5\r\n",  # BOM, no header
        b"CAR_IDENTIFIER = my-car\nSAMPLE_INTERVAL   =   0.5\n",  # spaces around =
        b"car_identifier=my-car\nsample_interval=0.5\n",  # lower case keys
        b"[default]\nCAR_IDENTIFIER=my-car\nSAMPLE_INTERVAL=0.5\n",  # lower case header
        b"CAR_IDENTIFIER=my-car\n   SAMPLE_INTERVAL=0.5\n",  # an indented key
        b"CAR_IDENTIFIER=\"my-car\"\nSAMPLE_INTERVAL='0.5'\n",  # quoted values
        b"CAR_IDENTIFIER=my-car ; plate\nSAMPLE_INTERVAL=0.5 # fast\n",  # inline comments
        b'CAR_IDENTIFIER="my-car" ; plate\nSAMPLE_INTERVAL=0.5\t; fast\n',
    ],
)
def test_config_files_as_people_write_them(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "config.ini"
    p.write_bytes(raw)
    c = load(p, environ={})
    assert c.car_identifier == "my-car"
    assert c.sample_interval == 0.5


@pytest.mark.parametrize(
    ("written", "separator"),
    [(";", ";"), (" ; ", ";"), ("#", "#"), ("\\t", "\t"), ('"\t"', "\t"), ('";"', ";")],
)
def test_separators_survive_comment_and_quote_handling(
    tmp_path: Path, written: str, separator: str
) -> None:
    p = write(tmp_path, f"CAR_IDENTIFIER=x\nMONITORING_FILE_SEPARATION_CHARACTER={written}\n")
    assert load(p, environ={}).separator == separator


@pytest.mark.parametrize("written", ['" "', ".", "-", ":", "+", "'"])
def test_separators_that_would_break_the_file_are_refused(tmp_path: Path, written: str) -> None:
    p = write(tmp_path, f"CAR_IDENTIFIER=x\nMONITORING_FILE_SEPARATION_CHARACTER={written}\n")
    with pytest.raises(ConfigError, match=r"MONITORING_FILE_SEPARATION_CHARACTER=.*one character"):
        load(p, environ={})


def test_a_quoted_path_with_spaces_and_a_comment(tmp_path: Path) -> None:
    p = write(
        tmp_path, 'CAR_IDENTIFIER=x\nRECORD_DIRECTORY_LOCATION="/data/my records" # usb stick\n'
    )
    assert load(p, environ={}).record_directory_location == "/data/my records"


@pytest.mark.parametrize("quoted", ["“my-car”", "”my-car”", "‘my-car’", "„my-car“", "«my-car»"])
def test_typographic_quotes_around_a_value_are_removed_like_plain_ones(
    tmp_path: Path, quoted: str
) -> None:
    # A value copied from a web page or a word processor: the quotes became part of the
    # id (and of a secret, without a word, which then matched no client's).
    p = write(tmp_path, f"CAR_IDENTIFIER={quoted} ; the van\n")
    assert load(p, environ={}).car_identifier == "my-car"


def test_record_directory_home_is_expanded_and_a_file_is_refused(tmp_path: Path) -> None:
    home = load(None, environ={"ECCM_CAR_IDENTIFIER": "x", "ECCM_RECORD_DIRECTORY_LOCATION": "~/r"})
    assert home.record_directory_location == str(Path.home() / "r")
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=r"RECORD_DIRECTORY_LOCATION=.*a directory"):
        cfg_of(RECORD_DIRECTORY_LOCATION=str(a_file))
    # Missing is fine: the recorder creates it (a USB stick may be mounted later).
    assert cfg_of(RECORD_DIRECTORY_LOCATION=str(tmp_path / "new")).record_dir == tmp_path / "new"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Both lines named: it said "(also on an earlier line)", which one left to a search.
        (
            "CAR_IDENTIFIER=a\nCAR_IDENTIFIER=b\n",
            r"line 2: CAR_IDENTIFIER is set twice \(also on line 1\)",
        ),
        (
            "[DEFAULT]\nCAR_IDENTIFIER=a\ncar_identifier=b\n",
            r"line 3: CAR_IDENTIFIER is set twice \(also on line 2\)",
        ),
        (
            "[DEFAULT]\rCAR_IDENTIFIER=a\rCAR_IDENTIFIER=b\r",
            r"line 3: CAR_IDENTIFIER is set twice \(also on line 2\)",
        ),
        (
            "# CAR_IDENTIFIER=x\nCAR_IDENTIFIER = a\nLOG_LEVEL=INFO\n  \nCAR_IDENTIFIER=b\n",
            r"line 5: CAR_IDENTIFIER is set twice \(also on line 2\)",
        ),
        ("CAR_IDENTIFIER=a\nFILE_RECORDING\n", r"line 2: 'FILE_RECORDING' is not a KEY=value line"),
        # A header that lost its bracket: was an AttributeError traceback on the first line.
        (
            "[DEFAULT\nCAR_IDENTIFIER=a\n",
            r"line 1: '\[DEFAULT' is not a section header: expected \[DEFAULT\]",
        ),
        ("# mine\n[DEFAULT\nCAR_IDENTIFIER=a\n", r"line 2: '\[DEFAULT' is not a section header"),
    ],
)
def test_file_mistakes_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load(p, environ={})


def test_unreadable_directory_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path, environ={})
    p = tmp_path / "latin1.ini"
    p.write_bytes("CAR_IDENTIFIER=x\n# voiture d'été\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"line 2 is not UTF-8 text \(byte 0xe9\)"):
        load(p, environ={})


@pytest.mark.parametrize(
    ("closed", "message"),
    [("file", "permission denied; make it readable"), ("folder", "enter every folder")],
)
def test_an_unreadable_file_says_permission_denied(
    tmp_path: Path, closed: str, message: str
) -> None:
    # In a subprocess bound by file permissions: as root (CI) the file would be read.
    folder = tmp_path / "etc"
    folder.mkdir()
    p = write(folder, "CAR_IDENTIFIER=x\n")
    (p if closed == "file" else folder).chmod(0)
    code = "import sys; from eccm.config import load; load(sys.argv[1], environ={})"
    try:
        proc = subprocess.run(
            [*bound_by_permissions(), sys.executable, "-c", code, str(p)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        folder.chmod(0o755)
    assert "ConfigError" in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("bucket", ["s3://logs", "logs/cars", "my bucket", "logs!"])
def test_a_bucket_name_botocore_would_refuse_is_a_config_error(bucket: str) -> None:
    with pytest.raises(ConfigError, match=r"S3_SERVER_BUCKET=.*bucket name"):
        cfg_of(S3_SERVER_ENDPOINT="http://127.0.0.1:8333", S3_SERVER_BUCKET=bucket)


@pytest.mark.parametrize("bucket", ["car-logs", "Fleet_Logs", "logs.example.com"])
def test_bucket_names_other_servers_accept_are_kept(bucket: str) -> None:
    cfg = cfg_of(S3_SERVER_ENDPOINT="http://127.0.0.1:8333", S3_SERVER_BUCKET=bucket)
    assert cfg.s3_server_bucket == bucket


def test_an_empty_value_with_a_comment_is_empty(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "[DEFAULT]\r\nCAR_IDENTIFIER=c1\r\nOBD_INTERFACE=   # auto-detect\r\n"
        "FUEL_PRICE= ; set later\r\nMONITORING_FILE_SEPARATION_CHARACTER=;\r\n",
    )
    cfg = load(p)
    assert cfg.obd_interface == ""
    assert cfg.separator == ";"
    assert cfg.fuel_price == load(write(tmp_path, "CAR_IDENTIFIER=c1\n")).fuel_price


@pytest.mark.parametrize("value", [".", "..", "-rf", ".hidden", "_x", "-", "..car"])
def test_car_identifiers_that_pass_the_characters_but_cannot_work_are_refused(
    value: str,
) -> None:
    # A leading '.' hides the files, '..' becomes the S3 key segment "car=.." and a
    # leading '-' reads as an option to every shell tool a user points at the files.
    with pytest.raises(ConfigError) as err:
        cfg_of(CAR_IDENTIFIER=value)
    msg = str(err.value)
    assert "CAR_IDENTIFIER" in msg
    assert repr(value) in msg
    assert "start with a letter or a digit" in msg


@pytest.mark.parametrize("value", ["AB-123-CD", "car.1", "7_van", "x", "a..b", "Z" * 64])
def test_ordinary_car_identifiers_still_load(value: str) -> None:
    assert cfg_of(CAR_IDENTIFIER=value).car_identifier == value


@pytest.mark.parametrize(
    "value", ["../x", "..", "./a", "a/../../b", "a/./b", ".", "a//b", "x/..", "/../"]
)
def test_s3_key_prefixes_with_dot_segments_are_refused(value: str) -> None:
    # S3 servers refuse keys with '.' or '..' segments (HTTP 400 at every upload, forever)
    # and an empty segment makes a key no listing by prefix finds as the user meant it.
    with pytest.raises(ConfigError) as err:
        cfg_of(S3_KEY_PREFIX=value)
    msg = str(err.value)
    assert "S3_KEY_PREFIX" in msg
    assert repr(value) in msg
    assert "segment" in msg


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("car-logs", "car-logs"),
        ("fleet/2026", "fleet/2026"),
        ("/a/b/", "a/b"),
        ("", ""),
        ("x.y/v=1", "x.y/v=1"),
        ("a..b", "a..b"),
    ],
)
def test_ordinary_s3_key_prefixes_still_load(value: str, kept: str) -> None:
    assert cfg_of(S3_KEY_PREFIX=value).s3_key_prefix == kept


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("ECCM_SAMPLE_INTERVALL", "SAMPLE_INTERVAL"),  # a typo: ignored before
        ("ECCM_sample_interval", "capitals"),  # lower case: ignored before
        ("ECCM_Car_Identifier", "capitals"),
        ("ECCM_S3_SERVER_BUKET", "S3_SERVER_BUCKET"),
    ],
)
def test_environment_overrides_with_a_typo_or_in_lower_case_are_errors(
    name: str, hint: str
) -> None:
    # The same typo in config.ini is an error: in the environment it must not be ignored,
    # or the user believes a setting is in force that is not.
    with pytest.raises(ConfigError) as err:
        read_raw(None, {name: "0.5"})
    assert name in str(err.value) and hint in str(err.value)


def test_eccm_variables_that_are_not_keys_are_left_alone() -> None:
    env = {"ECCM_CONFIG": "x.ini", "ECCM_INVOKED_FROM": "start.sh", "ECCM_TEST_GATE": "/g"}
    assert read_raw(None, env) == {}


def test_a_bad_value_from_the_environment_names_its_variable(tmp_path: Path) -> None:
    # config.ini holds no SAMPLE_INTERVAL: the message must say where 'abc' was read.
    p = write(tmp_path, "[DEFAULT]\nCAR_IDENTIFIER=x\n")
    with pytest.raises(ConfigError) as err:
        load(p, environ={"ECCM_SAMPLE_INTERVAL": "abc"})
    msg = str(err.value)
    assert msg.startswith("SAMPLE_INTERVAL='abc' is not valid: expected a number")
    assert "environment variable ECCM_SAMPLE_INTERVAL" in msg
    assert "\n" not in msg
    # The same value in the file names no variable.
    p = write(tmp_path, "[DEFAULT]\nCAR_IDENTIFIER=x\nSAMPLE_INTERVAL=abc\n")
    with pytest.raises(ConfigError) as err:
        load(p, environ={})
    assert "environment" not in str(err.value)


@pytest.mark.parametrize("endpoint", ["s3.example.com", "https://s3.example.com/"])
def test_an_endpoint_without_a_bucket_is_quoted_as_typed(endpoint: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(S3_SERVER_ENDPOINT=endpoint)
    assert f"S3_SERVER_ENDPOINT={endpoint!r}" in str(err.value)


def test_an_unknown_obd_command_gets_close_names_and_a_command_that_lists_them() -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(OBD_FAST_COMMANDS="RPM,COOLANT_TMP,XYZZY")
    msg = str(err.value)
    assert msg.startswith("OBD_FAST_COMMANDS='RPM,COOLANT_TMP,XYZZY' is not valid")
    assert "COOLANT_TMP (did you mean COOLANT_TEMP" in msg
    assert "DTC_COOLANT_TEMP" not in msg  # the freeze-frame twin only when asked for
    assert "XYZZY" in msg
    # The README's command, which works: python-OBD is in the venv only, and names not reprs.
    assert '.venv/bin/python -c "import obd; print([c.name for c in obd.commands[1] if c])"' in msg
    assert "modes[1]" not in msg
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (
        '.venv/bin/python -c "import obd; print([c.name for c in obd.commands[1] if c])"' in readme
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("S3_SERVER_ENDPOINT", "https://[::1"),
        ("MQTT_BROKER", "mqtt://[::1"),
        ("GPS_INTERFACE", "gpsd://[::1"),
        ("WEB_MAP_TILES", "https://[::1/{z}/{x}/{y}.png"),
    ],
)
def test_an_unclosed_ipv6_bracket_is_a_config_error_naming_the_key(key: str, value: str) -> None:
    # urlsplit raises ValueError ("Invalid IPv6 URL") for these: it was a traceback.
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    assert f"{key}={value!r} is not valid" in str(err.value)


def test_an_unclosed_ipv6_bracket_with_a_password_does_not_echo_it() -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(MQTT_BROKER="mqtt://user:hunter2@[::1")
    assert "MQTT_BROKER" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "garage", "fr-par", ""])
def test_region_names_servers_use_are_accepted(region: str) -> None:
    assert cfg_of(S3_SERVER_REGION=region).s3_server_region == region


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("GPS_BAUDRATE", "5000000", "at least 300 and at most 4000000"),
        ("MAX_LOCAL_STORAGE_MB", "0", "at least 1 and at most 1073741824"),
        ("FILE_ROTATION_MAX_BYTES", "10", "at least 1024 and at most 1099511627776"),
        ("OBD_SLOW_INTERVAL", "0", "at least 0.05 and at most 3600"),
    ],
)
def test_number_bounds_are_written_in_full(key: str, value: str, expected: str) -> None:
    # They read "at most 4e+06" and "at most 1.07374e+09" (rounded) before.
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    assert str(err.value).endswith(f"expected a whole number {expected}") or str(
        err.value
    ).endswith(f"expected a number {expected}")


def test_record_directory_of_an_unknown_user_is_refused() -> None:
    # It was taken as the relative folder "~eccm-no-such-user/records" of the working directory.
    with pytest.raises(ConfigError) as err:
        cfg_of(RECORD_DIRECTORY_LOCATION="~eccm-no-such-user/records")
    assert str(err.value) == (
        "RECORD_DIRECTORY_LOCATION='~eccm-no-such-user/records' is not valid: expected a "
        "directory; there is no user 'eccm-no-such-user' for ~eccm-no-such-user to name"
    )
    assert cfg_of(RECORD_DIRECTORY_LOCATION="~root/r").record_directory_location == str(
        Path("~root").expanduser() / "r"
    )


@pytest.mark.parametrize(
    "key", ["S3_VERIFY_TLS", "MQTT_CA_FILE", "SOCKET_SERVER_TLS_CERT", "WEB_SERVER_TLS_KEY"]
)
def test_a_file_path_under_home_may_start_with_a_tilde(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As RECORD_DIRECTORY_LOCATION does; "~/x.pem" was refused as a file that does not exist.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "x.pem").write_text("pem\n")
    pairs = {
        "MQTT_CA_FILE": {"MQTT_BROKER": "mqtts://broker"},
        "SOCKET_SERVER_TLS_CERT": {"SOCKET_SERVER_TLS_KEY": str(tmp_path / "x.pem")},
        "WEB_SERVER_TLS_KEY": {"WEB_SERVER_TLS_CERT": str(tmp_path / "x.pem")},
    }
    c = cfg_of(**{key: "~/x.pem", **pairs.get(key, {})})
    assert getattr(c, key.lower()) == str(tmp_path / "x.pem")


@pytest.mark.parametrize(
    ("key", "value", "refused"),
    [
        ("OBD_FAST_COMMANDS", "RPM,GET_DTC", "GET_DTC"),
        ("OBD_SLOW_COMMANDS", "CLEAR_DTC,vin", "CLEAR_DTC, VIN"),
        ("SUMMARY_COMMANDS", "RPM,PIDS_A", "PIDS_A"),
        ("MQTT_VALUES", "SPEED,STATUS", "STATUS"),
    ],
)
def test_commands_that_are_no_value_are_refused_at_start(
    key: str, value: str, refused: str
) -> None:
    # check-config said "valid"; the daemon dropped them with a warning once connected.
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value})
    assert str(err.value).startswith(
        f"{key}={value!r} is not valid: expected names of values that can be logged (not {refused}:"
    ), err.value


def test_freeze_frame_values_and_the_adapter_voltage_stay_allowed() -> None:
    c = cfg_of(OBD_SLOW_COMMANDS="DTC_RPM,ELM_VOLTAGE,FUEL_STATUS,O2_SENSORS")
    assert c.obd_slow_commands == ("DTC_RPM", "ELM_VOLTAGE", "FUEL_STATUS", "O2_SENSORS")


def test_s3_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    # It was accepted, printed by check-config and logged at start with the secret in it.
    with pytest.raises(ConfigError) as err:
        cfg_of(S3_SERVER_ENDPOINT="https://AKIA:hunter2@s3.example.com", S3_SERVER_BUCKET="b")
    assert str(err.value).startswith("S3_SERVER_ENDPOINT holds a user name or password")
    assert "hunter2" not in str(err.value) and "AKIA" not in str(err.value)


@pytest.mark.parametrize(
    "endpoint", ["https://s3.example.com/my-bucket", "s3.example.com/logs/", "https://h?x=1"]
)
def test_s3_endpoint_with_a_path_says_where_the_bucket_goes(endpoint: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg_of(S3_SERVER_ENDPOINT=endpoint, S3_SERVER_BUCKET="b")
    assert str(err.value).startswith(f"S3_SERVER_ENDPOINT={endpoint!r} is not valid")
    assert "the bucket goes in S3_SERVER_BUCKET" in str(err.value)
    assert cfg_of(
        S3_SERVER_ENDPOINT="https://h:9000/", S3_SERVER_BUCKET="b"
    ).s3_server_endpoint == ("https://h:9000")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("S3_SERVER_ENDPOINT", "https://s3.example.com:0"),
        ("MQTT_BROKER", "mqtt://broker:0"),
        ("GPS_INTERFACE", "gpsd://127.0.0.1:0"),
    ],
)
def test_port_0_in_a_url_is_refused(key: str, value: str) -> None:
    # urlsplit takes ":0" as a port; the message already said "from 1 to 65535".
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value}, S3_SERVER_BUCKET="b")
    assert str(err.value).startswith(f"{key}={value!r} is not valid"), err.value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("S3_SERVER_ENDPOINT", "https://s3..example.com"),
        ("S3_SERVER_ENDPOINT", "s3.example.com.."),
        ("MQTT_BROKER", "mqtt://broker..lan"),
        ("GPS_INTERFACE", "gpsd://pi..local:2947"),
        ("S3_SERVER_ENDPOINT", "https://" + "a" * 64 + ".example.com"),
    ],
)
def test_a_host_name_with_an_empty_or_long_label_is_refused(key: str, value: str) -> None:
    # botocore answered every upload "Invalid endpoint"; the resolver raises UnicodeError.
    with pytest.raises(ConfigError) as err:
        cfg_of(**{key: value}, S3_SERVER_BUCKET="b")
    assert str(err.value).startswith(f"{key}={value[:30]!r}"[:-1]), err.value  # cut at 80
    assert "is not valid" in str(err.value)


@pytest.mark.parametrize(
    "host", ["s3.example.com", "s3.example.com.", "minio_1", "127.0.0.1", "[::1]", "[fd00::5]"]
)
def test_host_names_and_addresses_are_accepted(host: str) -> None:
    assert cfg_of(S3_SERVER_ENDPOINT=f"http://{host}:9000", S3_SERVER_BUCKET="b").s3_enabled
    assert cfg_of(MQTT_BROKER=f"mqtt://{host}").mqtt_enabled
