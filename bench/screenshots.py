"""Screenshots of every page of the web dashboard at phone size, for the README.

Runs the demo's pipeline in this process (the ELM327 emulator, a simulated GNSS receiver
driving a circle in Paris, a local S3 server, the real daemon with its web page) and
Debian's chromium headless (through chromium-driver), and writes
``images/web-{login,live,live-chart,map,trip,diagnostics,status,files}.png`` (412 x 915 CSS pixels at
twice the density, as a phone shows them). A first daemon drives a short trip and stops,
so that the Trip page has a finished trip; the second one is photographed, with two
stored trouble codes and a pending one in the emulated car.

    .venv/bin/python bench/screenshots.py [--out images] [--drive 50]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control import free_port  # noqa: E402
from eccm.app import Daemon  # noqa: E402
from eccm.config import parse  # noqa: E402
from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402
from eccm.sim.s3 import LocalS3  # noqa: E402
from tests.browser_helpers import (  # noqa: E402
    PHONE,
    browser_missing,
    chromium,
    login,
    open_page,
    text,
    wait_for,
)
from tests.emulator import stored_dtcs  # noqa: E402

SECRET = "screenshot-secret-screenshot-secret-0123456"
PAGES = ("live", "map", "trip", "diagnostics", "status", "files")


def shoot(driver: Any, path: Path) -> None:
    time.sleep(1.0)  # let the canvases draw a few frames after the last update
    driver.save_screenshot(str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def all_fresh(driver: Any) -> bool:
    """The engine gauges show current values (the trip computer's L/100 km and fuel rate
    are empty at standstill)."""
    states = driver.execute_script(
        "return ['RPM', 'SPEED', 'COOLANT_TEMP', 'ENGINE_LOAD', 'THROTTLE_POS'].map("
        "k => document.querySelector(`#gauges [data-name='${k}']`).dataset.state)"
    )
    return all(s == "fresh" for s in states)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "images")
    parser.add_argument("--drive", type=float, default=50.0, help="seconds before the photos")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"screenshots: {missing}")
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="eccm-shots-"))
    try:
        with (
            LocalS3(tmp / "s3", bucket="eccm-demo") as s3,
            emulated_car("car") as emu,
            NmeaPty(Route(), rate_hz=1.0) as gnss,
        ):
            cfg = parse(
                {
                    "CAR_IDENTIFIER": "demo-car",
                    "OBD_INTERFACE": emu.get_pty(),
                    "GPS_POSITION_MONITORING": "yes",
                    "GPS_INTERFACE": gnss.path,
                    "RECORD_DIRECTORY_LOCATION": str(tmp / "records"),
                    **s3.config_values(),
                    "S3_SYNC_INTERVAL": "10",
                    "S3_SYNC_JITTER": "1",
                    "S3_DELETE_AFTER_UPLOAD": "no",
                    "FILE_ROTATION_SECONDS": "15",
                    "FUEL_PRICE": "1.85",
                    "SOCKET_SERVER_SECRET": SECRET,
                    "ENABLE_WEB_SERVER": "yes",
                    "WEB_SERVER_PORT": str(free_port()),
                    "LOG_LEVEL": "WARNING",
                }
            )
            first = Daemon(cfg)  # a short first trip, finished: the Trip page's history
            first.start()
            time.sleep(20)
            first.stop()
            daemon = Daemon(cfg)
            daemon.start()
            try:
                assert daemon.web is not None
                url = daemon.web.url
                with stored_dtcs(["0143", "0300"], ["0171"]), chromium(PHONE, scale=2.0) as d:
                    d.get(url + "/")
                    wait_for(d, lambda d: text(d, "#login h1") == "ECCM", "the login form")
                    shoot(d, args.out / "web-login.png")
                    login(d, url, SECRET)
                    time.sleep(args.drive)  # the chart and the track fill
                    for page in PAGES:
                        open_page(d, page)
                        if page == "live":
                            wait_for(d, all_fresh, "the engine gauges fresh", 60)
                            shoot(d, args.out / "web-live.png")
                            d.execute_script("document.getElementById('chart').scrollIntoView()")
                            shoot(d, args.out / "web-live-chart.png")
                            d.execute_script("window.scrollTo(0, 0)")
                            continue
                        if page == "diagnostics":
                            wait_for(d, lambda d: "P0143" in text(d, "#dtc-stored"), "codes")
                        if page == "trip":
                            wait_for(d, lambda d: text(d, "#trips-table tbody"), "a trip")
                        if page == "files":
                            wait_for(d, lambda d: "uploaded" in text(d, "#files-table"), "files")
                        shoot(d, args.out / f"web-{page}.png")
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
