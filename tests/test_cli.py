"""The `eccm` command as a user types it: one clear line and an exit code, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def eccm(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ECCM_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "eccm.cli", *args],
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
