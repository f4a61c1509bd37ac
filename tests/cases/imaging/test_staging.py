"""Staged objects and how jobs name them (cases.imaging.staging)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cases.imaging import staging
from cases.imaging.staging import Staged, StagedBatch, staged_in
from psi.durable import RecordFile


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"


def test_a_reference_names_a_whole_file_or_a_record_of_one(tmp_path):
    whole = Staged.parse(str(tmp_path / "a" / ".." / "x.dcm"))
    assert whole == Staged(tmp_path / "x.dcm")
    assert not whole.is_record
    record = Staged.parse(f"{tmp_path}/b.dcms#8192+526336")
    assert record == Staged(tmp_path / "b.dcms", 8192, 526336)
    assert Staged.parse(str(record)) == record
    # What is not an offset and a length is part of the name.
    odd = Staged.parse(f"{tmp_path}/c.dcms#-1+5")
    assert odd == Staged(tmp_path / "c.dcms#-1+5")


def test_a_batch_writes_its_objects_to_one_file_and_large_ones_apart(monkeypatch):
    monkeypatch.setattr(staging, "RECORD_MAX_BYTES", 1000)
    batch = StagedBatch(7)
    small = [b"first object", b"second object"]
    large = b"L" * 1001
    references = [
        batch.add([small[0]]),
        batch.add([large[:500], memoryview(large)[500:]]),
        batch.add([small[1][:6], small[1][6:]]),
    ]
    batch.close()

    staged = [Staged.parse(reference) for reference in references]
    assert [s.is_record for s in staged] == [True, False, True]
    assert staged[0].path == staged[2].path
    assert staged[0].path.suffix == ".dcms" and staged[1].path.suffix == ".dcm"
    assert [s.read_bytes() for s in staged] == [small[0], large, small[1]]
    assert set(staged_in(7, references)) == set(references)
    assert all(present for _, present in staged_in(7, references).values())
    staging.unstage(references)
    assert list(staging.staging_dir(7).iterdir()) == []


def test_a_batch_that_staged_nothing_leaves_no_file(monkeypatch):
    folder = staging.staging_dir(8)
    batch = StagedBatch(8)

    def full(self, chunks):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(RecordFile, "append", full)
        with pytest.raises(OSError, match="No space"):
            batch.add([b"x"])
    assert len(list(folder.iterdir())) == 1  # created for the first object
    batch.close()
    assert list(folder.iterdir()) == []


def test_a_record_cut_short_reads_as_an_error():
    batch = StagedBatch(9)
    reference = batch.add([b"y" * 5000])
    batch.close()
    record = Staged.parse(reference)
    with record.path.open("r+b") as fp:
        fp.truncate(4000)
    with pytest.raises(EOFError):
        record.read_bytes()


def test_a_batch_file_is_named_durably_before_its_first_object_is_answered(
    monkeypatch,
):
    """The sender is told an object is stored once add() returns: by then the
    folder holding the new file is synced too, once a file."""
    events = []
    monkeypatch.setattr(
        staging, "sync_folder", lambda path: events.append(("folder", Path(path)))
    )
    real = RecordFile.append

    def append(self, chunks):
        events.append(("record", self.path.name))
        return real(self, chunks)

    monkeypatch.setattr(RecordFile, "append", append)
    monkeypatch.setattr(staging, "RECORD_MAX_BYTES", 100)
    batch = StagedBatch(10)
    first = Staged.parse(batch.add([b"one"]))
    batch.add([b"two"])
    large = Staged.parse(batch.add([b"L" * 101]))
    batch.close()

    folder = staging.staging_dir(10)
    assert events == [
        ("folder", folder),
        ("record", first.path.name),
        ("record", first.path.name),
        ("folder", folder),  # the large object's own file
    ]
    assert large.path.parent == folder
