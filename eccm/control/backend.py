"""The old home of :class:`~eccm.backend.DaemonBackend`, kept so that older imports work.

The backend serves every front end through :class:`eccm.service.Service`, not the control
socket alone, so it lives next to the service now (``eccm/backend.py``). New code imports
from there; this module goes once nothing imports it.
"""

from eccm.backend import DaemonBackend, fix_readings
from eccm.service import Backend, ClearResult, ValueInfo, plain

__all__ = ["Backend", "ClearResult", "DaemonBackend", "ValueInfo", "fix_readings", "plain"]
