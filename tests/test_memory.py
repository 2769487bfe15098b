"""The daemon's memory settings (eccm.memory): pint without numpy decodes every value as
with it, and glibc takes the malloc settings. Each case runs in a fresh interpreter: the
settings are made once per process, before python-OBD is imported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.waiting import wait_until

# Every mode 01/02 value python-OBD decodes, for a few answers each, as repr of (value,
# unit): what the daemon would log. ``BLOCK`` says whether numpy is kept out first.
DECODE_ALL = """
import json, sys
from eccm.memory import keep_numpy_out
if {block}:
    assert keep_numpy_out()
import obd
from obd.protocols.protocol import Message
from eccm.obd.values import is_loggable, reading_of

def answer(cmd, payload):
    msg = Message([])
    msg.data = bytearray([0x40 | cmd.mode, cmd.pid]) + bytearray(payload)
    msg.ecu = obd.ECU.ENGINE
    return [msg]

out = {{}}
for mode in (1, 2):
    for cmd in obd.commands.modes[mode]:
        if not cmd or not is_loggable(cmd):
            continue
        size = max(0, cmd.bytes - 2)
        for payload in (bytes(size), b"\\xff" * size, bytes(range(1, size + 1)),
                        bytes((37 * i + 11) % 256 for i in range(size))):
            try:
                r = reading_of(cmd(answer(cmd, payload)), 1.0)
                got = repr((r.value, r.unit))
            except Exception as exc:
                got = "error " + type(exc).__name__
            out[cmd.name + " " + payload.hex()] = got
print(json.dumps({{"numpy": "numpy" in sys.modules and sys.modules["numpy"] is not None,
                  "values": out}}))
"""


def _run(code: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy() if env is None else env,
    ).stdout


def test_pint_without_numpy_decodes_every_value_as_with_it() -> None:
    without = json.loads(_run(DECODE_ALL.format(block=True)))
    with_it = json.loads(_run(DECODE_ALL.format(block=False)))
    assert without["numpy"] is False
    if importlib.util.find_spec("numpy") is not None:
        assert with_it["numpy"] is True  # the comparison below is with numpy in pint
    assert len(without["values"]) > 300
    assert sum(not v.startswith("error") for v in without["values"].values()) > 250
    assert without["values"] == with_it["values"]


def test_numpy_already_imported_is_left_alone() -> None:
    pytest.importorskip("numpy")
    code = "import numpy\nfrom eccm.memory import keep_numpy_out\nprint(keep_numpy_out())"
    assert _run(code).strip() == "False"


GLIBC = hasattr(__import__("ctypes").CDLL(None), "gnu_get_libc_version")


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_glibc_takes_the_malloc_settings_and_the_environment_has_the_last_word() -> None:
    code = "from eccm.memory import tune_malloc\nprint(' '.join(tune_malloc()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _run(code, env=env).split() == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]
    # A user's MALLOC_ARENA_MAX (the documented glibc variable) is not overridden.
    assert _run(code, env={**env, "MALLOC_ARENA_MAX": "4"}).split() == ["MALLOC_MMAP_THRESHOLD_"]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_heap_trimmer_gives_free_pages_back_now_and_then() -> None:
    from eccm.memory import HeapTrimmer, trim_heap

    # Free pages inside the heap: many blocks freed, one kept at the end of them.
    blocks = [bytearray(4000) for _ in range(5000)]
    keep = blocks[-1]
    del blocks
    assert isinstance(trim_heap(), bool)
    trimmer = HeapTrimmer(0.01)
    trimmer.start()
    try:
        wait_until(lambda: trimmer.trims >= 2, 10, "two trims")
    finally:
        trimmer.stop()
    assert keep == bytearray(4000)
