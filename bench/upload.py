"""Upload throughput against a local SeaweedFS, and how much gzip saves on engine data.

1. FILES closed files of about SIZE_KB (gzipped TSV of simulated driving, each with its
   sidecar) go to a local SeaweedFS twice per round, in alternation:
   - a plain loop: boto3 ``put_object`` of each data file and its sidecar, nothing else;
   - ECCM's ``Uploader.run_once()``: hashing, Content-MD5, sha256 metadata, conditional
     create, a HEAD per data file to verify, then the local delete; with its default
     number of files in flight, and one file at a time.
   It prints files/s and MB/s (data files only) of each, the median over ROUNDS, and the
   ratios (the target is >= 0.7: verification costs a HEAD per file).
2. gzip (level 6, as the recorder writes) on five-minute files at 5 rows/s of a simulated
   drive with the default columns, and on the demo's files when a demo has run
   (``demo-data/records``).

    .venv/bin/python bench/upload.py [--files 200] [--size-kb 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm import config as eccm_config  # noqa: E402
from eccm.clock import SystemClock  # noqa: E402
from eccm.sample import GPS_COLUMNS, format_value, iso_utc  # noqa: E402
from eccm.sim.s3 import LocalS3  # noqa: E402
from eccm.upload.run import UPLOAD_WORKERS  # noqa: E402
from eccm.upload.uploader import Uploader  # noqa: E402

CAR = "bench-car"
FAST = ("RPM", "SPEED", "THROTTLE_POS", "ENGINE_LOAD", "MAF", "INTAKE_PRESSURE")
SLOW = (
    "COOLANT_TEMP",
    "INTAKE_TEMP",
    "FUEL_LEVEL",
    "TIMING_ADVANCE",
    "SHORT_FUEL_TRIM_1",
    "LONG_FUEL_TRIM_1",
    "O2_B1S2",
    "CONTROL_MODULE_VOLTAGE",
    "BAROMETRIC_PRESSURE",
    "AMBIANT_AIR_TEMP",
    "RUN_TIME",
    "DISTANCE_SINCE_DTC_CLEAR",
    "COMMANDED_EQUIV_RATIO",
    "RELATIVE_THROTTLE_POS",
    "ACCELERATOR_POS_D",
    "ABSOLUTE_LOAD",
)
COLUMNS = ("TIME_UTC", "CAR_ID", "TRIP_ID", *FAST, *SLOW, *GPS_COLUMNS)


def _q(value: float, step: float) -> float:
    """Quantised like the OBD encoding python-OBD decodes (e.g. 100/255 % steps)."""
    return round(value / step) * step


def drive(trip: str, start: float, seconds: float, rate_hz: float, seed: int) -> Iterator[str]:
    """Rows of a plausible drive: speed changes smoothly, the engine follows, slow values
    and the GNSS fix change once a second, as the recorder writes them."""
    rng = random.Random(seed)
    speed, target, gear_rpm = 0.0, 50.0, 800.0
    lat, lon, track = 48.8584 + rng.uniform(-0.1, 0.1), 2.2945 + rng.uniform(-0.1, 0.1), 90.0
    coolant, fuel, dist, volts = 60.0, 70.0, 1234.0, 14.1
    slow: list[str] = []
    gps: list[str] = []
    n = int(seconds * rate_hz)
    for i in range(n):
        t = start + i / rate_hz
        if i % int(rate_hz) == 0:  # once a second: slow values and a fresh fix
            if rng.random() < 0.02:
                target = rng.choice((0.0, 30.0, 50.0, 70.0, 90.0, 110.0))
            coolant = min(90.0, coolant + 0.05)
            fuel -= 0.001
            dist += speed / 3600
            volts = 14.1 + rng.uniform(-0.1, 0.1)
            track = (track + rng.uniform(-3, 3)) % 360
            v = speed / 3.6
            lat += v * math.cos(math.radians(track)) / 111_320
            lon += v * math.sin(math.radians(track)) / (111_320 * math.cos(math.radians(lat)))
            slow = [
                format_value(round(coolant)),
                format_value(round(20 + rng.uniform(0, 2))),
                format_value(_q(fuel, 100 / 255)),
                format_value(_q(10 + rng.uniform(-4, 8), 0.5)),
                format_value(_q(rng.uniform(-3, 3), 100 / 128)),
                format_value(_q(2.3, 100 / 128)),
                format_value(_q(0.45 + rng.uniform(-0.3, 0.3), 0.005)),
                format_value(_q(volts, 0.001)),
                format_value(101),
                format_value(18),
                format_value(int(t - start) + seed * 300),
                format_value(round(dist)),
                format_value(_q(1.0 + rng.uniform(-0.02, 0.02), 2 / 65536)),
                format_value(_q(15 + speed / 8, 100 / 255)),
                format_value(_q(14 + speed / 6, 100 / 255)),
                format_value(_q(20 + speed / 4, 100 / 255)),
            ]
            gps = [
                iso_utc(t),
                format_value(round(lat, 7)),
                format_value(round(lon, 7)),
                format_value(round(35 + rng.uniform(-1, 1), 1)),
                format_value(round(v, 2)),
                format_value(round(track, 2)),
                "1",
                str(rng.randint(7, 12)),
                format_value(round(rng.uniform(0.7, 1.4), 2)),
            ]
        speed = max(0.0, speed + (target - speed) * 0.02 + rng.uniform(-0.3, 0.3))
        gear_rpm = 800 + (speed % 30) * 70 + rng.uniform(-15, 15)
        throttle = max(0.0, min(100.0, 12 + (target - speed) * 1.5 + rng.uniform(-2, 2)))
        load = max(0.0, min(100.0, 20 + throttle * 0.6 + rng.uniform(-3, 3)))
        cells = [
            iso_utc(t),
            CAR,
            trip,
            format_value(_q(gear_rpm, 0.25)),
            format_value(round(speed)),
            format_value(_q(throttle, 100 / 255)),
            format_value(_q(load, 100 / 255)),
            format_value(_q(gear_rpm * load / 4000, 0.01)),
            format_value(round(30 + load * 0.7)),
            *slow,
            *gps,
        ]
        yield "\t".join(cells)


def tsv(trip: str, start: float, seconds: float, seed: int) -> bytes:
    lines = ["\t".join(COLUMNS), *drive(trip, start, seconds, 5.0, seed)]
    return ("\n".join(lines) + "\n").encode()


def write_closed(folder: Path, name: str, data: bytes, first_time: str) -> None:
    (folder / name).write_bytes(data)
    doc = {
        "schema_version": 1,
        "car": CAR,
        "file": name,
        "first_time": first_time,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "columns": [{"name": c} for c in COLUMNS],
    }
    (folder / (name + ".json")).write_text(json.dumps(doc), encoding="utf-8")


def make_files(folder: Path, count: int, size_kb: int, distinct: int) -> int:
    """``count`` closed files of ~size_kb gzipped; content repeats after ``distinct``."""
    folder.mkdir(parents=True, exist_ok=True)
    # Find how many seconds of driving make ~size_kb of gzip.
    probe = gzip.compress(tsv("20261122T020000Z", 1.79e9, 300, 1), 6, mtime=0)
    seconds = 300 * size_kb * 1024 / len(probe)
    bodies = []
    for k in range(distinct):
        trip = "20261122T020000Z"
        bodies.append(gzip.compress(tsv(trip, 1.79e9 + k * seconds, seconds, k), 6, mtime=0))
    total = 0
    for i in range(count):
        data = bodies[i % distinct]
        name = f"{CAR}_20261122T020000Z_{i + 1:04d}.tsv.gz"
        write_closed(folder, name, data, "2026-11-22T02:00:00.000Z")
        total += len(data)
    return total


def plain_loop(server: LocalS3, source: Path, prefix: str) -> float:
    client = server.client(timeout=30)
    names = sorted(p.name for p in source.iterdir() if p.name.endswith(".gz"))
    t0 = time.perf_counter()
    for name in names:
        for n in (name, name + ".json"):
            client.put_object(
                Bucket=server.bucket, Key=f"{prefix}/{n}", Body=(source / n).read_bytes()
            )
    return time.perf_counter() - t0


def eccm_run(server: LocalS3, source: Path, work: Path, prefix: str, workers: int) -> float:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work)
    values = {
        "CAR_IDENTIFIER": CAR,
        "RECORD_DIRECTORY_LOCATION": str(work),
        "S3_KEY_PREFIX": prefix,
        **server.config_values(),
    }
    up = Uploader.from_config(eccm_config.parse(values), SystemClock(), workers=workers)
    t0 = time.perf_counter()
    report = up.run_once()
    elapsed = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"upload failed: {report}")
    return elapsed


def gzip_figures(files: list[Path]) -> tuple[int, int]:
    raw = packed = 0
    for f in files:
        data = f.read_bytes()
        packed += len(data)
        raw += len(gzip.decompress(data))
    return raw, packed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size-kb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--distinct", type=int, default=10, help="distinct file bodies")
    ap.add_argument("--demo-dir", default=str(ROOT / "demo-data" / "records"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "source"
        total = make_files(source, args.files, args.size_kb, args.distinct)
        mb = total / 1e6
        print(
            f"{args.files} files, {total / args.files / 1024:.0f} KiB each on average ({mb:.1f} MB)"
        )
        with LocalS3(tmp / "s3", bucket="bench") as server:
            plain: list[float] = []
            ours: list[float] = []
            serial: list[float] = []
            for r in range(args.rounds):
                plain.append(plain_loop(server, source, f"plain-{r}"))
                ours.append(eccm_run(server, source, tmp / "work", f"eccm-{r}", UPLOAD_WORKERS))
                serial.append(eccm_run(server, source, tmp / "work", f"serial-{r}", 1))
        rows = (
            ("plain put_object loop", plain),
            (f"eccm ({UPLOAD_WORKERS} files at a time)", ours),
            ("eccm (1 file at a time)", serial),
        )
        for label, times in rows:
            t = statistics.median(times)
            print(
                f"{label:28s} {args.files / t:7.1f} files/s {mb / t:6.2f} MB/s "
                f"(median of {len(times)}: {', '.join(f'{x:.2f}' for x in times)} s)"
            )
        for label, times in rows[1:]:
            print(f"{label} / plain: {statistics.median(plain) / statistics.median(times):.2f}x")

        five_min = tmp / "five-min"
        five_min.mkdir()
        for k in range(10):
            data = gzip.compress(tsv("20261122T020000Z", 1.79e9 + k * 300, 300, k), 6, mtime=0)
            (five_min / f"f{k}.tsv.gz").write_bytes(data)
        raw, packed = gzip_figures(sorted(five_min.iterdir()))
        print(
            f"gzip on simulated 5-minute files (5 rows/s, {len(COLUMNS)} columns): "
            f"{raw / 10 / 1024:.0f} KiB -> {packed / 10 / 1024:.0f} KiB per file, "
            f"{100 * (1 - packed / raw):.1f} % smaller"
        )
    demo = Path(args.demo_dir)
    demo_files = sorted([*demo.glob("*.gz"), *demo.glob("uploaded/*.gz")])
    if demo_files:
        raw, packed = gzip_figures(demo_files)
        print(
            f"gzip on the demo's {len(demo_files)} files in {demo}: {raw / 1024:.0f} KiB -> "
            f"{packed / 1024:.0f} KiB, {100 * (1 - packed / raw):.1f} % smaller"
        )
    else:
        print(f"no demo files in {demo} (run ./start.sh --demo --duration 120 first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
