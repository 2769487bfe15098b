"""The emulated car's speed, changed under a running daemon, for the DTC-clear tests."""

from __future__ import annotations

from typing import Any

from eccm.hub import Hub
from tests.waiting import wait_until

WAIT = 60.0


def set_speed(emu: Any, hub: Hub, kmh: int) -> None:
    """The emulated car answers ``kmh`` from now on (emu.answer overrides a PID's answer),
    and the daemon has seen it for good.

    Awaited: a read made after the change, then two whole rows more, then it still: a
    round begun before the change (its speed read then) is published by then and cannot
    bring the old speed back (loaded CI runs saw DTC CLEAR refused at the previous test's
    32 km/h just after the hub had shown 0).
    """
    from elm.obd_message import DT, ECU_R_ADDR_E, HD, SZ

    since = hub.clock.monotonic()
    emu.answer["SPEED"] = HD(ECU_R_ADDR_E) + SZ("03") + DT(f"41 0D {kmh:02X}")

    def seen() -> bool:
        reading = hub.latest_values().get("SPEED")
        return reading is not None and reading.value == kmh and reading.at > since

    wait_until(seen, timeout=WAIT, what=f"the hub to see {kmh} km/h")
    rows = hub.rows
    wait_until(lambda: hub.rows >= rows + 2, timeout=WAIT, what="two more rows")
    wait_until(seen, timeout=WAIT, what=f"the hub to see {kmh} km/h still")
