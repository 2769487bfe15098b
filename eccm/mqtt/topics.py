"""The topic names of SPEC §8, from MQTT_TOPIC_PREFIX and MQTT_DISCOVERY_PREFIX."""

from __future__ import annotations

import re
from dataclasses import dataclass


def node_id(car: str) -> str:
    """The car as Home Assistant's node id (``[A-Za-z0-9_-]``: a '.' becomes '_')."""
    return "eccm_" + re.sub(r"[^A-Za-z0-9_-]", "_", car)


@dataclass(frozen=True)
class Topics:
    prefix: str  # P, with the car's id already put in
    discovery_prefix: str
    car: str

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def state(self) -> str:
        return f"{self.prefix}/state"

    @property
    def gnss(self) -> str:
        return f"{self.prefix}/gnss"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def dtc(self) -> str:
        return f"{self.prefix}/dtc"

    @property
    def trip(self) -> str:
        return f"{self.prefix}/trip"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.prefix}/cmd/result"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{node_id(self.car)}/{object_id}/config"

    @property
    def discovery_filter(self) -> str:
        """Every discovery topic of this car (to find retained ones to remove)."""
        return f"{self.discovery_prefix}/+/{node_id(self.car)}/+/config"

    def is_discovery(self, topic: str) -> bool:
        parts = topic.split("/")
        head = self.discovery_prefix.split("/")
        return (
            len(parts) == len(head) + 4
            and parts[: len(head)] == head
            and parts[len(head) + 1] == node_id(self.car)
            and parts[-1] == "config"
        )
