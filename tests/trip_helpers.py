"""Shared helpers for the trip computer tests (not a test module)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eccm.config import parse
from eccm.trip.computer import TripSettings


def trip_settings(**overrides: Any) -> TripSettings:
    """Trip settings of config.py's defaults (the only ones), with ``overrides``."""
    return replace(TripSettings.from_config(parse({"CAR_IDENTIFIER": "car"})), **overrides)
