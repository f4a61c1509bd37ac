"""The staging area: received DICOM objects wait here until the ingest job has
de-identified and stored them.

Staged files carry raw patient identity, so they live only on the server's disk under
``settings.PSI_STAGING_DIR/<case id>/`` with random names (never the client's file
name, which may name the patient), are written durably (a job may run on another
worker after this process died) and are removed once ingested.

An object is staged as a file of its own (``<random>.dcm``: uploads, STOW-RS, large
objects) or as a record of a batch file (``<random>.dcms``: the listener's objects
of one batch, :class:`StagedBatch`). Jobs name them by reference (:class:`Staged`):
the file's path, and for a record ``#<offset>+<length>`` after it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from psi.durable import DurableFile, RecordFile, sync_folder

#: Scratch folders of ingest attempts, beside the staged files: ``.work-<job id>``.
WORK_PREFIX = ".work-"
#: A staged object in a file of its own; a batch file of several.
FILE_SUFFIX = ".dcm"
BATCH_SUFFIX = ".dcms"
#: Objects larger than this get a file of their own even in a batch (the ingest
#: reads a record whole into memory, a file of its own as a stream).
RECORD_MAX_BYTES = 16 * 1024 * 1024
_RECORD = re.compile(r"(?P<path>.+)#(?P<offset>[0-9]{1,15})\+(?P<length>[0-9]{1,15})")


@dataclass(frozen=True)
class Staged:
    """One staged object: the whole file ``path``, or ``length`` bytes of it from
    ``offset`` (a record of a batch file)."""

    path: Path
    offset: int = 0
    length: int | None = None

    @classmethod
    def parse(cls, reference: str | os.PathLike[str]) -> Staged:
        """The object a job's reference names (``str`` of a Staged, or a path)."""
        text = os.fspath(reference)
        match = _RECORD.fullmatch(text)
        if match is None:
            return cls(Path(os.path.abspath(text)))
        return cls(
            Path(os.path.abspath(match["path"])),
            int(match["offset"]),
            int(match["length"]),
        )

    def __str__(self) -> str:
        if self.length is None:
            return str(self.path)
        return f"{self.path}#{self.offset}+{self.length}"

    @property
    def is_record(self) -> bool:
        return self.length is not None

    def read_bytes(self) -> bytes:
        """The object's bytes."""
        if self.length is None:
            return self.path.read_bytes()
        with self.path.open("rb", buffering=0) as fp:
            return self.read_from(fp.fileno())

    def read_from(self, descriptor: int) -> bytes:
        """A record's bytes from its file, open as ``descriptor`` (a short read
        raises EOFError: the file was cut)."""
        data = os.pread(descriptor, self.length, self.offset)
        if len(data) != self.length:
            raise EOFError("the staged record is incomplete")
        return data


def staging_dir(case_id: int) -> Path:
    """The case's staging folder (created, owner-only)."""
    folder = Path(settings.PSI_STAGING_DIR) / str(int(case_id))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def staged_path(case_id: int, suffix: str = FILE_SUFFIX) -> Path:
    """A fresh, unused path in the case's staging folder."""
    return staging_dir(case_id) / f"{secrets.token_hex(16)}{suffix}"


def stage_chunks(case_id: int, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to a new staged file, flushed and fsynced; return its path.

    The file is created exclusively, so two writers never share one, and leaves the
    page cache once on disk (``psi.durable.DurableFile``); on any error the partial
    file is removed.
    """
    path = staged_path(case_id)
    with DurableFile(path) as handle:
        for chunk in chunks:
            handle.write(chunk)
    return path


class StagedBatch:
    """The objects of one batch for a case, staged as records of one batch file
    (created with the first), each durable when :meth:`add` returns, name
    included (the folder is synced once a new file is in it); an object larger
    than RECORD_MAX_BYTES gets a file of its own. Not thread-safe: one writer at
    a time, and :meth:`close` once the batch is complete."""

    def __init__(self, case_id: int) -> None:
        self.case_id = case_id
        self._file: RecordFile | None = None

    def add(self, chunks: list[bytes | memoryview]) -> str:
        """Stage one object (its bytes are ``chunks``); return its reference."""
        size = sum(len(chunk) for chunk in chunks)
        if size > RECORD_MAX_BYTES:
            path = stage_chunks(self.case_id, chunks)
            staging_sync(self.case_id)
            return str(path)
        if self._file is None:
            self._file = RecordFile(staged_path(self.case_id, BATCH_SUFFIX))
            staging_sync(self.case_id)
        offset, length = self._file.append(chunks)
        return str(Staged(self._file.path, offset, length))

    def close(self) -> None:
        """No more objects: release the batch file (removed if it holds none)."""
        if self._file is not None:
            if self._file.size:
                self._file.close()
            else:
                self._file.discard()
            self._file = None


def staging_sync(case_id: int) -> None:
    """Make the names of the case's staged files durable, as their bytes already
    are (``stage_chunks``): the case's staging folder is fsynced. A job names
    staged files only after this, so a crash cannot leave it naming files the
    folder lost."""
    sync_folder(staging_dir(case_id))


def staged_in(
    case_id: int, references: Iterable[str | os.PathLike[str]]
) -> dict[str, tuple[Staged, bool]]:
    """Those of ``references`` that name an object of the case's staging folder,
    each with whether its file is still there.

    Job params are data, not trusted paths: the ingest reads and deletes only its
    own case's staged files. A reference counts when its path, made absolute and
    normalised (``..`` removed), lies directly in the folder (as configured or as
    resolved) and ends in ``.dcm`` (a whole file) or ``.dcms`` (a record of a batch
    file); the file is there when it is a regular file, never a link to one
    elsewhere. One ``lstat`` a file: resolving each would cost a tenth of a
    millisecond."""
    folder = Path(settings.PSI_STAGING_DIR) / str(int(case_id))
    folders = {Path(os.path.abspath(folder)), folder.resolve()}
    present: dict[Path, bool] = {}
    found: dict[str, tuple[Staged, bool]] = {}
    for reference in references:
        staged = Staged.parse(reference)
        suffix = BATCH_SUFFIX if staged.is_record else FILE_SUFFIX
        if staged.path.parent not in folders or staged.path.suffix != suffix:
            continue
        if staged.path not in present:
            try:
                present[staged.path] = stat.S_ISREG(os.lstat(staged.path).st_mode)
            except OSError:
                present[staged.path] = False
        found[os.fspath(reference)] = (staged, present[staged.path])
    return found


def readahead(references: Iterable[str | os.PathLike[str]]) -> None:
    """Ask the kernel to start reading staged files the caller will read next.

    Staged files leave the page cache once they are on disk (``psi.durable``), so
    the ingest would otherwise wait for the device at every file; the reads now
    overlap with the work on the files before them. A hint only: errors are
    ignored."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in _files(references):
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            advise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def unstage(references: Iterable[str | os.PathLike[str]]) -> None:
    """Remove the files of the staged objects (a batch file with all its
    records)."""
    for path in _files(references):
        path.unlink(missing_ok=True)


def _files(references: Iterable[str | os.PathLike[str]]) -> dict[Path, None]:
    """The files the references name, each once, in order."""
    return dict.fromkeys(Staged.parse(reference).path for reference in references)


@contextmanager
def work_folder(case_id: int, job_id: int) -> Iterator[Path]:
    """The ingest job's scratch folder beside the case's staged files (so its
    output can be hard-linked into storage), emptied first: an attempt killed
    mid-way leaves files that the next attempt of the same job clears."""
    folder = staging_dir(case_id) / f"{WORK_PREFIX}{int(job_id)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
