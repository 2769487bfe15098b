"""Everything the OBD link tells the hub: rows, trip ends, and facts (link state, protocol,
adapter, VIN, achieved rates) that STATUS and the sidecars show.

The link thread publishes; any thread reads the counters (rows, rates).
"""

from __future__ import annotations

import threading

from eccm.clock import Clock
from eccm.hub import Hub
from eccm.obd.plan import RateMeter
from eccm.obd.policy import Bounds
from eccm.sample import Reading

# How long the rates are measured over: the fast one over a few seconds, the slow one over
# at least three passes over the slow values.
FAST_RATE_WINDOW = 5.0
SLOW_RATE_PASSES = 3


class Publisher:
    def __init__(self, hub: Hub, clock: Clock, slow_interval: float) -> None:
        self._hub = hub
        self._clock = clock
        self._lock = threading.Lock()
        self._rows = 0
        self._fast_meter = RateMeter(FAST_RATE_WINDOW)
        self._slow_meter = RateMeter(max(FAST_RATE_WINDOW, SLOW_RATE_PASSES * slow_interval))

    @property
    def rows(self) -> int:
        """Rows published since start."""
        with self._lock:
            return self._rows

    @property
    def fast_rate(self) -> float:
        """Rows per second over the last seconds."""
        return self._fast_meter.rate(self._clock.monotonic())

    @property
    def slow_rate(self) -> float:
        """Complete passes over the slow values per second over the last seconds."""
        return self._slow_meter.rate(self._clock.monotonic())

    def state(self, state: str) -> None:
        self._hub.set_fact("obd", state)

    def learnt(self, protocol: str | None, adapter: object, vin: object) -> None:
        """What the link learnt at connection (None: not known)."""
        self._hub.set_fact("protocol", protocol)
        if adapter is not None:
            self._hub.set_fact("adapter", str(adapter))
        if vin is not None:
            self._hub.set_fact("vin", str(vin))

    def voltage(self, volts: float) -> None:
        """The adapter's battery reading (ATRV): STATUS, sidecars and trip summaries."""
        self._hub.set_fact("elm_voltage", f"{volts:.1f}")

    def rates(self) -> None:
        self._hub.set_fact("fast_hz", f"{self.fast_rate:.1f}")
        self._hub.set_fact("slow_hz", f"{self.slow_rate:.2f}")

    def slow_read(self, share_of_pass: float) -> None:
        """Slow groups were read: ``share_of_pass`` of a pass over every slow value."""
        self._slow_meter.tick(self._clock.monotonic(), share_of_pass)

    def row(self, readings: dict[str, Reading], bounds: Bounds) -> None:
        """One row of the engine trip (which begins with it if it is not running), unless
        the trip would begin on a clock about to be corrected (the values are kept)."""
        hub = self._hub
        hub.set_max_ages(bounds.fast, bounds.slow)
        if not hub.engine_trip:
            if hub.settling():
                # The receiver's first epochs say the clock is off (a Pi without a
                # real-time clock, its receiver quicker than the car): a trip begun now
                # would be named on the wrong date and end a second later, when GNSS time
                # is adopted. Rows wait for it, as GNSS-only rows do (a few seconds at most).
                hub.update_values(readings)
                return
            hub.begin_trip()
        hub.update_values(readings)
        hub.emit(engine=True)
        with self._lock:
            self._rows += 1
        self._fast_meter.tick(self._clock.monotonic())

    @property
    def engine_trip(self) -> bool:
        """An engine trip runs (rows of the car are being written)."""
        return self._hub.engine_trip

    def end_trip(self) -> None:
        """The car stopped answering: its trip ends and its values go."""
        self._hub.end_trip()
        self._hub.clear_values()

    def disconnected(self) -> None:
        """The adapter is gone: no rates, no trip, no values."""
        hub = self._hub
        hub.set_fact("obd", "disconnected")
        hub.set_fact("fast_hz", None)
        hub.set_fact("slow_hz", None)
        if hub.engine_trip:
            hub.end_trip()
        hub.clear_values()
