"""The staging area: received DICOM objects wait here until the ingest job has
de-identified and stored them.

Staged files carry raw patient identity, so they live only on the server's disk under
``settings.PSI_STAGING_DIR/<case id>/`` with random names (never the client's file
name, which may name the patient), are written durably (a job may run on another
worker after this process died) and are removed once ingested.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from psi.durable import DurableFile, sync_folder

#: Scratch folders of ingest attempts, beside the staged files: ``.work-<job id>``.
WORK_PREFIX = ".work-"


def staging_dir(case_id: int) -> Path:
    """The case's staging folder (created, owner-only)."""
    folder = Path(settings.PSI_STAGING_DIR) / str(int(case_id))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def staged_path(case_id: int) -> Path:
    """A fresh, unused path in the case's staging folder."""
    return staging_dir(case_id) / f"{secrets.token_hex(16)}.dcm"


def stage_chunks(case_id: int, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to a new staged file, flushed and fsynced; return its path.

    The file is created exclusively, so two writers never share one, and written
    around the page cache (``psi.durable.DurableFile``); on any error the partial
    file is removed.
    """
    path = staged_path(case_id)
    with DurableFile(path) as handle:
        for chunk in chunks:
            handle.write(chunk)
    return path


def staging_sync(case_id: int) -> None:
    """Make the names of the case's staged files durable, as their bytes already
    are (``stage_chunks``): the case's staging folder is fsynced. A job names
    staged files only after this, so a crash cannot leave it naming files the
    folder lost."""
    sync_folder(staging_dir(case_id))


def staged_in(
    case_id: int, paths: Iterable[str | os.PathLike[str]]
) -> dict[Path, bool]:
    """Those of ``paths`` that name a file of the case's staging folder, each with
    whether it is still there.

    Job params are data, not trusted paths: the ingest reads and deletes only its
    own case's staged files. A path counts when, made absolute and normalised
    (``..`` removed), it lies directly in the folder (as configured or as
    resolved) and ends in ``.dcm``; it is there when it is a regular file, never
    a link to one elsewhere. One ``lstat`` a path: resolving each would cost a
    tenth of a millisecond."""
    folder = Path(settings.PSI_STAGING_DIR) / str(int(case_id))
    folders = {Path(os.path.abspath(folder)), folder.resolve()}
    found: dict[Path, bool] = {}
    for path in paths:
        candidate = Path(os.path.abspath(path))
        if candidate.parent not in folders or candidate.suffix != ".dcm":
            continue
        try:
            found[candidate] = stat.S_ISREG(os.lstat(candidate).st_mode)
        except OSError:
            found[candidate] = False
    return found


def readahead(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Ask the kernel to start reading staged files the caller will read next.

    Staged files are written around the page cache (``DurableFile``), so the ingest
    would otherwise wait for the device at every file; the reads now overlap with
    the work on the files before them. A hint only: errors are ignored."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
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


def unstage(paths: Iterable[str | os.PathLike[str]]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


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
