"""Stored files: content-addressed, written once through Django's storage API."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from psi.audit import audit_append
from psi.durable import sync_paths
from psi.errors import DomainError
from psi.models import StoredFile

_CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


class FileIntegrityError(DomainError):
    code = "file_integrity"
    status = 500


class FileTooLarge(DomainError):
    code = "file_too_large"
    status = 413


def storage_name_for(sha256: str) -> str:
    """Where the bytes of ``sha256`` are stored: in one of 256 folders, by the
    first two hex digits (one level: on a local disk the folders are all made at
    the first miss, where two levels meant a new folder for most of the first
    65,536 files; files stored before keep the names their rows hold)."""
    return f"sha256/{sha256[:2]}/{sha256}"


def stored_file_create(
    *,
    actor,
    content: IO[bytes],
    original_name: str = "",
    content_type: str = "application/octet-stream",
    max_bytes: int | None = None,
) -> StoredFile:
    """Store ``content`` under its SHA-256; the same bytes are written only once.

    The content is streamed through a spooled temporary file while hashing, so large
    files never sit whole in memory. Content above ``max_bytes`` (default: the
    PSI_UPLOAD_MAX_BYTES setting) is refused before anything is stored.
    """
    limit = settings.PSI_UPLOAD_MAX_BYTES if max_bytes is None else max_bytes
    digest = hashlib.sha256()
    size = 0
    with tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK) as spool:
        while chunk := content.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if size > limit:
                raise FileTooLarge(
                    f"The file is larger than the limit of {limit} bytes.",
                    field="file",
                )
            spool.write(chunk)
        stored = _stored_file_row(
            actor, digest.hexdigest(), size, content_type, original_name
        )
        if not default_storage.exists(stored.storage_name):
            spool.seek(0)
            _save_once(stored.storage_name, spool)
    stored_files_sync([stored])
    stored.save(force_insert=True)
    return stored


def stored_file_adopt(
    *,
    actor,
    path: Path,
    content_type: str,
    original_name: str = "",
    digest: tuple[str, int] | None = None,
) -> StoredFile:
    """Move a local file the caller wrote into storage under its SHA-256, and
    return its row *unsaved*: a caller adopting many files saves them in one
    ``psi.bulk.bulk_insert``, in the transaction that records what they belong to.

    ``digest`` is the file's (SHA-256, size) when the caller wrote it as a
    ``psi.durable.DurableFile(digest=True)``; otherwise the file is read to hash
    it. On a local file system the file is hard-linked into place, never copied,
    and the link refuses to replace a file already there (the same bytes, stored
    before). Elsewhere (S3) it is uploaded. ``path`` is gone afterwards either way.
    """
    if digest is None:
        with path.open("rb") as handle:
            digest = _digest(handle)
    stored = _stored_file_row(actor, *digest, content_type, original_name)
    name = stored.storage_name
    if not _link_into_storage(path, name) and not default_storage.exists(name):
        with path.open("rb") as handle:
            _save_once(name, handle)
    path.unlink(missing_ok=True)
    return stored


def _stored_file_row(
    actor, sha256: str, size: int, content_type: str, original_name: str
) -> StoredFile:
    return StoredFile(
        sha256=sha256,
        size=size,
        content_type=content_type[:100],
        storage_name=storage_name_for(sha256),
        original_name=original_name[:255],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )


def _save_once(name: str, handle: IO[bytes]) -> None:
    saved = default_storage.save(name, File(handle, name=name))
    if saved != name:  # a concurrent writer stored the same bytes first
        default_storage.delete(saved)


def _local_path(name: str) -> Path | None:
    """Where storage keeps ``name`` on this machine's disk; None for a remote
    store (S3), whose ``path()`` raises NotImplementedError by Django's contract."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


def _link_into_storage(path: Path, name: str) -> bool:
    """Hard-link ``path`` to storage's ``name`` when storage is a local folder on
    the same file system; False when it is not (the caller copies instead)."""
    target = _local_path(name)
    if target is None:
        return False
    mode = settings.FILE_UPLOAD_PERMISSIONS
    if mode is not None and stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)  # the inode the link will name
    for attempt in (1, 2):
        try:
            os.link(path, target)
        except FileExistsError:
            return True  # the same bytes, stored before
        except FileNotFoundError:
            if attempt == 2:
                return False
            _make_folders(target.parent.parent)
        except OSError:  # another file system: link(2) cannot cross it
            return False
        else:
            return True
    return False


def _make_folders(root: Path) -> None:
    """Make all 256 folders of a local store at once (a new store, or one whose
    folders someone removed); a file system operation per file saved after."""
    for shard in range(256):
        (root / f"{shard:02x}").mkdir(parents=True, exist_ok=True)


def stored_files_sync(stored: Iterable[StoredFile]) -> None:
    """Make stored files durable, bytes and names, before the rows that name them
    commit (a local store; a remote one holds a file once its upload returned).
    Writers of many files write them unsynced (``psi.durable.DurableFile`` with
    ``sync=False``) and sync the lot here, once."""
    paths = [_local_path(row.storage_name) for row in stored]
    if paths and paths[0] is not None:  # one store: all of them local, or none
        sync_paths(paths)


def stored_file_open(stored: StoredFile) -> IO[bytes]:
    """The stored file, open for reading, once its bytes were checked against the
    SHA-256 and size recorded for them (REGULATORY 40: checked on read). A file
    missing or altered is logged and raises :class:`FileIntegrityError`; it is
    never served. The check costs one more read of the file (the caller's read then
    comes from the page cache): about a third of a millisecond for a CT slice."""
    handle, problem = _open_checked(stored)
    if handle is None:
        # Row id and storage name only: a content hash names no patient.
        log.error("stored file %s (%s) is %s", stored.pk, stored.storage_name, problem)
        raise FileIntegrityError(
            f"A stored file is {problem}: it no longer matches the checksum "
            "recorded when it was stored."
        )
    return handle


def stored_files_verify() -> dict:
    """Re-hash every stored file against its row; the run is audited.

    Returns the counts (``checked``, ``missing``, ``altered``) and ``failed``, the
    (row id, storage name, problem) of each file that did not match."""
    counts = {"checked": 0, "missing": 0, "altered": 0}
    failed: list[tuple[int, str, str]] = []
    for stored in StoredFile.objects.order_by("pk").iterator(chunk_size=500):
        counts["checked"] += 1
        handle, problem = _open_checked(stored)
        if handle is not None:
            handle.close()
            continue
        counts[problem] += 1
        failed.append((stored.pk, stored.storage_name, problem))
    with transaction.atomic():
        audit_append(actor=None, action="files.verified", payload=counts)
    return {**counts, "failed": failed}


def _open_checked(stored: StoredFile) -> tuple[IO[bytes] | None, str]:
    """The stored file open at its start, and ""; or None and what is wrong with
    it ("missing", "altered")."""
    try:
        handle = default_storage.open(stored.storage_name, "rb")
    except FileNotFoundError:
        return None, "missing"
    try:
        found = _digest(handle)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    if found != (stored.sha256, stored.size):
        handle.close()
        return None, "altered"
    return handle, ""


def _digest(handle: IO[bytes]) -> tuple[str, int]:
    sha256 = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        sha256.update(chunk)
        size += len(chunk)
    return sha256.hexdigest(), size
