"""ECCM: Electronic Centralized Car Monitoring."""

__version__ = "0.1.0"
