"""The error tree: every error says who is at fault.

Library exceptions are converted at the edge with ``raise ... from`` so that the CLI can
print one clear line instead of a traceback.
"""


class EccmError(Exception):
    """Base of every error ECCM raises on purpose."""


class ConfigError(EccmError):
    """config.ini or an ECCM_* variable holds a value ECCM cannot use."""


class DeviceError(EccmError):
    """The OBD adapter or the GNSS receiver cannot be opened or read."""


class UploadError(EccmError):
    """A file could not be uploaded to S3 or its upload could not be verified."""


class ProtocolError(EccmError):
    """A control-socket peer broke the protocol."""
