"""Files encrypted for their reader (issue 15, SPEC §4): age format via pyrage, read back
with Debian's `age` tool and with `eccm decrypt`; a SIGKILL at each step of the sealing
never leaves a plaintext file for the uploader and never loses one."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eccm import config as eccm_config
from eccm.cli import main
from eccm.crypto.encrypt import LOCK_NAME, STEPS, Encryptor
from eccm.errors import ConfigError
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import plan, probe_key
from tests.s3_helpers import write_config
from tests.s3server import CAR, config_values, get_object, list_objects, make_closed_file
from tests.terminal import ECCM
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("encrypt_run.py")
AGE_TOOL = shutil.which("age")
needs_age = pytest.mark.skipif(
    AGE_TOOL is None, reason="Debian's age is not installed (./test.sh installs it as root)"
)
TRIP = "20261122T021500Z"
WAIT = 60.0  # generous: the suite shares two cores with other work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keypair(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    key = folder / "key.txt"
    assert main(["keygen", "-o", str(key)]) == 0
    recipient = capsys.readouterr().out.strip()
    return key, recipient


def age_decrypt(key: Path, path: Path) -> bytes:
    assert AGE_TOOL is not None
    done = subprocess.run(
        [AGE_TOOL, "-d", "-i", str(key), str(path)], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recipients_are_checked_and_a_private_key_is_refused_without_echo(tmp_path: Path) -> None:
    good = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    cfg = eccm_config.parse(config_values(tmp_path, FILE_ENCRYPTION_RECIPIENTS=f" {good} ,{good}"))
    assert cfg.file_encryption_recipients == (good,)
    assert eccm_config.parse(config_values(tmp_path)).file_encryption_recipients == ()
    secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    with pytest.raises(ConfigError, match="FILE_ENCRYPTION_RECIPIENTS") as err:
        eccm_config.parse(config_values(tmp_path, FILE_ENCRYPTION_RECIPIENTS=secret))
    assert secret not in str(err.value) and "private key" in str(err.value)
    with pytest.raises(ConfigError, match="FILE_ENCRYPTION_RECIPIENTS"):
        eccm_config.parse(config_values(tmp_path, FILE_ENCRYPTION_RECIPIENTS="age1nope"))


def test_a_malformed_recipient_among_several_is_named_in_one_line(tmp_path: Path) -> None:
    good = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    typo = good[:-1] + "b"  # 'b' is no bech32 character: a key mistyped when copied
    with pytest.raises(ConfigError) as err:
        eccm_config.parse(config_values(tmp_path, FILE_ENCRYPTION_RECIPIENTS=f"{good},{typo}"))
    message = str(err.value)
    # The whole value cut at 80 characters showed the good key and hid the one at fault.
    assert typo in message and good not in message and "\n" not in message
    ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpuf0ORNQ9ZW8Fs4yUsMmK7lQ me@laptop"
    with pytest.raises(ConfigError, match="SSH public key; only age public keys") as err:
        eccm_config.parse(config_values(tmp_path, FILE_ENCRYPTION_RECIPIENTS=f"{good},{ssh}"))
    assert "\n" not in str(err.value)


@needs_age
def test_sealed_files_decrypt_with_age_and_eccm_to_the_exact_plaintext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, recipient = keypair(tmp_path, capsys)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    rec = tmp_path / "rec"
    data = make_closed_file(rec, rows=300)
    original = data.read_bytes()
    summary = rec / f"{CAR}_{TRIP}_summary.json"
    summary.write_text(json.dumps({"trip": TRIP, "distance_km": 12.5}) + "\n")
    summary_bytes = summary.read_bytes()
    assert Encryptor(rec, [recipient]).seal_all() == 2
    assert sorted(os.listdir(rec)) == sorted(
        [LOCK_NAME, data.name + ".age", data.name + ".age.json", summary.name + ".age"]
    )
    sealed = rec / (data.name + ".age")
    assert age_decrypt(key, sealed) == original
    assert age_decrypt(key, rec / (summary.name + ".age")) == summary_bytes
    side = json.loads((rec / (data.name + ".age.json")).read_text())
    assert side["file"] == sealed.name and side["size"] == sealed.stat().st_size
    assert side["first_time"] == "2026-11-22"  # a date, nothing finer
    assert not {"vin", "last_time", "rows", "time_source"} & set(side)
    out = tmp_path / "out"
    assert main(["decrypt", "-i", str(key), "-o", str(out), str(sealed)]) == 0
    assert (out / data.name).read_bytes() == original
    # A wrong identity: a clear message, exit 1, nothing written.
    (tmp_path / "other").mkdir()
    other, _ = keypair(tmp_path / "other", capsys)
    assert main(["decrypt", "-i", str(other), "-o", str(tmp_path / "o2"), str(sealed)]) == 1
    assert "no identity of the key file opens it" in capsys.readouterr().err
    assert not list((tmp_path / "o2").glob("*"))
    # A file that does not match its sidecar is refused before it is read.
    with sealed.open("ab") as f:
        f.write(b"x")
    assert main(["decrypt", "-i", str(key), "-o", str(tmp_path / "o3"), str(sealed)]) == 1
    assert "does not match its sidecar" in capsys.readouterr().err


def test_a_plaintext_upload_cut_before_encryption_was_turned_on_is_finished() -> None:
    """Found: a power cut after the data object was verified and deleted, before its
    sidecar went up, then encryption turned on: the plaintext sidecar stayed in the folder
    for good and the object in the bucket never got it. It is planned as an orphan (sent
    only once the bucket confirms the plaintext object); one with a sealed copy is not."""
    cut = "car_20260301T081500Z_0001.tsv.gz"
    sealing = "car_20260301T081500Z_0002.tsv.gz"
    names = [
        f"{cut}.json",  # its data object is in the bucket, the file deleted
        f"{sealing}.json",  # mid-seal: the plaintext data file already removed
        f"{sealing}.age",
        f"{sealing}.age.json",
        "car_20260301T081500Z_0003.tsv.gz",  # not sealed yet: never planned
        "car_20260301T081500Z_0003.tsv.gz.json",
    ]
    jobs = plan(names, encrypted=True).jobs()
    assert [(j.kind, j.name.name) for j in jobs] == [("orphan", cut), ("data", f"{sealing}.age")]


def _only_sealed_planned(rec: Path) -> None:
    names = os.listdir(rec)
    for job in plan(names, encrypted=True).jobs():
        assert job.name.name.endswith(".age"), job


@needs_age
@pytest.mark.parametrize("kind", ["data", "summary"])
@pytest.mark.parametrize("step", [s for s in STEPS])
def test_sigkill_at_each_step_of_sealing_uploads_no_plaintext_and_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str, kind: str
) -> None:
    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    if kind == "data":
        plain = make_closed_file(rec, rows=2000)
    else:
        rec.mkdir()
        plain = rec / f"{CAR}_{TRIP}_summary.json"
        plain.write_text(json.dumps({"trip": TRIP}) + "\n")
    original = plain.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(rec), recipient, "--die-at", step],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if kind == "summary" and step == "age_sidecar":
        assert proc.returncode == 3  # a summary has no sidecar: the step never comes
    else:
        assert proc.returncode == -9, proc.stderr
    _only_sealed_planned(rec)  # what an uploader would send now: never plaintext
    Encryptor(rec, [recipient]).seal_all()  # the next start finishes the job
    expected = {LOCK_NAME, plain.name + ".age"} | (
        {plain.name + ".age.json"} if kind == "data" else set()
    )
    assert set(os.listdir(rec)) == expected
    assert age_decrypt(key, rec / (plain.name + ".age")) == original


def _plain_views(raw: bytes) -> list[bytes]:
    """The bytes as stored and, if they are gzip, unpacked: a row hides in either."""
    views = [raw]
    with contextlib.suppress(OSError, EOFError):
        views.append(gzip.decompress(raw))
    return views


@needs_age
def test_a_daemon_with_encryption_on_leaves_no_plaintext_row_in_the_bucket_or_the_folder(
    s3_http: LocalS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from elm.obd_message import DT, ECU_R_ADDR_E, HD, SZ

    from eccm.app import Daemon
    from tests.control_fakes import SECRET, Client
    from tests.emulator import emulated_car

    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "records"
    rec.mkdir(mode=0o755)
    rec.chmod(0o755)  # as the usual umask makes it: every account may enter and read
    with emulated_car() as emu:
        values = config_values(
            rec,
            s3_http,
            OBD_INTERFACE=emu.get_pty(),
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            SAMPLE_INTERVAL="0.05",
            ENABLE_SOCKET_SERVER="yes",
            SOCKET_SERVER_PORT=str(_free_port()),
            SOCKET_SERVER_SECRET=SECRET,
            FILE_ENCRYPTION_RECIPIENTS=recipient,
        )
        cfg = eccm_config.parse(values)
        d = Daemon(cfg)
        d.start()
        try:
            # The open file is plaintext: the folder is the owner's alone (a security
            # review's find: the running trip was readable by every account of the Pi).
            assert stat.S_IMODE(rec.stat().st_mode) == 0o700
            wait_until(lambda: d.hub.rows > 20, timeout=WAIT, what="rows")
            emu.answer["SPEED"] = HD(ECU_R_ADDR_E) + SZ("03") + DT("41 0D 32")
            c = Client(("127.0.0.1", cfg.socket_server_port), timeout=WAIT).auth()
            wait_until(
                lambda: c.ask("DTC CLEAR").get("code") == "vehicle_moving",
                timeout=WAIT,
                what="a clear refused while moving",
            )
            assert c.ask("UPLOAD")["class"] == "UPLOAD"
            prefix = cfg.s3_key_prefix

            def uploaded() -> dict[str, int] | None:
                objs = list_objects(s3_http, prefix)
                data = [k for k in objs if k.endswith(".tsv.gz.age")]
                side = [k for k in objs if k.endswith(".tsv.gz.age.json")]
                audit = [k for k in objs if k.endswith("_dtc-clear.json.age")]
                return objs if data and side and audit else None

            wait_until(uploaded, timeout=WAIT, what="an encrypted file and audit in the bucket")
        finally:
            emu.answer.pop("SPEED", None)
            d.stop()
    objs = list_objects(s3_http, cfg.s3_key_prefix)
    objs.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    assert objs and all(k.endswith((".age", ".age.json")) for k in objs), sorted(objs)
    row_marker = f"Z\t{CAR}\t".encode()  # TIME_UTC, CAR_ID, ...: a row of the data file
    rows_seen = 0
    for k in objs:
        raw = get_object(s3_http, k)
        assert not any(row_marker in v for v in _plain_views(raw)), k
        if k.endswith(".tsv.gz.age"):
            local = tmp_path / "obj.age"
            local.write_bytes(raw)
            text = gzip.decompress(age_decrypt(key, local))
            assert text.startswith(b"TIME_UTC\tCAR_ID\tTRIP_ID\tRPM\tSPEED")
            rows_seen += text.count(row_marker)
        if k.endswith("_dtc-clear.json.age"):
            local = tmp_path / "audit.age"
            local.write_bytes(raw)
            audit = json.loads(age_decrypt(key, local))
            assert audit["outcome"] == "refused" and audit["front_end"] == "socket"
    assert rows_seen > 0
    # eccm decrypt --bucket: every .age under the prefix, into its partition folders.
    config = write_config(tmp_path / "config.ini", values)
    out = tmp_path / "fetched"
    args = ["decrypt", "--config", str(config), "-i", str(key), "-o", str(out)]
    assert main([*args, "--bucket", cfg.s3_key_prefix]) == 0
    fetched = sorted(p.name for p in out.rglob("*.tsv.gz"))
    assert fetched and all(f"car={CAR}" in str(p) for p in out.rglob("*.tsv.gz"))
    assert len(fetched) == len([k for k in objs if k.endswith(".tsv.gz.age")])
    # The README's form, one car's prefix: car= stays a folder (it was dropped: logs/date=...).
    one_car = tmp_path / "one-car"
    args = ["decrypt", "--config", str(config), "-i", str(key), "-o", str(one_car)]
    assert main([*args, "--bucket", f"{cfg.s3_key_prefix}/car={CAR}/"]) == 0
    assert sorted(p.name for p in one_car.glob(f"car={CAR}/date=*/*.tsv.gz")) == fetched
    for path in rec.rglob("*"):
        if path.is_file():
            assert not any(row_marker in v for v in _plain_views(path.read_bytes())), path


def test_decrypt_bucket_with_no_age_object_says_so_for_that_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from eccm.upload import s3client

    listed: list[str] = []

    class Pages:
        def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, object]]:
            listed.append(f"{Bucket}/{Prefix}")
            # Plain objects only: the car logged before encryption was turned on.
            return [{"Contents": [{"Key": f"{Prefix}date=2026-03-01/x_0001.tsv.gz"}]}]

    class Client:
        def get_paginator(self, _name: str) -> Pages:
            return Pages()

    monkeypatch.setattr(s3client, "build_client", lambda _settings: Client())
    key, _ = keypair(tmp_path, capsys)
    config = write_config(
        tmp_path / "config.ini",
        {
            "CAR_IDENTIFIER": "demo-car",
            "S3_SERVER_ENDPOINT": "http://127.0.0.1:1",
            "S3_SERVER_BUCKET": "eccm-demo",
        },
    )
    args = ["decrypt", "--config", str(config), "-i", str(key), "-o", str(tmp_path / "out")]
    assert main([*args, "--bucket", "car-logs/car=demo-car/"]) == 1
    assert listed == ["eccm-demo/car-logs/car=demo-car/"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        "eccm: error: no .age object under s3://eccm-demo/car-logs/car=demo-car/: nothing to decrypt"
    ), err
    assert "name .age files or --bucket" not in err


def test_decrypt_into_an_output_folder_that_cannot_be_made_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # -o naming a file (or a folder under one) was a FileExistsError/NotADirectoryError
    # traceback from mkdir.
    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    data = make_closed_file(rec, rows=3)
    assert Encryptor(rec, [recipient]).seal_all() == 1
    sealed = rec / (data.name + ".age")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for out in (blocker, blocker / "sub"):
        assert main(["decrypt", "-i", str(key), "-o", str(out), str(sealed)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"eccm: error: -o {out}: cannot make this folder"), err
        assert err.count("\n") == 1, err
    assert blocker.read_text() == "not a folder\n"


def test_an_identity_file_with_a_bom_opens_and_a_binary_one_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A key saved again by a Windows editor (UTF-8 with a byte order mark) was "not an age
    # identity file"; a binary file given as -i was a UnicodeDecodeError traceback.
    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    data = make_closed_file(rec, rows=3)
    original = data.read_bytes()
    assert Encryptor(rec, [recipient]).seal_all() == 1
    sealed = rec / (data.name + ".age")
    bom = tmp_path / "key-bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + key.read_bytes().replace(b"\n", b"\r\n"))
    out = tmp_path / "out"
    assert main(["decrypt", "-i", str(bom), "-o", str(out), str(sealed)]) == 0
    assert (out / data.name).read_bytes() == original
    capsys.readouterr()
    binary = tmp_path / "key.bin"
    binary.write_bytes(b"\x00\xd0\xff" * 10)
    assert main(["decrypt", "-i", str(binary), "-o", str(out), str(sealed)]) == 1
    assert capsys.readouterr().err == (
        f"eccm: error: {binary} is not an age identity file (expected AGE-SECRET-KEY-... "
        "lines; this file is not text)\n"
    )


def test_a_fifo_or_a_symlink_named_as_a_closed_file_is_left_alone_and_does_not_stop_sealing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever may write the record folder (a share) plants a FIFO named as a trip summary:
    the pass opened it and waited for a writer for ever, holding the lock, on the
    recorder's thread after a close: recording stopped and every later file stayed in
    plaintext. A symlink named as a data file had its target (config.ini, with the
    secrets) encrypted, uploaded and the link removed."""
    import threading

    _, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    data = make_closed_file(rec, rows=20)
    os.mkfifo(rec / f"{CAR}_20261122T021600Z_summary.json")
    secret = tmp_path / "config.ini"
    secret.write_text("SOCKET_SERVER_SECRET=not for the bucket\n")
    linked = rec / f"{CAR}_20261122T021700Z_0001.tsv.gz"
    linked.symlink_to(secret)
    (rec / (linked.name + ".json")).write_text("{}\n")
    (rec / f"{CAR}_20261122T021800Z_summary.json").symlink_to(secret)
    done: list[int] = []
    sealing = threading.Thread(
        target=lambda: done.append(Encryptor(rec, [recipient]).seal_all()), daemon=True
    )
    sealing.start()
    sealing.join(WAIT / 2)
    assert done, "the sealing pass hangs on the FIFO"
    names = set(os.listdir(rec))
    assert data.name + ".age" in names and data.name not in names  # the real one is sealed
    # Nothing of the planted ones is sealed (so none is uploaded), and they are left as found.
    planted = ("T021600Z", "T021700Z", "T021800Z")
    assert not [n for n in names if n.endswith(".age") and any(t in n for t in planted)]
    assert linked.is_symlink()


def test_files_decrypted_into_an_output_folder_keep_their_sidecar_for_eccm_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `eccm decrypt -o DIR FILE.age` wrote the data file alone: the .age.json sidecar (its
    # columns and separator) stayed behind, so `eccm schema --from DIR` fell back to the
    # default columns and told the user to decrypt the files they had just decrypted.
    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    data = make_closed_file(rec, rows=5)
    assert Encryptor(rec, [recipient]).seal_all() == 1
    sealed = rec / (data.name + ".age")
    out = tmp_path / "out"
    assert main(["decrypt", "-i", str(key), "-o", str(out), str(sealed)]) == 0
    capsys.readouterr()
    assert (out / (sealed.name + ".json")).read_bytes() == (
        rec / (sealed.name + ".json")
    ).read_bytes()
    monkeypatch.chdir(tmp_path)  # no config.ini here: schema reads the folder alone
    monkeypatch.delenv("ECCM_CONFIG", raising=False)
    assert main(["schema", "--engine", "duckdb", "--from", str(out)]) == 0
    got = capsys.readouterr()
    assert "no closed data file" not in got.err, got.err
    assert "'COOLANT_TEMP'" in got.out, got.out  # the file's own columns, not the defaults


def test_a_passphrase_protected_identity_file_opens_with_its_passphrase_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pty

    import pyrage

    key, recipient = keypair(tmp_path, capsys)
    protected = tmp_path / "key.age"  # what `age-keygen | age -p > key.age` makes
    protected.write_bytes(pyrage.passphrase.encrypt(key.read_bytes(), "correct horse"))
    rec = tmp_path / "rec"
    rec.mkdir()
    summary = rec / f"{CAR}_{TRIP}_summary.json"
    summary.write_text(json.dumps({"trip": TRIP}) + "\n")
    original = summary.read_bytes()
    Encryptor(rec, [recipient]).seal_all()
    sealed = rec / (summary.name + ".age")
    out = tmp_path / "out"
    command = [*ECCM, "decrypt", "-i", str(protected), "-o", str(out), str(sealed)]
    # Without a terminal: one line saying why, not "not an age identity file".
    done = subprocess.run(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "protected with a passphrase" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not out.exists()
    # On a terminal (a pseudo-terminal, in a session of its own: no other /dev/tty), the
    # passphrase is asked for, and a wrong one says so.
    for passphrase, code in (("wrong", 1), ("correct horse", 0)):
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(follower)
        try:
            assert proc.stderr is not None
            prompt = b""
            while b"Passphrase for" not in prompt:  # typed before it, the input is flushed
                chunk = os.read(proc.stderr.fileno(), 1024)
                assert chunk, "eccm decrypt ended without asking for the passphrase"
                prompt += chunk
            os.write(leader, passphrase.encode() + b"\n")
            _, err = proc.communicate(timeout=60)
            err = prompt + err
        finally:
            os.close(leader)
        assert proc.returncode == code, err
        if code:
            assert b"wrong passphrase" in err
    assert (out / summary.name).read_bytes() == original


@needs_age
def test_a_damaged_or_cut_short_summary_is_named_as_damaged_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "rec"
    rec.mkdir()
    summary = rec / f"{CAR}_{TRIP}_summary.json"
    summary.write_text(json.dumps({"trip": TRIP, "track": [[48.85, 2.29]] * 5000}) + "\n")
    Encryptor(rec, [recipient]).seal_all()
    sealed = rec / (summary.name + ".age")  # a summary travels without a sidecar
    raw = sealed.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 1
    for damaged in (bytes(flipped), raw[:-20]):
        sealed.write_bytes(damaged)
        age = [AGE_TOOL or "age", "-d", "-i", str(key), str(sealed)]
        assert subprocess.run(age, capture_output=True, timeout=60).returncode != 0
        out = tmp_path / "out"
        assert main(["decrypt", "-i", str(key), "-o", str(out), str(sealed)]) == 1
        err = capsys.readouterr().err
        # It said "decryption error", which read like a wrong key or a bug of eccm.
        assert "damaged or cut short" in err and err.count("\n") == 1, err
        assert list(out.iterdir()) == []


def test_a_sealing_pass_that_keeps_failing_is_said_once_until_it_works_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Found: a failure that lasts (a full disk) was a WARNING at every pass, and a pass
    runs at every file close and every upload run."""
    import logging

    from eccm.crypto.encrypt import seal_pending

    _, recipient = keypair(tmp_path, capsys)
    rec = tmp_path / "records"
    rec.mkdir()
    data = rec / "car_20260301T081500Z_0001.tsv.gz"
    data.write_bytes(gzip.compress(b"TIME_UTC\n2026-03-01T08:15:00.000Z\n"))
    side = rec / f"{data.name}.json"
    side.write_text("{")  # unreadable: every pass fails on it
    caplog.set_level(logging.DEBUG, logger="eccm")
    for _ in range(5):
        seal_pending(rec, [recipient])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "said once until it works again" in warnings[0].getMessage()
    side.write_text(json.dumps({"file": data.name, "rows": 1}))
    seal_pending(rec, [recipient])
    assert "works again after 5 failed passes" in caplog.text
    assert sorted(p.name for p in rec.iterdir() if not p.name.startswith(".")) == [
        f"{data.name}.age",
        f"{data.name}.age.json",
    ]
