"""The keys the MQTT publisher uses (the wiring builds them from Config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eccm.config import Config


@dataclass(frozen=True)
class MqttSettings:
    car: str  # CAR_IDENTIFIER
    broker: str  # MQTT_BROKER, as given (log lines name it)
    host: str  # MQTT_BROKER's host
    port: int  # MQTT_BROKER's port (1883 / 8883 unless given)
    tls: bool  # mqtts://
    username: str  # MQTT_USERNAME
    password: str = field(repr=False)  # MQTT_PASSWORD
    ca_file: str  # MQTT_CA_FILE
    client_id: str  # MQTT_CLIENT_ID, the car's id put in
    prefix: str  # MQTT_TOPIC_PREFIX, the car's id put in
    discovery_prefix: str  # MQTT_DISCOVERY_PREFIX
    values: tuple[str, ...]  # MQTT_VALUES
    interval: float  # MQTT_INTERVAL
    homeassistant: bool  # MQTT_HOMEASSISTANT
    allow_commands: bool  # MQTT_ALLOW_COMMANDS
    dtc_interval: float  # OBD_DTC_INTERVAL: how often the trouble codes are read again
    gnss: bool  # GPS_POSITION_MONITORING: a position to show (the device_tracker)

    @classmethod
    def from_config(cls, cfg: Config) -> MqttSettings:
        host, port, tls = cfg.mqtt_address
        return cls(
            car=cfg.car_identifier,
            broker=cfg.mqtt_broker,
            host=host,
            port=port,
            tls=tls,
            username=cfg.mqtt_username,
            password=cfg.mqtt_password,
            ca_file=cfg.mqtt_ca_file,
            client_id=cfg.mqtt_client,
            prefix=cfg.mqtt_prefix,
            discovery_prefix=cfg.mqtt_discovery_prefix,
            values=cfg.mqtt_values,
            interval=cfg.mqtt_interval,
            homeassistant=cfg.mqtt_homeassistant,
            allow_commands=cfg.mqtt_allow_commands,
            dtc_interval=cfg.obd_dtc_interval,
            gnss=cfg.gps_position_monitoring,
        )
