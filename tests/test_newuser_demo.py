"""`eccm demo` as a new user runs it: from anywhere, stopped by Ctrl-C at any moment.

Real subprocesses in their own session (a terminal's Ctrl-C reaches the whole process
group), the real emulator, NMEA simulator and SeaweedFS.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
WAIT = 90.0  # generous: the suite shares two cores with other work


class Demo:
    """``eccm demo`` in its own process group, its output collected line by line."""

    def __init__(self, cwd: Path, invoked_from: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECCM_")}
        env["ECCM_INVOKED_FROM"] = str(invoked_from)  # what start.sh passes on
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eccm.cli", "demo", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait()

    def wait(self) -> int:
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(10)
        return code

    def group_is_gone(self) -> bool:
        """No process of the demo's group is left (SeaweedFS, helpers)."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return True
        return False


@pytest.mark.slow
def test_the_printed_commands_work_from_where_the_user_typed_and_ctrl_c_ends_cleanly(
    tmp_path: Path,
) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    demo = Demo(repo, elsewhere)
    try:
        status = wait_until(
            lambda: [line.strip() for line in demo.lines if line.strip().endswith(" STATUS")],
            WAIT,
            "the demo to print its commands",
        )[0]
        words = shlex.split(status)

        # Run exactly as printed, from the user's directory, once the car answers.
        def connected() -> bool:
            proc = subprocess.run(words, cwd=elsewhere, capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return json.loads(proc.stdout)["obd"] == "connected"

        wait_until(connected, WAIT, "the demo's car to be connected")
    finally:
        code = demo.interrupt()
    assert code == 0, demo.output
    assert "Traceback" not in demo.output
    wait_until(demo.group_is_gone, 30, "the demo's processes (SeaweedFS) to end")
    assert "ECCM demo stopped" in demo.output
    # The emulator's own chatter about ECCM's probes is not shown to the user.
    assert "Unknown ELM command" not in demo.output


@pytest.mark.slow
def test_ctrl_c_while_the_demo_starts_leaves_no_traceback_and_no_process(tmp_path: Path) -> None:
    demo = Demo(tmp_path, tmp_path)
    wait_until(lambda: any("starting" in line for line in demo.lines), WAIT, "the demo to start")
    code = demo.interrupt()
    assert code in (0, 130), demo.output
    assert "Traceback" not in demo.output
    wait_until(demo.group_is_gone, 30, "the demo's processes (SeaweedFS) to end")


@pytest.mark.slow
def test_a_short_demo_ends_with_its_json_line(tmp_path: Path) -> None:
    started = time.monotonic()
    demo = Demo(tmp_path, tmp_path, "--duration", "3")
    assert demo.wait() == 0, demo.output
    assert time.monotonic() - started < WAIT
    summary = json.loads(demo.lines[-1])
    assert set(summary) == {"rows", "files_closed", "objects_uploaded"}
    assert "Traceback" not in demo.output
    assert demo.group_is_gone()


@pytest.mark.parametrize("duration", ["0", "-5", "nan", "soon"])
def test_a_duration_that_is_not_a_positive_number_is_refused(duration: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "demo", "--duration", duration],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "not a number of seconds above 0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_printed_decrypt_command_names_the_same_eccm_as_the_other_commands(
    tmp_path: Path,
) -> None:
    # `eccm` alone is not on PATH after start.sh: the venv's, as the query lines print it.
    demo = Demo(tmp_path, tmp_path, "--encrypt", "--duration", "3")
    assert demo.wait() == 0, demo.output
    status = next(line.strip() for line in demo.lines if line.strip().endswith(" STATUS"))
    eccm = shlex.split(status)[0]
    decrypt = next(line for line in demo.lines if "encryption:" in line)
    assert f"`{eccm} decrypt -i demo-data/key.txt FILE.age`" in decrypt, decrypt
    assert os.access(tmp_path / eccm, os.X_OK), eccm  # relative to where it was typed


class _GoneServer:
    """The demo's S3 server after a kill: a real client to a port nobody listens on."""

    bucket = "eccm-demo"

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]  # closed again: connections are refused

    def client(self, timeout: float = 10.0) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
            config=Config(connect_timeout=timeout, retries={"max_attempts": 1}),
        )


def test_the_demos_last_line_survives_a_killed_s3_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A user who kills the demo's SeaweedFS mid-run gets the final line, not a traceback
    (the count of uploaded objects is then unknown: null)."""
    from eccm.sim.demo import _count_data_objects

    assert _count_data_objects(_GoneServer()) is None
    assert "cannot count the bucket's objects" in capsys.readouterr().err


def test_a_folder_that_is_not_a_demos_is_refused_before_anything_is_deleted(
    tmp_path: Path,
) -> None:
    """Found: `eccm demo --dir .` in a car's own folder deleted its records/ (files not
    uploaded yet) and overwrote its config.ini without a word."""
    (tmp_path / "records").mkdir()
    data = tmp_path / "records" / "my-car_20261201T000000Z_0001.tsv.gz"
    data.write_bytes(b"not uploaded yet")
    config = tmp_path / "config.ini"
    config.write_text("[DEFAULT]\nCAR_IDENTIFIER=my-car\nRECORD_DIRECTORY_LOCATION=./records\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x\n")
    for folder in (".", str(blocker), str(blocker / "sub")):
        proc = subprocess.run(
            [sys.executable, "-m", "eccm.cli", "demo", "--dir", folder, "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("eccm: error: --dir "), proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert (
        "is not a demo folder (it holds a-file, config.ini, records)"
        in subprocess.run(
            [sys.executable, "-m", "eccm.cli", "demo", "--dir", ".", "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        ).stderr
    )
    assert data.read_bytes() == b"not uploaded yet"
    assert config.read_text().startswith("[DEFAULT]\nCAR_IDENTIFIER=my-car")


def test_a_demos_own_folder_new_or_empty_is_taken_and_marked(tmp_path: Path) -> None:
    from eccm.sim.demo import DEMO_MARK, claim_folder, write_config

    new = tmp_path / "new" / "demo"
    claim_folder(new)
    assert (new / DEMO_MARK).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_folder(empty)
    assert (empty / DEMO_MARK).is_file()
    # A folder of a demo from before the mark: known by its generated config.ini.
    older = tmp_path / "older"
    (older / "records").mkdir(parents=True)
    write_config(older / "config.ini", {"CAR_IDENTIFIER": "demo-car"})
    claim_folder(older)
    assert (older / DEMO_MARK).is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mqtt://[::1", "eccm: error: --mqtt is not a broker URL: expected mqtt[s]://"),
        ("ftp://broker", "eccm: error: MQTT_BROKER='ftp://broker' is not valid"),
    ],
)
def test_a_bad_mqtt_url_is_refused_before_anything_starts(
    tmp_path: Path, url: str, message: str
) -> None:
    """Found: an unclosed IPv6 bracket was a ValueError traceback, and a bad scheme was
    refused only after the S3 server and the car had started."""
    proc = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "demo", "--dir", "d", "--mqtt", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "d").exists()  # nothing made, nothing started
