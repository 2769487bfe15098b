"""python-OBD imported with pint's definition cache decodes exactly as python-OBD alone.

Each import runs in a fresh interpreter (python-OBD builds its registry once per process):
python-OBD alone, then with an empty cache (which writes it), then from the cache, then
from a cache cut short as by a power cut. Each prints every unit of python-OBD's registry
and every command's decoding of a few answers; all must be the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# What python-OBD's registry and decoders give, as text: each unit's definition, and each
# command's decoding of answers of all zeros, all ones, and 0x7F then 0x80s (mode, PID and
# data bytes, as the adapter hands them to the decoder).
DIGEST = """
import re, sys
from pathlib import Path
def shown(value):
    text = repr(value) + (repr(sorted(vars(value).items(), key=str)) if hasattr(value, "__dict__") else "")
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)
if sys.argv[1] != "plain":
    from eccm.obd.importing import import_python_obd
    import_python_obd(Path(sys.argv[1]))
import obd
from obd.protocols.protocol import Message
units = obd.Unit
# pint adds some prefixed units (centipoise...) to its table as it meets them; parsing
# the definitions meets a few that reading them from the cache does not: each name of the
# list (argv[2]) is looked up first, so both tables hold every unit either met.
for name in Path(sys.argv[2]).read_text().split():
    try:
        units.Unit(name)
    except Exception:  # a name pint's parser reads otherwise ("%"): in the table already
        pass
for name in sorted(units._units):
    print("unit", name, shown(units._units[name]))
for name in sorted(n for n in vars(obd.commands) if obd.commands.has_name(n)):
    cmd = obd.commands[name]
    if cmd.mode is None:
        continue
    head = bytearray([(cmd.mode | 0x40) & 0xFF]) + (bytearray([cmd.pid & 0xFF]) if cmd.pid is not None else b"")
    size = max(0, cmd.bytes - len(head))
    for fill in (b"\\x00" * size, b"\\xff" * size, (b"\\x7f" + b"\\x80" * size)[:size]):
        msg = Message([])
        msg.data = head + bytearray(fill)
        try:
            value = cmd.decode([msg])
        except Exception as exc:
            value = type(exc).__name__
        print("decode", name, fill.hex(), shown(value), str(getattr(value, "units", "")))
print("speed", repr(units.Quantity(100, units.kph).to("mph")))
"""


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units in python-OBD's registry, with those a cached one holds too."""
    path = tmp_path_factory.mktemp("names") / "units.txt"
    path.write_text("")
    cache = tmp_path_factory.mktemp("cache") / "pint"
    met = set()
    for cache_arg in ("plain", str(cache), str(cache)):
        out = subprocess.run(
            [sys.executable, "-c", DIGEST, cache_arg, str(path)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        met |= {line.split()[1] for line in out.splitlines() if line.startswith("unit ")}
    path.write_text("\n".join(sorted(met)))
    return path


def digest(cache: str, names: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", DIGEST, cache, str(names)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.fixture(scope="module")
def plain(names: Path) -> str:
    text = digest("plain", names)
    assert text.count("decode ") > 300 and text.count("unit ") > 100
    return text


def test_from_an_empty_cache_then_from_the_cache_the_same_units_and_values(
    plain: str, names: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "pint"
    assert digest(str(cache), names) == plain
    assert any(cache.glob("*.pickle"))  # written by the first
    assert digest(str(cache), names) == plain


def test_a_cache_cut_short_is_parsed_anew_and_written_again(
    plain: str, names: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "pint"
    digest(str(cache), names)
    for pickle in cache.glob("*.pickle"):
        pickle.write_bytes(pickle.read_bytes()[:100])
    assert digest(str(cache), names) == plain  # parsed, the cache removed
    assert digest(str(cache), names) == plain  # written again, and read
    assert all(p.stat().st_size > 100 for p in cache.glob("*.pickle"))
