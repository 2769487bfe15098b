"""MQTT (SPEC §8): the car published to a broker for Home Assistant, Node-RED or a fleet.

Pure parts (no sockets, no threads, an injected clock): :mod:`topics` (names),
:mod:`payloads` (message bodies and commands), :mod:`discovery` (Home Assistant's config
messages), :mod:`plan` (what to publish when, the offline outbox, the reconnect backoff).
The shell over paho-mqtt is :mod:`publisher`: one thread, calling the service like every
other front end.
"""
