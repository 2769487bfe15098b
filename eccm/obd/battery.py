"""The car battery as the adapter sees it (ELM327 ``ATRV``): the latest voltage, and one
WARNING when it stays low with the engine off. Pure: the link hands it readings and an
injected clock's time.

A logger that drains the battery overnight is the complaint users of every OBD dongle
make; the adapter's own voltage reading costs one command to the adapter (not the car's
ECUs) on a connection the link has open anyway.
"""

from __future__ import annotations

# How long the voltage must stay below LOW_BATTERY_VOLTAGE (engine off) before the
# warning: a door opened or a fan running on after the engine stopped dips it briefly.
LOW_FOR_SECONDS = 60.0


class BatteryWatch:
    """Keeps the latest voltage; :meth:`reading` returns the warning text once per low
    spell (the voltage back at or above the threshold, or the engine running, re-arms it)."""

    def __init__(self, threshold: float, low_for: float = LOW_FOR_SECONDS) -> None:
        self.threshold = threshold
        self.low_for = low_for
        self.volts: float | None = None
        self._low_since: float | None = None
        self._warned = False

    def reading(self, volts: float | None, now: float, engine_running: bool) -> str | None:
        """A new reading (None: the adapter gave none); the warning to log, or None."""
        if volts is None:
            return None
        self.volts = volts
        if engine_running or volts >= self.threshold:
            self._low_since = None
            self._warned = False
            return None
        if self._low_since is None:
            self._low_since = now
        if self._warned or now - self._low_since < self.low_for:
            return None
        self._warned = True
        return (
            f"the car battery reads {volts:.1f} V with the engine off, below "
            f"LOW_BATTERY_VOLTAGE={self.threshold:g} V for {now - self._low_since:.0f} s: "
            "an adapter left plugged in drains it (unplug it, or power the Pi off with the "
            "ignition)"
        )
