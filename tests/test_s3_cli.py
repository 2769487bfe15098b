"""`eccm upload --config PATH` as a user runs it: a real subprocess against SeaweedFS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.sim.s3 import LocalS3
from tests import s3server
from tests.s3_helpers import assert_each_file_once, bucket_objects, upload_cmd, write_config
from tests.s3server import CAR, FlakyLink, config_values, list_objects, make_closed_file
from tests.unprivileged import bound_by_permissions
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
UPLOADER = Path(__file__).with_name("uploader_run.py")


def eccm_upload(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(upload_cmd(config), cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def link(s3_http: LocalS3) -> Iterator[FlakyLink]:
    proxy = FlakyLink((s3_http.host, s3_http.s3_port))
    proxy.healthy()
    yield proxy
    proxy.close()


def test_eccm_upload_says_what_happened_and_exits_accordingly(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    values = config_values(records, s3_http)
    config = write_config(tmp_path / "config.ini", values)

    empty = eccm_upload(config)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == f"nothing to upload in {records}\n"
    assert empty.stderr == ""  # no progress bar for nothing

    files = {
        p.name: p.read_bytes() for p in (make_closed_file(records, seq=i) for i in range(1, 6))
    }
    wrong = eccm_upload(write_config(tmp_path / "bad.ini", dict(values, S3_SERVER_SK="nope")))
    assert wrong.returncode == 1
    # The reason once (not also as a log line across the progress bar), no traceback.
    assert wrong.stderr.count("rejected the credentials (SignatureDoesNotMatch)") == 1, wrong.stderr
    assert "eccm upload: " in wrong.stderr and "Traceback" not in wrong.stderr

    with_port = "http://127.0.0.1:9"  # discard: nothing listens there
    down = eccm_upload(
        write_config(tmp_path / "down.ini", dict(values, S3_SERVER_ENDPOINT=with_port))
    )
    assert down.returncode == 1
    assert down.stderr.count(f"cannot reach {with_port} (connection refused)") == 1, down.stderr
    assert sorted(p.name for p in records.iterdir()) == sorted(
        [*files, *(n + ".json" for n in files)]
    )

    good = eccm_upload(config)
    assert good.returncode == 0, good.stderr
    assert "5/5" in good.stderr  # the progress bar
    assert good.stdout.startswith("uploaded 5 file(s) to s3://")
    assert list(records.iterdir()) == []
    cfg = s3server.make_config(records, s3_http, S3_KEY_PREFIX=values["S3_KEY_PREFIX"])
    assert_each_file_once(s3_http, cfg, files)


def test_ctrl_c_mid_upload_leaves_a_consistent_state_and_a_clear_line(
    s3_http: LocalS3, link: FlakyLink, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    files: dict[str, bytes] = {}
    for seq in range(1, 21):
        p = make_closed_file(records, seq=seq, gz=False, payload=os.urandom(60_000))
        files[p.name] = p.read_bytes()
    values = config_values(records, s3_http, S3_SERVER_ENDPOINT=link.endpoint)
    config = write_config(tmp_path / "config.ini", values)
    cfg = s3server.make_config(records, s3_http, S3_KEY_PREFIX=values["S3_KEY_PREFIX"])
    link.throttle(400_000)  # a cellular uplink: several seconds for the backlog

    proc = subprocess.Popen(
        upload_cmd(config), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: len(bucket_objects(s3_http, cfg)) >= 4, timeout=60, what="uploads")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "eccm upload: interrupted;" in err and "nothing lost: run it again" in err

    # Every file is still here with its sidecar; or its data object is verified in the
    # bucket and its sidecar is here (to be finished) or in the bucket too.
    local = {p.name for p in records.iterdir()}
    remote = {k.rsplit("/", 1)[1] for k in bucket_objects(s3_http, cfg)}
    for name in files:
        assert name in local or name in remote, name
        assert name + ".json" in local or name + ".json" in remote, name
        if name in local:
            assert name + ".json" in local, name
    assert len(local) < 2 * len(files), "nothing was uploaded before the interruption"

    link.throttle(0)
    again = eccm_upload(config)
    assert again.returncode == 0, again.stderr
    assert list(records.iterdir()) == []
    assert_each_file_once(s3_http, cfg, files)
    assert CAR in again.stdout


def test_files_of_an_earlier_car_identifier_are_said_to_go_under_their_own_car(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    """Found: after CAR_IDENTIFIER changed (my-car of the template, then the plate), the
    old car's files went to car=my-car/ as their names say, but the line named the new
    car's prefix only."""
    records = tmp_path / "records"
    records.mkdir()
    values = config_values(records, s3_http)
    config = write_config(tmp_path / "config.ini", values)
    make_closed_file(records, car="my-car", seq=1)
    make_closed_file(records, seq=2)
    done = eccm_upload(config)
    assert done.returncode == 0, done.stderr
    prefix = values["S3_KEY_PREFIX"].strip("/")
    bucket = values["S3_SERVER_BUCKET"]
    first, second = sorted([CAR, "my-car"])
    assert done.stdout == (
        f"uploaded 2 file(s) to s3://{bucket}/{prefix}/car={first}/, "
        f"s3://{bucket}/{prefix}/car={second}/; nothing left\n"
    )
    assert len(list_objects(s3_http, f"{prefix}/car=my-car/")) == 2  # data and sidecar


def test_a_record_folder_that_does_not_exist_is_not_nothing_to_upload(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    """Found: a RECORD_DIRECTORY_LOCATION typo (or a drive not mounted) printed "nothing
    to upload in DIR" and exit 0."""
    missing = tmp_path / "recrods"
    config = write_config(tmp_path / "config.ini", config_values(missing, s3_http))
    done = eccm_upload(config)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"eccm upload: RECORD_DIRECTORY_LOCATION={missing} is not a folder (a typo, or a "
        "drive not mounted?): no file to upload there\n"
    )
    assert not missing.exists()


def test_a_record_folder_this_user_may_not_enter_is_one_line_not_a_traceback(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    """Found: RECORD_DIRECTORY_LOCATION under a mount point the user may not enter (a USB
    stick not mounted yet under a root-only /mnt/usb) made every upload run of the daemon
    log two ERROR lines and a traceback ('upload run failed unexpectedly ...
    PermissionError'), and `eccm upload` print a traceback. The recorder's ERROR line
    says why (once); the uploader finds nothing to send there, `eccm upload` says so."""
    closed = tmp_path / "mnt"
    closed.mkdir()
    # With encryption on too: its pass over the folder said a WARNING at every run.
    recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    values = config_values(closed / "records", s3_http, FILE_ENCRYPTION_RECIPIENTS=recipient)
    config = write_config(tmp_path / "config.ini", values)
    closed.chmod(0o000)
    try:
        cli = subprocess.run(
            [*bound_by_permissions(), *upload_cmd(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        daemon = subprocess.run(
            [*bound_by_permissions(), sys.executable, str(UPLOADER), json.dumps(values)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        closed.chmod(0o755)
    assert cli.returncode == 1
    assert cli.stderr == (
        f"eccm upload: RECORD_DIRECTORY_LOCATION={closed / 'records'} cannot be read by this "
        "user (permission denied: a drive not mounted yet, or ECCM runs as another user?): "
        "no file to upload there\n"
    )
    # The daemon's uploader (with its disk budget): nothing waiting, nothing said.
    assert daemon.returncode == 0, daemon.stderr
    assert daemon.stderr == ""
