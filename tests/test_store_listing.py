"""The record folder as the web page's Files list shows it: closed, complete files only."""

from __future__ import annotations

from pathlib import Path

from eccm.store.listing import find_file, list_files

TRIP = "20261204T000000Z"


def test_a_file_still_being_closed_is_not_listed_as_complete(tmp_path: Path) -> None:
    # x.tsv: renamed from its .part, not yet compressed into x.tsv.gz (no sidecar yet).
    closing = f"car_{TRIP}_0002.tsv"
    done = f"car_{TRIP}_0001.tsv.gz"
    summary = f"car_{TRIP}_summary.json"
    for name in (closing, done, done + ".json", summary, f"car_{TRIP}_0003.tsv.part"):
        (tmp_path / name).write_text("x")
    complete = {f.name for f in list_files(tmp_path, complete=True)}
    assert complete == {done, summary}
    assert {f.name for f in list_files(tmp_path)} == {closing, done, summary}
    assert find_file(tmp_path, closing) is None
    found = find_file(tmp_path, done)
    assert found is not None and found.kind == "data"


def test_an_uploaded_file_whose_sidecar_waits_for_the_link_is_listed(tmp_path: Path) -> None:
    # The uploader moves a verified data file to uploaded/ before it sends the sidecar;
    # with the link down the sidecar stays in the record folder, maybe for days. The file
    # vanished from the web page's Files list meanwhile (404 on its download).
    sealed = f"car_{TRIP}_0000.tsv.gz.age"
    (tmp_path / "uploaded").mkdir()
    (tmp_path / "uploaded" / sealed).write_text("x")
    (tmp_path / (sealed + ".json")).write_text("{}")
    assert sealed in {f.name for f in list_files(tmp_path, complete=True)}
    found = find_file(tmp_path, sealed)
    assert found is not None and found.uploaded
