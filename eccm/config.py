"""config.ini (+ ECCM_<KEY> environment overrides) → one frozen, validated Config.

The file is the original ECCM format: a ``[DEFAULT]`` section of ``KEY=value`` lines. It is
parsed once here; nothing downstream ever sees a raw string. Every error names the key, the
bad value and what is expected.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from eccm.errors import ConfigError

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off"}
# The first character is a letter or digit: a leading '.' hides the files, '..' would be the
# S3 key segment "car=..", and a leading '-' reads as an option to every tool given a name.
_CAR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_S3_PREFIX = re.compile(r"[A-Za-z0-9._=/-]{0,200}")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_OBD_NAME = re.compile(r"[A-Z0-9_]+")
ENV_PREFIX = "ECCM_"
# ECCM_ variables that are not configuration keys (the config file's path, start.sh's mark).
_ENV_NOT_KEYS = frozenset({"CONFIG", "INVOKED_FROM", "CHAOS_SEED"})


def _bad(key: str, value: str, expected: str) -> ConfigError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return ConfigError(f"{key}={shown!r} is not valid: expected {expected}")


def _bool(key: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise _bad(key, raw, "yes/no, true/false, 1/0 or on/off")


def _bound(x: float) -> str:
    # In full: ":g" would print 4000000 as 4e+06 and 1 << 30 as 1.07374e+09.
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _number(
    lo: float, hi: float, *, integer: bool = False, lo_open: bool = False
) -> Callable[[str, str], Any]:
    kind = "a whole number" if integer else "a number"
    lo_word = f"greater than {_bound(lo)}" if lo_open else f"at least {_bound(lo)}"
    expected = f"{kind} {lo_word} and at most {_bound(hi)}"

    def parse(key: str, raw: str) -> float | int:
        text = raw.strip()
        # Python's int() and float() also take "1_0" (10) and non-ASCII digits: a typo
        # must not become a value ten times the one meant.
        if "_" in text or not text.isascii():
            raise _bad(key, raw, expected)
        try:
            value: float | int = int(text) if integer else float(text)
        except ValueError:
            raise _bad(key, raw, expected) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(key, raw, expected)
        if value < lo or value > hi or (lo_open and value == lo):
            raise _bad(key, raw, expected)
        return value

    return parse


def _text(key: str, raw: str) -> str:
    return raw.strip()


# botocore's own check (VALID_BUCKET) is this pattern; checking it here names the key at
# start instead of failing at the first upload. Amazon's stricter naming rules (lower
# case, 3-63) are not enforced: SeaweedFS, MinIO and old buckets accept more.
_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}")


def _bucket(key: str, raw: str) -> str:
    v = raw.strip()
    if v and not _BUCKET.fullmatch(v):
        hint = ""
        if "/" in v or ":" in v:
            hint = " (the bucket name alone: no s3:// and no path; the server goes in S3_SERVER_ENDPOINT)"
        raise _bad(key, raw, "a bucket name of letters, digits, '.', '-' and '_'" + hint)
    return v


# botocore's own check (validate_region_name: a host label, not digits alone); without it
# a typo such as "eu west 3" only shows at the first upload, in botocore's words, retried
# for ever without naming the key.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[A-Za-z0-9-]{0,63}(?<!-)")


def _region(key: str, raw: str) -> str:
    v = raw.strip()
    if not _REGION.fullmatch(v):
        raise _bad(
            key, raw, "a region name such as us-east-1 or eu-west-3 (letters, digits and '-')"
        )
    return v


def _directory(key: str, raw: str) -> str:
    # "~" is expanded: a literal "~" directory in the working directory is never meant.
    v = os.path.expanduser(raw.strip()) or "."
    if v.startswith("~"):
        # "~nosuchuser/records" is left as it is: a folder named "~nosuchuser" would be
        # made in the working directory, and the files would not be where the user looks.
        user = v[1:].split("/", 1)[0]
        raise _bad(key, raw, f"a directory; there is no user {user!r} for ~{user} to name")
    path = Path(v)
    try:
        is_file = path.exists() and not path.is_dir()
    except OSError:
        # A folder on the way this user may not enter (a mount point before its drive
        # is mounted): not a config error; check-config notes it, the recorder retries.
        is_file = False
    if is_file:
        raise _bad(key, raw, "a directory (this path is a file); it is created when missing")
    return v


def _is_file(key: str, raw: str, path: str) -> bool:
    """Whether ``path`` is a file; a path this user may not reach is named as such."""
    try:
        return Path(path).is_file()
    except OSError as exc:
        raise _bad(
            key, raw, f"a file the user ECCM runs as can reach ({exc.strerror}: {exc.filename})"
        ) from None


def _car_id(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        raise ConfigError(
            f"{key} is required: set a unique id for the car, e.g. {key}=my-car "
            "(letters, digits, '.', '_', '-'; at most 64)"
        )
    if not _CAR_ID.fullmatch(v):
        raise _bad(
            key,
            raw,
            "1 to 64 characters from A-Z a-z 0-9 . _ - that start with a letter or a digit "
            "(it is used in file names and S3 keys)",
        )
    return v


def _extension(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        raise _bad(key, raw, "a file extension such as .tsv or .csv")
    if not v.startswith("."):
        v = "." + v
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,10}", v) or v.lower() in (".part", ".json", ".gz"):
        raise _bad(key, raw, "a file extension such as .tsv or .csv (letters and digits)")
    return v


def _separator(key: str, raw: str) -> str:
    # configparser strips surrounding white space, so a real tab cannot survive: the
    # original ECCM wrote it as the two characters backslash and t.
    # A real tab or space only survives in quotes ("\t" quoted holds a tab).
    if raw and raw.strip(" ") == "\t":
        return "\t"
    if raw and not raw.strip():
        # A space would split every text value (FUEL_STATUS) into pieces.
        raise _bad(key, raw, r"one character such as , ; | or \t (not a space)")
    v = raw.strip()
    if v == "":
        return ""
    if v in ("\\t", "tab", "TAB"):
        return "\t"
    if len(v) != 1 or v in "\r\n\"'" or v.isalnum():
        raise _bad(key, raw, r"one character such as , ; | or \t (not a letter, digit or quote)")
    if v in ".-+:":
        # Legal for csv, but every number, time or date would need quotes.
        raise _bad(
            key,
            raw,
            r"one character such as , ; | or \t (not . - + or :, which numbers and times contain)",
        )
    return v


def _split_url(key: str, raw: str, url: str, expected: str) -> SplitResult:
    """``urlsplit`` with its ValueError (an unclosed ``[`` of an IPv6 host) named as the key."""
    try:
        return urlsplit(url)
    except ValueError:
        raise _bad(key, raw, expected) from None


def _host_ok(host: str | None) -> bool:
    """An IP address or a host name whose every label is 1 to 63 characters: "pi..local"
    reaches botocore as "Invalid endpoint" and the resolver as a UnicodeError."""
    if not host:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(re.fullmatch(r"[\w-]{1,63}", label) for label in labels)


def _port_ok(parts: SplitResult) -> bool:
    """No port, or one from 1 to 65535 (urlsplit takes ":0" and refuses only ":70000")."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def _endpoint(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        return ""
    if "://" not in v:
        v = "https://" + v
    expected = "https://host[:port] or http://host[:port] (or a bare host)"
    parts = _split_url(key, raw, v, expected)
    if parts.username is not None or parts.password is not None:
        # Never echoed: check-config prints this key and the daemon logs it at start.
        raise ConfigError(
            f"{key} holds a user name or password: expected {expected}; the keys go in "
            "S3_SERVER_AK and S3_SERVER_SK"
        )
    if parts.scheme not in ("http", "https") or not _host_ok(parts.hostname):
        raise _bad(key, raw, expected)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # "https://s3.example.com/my-bucket": boto3 would put every key below that path.
        raise _bad(
            key,
            raw,
            expected + " alone: the bucket goes in S3_SERVER_BUCKET, a key prefix in S3_KEY_PREFIX",
        )
    if not _port_ok(parts):
        raise _bad(key, raw, "https://host[:port] with a port from 1 to 65535")
    return v.rstrip("/")


# An age X25519 recipient: "age1" and 58 bech32 characters (the data part's alphabet).
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")


def _age_recipients(key: str, raw: str) -> tuple[str, ...]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for k in keys:
        if k.upper().startswith("AGE-SECRET-KEY-"):
            # Never echo a private key back into a log or a terminal.
            raise ConfigError(
                f"{key}: this is an age private key (AGE-SECRET-KEY-...); put the public "
                "key here (age1..., printed by `eccm keygen`) and keep the private one off the Pi"
            )
        if k.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ConfigError(
                f"{key}: {k[:24]}... is an SSH public key; only age public keys are taken "
                "(age1..., printed by `eccm keygen` or age-keygen)"
            )
        if not _AGE_RECIPIENT.fullmatch(k):
            # The bad key itself, not the whole value: with several, a value cut at 80
            # characters showed the good first key and hid the one at fault.
            raise _bad(key, k, "comma-separated age public keys such as age1ql3z7hjy54pw3...")
    return tuple(dict.fromkeys(keys))


# The README's command (python-OBD is in the venv only; its commands print as reprs).
_OBD_LIST_COMMAND = (
    '.venv/bin/python -c "import obd; print([c.name for c in obd.commands[1] if c])"'
)


def _obd_suggestion(name: str) -> str:
    """An unknown command name, with the known names closest to it."""
    import difflib

    from eccm.obd.names import COMMAND_NAMES

    # DTC_RPM and the like are freeze-frame (mode 02) twins: offered when asked for only.
    known = sorted(n for n in COMMAND_NAMES if name.startswith("DTC_") or not n.startswith("DTC_"))
    close = difflib.get_close_matches(name, known, n=3)
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name


def _obd_commands(allow_all: bool) -> Callable[[str, str], tuple[str, ...]]:
    def parse(key: str, raw: str) -> tuple[str, ...]:
        v = raw.strip()
        if allow_all and v.upper() == "ALL":
            return ("ALL",)
        names = [n.strip().upper() for n in v.split(",") if n.strip()]
        for n in names:
            if not _OBD_NAME.fullmatch(n):
                raise _bad(key, raw, "comma-separated python-OBD command names such as RPM,SPEED")
        if allow_all and "ALL" in names:
            raise _bad(key, raw, "either ALL alone or a list of command names")
        # Names are python-OBD's own (the same the socket uses): a typo must not pass
        # silently, so unknown ones are refused here rather than dropped at run time.
        # python-OBD's names without importing python-OBD (half a second before the
        # first row): eccm/obd/names.py.
        from eccm.obd.names import has_name, is_value_name

        unknown = [n for n in names if not has_name(n)]
        if unknown:
            raise _bad(
                key,
                raw,
                f"python-OBD command names (unknown: {', '.join(map(_obd_suggestion, unknown))}; "
                f"list them with `{_OBD_LIST_COMMAND}`)",
            )
        not_values = [n for n in names if not is_value_name(n)]
        if not_values:
            raise _bad(
                key,
                raw,
                f"names of values that can be logged (not {', '.join(not_values)}: trouble "
                "codes, the VIN and the support bitmaps are no column; the socket's DTC and "
                "GET read them)",
            )
        return tuple(dict.fromkeys(names))

    return parse


def _baudrate(key: str, raw: str) -> int | None:
    """A serial speed, or None (empty): python-OBD detects it."""
    v = raw.strip()
    if not v:
        return None
    # len: int() refuses more than 4300 digits with a ValueError of its own.
    if not (v.isascii() and v.isdigit()) or len(v) > 7 or not 300 <= int(v) <= 4_000_000:
        raise _bad(key, raw, "a serial speed such as 38400 or 115200, or empty for auto")
    return int(v)


# ELM327 protocol numbers (ATSP): 1-9 and A-C. python-OBD takes the same strings, except B
# and C (user-defined CAN), which it cannot decode: the OBD link detects the protocol then.
OBD_PROTOCOLS = tuple("123456789ABC")


def _protocol(key: str, raw: str) -> str | None:
    """An ELM327 protocol number in capitals, or None (empty): detect the protocol."""
    v = raw.strip().upper()
    if not v:
        return None
    if v not in OBD_PROTOCOLS:
        raise _bad(key, raw, "an ELM327 protocol number 1-9 or A-C (6 = CAN 11/500), or empty")
    return v


def _verify_tls(key: str, raw: str) -> bool | str:
    v = raw.strip()
    low = v.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    v = os.path.expanduser(v)  # "~/ca.pem" as in RECORD_DIRECTORY_LOCATION
    if not _is_file(key, raw, v):
        raise _bad(key, raw, "yes, no, or the path of an existing CA bundle file")
    return v


def _compression(key: str, raw: str) -> str:
    v = raw.strip().lower()
    if v not in ("gzip", "none"):
        raise _bad(key, raw, "gzip or none")
    return v


def _log_level(key: str, raw: str) -> str:
    v = raw.strip().upper()
    if v not in _LOG_LEVELS:
        raise _bad(key, raw, "one of " + ", ".join(_LOG_LEVELS))
    return v


def _bind(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        raise _bad(key, raw, "an IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    if v == "localhost":
        return "127.0.0.1"
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise _bad(key, raw, "an IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0") from None
    return v


def _path_or_empty(key: str, raw: str) -> str:
    # "~/cert.pem" as in RECORD_DIRECTORY_LOCATION: the file was "not existing" otherwise.
    v = os.path.expanduser(raw.strip())
    if v and not _is_file(key, raw, v):
        raise _bad(key, raw, "the path of an existing PEM file, or empty")
    return v


def _tile_url(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        return ""
    expected = (
        "an http(s) URL of map tiles with {z}, {x} and {y}, e.g. "
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png, or empty"
    )
    parts = _split_url(key, raw, v, expected)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(key, raw, expected)
    if any(f"{{{p}}}" not in v for p in "zxy") or re.search(r"[\s\"'<>\\]", v):
        raise _bad(key, raw, expected)
    return v


def _s3_prefix(key: str, raw: str) -> str:
    v = raw.strip().strip("/")
    if not _S3_PREFIX.fullmatch(v):
        raise _bad(key, raw, "letters, digits and . _ = / - (an S3 key prefix)")
    # S3 servers refuse a key with a '.' or '..' segment (every upload would fail with HTTP
    # 400, forever), and an empty segment ('a//b') names a folder no listing finds.
    if v and any(seg in ("", ".", "..") for seg in v.split("/")):
        raise _bad(
            key,
            raw,
            "an S3 key prefix whose every segment between '/' is a name, not empty, "
            "'.' or '..' (e.g. car-logs or fleet/2026)",
        )
    return v


def _optional(parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """Empty means "not set" (None); anything else goes through ``parse``."""

    def wrapped(key: str, raw: str) -> Any:
        return None if not raw.strip() else parse(key, raw)

    return wrapped


_FUEL_TYPES = {"gasoline": "gasoline", "petrol": "gasoline", "diesel": "diesel"}


def _fuel_type(key: str, raw: str) -> str:
    v = raw.strip().lower()
    if v not in _FUEL_TYPES:
        raise _bad(key, raw, "gasoline (or petrol) or diesel")
    return _FUEL_TYPES[v]


def _gps_interface(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        raise _bad(key, raw, "a serial device such as /dev/gnss, or gpsd://host:port")
    if v.startswith("gpsd://"):
        parts = _split_url(key, raw, v, "gpsd://host:port, e.g. gpsd://127.0.0.1:2947")
        if not _host_ok(parts.hostname) or not _port_ok(parts):
            raise _bad(key, raw, "gpsd://host:port, e.g. gpsd://127.0.0.1:2947")
    return v


# -- MQTT (SPEC §8) ----------------------------------------------------------------------
_MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}
# A topic level: no MQTT wildcard, no NUL, no blank (a blank topic works but surprises
# every tool that splits on spaces).
_TOPIC_LEVEL = re.compile(r"[^/+#\x00\s]+")
_CAR_PLACEHOLDER = "{CAR_IDENTIFIER}"


def _mqtt_broker(key: str, raw: str) -> str:
    v = raw.strip()
    if not v:
        return ""
    if "://" not in v:
        v = "mqtt://" + v
    expected = "mqtt://host[:port] or mqtts://host[:port] (TLS), or empty for no MQTT"
    try:
        parts = urlsplit(v)
    except ValueError:
        if "@" in raw:  # not split, so a password in it cannot be cut out: not echoed
            raise ConfigError(f"{key} is not valid: expected {expected}") from None
        raise _bad(key, raw, expected) from None
    if parts.password:  # an error message is logged: never with the password in it
        raw = raw.replace(f":{parts.password}@", ":***@", 1)
    if (
        parts.scheme not in _MQTT_SCHEMES
        or not _host_ok(parts.hostname)
        or parts.path not in ("", "/")
    ):
        raise _bad(key, raw, expected)
    if parts.username or parts.password:
        raise _bad(key, raw, expected + " (user and password go in MQTT_USERNAME/MQTT_PASSWORD)")
    if not _port_ok(parts):
        raise _bad(key, raw, "a broker URL with a port from 1 to 65535")
    return v.rstrip("/")


def _topic(key: str, raw: str) -> str:
    """An MQTT topic prefix; ``{CAR_IDENTIFIER}`` stands for the car's id."""
    v = raw.strip()
    levels = v.replace(_CAR_PLACEHOLDER, "car").split("/")
    if not v or len(v) > 200 or not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
        raise _bad(
            key,
            raw,
            "an MQTT topic such as eccm/{CAR_IDENTIFIER}: levels separated by '/', none "
            "empty, no + # or blanks, no leading or trailing '/'",
        )
    return v


def _client_id(key: str, raw: str) -> str:
    v = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9._{}-]{1,128}", v):
        raise _bad(
            key, raw, "1 to 128 characters from A-Z a-z 0-9 . _ - (e.g. eccm-{CAR_IDENTIFIER})"
        )
    return v


@dataclass(frozen=True)
class KeySpec:
    default: str
    parse: Callable[[str, str], Any]
    doc: str
    secret: bool = False
    original: bool = False


# The order is the order of config.ini.template and of `eccm check-config`: the original
# ECCM keys first, so an old config.ini reads the same.
KEYS: dict[str, KeySpec] = {
    "CAR_IDENTIFIER": KeySpec("", _car_id, "unique id of the car, used in file names and S3 keys", original=True),
    "FILE_RECORDING": KeySpec("yes", _bool, "write data files", original=True),
    "GPS_POSITION_MONITORING": KeySpec("no", _bool, "read the GNSS receiver and log position", original=True),
    "OBD_INTERFACE": KeySpec("", _text, "serial device of the ELM327 adapter (empty = auto-detect)", original=True),
    "MONITORING_FILE_EXTENSION": KeySpec(".tsv", _extension, ".csv, .tsv or another extension", original=True),
    "MONITORING_FILE_SEPARATION_CHARACTER": KeySpec("", _separator, r"separator (empty = , for .csv, \t for .tsv, | otherwise)", original=True),
    "RECORD_DIRECTORY_LOCATION": KeySpec(".", _directory, "directory where files are written", original=True),
    "S3_SERVER_ENDPOINT": KeySpec("", _endpoint, "https://host[:port] of the S3 server (empty = no upload)", original=True),
    "S3_SERVER_AK": KeySpec("", _text, "S3 access key (empty = boto3's default credential chain)", secret=True, original=True),
    "S3_SERVER_SK": KeySpec("", _text, "S3 secret key", secret=True, original=True),
    "S3_SERVER_BUCKET": KeySpec("", _bucket, "S3 bucket (required when S3 is on)", original=True),
    "S3_SERVER_REGION": KeySpec("us-east-1", _region, "S3 region", original=True),
    "ENABLE_SOCKET_SERVER": KeySpec("no", _bool, "start the control socket", original=True),
    "SOCKET_SERVER_PORT": KeySpec("8765", _number(1, 65535, integer=True), "TCP port of the control socket", original=True),
    "SOCKET_SERVER_SECRET": KeySpec("", _text, "shared secret of the control socket (make one with: eccm gen-secret)", secret=True, original=True),
    "GPS_INTERFACE": KeySpec("/dev/gnss", _gps_interface, "serial device of the NMEA receiver, or gpsd://host:port"),
    "GPS_BAUDRATE": KeySpec("9600", _number(300, 4_000_000, integer=True), "serial speed of the receiver"),
    "GPS_MAX_FIX_AGE": KeySpec("2.0", _number(0.1, 3600), "seconds after which a fix is stale"),
    "OBD_BAUDRATE": KeySpec("", _baudrate, "serial speed of the adapter (empty = auto)"),
    "OBD_PROTOCOL": KeySpec("", _protocol, "ELM327 protocol number 1-9 or A-C, 6 = CAN 11 bit 500 kbaud (empty = auto)"),
    "OBD_FAST_COMMANDS": KeySpec("RPM,SPEED,THROTTLE_POS,ENGINE_LOAD,MAF,INTAKE_PRESSURE", _obd_commands(False), "python-OBD commands read for every row"),
    "OBD_SLOW_COMMANDS": KeySpec("ALL", _obd_commands(True), "commands read every OBD_SLOW_INTERVAL (ALL = every other supported mode 01 value)"),
    "OBD_SLOW_INTERVAL": KeySpec("1.0", _number(0.05, 3600), "seconds between reads of the slow commands"),
    "SAMPLE_INTERVAL": KeySpec("0.2", _number(0, 3600), "minimum seconds between rows (0 = as fast as the car answers)"),
    "OBD_RECONNECT_MAX_INTERVAL": KeySpec("10", _number(0.5, 3600), "cap of the reconnection backoff, seconds"),
    "TRIP_END_TIMEOUT": KeySpec("30", _number(1, 86400), "seconds without engine data that end a trip"),
    "FUEL_TYPE": KeySpec("gasoline", _fuel_type, "gasoline or diesel: air-fuel ratio and density of the fuel"),
    "FUEL_PRICE": KeySpec("", _optional(_number(0, 1000)), "price of one litre of fuel (empty = no cost in the trip summary)"),
    "ENGINE_DISPLACEMENT_L": KeySpec("", _optional(_number(0.05, 30)), "engine displacement in litres, for fuel from MAP when the car has no MAF (empty = off)"),
    "VOLUMETRIC_EFFICIENCY": KeySpec("0.85", _number(0.1, 2.0), "volumetric efficiency of the engine, for fuel from MAP"),
    "SUMMARY_COMMANDS": KeySpec("RPM,SPEED,ENGINE_LOAD,THROTTLE_POS,COOLANT_TEMP,MAF", _obd_commands(False), "commands summarised per minute in the trip summary"),
    "OBD_DTC_INTERVAL": KeySpec("60", _number(5, 86400), "seconds between two reads of the trouble codes and the MIL"),
    "LOW_BATTERY_VOLTAGE": KeySpec("11.8", _number(0, 100), "volts (the adapter's ATRV) below which a parked car's battery gets one WARNING"),
    "FILE_ROTATION_SECONDS": KeySpec("300", _number(1, 86400), "close the file after this many seconds"),
    "FILE_ROTATION_MAX_BYTES": KeySpec("16777216", _number(1024, 1 << 40, integer=True), "close the file at this size"),
    "FILE_FLUSH_INTERVAL": KeySpec("1.0", _number(0, 3600), "seconds between flush+fsync of the open file"),
    "FILE_COMPRESSION": KeySpec("gzip", _compression, "gzip or none, applied to closed files"),
    "FILE_ENCRYPTION_RECIPIENTS": KeySpec("", _age_recipients, "age public keys (age1...) closed files are encrypted for (empty = off)"),
    "S3_KEY_PREFIX": KeySpec("car-logs", _s3_prefix, "first part of every S3 key"),
    "S3_SYNC_INTERVAL": KeySpec("60", _number(1, 86400), "seconds between upload runs"),
    "S3_SYNC_JITTER": KeySpec("15", _number(0, 86400), "random 0..N seconds added to each upload run"),
    "S3_DELETE_AFTER_UPLOAD": KeySpec("yes", _bool, "delete a file once its upload is verified (no = move it to uploaded/)"),
    "S3_VERIFY_TLS": KeySpec("yes", _verify_tls, "yes, no, or a CA bundle path"),
    "LOCAL_RETENTION_DAYS": KeySpec("15", _number(0, 36500), "days uploaded files are kept under uploaded/"),
    "MAX_LOCAL_STORAGE_MB": KeySpec("1024", _number(1, 1 << 30), "disk budget of RECORD_DIRECTORY_LOCATION in MB"),
    "SOCKET_SERVER_BIND": KeySpec("127.0.0.1", _bind, "address the control socket listens on"),
    "SOCKET_SERVER_READ_SECRET": KeySpec("", _text, "second secret of the control socket, granting the read scope only (empty = none)", secret=True),
    "SOCKET_SERVER_TLS_CERT": KeySpec("", _path_or_empty, "PEM certificate (empty = plain TCP)"),
    "SOCKET_SERVER_TLS_KEY": KeySpec("", _path_or_empty, "PEM private key"),
    "SOCKET_SERVER_ALLOW_PLAIN_AUTH": KeySpec("no", _bool, "accept AUTH <secret> on plain TCP from non-loopback peers"),
    "SOCKET_SERVER_ALLOW_DTC_CLEAR": KeySpec("yes", _bool, "allow DTC CLEAR"),
    "SOCKET_SERVER_MAX_CLIENTS": KeySpec("8", _number(1, 1024, integer=True), "simultaneous connections"),
    "ENABLE_WEB_SERVER": KeySpec("no", _bool, "serve the web page and its JSON API (secrets as the control socket's)"),
    "WEB_SERVER_BIND": KeySpec("127.0.0.1", _bind, "address the web page listens on"),
    "WEB_SERVER_PORT": KeySpec("8080", _number(1, 65535, integer=True), "TCP port of the web page"),
    "WEB_SERVER_TLS_CERT": KeySpec("", _path_or_empty, "PEM certificate of the web page (empty = plain HTTP)"),
    "WEB_SERVER_TLS_KEY": KeySpec("", _path_or_empty, "PEM private key of the web page"),
    "WEB_MAP_TILES": KeySpec("", _tile_url, "map tile URL with {z} {x} {y}, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (empty = no tiles: the track alone)"),
    "MQTT_BROKER": KeySpec("", _mqtt_broker, "mqtt://host[:1883] or mqtts://host[:8883] of an MQTT broker (empty = no MQTT)"),
    "MQTT_USERNAME": KeySpec("", _text, "user name at the broker (empty = anonymous)"),
    "MQTT_PASSWORD": KeySpec("", _text, "password at the broker", secret=True),
    "MQTT_CA_FILE": KeySpec("", _path_or_empty, "CA bundle that signed the broker's certificate, for mqtts:// (empty = the system's)"),
    "MQTT_CLIENT_ID": KeySpec("eccm-{CAR_IDENTIFIER}", _client_id, "MQTT client id"),
    "MQTT_TOPIC_PREFIX": KeySpec("eccm/{CAR_IDENTIFIER}", _topic, "first levels of every topic"),
    "MQTT_VALUES": KeySpec("SPEED,RPM,COOLANT_TEMP,FUEL_LEVEL,ENGINE_LOAD", _obd_commands(False), "values in the state message (logged python-OBD names)"),
    "MQTT_INTERVAL": KeySpec("5", _number(0.5, 86400), "seconds between state messages"),
    "MQTT_HOMEASSISTANT": KeySpec("yes", _bool, "publish Home Assistant discovery messages"),
    "MQTT_DISCOVERY_PREFIX": KeySpec("homeassistant", _topic, "Home Assistant's discovery prefix"),
    "MQTT_ALLOW_COMMANDS": KeySpec("no", _bool, "obey upload, dtc_read and dtc_clear on {prefix}/cmd"),
    "LOG_LEVEL": KeySpec("INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
}  # fmt: skip


def default_separator(extension: str) -> str:
    """The separator of files with ``extension`` when MONITORING_FILE_SEPARATION_CHARACTER
    is empty."""
    return {".csv": ",", ".tsv": "\t"}.get(extension.lower(), "|")


@dataclass(frozen=True)
class Config:
    car_identifier: str
    file_recording: bool
    gps_position_monitoring: bool
    obd_interface: str
    monitoring_file_extension: str
    monitoring_file_separation_character: str
    record_directory_location: str
    s3_server_endpoint: str
    s3_server_ak: str
    s3_server_sk: str
    s3_server_bucket: str
    s3_server_region: str
    enable_socket_server: bool
    socket_server_port: int
    socket_server_secret: str
    gps_interface: str
    gps_baudrate: int
    gps_max_fix_age: float
    obd_baudrate: int | None  # None: detected
    obd_protocol: str | None  # one of OBD_PROTOCOLS; None: detected
    obd_fast_commands: tuple[str, ...]
    obd_slow_commands: tuple[str, ...]
    obd_slow_interval: float
    sample_interval: float
    obd_reconnect_max_interval: float
    trip_end_timeout: float
    fuel_type: str
    fuel_price: float | None
    engine_displacement_l: float | None
    volumetric_efficiency: float
    summary_commands: tuple[str, ...]
    obd_dtc_interval: float
    low_battery_voltage: float
    file_rotation_seconds: float
    file_rotation_max_bytes: int
    file_flush_interval: float
    file_compression: str
    file_encryption_recipients: tuple[str, ...]
    s3_key_prefix: str
    s3_sync_interval: float
    s3_sync_jitter: float
    s3_delete_after_upload: bool
    s3_verify_tls: bool | str
    local_retention_days: float
    max_local_storage_mb: float
    socket_server_bind: str
    socket_server_read_secret: str
    socket_server_tls_cert: str
    socket_server_tls_key: str
    socket_server_allow_plain_auth: bool
    socket_server_allow_dtc_clear: bool
    socket_server_max_clients: int
    enable_web_server: bool
    web_server_bind: str
    web_server_port: int
    web_server_tls_cert: str
    web_server_tls_key: str
    web_map_tiles: str
    mqtt_broker: str
    mqtt_username: str
    mqtt_password: str
    mqtt_ca_file: str
    mqtt_client_id: str
    mqtt_topic_prefix: str
    mqtt_values: tuple[str, ...]
    mqtt_interval: float
    mqtt_homeassistant: bool
    mqtt_discovery_prefix: str
    mqtt_allow_commands: bool
    log_level: str

    @property
    def separator(self) -> str:
        if self.monitoring_file_separation_character:
            return self.monitoring_file_separation_character
        return default_separator(self.monitoring_file_extension)

    @property
    def record_dir(self) -> Path:
        return Path(self.record_directory_location)

    @property
    def s3_enabled(self) -> bool:
        return bool(self.s3_server_endpoint)

    @property
    def socket_tls(self) -> bool:
        return bool(self.socket_server_tls_cert)

    @property
    def web_tls(self) -> bool:
        return bool(self.web_server_tls_cert)

    @property
    def mqtt_enabled(self) -> bool:
        return bool(self.mqtt_broker)

    @property
    def mqtt_address(self) -> tuple[str, int, bool]:
        """(host, port, tls) of MQTT_BROKER."""
        parts = urlsplit(self.mqtt_broker)
        tls = parts.scheme == "mqtts"
        return parts.hostname or "", parts.port or _MQTT_SCHEMES[parts.scheme], tls

    @property
    def mqtt_prefix(self) -> str:
        """MQTT_TOPIC_PREFIX with the car's id put in."""
        return self.mqtt_topic_prefix.replace(_CAR_PLACEHOLDER, self.car_identifier)

    @property
    def mqtt_client(self) -> str:
        """MQTT_CLIENT_ID with the car's id put in."""
        return self.mqtt_client_id.replace(_CAR_PLACEHOLDER, self.car_identifier)

    def effective(self, mask_secrets: bool = True) -> dict[str, str]:
        """KEY → value as text, in template order, secrets masked (for check-config)."""
        out: dict[str, str] = {}
        for key, spec in KEYS.items():
            value = getattr(self, key.lower())
            if key == "MONITORING_FILE_SEPARATION_CHARACTER":
                value = self.separator
            text = _to_text(value)
            if spec.secret and mask_secrets and text:
                text = "********"
            out[key] = text
        return out


def _to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if value == "\t":
        return "\\t"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


assert [f.name for f in fields(Config)] == [k.lower() for k in KEYS], "Config and KEYS differ"


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _cross_checks(cfg: Config, values: Mapping[str, str]) -> None:
    if cfg.s3_enabled and not cfg.s3_server_bucket:
        # The value as typed: "s3.example.com", not the "https://s3.example.com" made of it.
        typed = values.get("S3_SERVER_ENDPOINT", "").strip()
        raise ConfigError(
            "S3_SERVER_BUCKET is required when S3_SERVER_ENDPOINT is set "
            f"(S3_SERVER_ENDPOINT={typed!r}): set the bucket name, "
            "or leave S3_SERVER_ENDPOINT empty to turn uploads off"
        )
    if bool(cfg.s3_server_ak) != bool(cfg.s3_server_sk):
        missing = "S3_SERVER_SK" if cfg.s3_server_ak else "S3_SERVER_AK"
        raise ConfigError(
            f"{missing} is empty while its pair is set: give both S3_SERVER_AK and "
            "S3_SERVER_SK, or neither (boto3's default credential chain)"
        )
    if bool(cfg.socket_server_tls_cert) != bool(cfg.socket_server_tls_key):
        missing = (
            "SOCKET_SERVER_TLS_KEY" if cfg.socket_server_tls_cert else "SOCKET_SERVER_TLS_CERT"
        )
        raise ConfigError(
            f"{missing} is empty while its pair is set: give both SOCKET_SERVER_TLS_CERT "
            "and SOCKET_SERVER_TLS_KEY, or neither (plain TCP)"
        )
    if cfg.socket_server_read_secret and cfg.socket_server_read_secret == cfg.socket_server_secret:
        raise ConfigError(
            "SOCKET_SERVER_READ_SECRET is the same as SOCKET_SERVER_SECRET: the read-only "
            "secret must differ, or it would grant every scope (make one with "
            "`eccm gen-secret`, or leave it empty)"
        )
    if cfg.enable_socket_server:
        if not cfg.socket_server_secret:
            raise ConfigError(
                "SOCKET_SERVER_SECRET is required when ENABLE_SOCKET_SERVER=yes: "
                "make one with `eccm gen-secret` and put it in config.ini "
                "or in the ECCM_SOCKET_SERVER_SECRET environment variable"
            )
        for key, secret in (
            ("SOCKET_SERVER_SECRET", cfg.socket_server_secret),
            ("SOCKET_SERVER_READ_SECRET", cfg.socket_server_read_secret),
        ):
            if secret and not _loopback(cfg.socket_server_bind) and len(secret) < 32:
                raise ConfigError(
                    f"{key} is too short ({len(secret)} characters) "
                    f"for SOCKET_SERVER_BIND={cfg.socket_server_bind!r}: a socket reachable "
                    "from the network needs at least 32 characters (make one with "
                    "`eccm gen-secret`)"
                )


def _web_checks(cfg: Config) -> None:
    """The web page: the control socket's secrets and the same bind rule (SPEC §7)."""
    if bool(cfg.web_server_tls_cert) != bool(cfg.web_server_tls_key):
        missing = "WEB_SERVER_TLS_KEY" if cfg.web_server_tls_cert else "WEB_SERVER_TLS_CERT"
        raise ConfigError(
            f"{missing} is empty while its pair is set: give both WEB_SERVER_TLS_CERT "
            "and WEB_SERVER_TLS_KEY, or neither (plain HTTP)"
        )
    if not cfg.enable_web_server:
        return
    if not cfg.socket_server_secret:
        raise ConfigError(
            "SOCKET_SERVER_SECRET is required when ENABLE_WEB_SERVER=yes (the web page logs "
            "in with the control socket's secrets): make one with `eccm gen-secret` and put "
            "it in config.ini or in the ECCM_SOCKET_SERVER_SECRET environment variable"
        )
    for key, secret in (
        ("SOCKET_SERVER_SECRET", cfg.socket_server_secret),
        ("SOCKET_SERVER_READ_SECRET", cfg.socket_server_read_secret),
    ):
        if secret and not _loopback(cfg.web_server_bind) and len(secret) < 32:
            raise ConfigError(
                f"{key} is too short ({len(secret)} characters) "
                f"for WEB_SERVER_BIND={cfg.web_server_bind!r}: a web page reachable "
                "from the network needs at least 32 characters (make one with "
                "`eccm gen-secret`)"
            )
    if (
        cfg.enable_socket_server
        and cfg.web_server_port == cfg.socket_server_port
        and (
            cfg.web_server_bind == cfg.socket_server_bind
            or "0.0.0.0" in (cfg.web_server_bind, cfg.socket_server_bind)
            or "::" in (cfg.web_server_bind, cfg.socket_server_bind)
        )
    ):
        raise ConfigError(
            f"WEB_SERVER_PORT={cfg.web_server_port} is also SOCKET_SERVER_PORT: the web page "
            "and the control socket need a port each"
        )


def _mqtt_checks(cfg: Config) -> None:
    """MQTT (SPEC §8): keys that only make sense together."""
    if not cfg.mqtt_enabled:
        return
    _, _, tls = cfg.mqtt_address
    if cfg.mqtt_ca_file and not tls:
        raise ConfigError(
            f"MQTT_CA_FILE={cfg.mqtt_ca_file!r} is set but MQTT_BROKER={cfg.mqtt_broker!r} "
            "is plain: write mqtts://host[:8883] to use TLS, or leave MQTT_CA_FILE empty"
        )
    if cfg.mqtt_password and not cfg.mqtt_username:
        raise ConfigError("MQTT_PASSWORD is set but MQTT_USERNAME is empty: give the user name too")
    if "{CAR_IDENTIFIER}" in cfg.mqtt_discovery_prefix:
        raise _bad(
            "MQTT_DISCOVERY_PREFIX",
            cfg.mqtt_discovery_prefix,
            "Home Assistant's discovery prefix (homeassistant unless changed there)",
        )


class RawValues(dict[str, str]):
    """KEY → text as ``read_raw`` merged it, knowing which keys came from ECCM_<KEY>."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.from_env: set[str] = set()


def parse(values: Mapping[str, str]) -> Config:
    """Validate raw KEY → text pairs (already merged with the environment)."""
    from_env = values.from_env if isinstance(values, RawValues) else set()
    kwargs: dict[str, Any] = {}
    for key, spec in KEYS.items():
        raw = values.get(key, spec.default)
        try:
            kwargs[key.lower()] = spec.parse(key, raw)
        except ConfigError as exc:
            if key not in from_env:
                raise
            # The file may not hold the key at all: say where the value was read.
            raise ConfigError(
                f"{exc} (set by the environment variable {ENV_PREFIX}{key}, which overrides "
                "the configuration file)"
            ) from None
    cfg = Config(**kwargs)
    _cross_checks(cfg, values)
    _web_checks(cfg)
    _mqtt_checks(cfg)
    return cfg


def _unknown_key_error(key: str, where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, list(KEYS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(
        f"unknown key {key} in {where}{hint}; known keys are listed in config.ini.template"
    )


# A line such as "  SAMPLE_INTERVAL=0.5": configparser would take it as the continuation of
# the value above; a key indented by accident is far more common than a continued value.
_INDENTED_KEY = re.compile(r"^[ \t]+(?=[A-Za-z_][A-Za-z0-9_]*[ \t]*[=:])", re.MULTILINE)
_DEFAULT_HEADER = re.compile(r"^[ \t]*\[[ \t]*default[ \t]*\][ \t]*$", re.MULTILINE | re.IGNORECASE)
_INLINE_COMMENT = re.compile(r"\s+[;#]")
# "KEY=   ; note": an empty value with a comment. configparser strips the blank before the
# comment, after which it could not be told from "KEY = ;" (a semicolon separator): a
# comment is a ; or # after blanks with some text after it.
_EMPTY_WITH_COMMENT = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*[ \t]*[=:])[ \t]+[;#][ \t]*[^\s].*$", re.MULTILINE
)


# Opening quote -> its closing one. Typographic quotes come with a value copied from a web
# page or a word processor ("KEY=“my secret”"): kept, they became part of a secret or an
# id without a word.
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "”": "”", "‘": "’", "„": "“", "«": "»"}


def clean_value(text: str) -> str:
    """A value as written in config.ini, without its quotes and its inline comment.

    ``KEY="my car" ; note`` gives ``my car``; ``KEY=0.5 # fast`` gives ``0.5``. A comment
    starts at ; or # after white space, so ``MONITORING_FILE_SEPARATION_CHARACTER=;`` stays
    a semicolon. One pair of surrounding quotes is removed (typographic ones too):
    configparser keeps them, and a path, an id or a secret in quotes is never meant to
    contain them.
    """
    v = text.strip()
    close = _QUOTE_PAIRS.get(v[:1])
    if close is not None:
        end = v.find(close, 1)
        if end > 0:
            rest = v[end + 1 :].strip()
            if not rest or rest[0] in ";#":
                return v[1:end]
    match = _INLINE_COMMENT.search(v)
    if match is not None:
        v = v[: match.start()]
    return v.strip()


def _read_text(p: Path) -> str:
    try:
        is_dir, is_file = p.is_dir(), p.is_file()
    except OSError as exc:  # a folder on the way this user may not enter
        raise ConfigError(
            f"cannot read configuration file {str(p)!r}: {exc.strerror} ({exc.filename}); "
            "the user running ECCM must be able to enter every folder on its path"
        ) from None
    if is_dir:
        raise ConfigError(
            f"configuration file {str(p)!r} is a directory: give the path of the file "
            "(e.g. config.ini, a copy of config.ini.template)"
        )
    if not is_file:
        raise ConfigError(
            f"configuration file {str(p)!r} does not exist (copy config.ini.template)"
        )
    try:
        data = p.read_bytes()
    except PermissionError as exc:
        raise ConfigError(
            f"cannot read configuration file {str(p)!r}: permission denied; make it readable "
            "by the user running ECCM (e.g. chown that user and chmod 600)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {str(p)!r}: {exc}") from exc
    try:
        # utf-8-sig: Windows editors start a UTF-8 file with a byte order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"cannot read configuration file {str(p)!r}: line {line} is not UTF-8 text "
            f"(byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from exc
    # configparser splits lines on LF only: a file with CR line ends (old Mac editors) would
    # be one line, "[DEFAULT]" and the rest silently ignored.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _first_line_of(text: str, key: str, before: int) -> int | None:
    """The number of the first line before line ``before`` that sets ``key``, or None."""
    for number, line in enumerate(text.split("\n")[: max(before - 1, 0)], start=1):
        name, sep, _value = line.partition("=")
        if not sep:
            name, sep, _value = line.partition(":")
        if sep and not line.lstrip().startswith(("#", ";")) and name.strip().upper() == key:
            return number
    return None


def _parse_file(p: Path) -> dict[str, str]:
    text = _read_text(p)
    text = _EMPTY_WITH_COMMENT.sub(r"\1", _INDENTED_KEY.sub("", text))
    text = _DEFAULT_HEADER.sub("[DEFAULT]", text)
    shift = 0
    if not text.lstrip().startswith("["):
        # Tolerate a file of bare KEY=value lines: the header is easy to forget.
        text = "[DEFAULT]\n" + text
        shift = 1
    # interpolation=None: a secret may contain '%'. Keys are compared in upper case, so
    # "sample_interval" is SAMPLE_INTERVAL and a key given twice in any case is an error.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str.upper  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(p))
    except configparser.DuplicateOptionError as exc:
        line = (exc.lineno or 0) - shift
        first = _first_line_of(text, exc.option, exc.lineno or 0)
        also = f"also on line {first - shift}" if first else "also on an earlier line"
        raise ConfigError(f"{p} line {line}: {exc.option} is set twice ({also}): keep one") from exc
    except configparser.MissingSectionHeaderError as exc:
        # "[DEFAULT" with its bracket lost: not a header, and no header before it.
        raise ConfigError(
            f"{p} line {exc.lineno - shift}: {exc.line.strip()!r} is not a section header: "
            "expected [DEFAULT]"
        ) from exc
    except configparser.ParsingError as exc:
        line, content = exc.errors[0]
        with contextlib.suppress(ValueError, SyntaxError):
            content = ast.literal_eval(content)  # configparser gives the line's repr
        if str(content).strip().startswith("["):
            raise ConfigError(
                f"{p} line {line - shift}: {str(content).strip()!r} is not a section header: "
                "expected [DEFAULT]"
            ) from exc
        raise ConfigError(
            f"{p} line {line - shift}: {str(content).strip()!r} is not a KEY=value line "
            "(a comment line starts with # or ;)"
        ) from exc
    except configparser.Error as exc:
        raise ConfigError(f"{p}: {exc.message if hasattr(exc, 'message') else exc}") from exc
    if parser.sections():
        raise ConfigError(f"{p}: only a [DEFAULT] section is read, found [{parser.sections()[0]}]")
    values: dict[str, str] = {}
    for key, value in parser.defaults().items():
        if key not in KEYS:
            found = _first_line_of(text, key, len(text))
            raise _unknown_key_error(key, f"{p} line {found - shift}" if found else str(p))
        values[key] = clean_value(value)
    return values


def read_raw(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> RawValues:
    """Read config.ini (if given) and overlay ECCM_<KEY> variables."""
    values = RawValues({} if path is None else _parse_file(Path(path)))
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key in KEYS:
            values[key] = value
            values.from_env.add(key)
        elif key.upper() in KEYS:
            # Environment names are case-sensitive: ignoring it would leave the user
            # believing a setting is in force that is not.
            raise ConfigError(
                f"the environment variable {name} is not read: write the key in capitals, "
                f"{ENV_PREFIX}{key.upper()}"
            )
        elif key not in _ENV_NOT_KEYS and not key.startswith("TEST_"):
            # A typo here is as wrong as in config.ini. ECCM_TEST_* drive the test suite.
            raise _unknown_key_error(key, f"the environment variable {name}")
    return values


def secrets_in_file(path: str | os.PathLike[str]) -> list[str]:
    """The secret keys (S3 keys, the socket's secrets, the MQTT password) that the file
    itself sets to something, sorted: whoever may read the file has them."""
    values = _parse_file(Path(path))
    return sorted(k for k, v in values.items() if KEYS[k].secret and v.strip())


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    return parse(read_raw(path, os.environ if environ is None else environ))
