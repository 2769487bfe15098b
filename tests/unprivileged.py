"""Running a subprocess bound by file permissions, as ECCM runs on a Pi (user pi).

The suite runs as root in CI, and root enters any folder and writes any file: the cases
where a user may not (a mount point it may not enter, a lock file left by
`sudo ./start.sh`) run their subprocess without root's two capabilities that pass over
permissions (util-linux's setpriv drops them from the bounding set before the exec). The
files stay root's: the owner's permission bits then decide, as for any user.
"""

from __future__ import annotations

import os

BOUND = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def bound_by_permissions() -> list[str]:
    """A command prefix that makes the command obey file permissions (none when not root)."""
    return BOUND if os.geteuid() == 0 else []
