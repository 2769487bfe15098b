"""What "verified in the bucket" means, what the server's answers say, and the run's order.

Pure: no server, no thread.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from eccm.store.names import parse_data_name, parse_summary_name
from eccm.upload.keys import SidecarInfo, plan
from eccm.upload.verify import (
    MAX_PARTS,
    digest_bytes,
    etag_confirms,
    is_not_found,
    is_precondition_failed,
    matches_sidecar,
    part_size_for,
    probe_verdict,
    remote_state,
)

BODY = b"TIME_UTC\tRPM\n2026-11-22T02:15:00.000Z\t812\n"
DIGEST = digest_bytes(BODY)
SHA = hashlib.sha256(BODY).hexdigest()


def test_a_digest_carries_size_sha256_and_the_content_md5_header() -> None:
    assert (DIGEST.size, DIGEST.sha256) == (len(BODY), SHA)
    assert DIGEST.content_md5 == base64.b64encode(hashlib.md5(BODY).digest()).decode()


def test_an_object_holds_the_file_when_size_and_sha256_metadata_match() -> None:
    head = {"ContentLength": len(BODY), "Metadata": {"sha256": SHA.upper()}}
    assert remote_state(head, len(BODY), SHA) == "same"
    assert remote_state(None, len(BODY), SHA) == "absent"
    # Same size, other bytes (two cars with the same CAR_IDENTIFIER): never overwritten.
    assert remote_state({**head, "Metadata": {"sha256": "0" * 64}}, len(BODY), SHA) == "different"
    assert remote_state({**head, "ContentLength": 1}, len(BODY), SHA) == "different"
    # An object without our metadata (put by something else) does not prove anything.
    assert remote_state({"ContentLength": len(BODY)}, len(BODY), SHA) == "different"


def test_a_single_puts_etag_confirms_the_body_a_multipart_one_does_not() -> None:
    md5 = hashlib.md5(BODY).hexdigest()
    assert etag_confirms(f'"{md5}"', DIGEST)
    assert etag_confirms(md5.upper(), DIGEST)
    assert not etag_confirms(f'"{md5}-2"', DIGEST)
    assert not etag_confirms("", DIGEST)


def test_a_file_must_still_match_its_sidecar() -> None:
    info = SidecarInfo(file="f", first_time=None, sha256=SHA, size=len(BODY))
    assert matches_sidecar(info, DIGEST)
    assert not matches_sidecar(info, digest_bytes(BODY + b"bit rot\n"))


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (412, "PreconditionFailed", True),  # honours If-None-Match: the key exists
        (412, "", True),  # a HEAD-like answer without a body
        (0, "PreconditionFailed", True),
        (501, "NotImplemented", False),  # does not know the header
        (400, "InvalidArgument", False),
        (403, "AccessDenied", None),  # the run's problem, not the probe's
        (503, "SlowDown", None),
    ],
)
def test_what_an_error_to_a_conditional_put_says_about_the_server(
    status: int, code: str, verdict: bool | None
) -> None:
    assert probe_verdict(status, code) is verdict
    assert is_precondition_failed(status, code) is (verdict is True)


def test_a_missing_object_is_a_404_or_its_codes() -> None:
    assert is_not_found(404, "")
    assert all(is_not_found(0, code) for code in ("404", "NoSuchKey", "NotFound"))
    assert not is_not_found(403, "AccessDenied")


def test_parts_grow_for_a_file_that_would_need_more_than_the_server_allows() -> None:
    mib = 1024 * 1024
    assert part_size_for(100 * mib, 16 * mib) == 16 * mib
    huge = 400 * 1024 * mib
    size = part_size_for(huge, 16 * mib)
    assert size > 16 * mib and -(-huge // size) <= MAX_PARTS


def test_a_run_finishes_orphan_sidecars_first_then_data_files_then_summaries() -> None:
    data = ["C_20261122T021500Z_0002.tsv.gz", "C_20261122T021500Z_0001.tsv.gz"]
    orphan = "C_20261121T080000Z_0007.tsv.gz.json"  # its data file was archived
    summary = "C_20261120T070000Z_summary.json"
    names = [*data, *(n + ".json" for n in data), orphan, summary, "C_x_0003.tsv.gz.part"]
    todo = plan(names)
    jobs = todo.jobs()
    assert [(j.kind, j.name.name) for j in jobs] == [
        ("orphan", "C_20261121T080000Z_0007.tsv.gz"),
        ("data", "C_20261122T021500Z_0001.tsv.gz"),
        ("data", "C_20261122T021500Z_0002.tsv.gz"),
        ("summary", summary),
    ]
    assert todo.waiting == len(jobs) == 4
    assert jobs[1].name == parse_data_name(data[1])
    assert jobs[3].name == parse_summary_name(summary)
