"""Content-addressed storage of files a caller wrote (psi.files.stored_file_adopt)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from psi.files import DigestWriter, stored_file_adopt, stored_file_open

pytestmark = pytest.mark.django_db


def _written(folder: Path, data: bytes, name: str) -> tuple[Path, tuple[str, int]]:
    path = folder / name
    with path.open("xb") as handle:
        writer = DigestWriter(handle)
        writer.write(data[:10])
        writer.write(data[10:])
    return path, writer.digest


def test_an_adopted_file_is_stored_under_its_hash_once(tmp_path, settings):
    data = b"synthetic object " * 1000
    first, digest = _written(tmp_path, data, "a.bin")
    assert digest == (hashlib.sha256(data).hexdigest(), len(data))

    stored = stored_file_adopt(
        actor=None, path=first, content_type="application/dicom", digest=digest
    )
    again, _ = _written(tmp_path, data, "b.bin")
    twice = stored_file_adopt(actor=None, path=again, content_type="application/dicom")

    sha = hashlib.sha256(data).hexdigest()
    assert stored.storage_name == twice.storage_name == f"sha256/{sha[:2]}/{sha}"
    assert not first.exists() and not again.exists()
    with stored_file_open(stored) as handle:
        assert handle.read() == data
    target = Path(default_storage.path(stored.storage_name))
    assert stat.S_IMODE(target.stat().st_mode) == settings.FILE_UPLOAD_PERMISSIONS
    assert target.stat().st_nlink == 1  # linked in, the written name gone


def test_a_new_store_gets_all_its_folders_at_once(tmp_path):
    path, digest = _written(tmp_path, b"one", "one.bin")
    stored_file_adopt(actor=None, path=path, content_type="text/plain", digest=digest)

    root = Path(default_storage.path("sha256"))
    assert sorted(p.name for p in root.iterdir()) == [f"{i:02x}" for i in range(256)]


def test_a_digest_writer_refuses_to_seek_back(tmp_path):
    with (tmp_path / "x.bin").open("xb") as handle:
        writer = DigestWriter(handle)
        writer.write(b"abc")
        assert writer.seek(3) == 3 and writer.tell() == 3
        with pytest.raises(OSError, match="forward"):
            writer.seek(0)
