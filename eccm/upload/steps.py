"""Points in the upload of one file where a step hook is called.

The crash tests (tests/uploader_run.py) SIGKILL the process there, as a power cut would, and
prove that the next run loses nothing and copies nothing twice. A daemon has no hook.
"""

from __future__ import annotations

BEFORE_PUT = "before_put"  # file read and checked against its sidecar, no PUT sent yet
DURING_PUT = "during_put"  # half of the body read by a single PUT (not multipart)
AFTER_PUT = "after_put"  # PUT answered, the object not yet verified by HEAD
BEFORE_DELETE = "before_delete"  # data object verified, the local data file still here
AFTER_DELETE_DATA = "after_delete_data"  # data file archived, its sidecar not yet sent
STEPS = (BEFORE_PUT, DURING_PUT, AFTER_PUT, BEFORE_DELETE, AFTER_DELETE_DATA)


def no_hook(step: str) -> None:
    return None
