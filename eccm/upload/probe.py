"""Does the server refuse to overwrite under ``If-None-Match: *``? Asked once per process.

Tried on a tiny object of our own under the car's prefix: a 412 on the first or second
conditional PUT says yes. What an error answer means is eccm/upload/verify.py's
``probe_verdict``.
"""

from __future__ import annotations

import logging
import uuid

from eccm.upload.outcome import LOGGER_NAME
from eccm.upload.s3client import error_code, http_status
from eccm.upload.transfer import ObjectStore
from eccm.upload.verify import digest_bytes, probe_verdict

log = logging.getLogger(LOGGER_NAME)

PROBE_BODY = b"eccm conditional-create probe: this object may be left in place\n"


def probe_conditional_create(store: ObjectStore, key: str) -> bool:
    """True when the server honours conditional create; logs the answer once."""
    supported = _probe_on(store, key)
    deleted = _delete_probe(store, key)
    if not supported and deleted:
        # Every eccm process of this car probes that one key and deletes it when done:
        # another one (`eccm upload` beside the daemon) that deletes it between our
        # two PUTs makes a server that honours If-None-Match look as if it did not.
        # Asked again on a key no other process uses; this key may delete, so that
        # one is removed too and nothing piles up.
        own = f"{key}.{uuid.uuid4().hex[:12]}"
        supported = _probe_on(store, own)
        _delete_probe(store, own)
    if supported:
        log.info("S3 server honours conditional create (If-None-Match)")
    else:
        log.info(
            "S3 server ignores conditional create (If-None-Match): a HEAD before each "
            "PUT keeps existing objects from being overwritten"
        )
    return supported


def _probe_on(store: ObjectStore, key: str) -> bool:
    """Two conditional PUTs of the probe body on ``key``: True at the first 412."""
    from botocore.exceptions import ClientError

    digest = digest_bytes(PROBE_BODY)
    for _ in range(2):
        try:
            store.put(key, PROBE_BODY, digest, conditional=True)
        except ClientError as exc:
            verdict = probe_verdict(http_status(exc), error_code(exc))
            if verdict is None:
                raise
            return verdict
    return False


def _delete_probe(store: ObjectStore, key: str) -> bool:
    """Tidy where the key may delete (True); a write-only key leaves one tiny object."""
    from botocore.exceptions import ClientError

    try:
        store.client.delete_object(Bucket=store.bucket, Key=key)
    except ClientError as exc:
        log.debug("probe object %s left in place: %s", key, exc)
        return False
    return True
