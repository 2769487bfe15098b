"""GNSS-corrected wall time: a Raspberry Pi has no real-time clock.

Until NTP or a fix sets it, the system clock may be hours or years off. GNSS time is tied
to the monotonic clock (``fix.time_utc - fix.received``), never to the system clock, so
that NTP stepping the system clock between two fixes (or while the receiver has lost its
fix) cannot move the corrected time. Whenever the system clock is off the GNSS time by
more than ``threshold`` seconds, rows are stamped with GNSS time and the time source is
``gnss``; otherwise with the system clock (``system``).

A fix is read some time after the instant it describes (a few to several hundred
milliseconds, varying from fix to fix): each measurement is a little late, never early.
The anchor therefore follows the earliest-looking measurement at once and a later-looking
one only at ``DRIFT`` seconds per second (the monotonic clock's own drift), so that the
latency jitter of the receiver never makes stamps go backwards.

A single fix never sets or steps the time: one checksum-valid sentence with a wrong date
would otherwise stamp rows decades off, end the trip and judge files' ages on that word.
GNSS time is adopted (the first anchor, or a step away from the anchor) only once
:data:`CONFIRM_EPOCHS` consecutive epochs agree with each other and with the monotonic
clock (their ``time_utc - received`` within :data:`AGREE` seconds). A fix that disagrees
and is not confirmed is ignored and counted in :attr:`TimeBase.rejected`; a receiver that
keeps disagreeing is logged once, until its time is adopted again.

Nor may fixes that each agree with the one before walk the time away: the anchor follows
an earlier-looking fix at once only up to ``threshold`` (plus ``DRIFT``) beyond where it
was adopted, since a fix's latency can make it look that much late, never more. A fix
further ahead is a candidate step like any other (found: epochs each 1.9 s ahead of the
last were all "within the threshold" and moved the stamps 570 s in a minute, silently).
"""

from __future__ import annotations

import logging
import threading

from eccm.gnss.fix import Fix

log = logging.getLogger(__name__)

# Seconds per second the anchor may move back to follow later-looking fixes: well above a
# crystal's drift (tens of ppm), far below anything that could reorder rows.
DRIFT = 1e-3
# Consecutive epochs that must agree before GNSS time is adopted or stepped: at 1 Hz three
# seconds' delay, and an attacker (or a glitching receiver) must keep up a consistent lie.
CONFIRM_EPOCHS = 3
# Seconds two epochs' ``time_utc - received`` may differ and still agree: the latency of a
# fix varies by a few hundred milliseconds from one to the next, never by a second.
AGREE = 1.0
# Disagreeing epochs in a row before the receiver's time is said to be ignored (once).
MAD_AFTER = 5
# Seconds without a new epoch after which rows no longer wait for a confirmation (at 1 Hz
# the next epoch is due within 1 s).
SETTLE_GAP = 2.0


class TimeBase:
    def __init__(self, threshold: float = 2.0) -> None:
        self._threshold = threshold
        self._anchor: float | None = None  # GNSS epoch minus monotonic time
        self._anchored_at = 0.0  # monotonic time of the last anchor update
        # The anchor when it was adopted (first anchor or a step), and when: the anchor may
        # move forward at once only to threshold + DRIFT after that beyond it.
        self._adopted = 0.0
        self._adopted_at = 0.0
        self._offset = 0.0  # GNSS minus system, when the system clock is off; else 0
        self._lock = threading.Lock()
        # Measurements (time_utc - received) of consecutive epochs that disagree with the
        # anchor (or come before any): a candidate, adopted once CONFIRM_EPOCHS agree.
        self._candidate: list[float] = []
        self._candidate_at = 0.0  # monotonic time of its last epoch
        self._last_time: float | None = None  # time_utc of the last epoch seen
        # Monotonic time of the first fix with a position, timed or not (see settling).
        self._first_position_at: float | None = None
        self._disagreeing = 0  # epochs in a row not adopted
        self._warned = False
        # Epochs whose time was ignored: outliers and candidates that never got confirmed
        # (counted once known: when a disagreeing epoch or the anchor discards them).
        self.rejected = 0

    def observe(self, fix: Fix) -> None:
        """Learn GNSS time from a fix that carries a full date and time and a position."""
        if not fix.has_position or (fix.quality is not None and fix.quality <= 0):
            return
        if fix.time_utc is None:
            with self._lock:
                if self._first_position_at is None:
                    self._first_position_at = fix.received
            return
        # The GPS week rollover is already resolved in the fix: by NmeaDecoder for a serial
        # receiver, by gpsd itself for gpsd. Correcting here again would move gpsd's time.
        measured = fix.time_utc - fix.received
        with self._lock:
            if fix.time_utc == self._last_time:
                return  # another sentence of the same epoch (RMC, then GGA): no new witness
            self._last_time = fix.time_utc
            anchor = self._anchor
            if (
                anchor is not None
                and abs(measured - anchor) <= self._threshold
                and measured <= self._ceiling(fix.received)
            ):
                # The epochs that disagreed before this one were outliers after all.
                self.rejected += len(self._candidate)
                self._candidate.clear()
                self._disagreeing = 0
                if measured > anchor:
                    anchor = measured
                else:
                    allowed = DRIFT * max(0.0, fix.received - self._anchored_at)
                    anchor = max(measured, anchor - allowed)
            elif not self._confirmed(measured, fix.received):
                return
            else:
                if anchor is not None:
                    log.warning(
                        "GNSS time stepped by %.1f s (%d consecutive epochs agree)",
                        measured - anchor,
                        CONFIRM_EPOCHS,
                    )
                elif self._warned:
                    log.info("GNSS time is consistent again: adopted")
                anchor = max(self._candidate)
                self._adopted, self._adopted_at = anchor, fix.received
                self._candidate.clear()
                self._disagreeing = 0
                self._warned = False
            self._anchor = anchor
            self._anchored_at = fix.received
        self.stamp(fix.received_wall, fix.received)

    def _ceiling(self, at: float) -> float:
        """The furthest ahead the anchor may be followed at once at monotonic ``at``: the
        latency of the fixes it was adopted from (at most the threshold) and the monotonic
        clock's drift since. Called under the lock."""
        return self._adopted + self._threshold + DRIFT * max(0.0, at - self._adopted_at)

    def _confirmed(self, measured: float, measured_at: float) -> bool:
        """Add an epoch that disagrees with the anchor to the candidate; True once enough
        agree. Called under the lock."""
        cand = self._candidate
        if cand and not all(abs(measured - c) <= AGREE for c in cand):
            # Rejected only now: epochs that go on to confirm a time are adopted, not
            # rejected (a normal start would otherwise count its first epochs).
            self.rejected += len(cand)
            cand.clear()
        cand.append(measured)
        self._candidate_at = measured_at
        if len(cand) >= CONFIRM_EPOCHS:
            return True
        self._disagreeing += 1
        if self._disagreeing >= MAD_AFTER and not self._warned:
            self._warned = True
            log.warning(
                "GNSS: the receiver's time disagrees with itself and with the monotonic "
                "clock (%d epochs in a row): its time is ignored until %d consecutive "
                "epochs agree",
                self._disagreeing,
                CONFIRM_EPOCHS,
            )
        return False

    def settling(self, system_epoch: float, monotonic: float) -> bool:
        """True while no GNSS time is adopted yet and the epochs being confirmed say the
        system clock is off by more than the threshold: a row stamped now would be on a
        clock about to step (a trip on the wrong date, ended epochs later); also before any
        epoch with a time came, for SETTLE_GAP seconds from the first position (a GGA
        without a date came first: the RMC is on its way). False once
        adopted, while the epochs agree with the system clock, once the receiver was
        found to disagree with itself (MAD_AFTER epochs), and once no epoch came for
        SETTLE_GAP seconds (fixes without a time, dates rejected): rows then go on on the
        system clock."""
        with self._lock:
            if self._anchor is not None:
                return False
            if not self._candidate:
                # No epoch with a time yet. Receivers that send GGA (no date) before RMC in
                # every epoch (SiRFstarV, Telit) give a first fix with a position and no
                # time; the RMC that tells whether the clock is off comes within the epoch.
                first = self._first_position_at
                return (
                    self._last_time is None
                    and first is not None
                    and monotonic - first <= SETTLE_GAP
                )
            if self._disagreeing >= MAD_AFTER or monotonic - self._candidate_at > SETTLE_GAP:
                return False
            return abs(self._candidate[-1] + monotonic - system_epoch) > self._threshold

    def stamp(self, system_epoch: float, monotonic: float) -> tuple[float, str]:
        """(time, source) of a row: GNSS time when the system clock is off, else system."""
        with self._lock:
            was = self._offset
            anchor = self._anchor
            if anchor is None:
                self._offset = 0.0
            else:
                off = anchor + monotonic - system_epoch
                # Hysteresis: a clock off by about the threshold must not flip the source
                # (and step the stamps) at every row.
                limit = self._threshold / 2 if was else self._threshold
                self._offset = off if abs(off) > limit else 0.0
            now = self._offset
        if (was == 0.0) != (now == 0.0):
            if now:
                log.warning("system clock is off by %.1f s: stamping rows with GNSS time", now)
            else:
                log.info("system clock agrees with GNSS again: stamping rows with system time")
        if now:
            return system_epoch + now, "gnss"
        return system_epoch, "system"

    @property
    def offset(self) -> float:
        """GNSS minus system time at the last stamp, 0 while the system clock is right."""
        with self._lock:
            return self._offset

    @property
    def source(self) -> str:
        return "gnss" if self.offset else "system"

    def correct(self, system_epoch: float) -> float:
        """The system epoch plus the offset found at the last stamp (prefer :meth:`stamp`)."""
        return system_epoch + self.offset
