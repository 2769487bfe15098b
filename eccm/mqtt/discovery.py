"""Home Assistant MQTT discovery (SPEC §8): one device per car, a sensor per published
value, the MIL, the position, an event at each trip's end, the upload queue and the last
error.

Every config is published retained under
``{MQTT_DISCOVERY_PREFIX}/<component>/eccm_{CAR}/<object>/config``; a config of this car
found there that is no longer wanted (a value left MQTT_VALUES) is removed by publishing
an empty retained message, which is how Home Assistant deletes an entity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eccm import __version__
from eccm.mqtt.topics import Topics, node_id

# python-OBD's unit names → (Home Assistant unit, device_class). A unit Home Assistant
# has no class for gets none (a percentage of load or of fuel is no "battery").
_UNITS: Mapping[str, tuple[str, str | None]] = {
    "revolutions_per_minute": ("rpm", None),
    "kilometer_per_hour": ("km/h", "speed"),
    "degree_Celsius": ("°C", "temperature"),
    "percent": ("%", None),
    "kilopascal": ("kPa", "pressure"),
    "pascal": ("Pa", "pressure"),
    "volt": ("V", "voltage"),
    "milliampere": ("mA", "current"),
    "kilometer": ("km", "distance"),
    "second": ("s", "duration"),
    "minute": ("min", "duration"),
    "degree": ("°", None),
    "gram_per_second": ("g/s", None),
    "gps": ("g/s", None),  # python-OBD's own name of grams per second (MAF): not GNSS
    "lph": ("L/h", None),
    "liter_per_hour": ("L/h", None),
    "count": ("", None),
    "ratio": ("", None),
}


@dataclass(frozen=True)
class Entity:
    component: str
    object_id: str
    config: Mapping[str, object]


def ha_unit(unit: str | None) -> tuple[str | None, str | None]:
    """(unit_of_measurement, device_class) of a python-OBD unit; (None, None) for text."""
    if not unit:
        return None, None
    found = _UNITS.get(unit)
    if found is None:
        return unit, None  # shown as python-OBD names it, without a class
    return (found[0] or None), found[1]


def device(car: str, vin: str | None) -> dict[str, object]:
    dev: dict[str, object] = {
        "identifiers": [node_id(car)],
        "name": f"ECCM {car}",
        "manufacturer": "ECCM",
        "model": "OBD-II and GNSS logger",
        "sw_version": __version__,
    }
    if vin:
        dev["serial_number"] = vin
    return dev


def entities(
    topics: Topics,
    values: Sequence[tuple[str, str | None, str]],
    vin: str | None,
    *,
    position: bool = True,
) -> list[Entity]:
    """Every discovery config. ``values``: (name, python-OBD unit or None, description)
    of each MQTT_VALUES entry, in order. ``position``: GPS_POSITION_MONITORING is on (off,
    the position would stay unknown for ever: no device_tracker)."""
    node = node_id(topics.car)
    common: dict[str, object] = {
        "device": device(topics.car, vin),
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
    }

    def entity(component: str, object_id: str, **config: object) -> Entity:
        return Entity(
            component,
            object_id,
            {"unique_id": f"{node}_{object_id}", **config, **common},
        )

    out: list[Entity] = []
    for name, unit, description in values:
        ha, device_class = ha_unit(unit)
        config: dict[str, object] = {
            "name": description or name,
            "state_topic": topics.state,
            "value_template": f"{{{{ value_json.{name} }}}}",
        }
        if unit:  # a number: Home Assistant keeps statistics of it
            config["state_class"] = "measurement"
            if ha:
                config["unit_of_measurement"] = ha
            if device_class:
                config["device_class"] = device_class
        out.append(entity("sensor", name.lower(), **config))
    out.append(
        entity(
            "binary_sensor",
            "mil",
            name="Check engine light (MIL)",
            state_topic=topics.dtc,
            value_template="{{ 'ON' if value_json.mil else 'OFF' }}",
            device_class="problem",
            json_attributes_topic=topics.dtc,
            json_attributes_template=(
                "{{ {'stored': value_json.stored | map(attribute='code') | list, "
                "'pending': value_json.pending | map(attribute='code') | list} | tojson }}"
            ),
        )
    )
    if position:
        out.append(
            entity(
                "device_tracker",
                "position",
                name="Position",
                json_attributes_topic=topics.gnss,
                source_type="gps",
            )
        )
    out.append(
        entity(
            "event",
            "trip_end",
            name="Trip ended",
            # P/trip is an event (not retained): Home Assistant's event entity takes it,
            # with the trip's id, start, end and totals as the event's attributes, for an
            # automation ("notify me of each trip's distance") without a template sensor.
            state_topic=topics.trip,
            event_types=["trip_end"],
            value_template=(
                "{{ {'event_type': 'trip_end', 'trip': value_json.trip, "
                "'start': value_json.start, 'end': value_json.end, "
                "'totals': value_json.totals} | tojson }}"
            ),
        )
    )
    out.append(
        entity(
            "sensor",
            "upload_queue",
            name="Upload queue",
            state_topic=topics.status,
            value_template="{{ value_json.upload_queue }}",
            unit_of_measurement="files",
            state_class="measurement",
            entity_category="diagnostic",
        )
    )
    out.append(
        entity(
            "sensor",
            "last_error",
            name="Last error",
            state_topic=topics.status,
            # A state is at most 255 characters; "none" reads better than an empty state.
            value_template="{{ (value_json.last_error or 'none')[:250] }}",
            entity_category="diagnostic",
        )
    )
    return out


def config_topics(topics: Topics, wanted: Sequence[Entity]) -> dict[str, Mapping[str, object]]:
    return {topics.discovery(e.component, e.object_id): e.config for e in wanted}
