"""Content-addressed storage (psi.files): files a caller wrote, adopted under their
hash; every read checked against it; the stored_files_verify command."""

from __future__ import annotations

import hashlib
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from psi.durable import DurableFile
from psi.files import (
    FileIntegrityError,
    stored_file_adopt,
    stored_file_open,
)
from psi.models import AuditEvent

pytestmark = pytest.mark.django_db


def _written(folder: Path, data: bytes, name: str) -> tuple[Path, tuple[str, int]]:
    path = folder / name
    with DurableFile(path, digest=True) as handle:
        handle.write(data[:10])
        handle.write(data[10:])
    return path, handle.digest


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


def _stored(folder: Path, data: bytes, name: str):
    path, digest = _written(folder, data, name)
    stored = stored_file_adopt(
        actor=None, path=path, content_type="application/dicom", digest=digest
    )
    stored.save()
    return stored


def _alter(stored, data: bytes) -> None:
    target = Path(default_storage.path(stored.storage_name))
    target.chmod(0o600)
    target.write_bytes(data)


def test_a_stored_file_is_checked_against_its_hash_when_opened(tmp_path, caplog):
    stored = _stored(tmp_path, b"synthetic object " * 100, "a.bin")
    with stored_file_open(stored) as handle:
        assert handle.read() == b"synthetic object " * 100  # served whole

    _alter(stored, b"synthetic object " * 99 + b"SYNTHETIC OBJECT ")  # same size
    with pytest.raises(FileIntegrityError, match="altered"):
        stored_file_open(stored)
    assert f"stored file {stored.pk} ({stored.storage_name}) is altered" in caplog.text

    Path(default_storage.path(stored.storage_name)).unlink()
    with pytest.raises(FileIntegrityError, match="missing"):
        stored_file_open(stored)


class TestStoredFilesVerify:
    def test_all_intact_files_pass_and_the_run_is_audited(self, tmp_path):
        _stored(tmp_path, b"one", "one.bin")
        _stored(tmp_path, b"two", "two.bin")
        out = StringIO()
        call_command("stored_files_verify", stdout=out)
        assert "OK: 2 stored files verified" in out.getvalue()
        event = AuditEvent.objects.get(action="files.verified")
        assert event.payload == {"checked": 2, "missing": 0, "altered": 0}

    def test_missing_and_altered_files_are_named_and_fail_the_run(self, tmp_path):
        intact = _stored(tmp_path, b"intact", "i.bin")
        altered = _stored(tmp_path, b"altered", "a.bin")
        missing = _stored(tmp_path, b"missing", "m.bin")
        _alter(altered, b"ALTERED")
        Path(default_storage.path(missing.storage_name)).unlink()

        err = StringIO()
        with pytest.raises(CommandError, match="1 missing and 1 altered of 3") as exc:
            call_command("stored_files_verify", stderr=err)
        assert exc.value.returncode == 1
        lines = err.getvalue().splitlines()
        assert f"file {altered.pk} {altered.storage_name}: altered" in lines
        assert f"file {missing.pk} {missing.storage_name}: missing" in lines
        assert not [line for line in lines if str(intact.storage_name) in line]
        event = AuditEvent.objects.get(action="files.verified")
        assert event.payload == {"checked": 3, "missing": 1, "altered": 1}
