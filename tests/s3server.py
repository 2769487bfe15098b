"""Real S3 servers for the tests (SeaweedFS through eccm.sim.s3), and fake closed files.

The fixtures are registered for every test module in tests/conftest.py. Each server starts
once per test session (startup takes seconds); tests keep apart through a unique key prefix.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eccm import config as eccm_config
from eccm.config import Config
from eccm.sample import format_value, iso_utc
from eccm.sim.s3 import Identity, LocalS3

CAR = "test-car"


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key; the certificate is its own CA."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "s3-cert.pem", folder / "s3-key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is available")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(key), "-out", str(cert), "-days", "3",
                "-subj", "/CN=localhost",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-addext", "basicConstraints=critical,CA:TRUE",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# pytest keeps one instance of a session fixture per module that imports it; this cache
# makes it one server per test session, however many modules use it.
_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if "tls" not in _SHARED:
        _SHARED["tls"] = self_signed_cert(tmp_path_factory.mktemp("tls"))
    pair: tuple[Path, Path] = _SHARED["tls"]
    return pair


def _shared_server(kind: str, factory: pytest.TempPathFactory, **kwargs: Any) -> Iterator[LocalS3]:
    server: LocalS3 | None = _SHARED.get(kind)
    if server is None or not server.running:
        server = LocalS3(factory.mktemp(f"s3-{kind}"), bucket="eccm-test", **kwargs)
        server.start()
        _SHARED[kind] = server
    yield server
    server.stop()  # session teardown; a second call is a no-op


# Restricted keys on the shared http server (server.identities[name], server.client(identity=)).
READ_WRITE = "read-write"  # object rights only: what a narrow fleet policy grants
WRITE_ONLY = "write-only"  # PUT allowed, HEAD refused


@pytest.fixture(scope="session")
def s3_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    yield from _shared_server(
        "http",
        tmp_path_factory,
        extra_identities=[
            Identity(READ_WRITE, ("Read", "Write")),
            Identity(WRITE_ONLY, ("Write",)),
        ],
    )


@pytest.fixture(scope="session")
def s3_https(
    tmp_path_factory: pytest.TempPathFactory, tls_cert: tuple[Path, Path]
) -> Iterator[LocalS3]:
    cert, key = tls_cert
    yield from _shared_server("https", tmp_path_factory, tls_cert=cert, tls_key=key)


@pytest.fixture(params=["http", "https"])
def s3_any(request: pytest.FixtureRequest) -> LocalS3:
    """The test runs twice: over plain http and over https with a self-signed CA."""
    server: LocalS3 = request.getfixturevalue(f"s3_{request.param}")
    return server


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}/car-logs"


def make_config(record_dir: Path, server: LocalS3 | None = None, **overrides: str) -> Config:
    """A validated Config for ``record_dir`` uploading to ``server`` under a fresh prefix."""
    return eccm_config.parse(config_values(record_dir, server, **overrides))


def config_values(
    record_dir: Path, server: LocalS3 | None = None, **overrides: str
) -> dict[str, str]:
    """The raw KEY=value pairs behind make_config (for a subprocess)."""
    values = {
        "CAR_IDENTIFIER": CAR,
        "RECORD_DIRECTORY_LOCATION": str(record_dir),
        "S3_KEY_PREFIX": unique_prefix(),
        "S3_SYNC_INTERVAL": "60",
        "S3_SYNC_JITTER": "0",
    }
    if server is not None:
        values.update(server.config_values())
    values.update(overrides)
    return values


_COLUMNS = ("TIME_UTC", "CAR_ID", "TRIP_ID", "RPM", "SPEED", "THROTTLE_POS", "COOLANT_TEMP")


def tsv_rows(trip: str, start: float, rows: int, seed: int) -> bytes:
    """A small deterministic TSV body shaped like the recorder's."""
    rng = random.Random(seed)
    lines = ["\t".join(_COLUMNS)]
    speed = 50.0
    for i in range(rows):
        speed = max(0.0, speed + rng.uniform(-2, 2))
        rpm = 800 + speed * 35 + rng.uniform(-20, 20)
        cells = [
            iso_utc(start + i * 0.2),
            CAR,
            trip,
            format_value(round(rpm * 4) / 4),
            format_value(round(speed)),
            format_value(round(rng.uniform(10, 30) * 2.55) * 100 / 255),
            format_value(90),
        ]
        lines.append("\t".join(cells))
    return ("\n".join(lines) + "\n").encode()


def make_closed_file(
    record_dir: Path,
    *,
    car: str = CAR,
    trip: str = "20261122T021500Z",
    seq: int = 1,
    ext: str = ".tsv",
    gz: bool = True,
    rows: int = 50,
    first_time: str | None = None,
    payload: bytes | None = None,
    sidecar: bool = True,
) -> Path:
    """A closed data file as the recorder leaves it: data first, then its sidecar.

    Deterministic: the same arguments give the same bytes.
    """
    from datetime import UTC, datetime

    record_dir.mkdir(parents=True, exist_ok=True)
    start = datetime.strptime(trip, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    start += (seq - 1) * 300
    name = f"{car}_{trip}_{seq:04d}{ext}" + (".gz" if gz else "")
    body = payload if payload is not None else tsv_rows(trip, start, rows, seed=seq)
    data = gzip.compress(body, mtime=0) if gz else body
    path = record_dir / name
    path.write_bytes(data)
    if sidecar:
        write_sidecar(path, first_time=first_time or iso_utc(start), rows=rows, car=car, trip=trip)
    return path


def write_sidecar(
    path: Path, *, first_time: str | None, rows: int = 0, car: str = CAR, trip: str = ""
) -> Path:
    data = path.read_bytes()
    doc: dict[str, Any] = {
        "schema": 1,
        "car": car,
        "trip": trip,
        "file": path.name,
        "rows": rows,
        "first_time": first_time,
        "last_time": first_time,
        "columns": [{"name": c, "unit": "", "description": ""} for c in _COLUMNS],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "time_source": "system",
    }
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return side


def list_objects(server: LocalS3, prefix: str) -> dict[str, int]:
    """Key → size of every object under ``prefix``."""
    client = server.client()
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix
    ):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def get_object(server: LocalS3, key: str) -> bytes:
    body: bytes = server.client().get_object(Bucket=server.bucket, Key=key)["Body"].read()
    return body


class FlakyLink:
    """A TCP proxy that misbehaves like a car's cellular link (a real socket peer).

    Each accepted connection draws one fate from a seeded generator: pass through; closed
    at once; reset (RST) after N bytes towards the server (mid-request, mid-body); the
    whole request forwarded but the connection reset as the answer starts (the server did
    the work, the client never hears of it); or a stall of a few seconds mid-transfer
    followed by a reset or by the rest of the bytes. ``healthy()`` ends the faults for new
    connections; ``down()`` refuses every connection and resets the open ones.
    """

    FATES = ("pass", "hang", "close", "reset_request", "reset_answer", "stall_reset", "stall_pass")

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        seed: int = 1,
        weights: dict[str, float] | None = None,
        stall: tuple[float, float] = (0.3, 1.5),
    ) -> None:
        import socket
        import threading

        self.upstream = upstream
        self._rng = random.Random(seed)
        self._weights = weights or {
            "pass": 4,
            "close": 1,
            "reset_request": 2,
            "reset_answer": 2,
            "stall_reset": 1,
            "stall_pass": 1,
        }
        self._stall = stall
        self._lock = threading.Lock()
        self._faulty = True
        self._down = False
        self._hung = False
        self._rate = 0.0  # bytes/s towards the server; 0 = unlimited
        self.fates: dict[str, int] = dict.fromkeys(self.FATES, 0)
        self._open: set[socket.socket] = set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="flaky-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> None:
        with self._lock:
            self._faulty = False
            self._down = False
            self._hung = False

    def throttle(self, bytes_per_second: float) -> None:
        """A slow uplink (0: as fast as loopback)."""
        with self._lock:
            self._rate = bytes_per_second

    def hang(self) -> None:
        """Nothing moves any more; new connections are accepted, never answered."""
        with self._lock:
            self._hung = True

    def flaky(self) -> None:
        with self._lock:
            self._faulty = True
            self._down = False

    def down(self) -> None:
        with self._lock:
            self._down = True
            conns = list(self._open)
        for c in conns:
            self._reset(c)

    @property
    def faults(self) -> int:
        """Connections that met a fault so far."""
        with self._lock:
            return sum(n for fate, n in self.fates.items() if fate != "pass")

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self.down()

    @staticmethod
    def _reset(sock: Any) -> None:
        import contextlib
        import socket
        import struct

        with contextlib.suppress(OSError):
            # SO_LINGER 0: close() sends RST instead of FIN, as a dropped radio link does
            # from the far side's point of view (the peer sees ECONNRESET).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()

    def _draw(self) -> tuple[str, int, int, float]:
        """A connection's fate, the byte (towards the server) where it strikes, the byte
        where the connection dies anyway, and the length of a stall."""
        with self._lock:
            if self._down:
                fate = "close"
            elif self._hung:
                fate = "hang"
            elif not self._faulty:
                fate = "pass"
            else:
                names = list(self._weights)
                fate = self._rng.choices(names, [self._weights[n] for n in names])[0]
            self.fates[fate] += 1
            # Headers, a small or a large body: where the fault strikes.
            at = self._rng.choice([0, 100, 700, 4000, 20000])
            # A faulty link kills every connection sooner or later; keep-alive would
            # otherwise carry a whole run through one lucky connection.
            life = at + self._rng.choice([1_000, 4_000, 16_000]) if self._faulty else -1
            pause = self._rng.uniform(*self._stall)
        return fate, at, life, pause

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            fate, at, life, pause = self._draw()
            if fate == "close":
                self._reset(conn)
                continue
            if fate == "hang":
                with self._lock:
                    self._open.add(conn)  # reset by down() or close()
                continue
            threading.Thread(
                target=self._serve,
                args=(conn, fate, at, life, pause),
                name="flaky-conn",
                daemon=True,
            ).start()

    def _serve(self, client: Any, fate: str, at: int, life: int, pause: float) -> None:
        import select
        import socket
        import time

        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._reset(client)
            return
        with self._lock:
            self._open.update((client, server))
        sent_up = 0
        struck = fate == "pass"
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.2)
                if self._down:
                    return
                if self._hung:
                    time.sleep(0.2)  # nothing moves, in either direction
                    continue
                for s in ready:
                    data = s.recv(4096 if self._rate else 65536)
                    if not data:
                        return
                    if s is server:
                        if fate == "reset_answer" and sent_up > at:
                            return  # the server has done the work; the client never hears
                        client.sendall(data)
                        continue
                    if 0 <= life < sent_up + len(data):
                        return  # the end of this connection's life
                    if not struck and fate != "reset_answer" and sent_up + len(data) > at:
                        struck = True
                        cut = max(0, at - sent_up)
                        server.sendall(data[:cut])
                        sent_up += cut
                        data = data[cut:]
                        if fate == "reset_request":
                            return
                        time.sleep(pause)  # a stall mid-request
                        if fate == "stall_reset":
                            return
                    server.sendall(data)
                    sent_up += len(data)
                    if self._rate:
                        time.sleep(len(data) / self._rate)
        except (OSError, ValueError):  # ValueError: a socket closed by down() or close()
            return
        finally:
            with self._lock:
                self._open.discard(client)
                self._open.discard(server)
            self._reset(client)
            self._reset(server)
