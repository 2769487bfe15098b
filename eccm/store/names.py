"""File names of the record directory: the one place they are made and taken apart.

Data files ``{CAR}_{TRIP_ID}_{SEQ:04d}{EXT}`` (``.part`` while open, ``.gz`` appended when
compressed, ``.json`` appended for the sidecar), the open file's ``.part.meta.json``, temp
files ``.tmp``, trip summaries ``{CAR}_{TRIP_ID}_summary.json`` and the ``uploaded/``
folder. The recorder, the uploader, the disk budget and the summary writer all use these
definitions: two patterns had drifted apart (the recorder wrote a 10-digit sequence number
that the uploader's pattern did not accept, so that file was never uploaded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

PART = ".part"
GZ = ".gz"
SIDECAR = ".json"
META = ".part.meta.json"
TMP = ".tmp"
UPLOADED_DIR = "uploaded"
SUMMARY_SUFFIX = "_summary.json"
AUDIT_SUFFIX = "_dtc-clear.json"
# Appended to a closed file encrypted for FILE_ENCRYPTION_RECIPIENTS (x.tsv.gz.age, its
# sidecar x.tsv.gz.age.json); ".age.tmp" while it is written.
AGE = ".age"

# The parts of a name. A car id is checked harder by the configuration (a letter or digit
# first); names written under older rules must still be recognised, uploaded and expired.
CAR_PATTERN = r"[A-Za-z0-9._-]{1,64}"
TRIP_PATTERN = r"\d{8}T\d{6}Z"
SEQ_PATTERN = r"\d{4,}"  # 0001 and up: a trip may outgrow four digits, never fewer


def data_name(car: str, trip: str, seq: int, ext: str) -> str:
    """``{CAR}_{TRIP_ID}_{SEQ:04d}{EXT}``: the name of a closed, uncompressed file."""
    return f"{car}_{trip}_{seq:04d}{ext}"


def uploaded_name(name: str, compression: str) -> str:
    """The data file as it is uploaded: ``x.tsv.gz`` when compressed, else ``x.tsv``."""
    return name + GZ if compression == "gzip" else name


def sidecar_name(uploaded: str) -> str:
    return uploaded + SIDECAR


def _prefix(car: str, trip: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{car}_{trip}_") + f"({SEQ_PATTERN})(?:\\.|$)")


def used_seqs(car: str, trip: str, names: Iterable[str]) -> set[int]:
    """Sequence numbers taken by any file of that trip (data, part, sidecar, temp, ledger)."""
    pattern = _prefix(car, trip)
    out: set[int] = set()
    for name in names:
        m = pattern.match(name)
        if m:
            out.add(int(m.group(1)))
    return out


def next_seq(car: str, trip: str, names: Iterable[str]) -> int:
    """The next free SEQ of a trip: one past the highest ever seen, from 1.

    Past the highest rather than the first gap: a gap is a file already uploaded and
    deleted, and reusing its number would overwrite that object in the bucket.
    """
    return max(used_seqs(car, trip, names), default=0) + 1


_LEDGER_NAME = re.compile(f"(.+_{TRIP_PATTERN}_)({SEQ_PATTERN})")


def trim_ledger(names: list[str], keep: int, trips_keep: int) -> list[str]:
    """The ledger of used names, cut to the last ``keep`` names plus, for each older trip
    (up to ``trips_keep`` of them), its name with the highest sequence number.

    A Pi that boots to the same time every day reuses trip ids; the highest name of each
    trip is what keeps a reused id from ever naming a file like one already uploaded and
    deleted (and from being taken as a new trip's id). The names of audit records of DTC
    clears are kept likewise (eccm/store/audit.py).
    """
    if len(names) <= keep:
        return list(names)
    older, recent = names[:-keep], names[-keep:]
    best: dict[str, tuple[int, str]] = {}
    for name in older:
        m = _LEDGER_NAME.match(name)
        if m is not None:
            key, seq = m.group(1), int(m.group(2))
        elif parse_audit_name(name) is not None:
            key, seq = name, 0  # an audit record's name is kept like a trip's last name
        else:
            continue
        if key not in best or seq > best[key][0]:
            best.pop(key, None)  # re-inserted last: dicts keep the order of insertion
            best[key] = (seq, name)
    kept = [name for _seq, name in best.values()]
    return kept[-trips_keep:] + recent


def stem_of(name: str, ext: str) -> str | None:
    """``x.tsv`` for any file the recorder makes from it (``x.tsv.part``, ``x.tsv.gz.json``...).

    None for names the recorder does not own. The stem ends with the extension, so the
    files of another extension in the same directory are left alone.
    """
    idx = name.find(ext)
    while idx != -1:
        stem, rest = name[: idx + len(ext)], name[idx + len(ext) :]
        if rest in _SUFFIXES and parse_stem(stem, ext) is not None:
            return stem
        idx = name.find(ext, idx + 1)
    return None


_STEM = re.compile(f"({CAR_PATTERN})_({TRIP_PATTERN})_({SEQ_PATTERN})")
# The extensions config.py accepts for MONITORING_FILE_EXTENSION.
_ANY_STEM = re.compile(f"{CAR_PATTERN}_{TRIP_PATTERN}_{SEQ_PATTERN}" + r"(\.[A-Za-z0-9]{1,10})")
_NOT_EXTENSIONS = frozenset({".part", ".json", ".gz", ".tmp"})


def any_stem(name: str) -> str | None:
    """:func:`stem_of` whatever the stem's extension: a file an earlier configuration (with
    another MONITORING_FILE_EXTENSION) left open or half-closed is still ECCM's to close."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            stem = name[: len(name) - len(suffix)]
            if extension_of(stem) is not None:
                return stem
    return None


def extension_of(stem: str) -> str | None:
    """``.tsv`` of ``{CAR}_{TRIP_ID}_{SEQ}.tsv``; None for any other name."""
    m = _ANY_STEM.fullmatch(stem)
    if m is None or m.group(1).lower() in _NOT_EXTENSIONS:
        return None
    return m.group(1)


def parse_stem(stem: str, ext: str) -> tuple[str, str, int] | None:
    """(car, trip, seq) of ``{CAR}_{TRIP_ID}_{SEQ}{EXT}``; None for anyone else's file."""
    if not stem.endswith(ext):
        return None
    m = _STEM.fullmatch(stem[: -len(ext)])
    if m is None:
        return None
    return m.group(1), m.group(2), int(m.group(3))


_SUFFIXES = frozenset(
    {
        "",
        PART,
        GZ,
        SIDECAR,
        GZ + SIDECAR,
        META,
        GZ + TMP,
        SIDECAR + TMP,
        GZ + SIDECAR + TMP,
        META + TMP,
    }
)


_SUMMARY_NAME = re.compile(
    f"(?P<car>{CAR_PATTERN})_(?P<trip>{TRIP_PATTERN})" + re.escape(SUMMARY_SUFFIX) + r"(?:\.age)?"
)
_DATA_NAME = re.compile(
    f"(?P<car>{CAR_PATTERN})_(?P<trip>{TRIP_PATTERN})_(?P<seq>{SEQ_PATTERN})"
    r"(?P<ext>\.[A-Za-z0-9]{1,10})(?P<gz>\.gz)?(?P<age>\.age)?"
)


@dataclass(frozen=True, order=True)
class DataName:
    """A data file name taken apart; ordering is oldest first (trip, then sequence)."""

    trip: str
    seq: int
    car: str
    name: str

    @property
    def sidecar(self) -> str:
        return self.name + SIDECAR

    @property
    def trip_epoch(self) -> float:
        """Start of the trip (seconds since the epoch, UTC)."""
        return datetime.strptime(self.trip, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()

    @property
    def trip_date(self) -> str:
        return f"{self.trip[0:4]}-{self.trip[4:6]}-{self.trip[6:8]}"


def parse_data_name(name: str) -> DataName | None:
    """The parts of a closed data file name, or None for any other name."""
    m = _DATA_NAME.fullmatch(name)
    if m is None:
        return None
    try:
        datetime.strptime(m["trip"], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return DataName(trip=m["trip"], seq=int(m["seq"]), car=m["car"], name=name)


def parse_sidecar_name(name: str) -> DataName | None:
    """For ``x.tsv.gz.json``, the DataName of ``x.tsv.gz``; None for any other name."""
    if not name.endswith(SIDECAR):
        return None
    return parse_data_name(name[: -len(SIDECAR)])


def summary_name(car: str, trip: str) -> str:
    """``{CAR}_{TRIP}_summary.json``: the trip summary (tripsummary.py)."""
    return f"{car}_{trip}{SUMMARY_SUFFIX}"


@dataclass(frozen=True, order=True)
class SummaryName:
    """A trip summary's name taken apart; ordering is oldest first."""

    trip: str
    car: str
    name: str

    @property
    def trip_date(self) -> str:
        """The partition of a summary: UTC date of the trip's start (its first row)."""
        return f"{self.trip[0:4]}-{self.trip[4:6]}-{self.trip[6:8]}"


def parse_summary_name(name: str) -> SummaryName | None:
    """The parts of a finished trip summary's name, or None for any other name.

    A summary is written atomically when its trip ends, so one that exists is complete;
    its checkpoints end in ``.part`` and temp files in ``.tmp``: neither matches.
    """
    m = _SUMMARY_NAME.fullmatch(name)
    if m is None:
        return None
    try:
        datetime.strptime(m["trip"], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return SummaryName(trip=m["trip"], car=m["car"], name=name)


_AUDIT_NAME = re.compile(
    f"(?P<car>{CAR_PATTERN})_(?P<trip>{TRIP_PATTERN})" + re.escape(AUDIT_SUFFIX) + r"(?:\.age)?"
)


def audit_name(car: str, when: float) -> str:
    """``{CAR}_{YYYYMMDDTHHMMSSZ}_dtc-clear.json``: the audit record of a trouble-code clear
    (or of its refusal) at UTC epoch ``when``."""
    stamp = datetime.fromtimestamp(int(when), UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{car}_{stamp}{AUDIT_SUFFIX}"


def parse_audit_name(name: str) -> SummaryName | None:
    """An audit record's name taken apart (its time in ``trip``), or None.

    A SummaryName, since it travels like one: written atomically, complete once it exists,
    uploaded on its own to the partition of its date.
    """
    m = _AUDIT_NAME.fullmatch(name)
    if m is None:
        return None
    try:
        datetime.strptime(m["trip"], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return SummaryName(trip=m["trip"], car=m["car"], name=name)


def parse_single_name(name: str) -> SummaryName | None:
    """A file that travels alone, without a sidecar: a trip summary or an audit record."""
    return parse_summary_name(name) or parse_audit_name(name)


def trip_ids(car: str, names: Iterable[str]) -> set[str]:
    """The trip ids of ``car`` that any of ``names`` carries (data files, sidecars, parts,
    temp files, summaries, ledger lines)."""
    pattern = re.compile(re.escape(car) + f"_({TRIP_PATTERN})_")
    return {m.group(1) for n in names if (m := pattern.match(n))}
