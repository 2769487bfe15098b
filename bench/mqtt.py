"""Bytes per hour of driving that ECCM sends to an MQTT broker (issue 13: the data cost).

One simulated hour runs through the publisher's own decisions and payloads
(``eccm.mqtt.plan``, ``payloads``, ``discovery``) on a fake clock: the state message every
MQTT_INTERVAL with values that move as in driving, the position every interval (GNSS on),
the status when a field that matters changes (a new file every FILE_ROTATION_SECONDS),
discovery once at connect, the keep-alive. Each message is counted as the MQTT packet paho
sends (fixed header, topic, packet id for QoS 1, payload); the wire estimate adds TCP/IP
headers (52 bytes per segment, both ways: the broker's ACK and PUBACK) and, with TLS,
a TLS 1.3 record (22 bytes) per packet.

Rows: the defaults (MQTT_VALUES' five values every 5 s); every value the car logs (fast
ones and OBD_SLOW_COMMANDS=ALL, about 40 on a typical car) every 1 s; and an hour parked
(the ignition off, every value null) at the defaults.

    .venv/bin/python bench/mqtt.py
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm import replies  # noqa: E402
from eccm.config import parse  # noqa: E402
from eccm.mqtt import discovery, payloads  # noqa: E402
from eccm.mqtt.plan import Discovery, Message, Plan  # noqa: E402
from eccm.mqtt.publisher import keepalive_for  # noqa: E402
from eccm.mqtt.topics import Topics  # noqa: E402
from eccm.service import Position, ValueEntry, Values  # noqa: E402

HOUR = 3600.0
TCP_IP = 52  # IPv4 20 + TCP 20 + timestamps 12
TLS_RECORD = 22  # TLS 1.3: 5 header + 16 tag + 1 content type
START = 1_780_000_000.0

# Typical magnitudes of python-OBD's units while driving: (low, high, step per second).
_RANGES = {
    "revolutions_per_minute": (750.0, 4000.0, 250.0),
    "kilometer_per_hour": (0.0, 130.0, 4.0),
    "percent": (0.0, 100.0, 5.0),
    "degree_Celsius": (20.0, 95.0, 0.2),
    "kilopascal": (25.0, 101.0, 6.0),
    "pascal": (-500.0, 500.0, 40.0),
    "volt": (0.1, 14.4, 0.1),
    "degree": (-10.0, 40.0, 2.0),
    "gram_per_second": (2.0, 60.0, 4.0),
    "kilometer": (0.0, 65000.0, 0.03),
    "second": (0.0, 7200.0, 1.0),
    "minute": (0.0, 120.0, 0.02),
    "lph": (0.5, 20.0, 1.0),
    "ratio": (0.8, 1.2, 0.02),
    "milliampere": (-5.0, 5.0, 0.3),
    "count": (0.0, 10.0, 0.0),
}


def mqtt_packet(message: Message) -> int:
    """Bytes of a PUBLISH as paho frames it."""
    remaining = 2 + len(message.topic.encode()) + (2 if message.qos else 0) + len(message.payload)
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + varint + remaining


def every_logged_value() -> list[str]:
    """The mode 01 values python-OBD decodes to a number (a car gives most of them)."""
    import obd

    from eccm.obd.values import describe

    names = []
    for cmd in obd.commands[1]:
        if cmd is None or cmd.name.startswith(("PIDS_", "STATUS", "FREEZE_DTC", "OBD_COMPLIANCE")):
            continue
        unit, _ = describe(cmd)
        if unit in _RANGES and unit != "count":
            names.append(cmd.name)
    return names[:40]


@dataclass
class Tally:
    messages: int = 0
    mqtt_bytes: int = 0
    qos1: int = 0

    def add(self, sent: Sequence[Message]) -> None:
        for m in sent:
            self.messages += 1
            self.mqtt_bytes += mqtt_packet(m)
            self.qos1 += 1 if m.qos else 0

    def wire(self, tls: bool) -> int:
        """Both directions: our segments, the broker's ACKs and PUBACKs (ACKs of those)."""
        per_packet = TCP_IP + (TLS_RECORD if tls else 0)
        up = self.mqtt_bytes + self.messages * per_packet
        down = self.messages * TCP_IP + self.qos1 * (4 + TLS_RECORD * tls)
        return up + down


def simulate(values: Sequence[str], interval: float, driving: bool, seed: int = 1) -> Tally:
    import obd

    from eccm.obd.values import describe

    cfg = parse(
        {
            "CAR_IDENTIFIER": "bench-car",
            "MQTT_BROKER": "mqtt://broker",
            "MQTT_VALUES": ",".join(values),
            "MQTT_INTERVAL": str(interval),
        }
    )
    topics = Topics(cfg.mqtt_prefix, cfg.mqtt_discovery_prefix, cfg.car_identifier)
    rng = random.Random(seed)
    units = {n: describe(obd.commands[n])[0] for n in values}
    now = {n: rng.uniform(*_RANGES[units[n]][:2]) for n in values}
    plan, tally = Plan(interval), Tally()
    tally.add(plan.on_connect(topics.availability))
    described = [(n, units[n], describe(obd.commands[n])[1]) for n in values]
    wanted = discovery.entities(topics, described, "WP0ZZZ99ZTS390000")
    tally.add(Discovery().update(discovery.config_topics(topics, wanted)))
    status = dict.fromkeys(("obd", "trip", "recording", "upload_queue", "last_error"))
    keepalive = keepalive_for(interval)
    t, last_sent, file_no = 0.0, 0.0, 0
    while t < HOUR:
        if plan.due(t):
            for name in values:
                low, high, step = _RANGES[units[name]]
                if driving:
                    now[name] = min(high, max(low, now[name] + rng.uniform(-step, step) * interval))
            entries = (
                {
                    n: ValueEntry(
                        round(now[n]) * 1.0
                        if units[n] in ("kilometer_per_hour", "degree_Celsius")
                        else now[n],
                        units[n],
                        50,
                    )
                    for n in values
                }
                if driving
                else {}
            )
            answer = Values(START + t, entries)
            sent = list(plan.offer_periodic(topics.state, payloads.state(answer, values), t))
            angle = t / 600.0
            pos = (
                Position(
                    START + t,
                    48.1 + 0.05 * math.sin(angle),
                    11.5 + 0.05 * math.cos(angle),
                    520.0,
                    14.0,
                    90.0,
                    9,
                    0.9,
                    1,
                    200,
                )
                if driving
                else None
            )
            sent += plan.offer_periodic(topics.gnss, payloads.gnss(pos), t)
            if driving:
                file_no = int(t // cfg.file_rotation_seconds)
            status.update(
                obd="connected" if driving else "disconnected",
                recording=f"bench-car_T_{file_no:04d}.tsv.part" if driving else None,
            )
            sent += plan.offer_status(
                topics.status, replies.status({**status, "rows": int(t * 5), "uptime_s": t}), t
            )
            tally.add(sent)
            if sent:
                last_sent = t
        if t - last_sent >= keepalive:  # PINGREQ (2 bytes) and PINGRESP
            tally.messages += 1
            tally.mqtt_bytes += 2
            last_sent = t
        t = round(t + 0.1, 1)
    return tally


def main() -> int:
    defaults = parse({"CAR_IDENTIFIER": "x"})
    every = every_logged_value()
    rows = [
        (
            f"defaults: {len(defaults.mqtt_values)} values every {defaults.mqtt_interval:g} s, driving",
            defaults.mqtt_values,
            defaults.mqtt_interval,
            True,
        ),
        (f"every value ({len(every)}) every 1 s, driving", every, 1.0, True),
        (
            "defaults, parked (every value null)",
            defaults.mqtt_values,
            defaults.mqtt_interval,
            False,
        ),
    ]
    print(
        f"{'one hour':<52} {'messages':>9} {'MQTT bytes':>11} {'wire (TCP)':>11} {'wire (TLS)':>11}"
    )
    for label, values, interval, driving in rows:
        tally = simulate(values, interval, driving)
        print(
            f"{label:<52} {tally.messages:>9} {_kb(tally.mqtt_bytes):>11} "
            f"{_kb(tally.wire(False)):>11} {_kb(tally.wire(True)):>11}"
        )
    return 0


def _kb(n: int) -> str:
    return f"{n / 1000:.0f} kB" if n < 10_000_000 else f"{n / 1e6:.1f} MB"


if __name__ == "__main__":
    raise SystemExit(main())
