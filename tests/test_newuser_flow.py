"""The README's first steps on a fresh machine with nothing plugged in.

cp config.ini.template config.ini; eccm check-config; eccm run; Ctrl-C. Every step ends
with clear words and a sane exit code, never a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECCM_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def template_copy(where: Path) -> Path:
    """config.ini as the README makes it, with the devices pointed at absent paths."""
    text = (ROOT / "config.ini.template").read_text(encoding="utf-8")
    text = text.replace("OBD_INTERFACE=/dev/obd", f"OBD_INTERFACE={where / 'obd'}")
    text = text.replace("GPS_INTERFACE=/dev/gnss", f"GPS_INTERFACE={where / 'gnss'}")
    config = where / "config.ini"
    config.write_text(text, encoding="utf-8")
    return config


def test_check_config_of_the_template_notes_the_missing_devices(tmp_path: Path) -> None:
    config = template_copy(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=environment(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# {config}: valid\n[DEFAULT]\n")
    # stdout stays a configuration; what will not work yet goes to stderr.
    assert "note" not in proc.stdout
    assert f"OBD_INTERFACE={tmp_path / 'obd'} does not exist now" in proc.stderr
    assert f"GPS_INTERFACE={tmp_path / 'gnss'} does not exist now" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_with_nothing_plugged_in_says_so_once_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = template_copy(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(proc.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("ECCM running" in line for line in lines), WAIT, "the start")
        wait_until(
            lambda: any("cannot connect to the OBD adapter" in line for line in lines),
            WAIT,
            "the adapter's warning",
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(WAIT)
        reader.join(10)
    output = "".join(lines)
    assert code == 0, output
    assert "Traceback" not in output
    assert " ERROR " not in output, output  # a missing device is expected: a WARNING
    warnings = [line for line in lines if " WARNING " in line]
    assert len([w for w in warnings if "OBD adapter" in w]) == 1
    assert len([w for w in warnings if "GNSS receiver" in w]) == 1
    assert "plugged in" in output
    assert "received SIGINT" in output and "stopped in" in output
    # The record directory of the template exists; nothing was recorded without devices.
    records = tmp_path / "records"
    assert records.is_dir()
    assert not [p for p in records.iterdir() if p.name.endswith((".tsv", ".gz"))]
