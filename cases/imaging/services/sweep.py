"""Raw objects no ingest will read: removed, not kept.

Staged files carry the patient's identity as the hospital sent it. The ingest removes
them once the de-identified objects are recorded, and every path that stages one
removes it when it cannot hand it over; what a crash leaves behind (a worker killed
between its commit and the removal, a listener killed with a batch still open, an
ingest that failed for good) would otherwise stay on disk for ever. The sweep, run
by beat every PSI_STAGING_SWEEP_SECONDS, removes staged files (a file of one
object, or a listener's batch file of several) older than
PSI_STAGING_GRACE_SECONDS that no unfinished ingest job names, and the scratch
folders of ingest attempts no longer running. The grace period covers an object
staged but not yet handed over (a listener's open batch waits at most
PSI_DICOM_BATCH_SECONDS).
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cases.imaging.services.kinds import INGEST_KIND
from cases.imaging.staging import BATCH_SUFFIX, FILE_SUFFIX, WORK_PREFIX, Staged
from psi.audit import audit_append
from psi.models import Job

_UNFINISHED = (Job.Status.QUEUED, Job.Status.RUNNING)


def staging_sweep(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Remove what the ingest left in the staging folder; return the counts (also
    audited, as counts only: the names are random, the content is identity)."""
    now = now or timezone.now()
    oldest = now.timestamp() - settings.PSI_STAGING_GRACE_SECONDS
    root = Path(settings.PSI_STAGING_DIR)
    counts = {"files": 0, "work_folders": 0}
    if not root.is_dir():
        return counts
    pending = Job.objects.filter(kind=INGEST_KIND, status__in=_UNFINISHED)
    named: set[tuple[str, str]] = set()  # (case folder, file name) an ingest will read
    running: set[str] = set()  # scratch folders of attempts that may be working
    for pk, params in pending.values_list("pk", "params"):
        running.add(f"{WORK_PREFIX}{pk}")
        for reference in (params or {}).get("paths", []):
            path = Staged.parse(reference).path
            named.add((path.parent.name, path.name))
    for folder in root.iterdir():
        if not folder.is_dir() or not folder.name.isdigit():
            continue
        for entry in folder.iterdir():
            if _modified(entry) > oldest:
                continue
            if entry.name.startswith(WORK_PREFIX) and entry.is_dir():
                if entry.name not in running:
                    shutil.rmtree(entry, ignore_errors=True)
                    counts["work_folders"] += 1
            elif (
                entry.suffix in (FILE_SUFFIX, BATCH_SUFFIX)
                and (folder.name, entry.name) not in named
            ):
                entry.unlink(missing_ok=True)
                counts["files"] += 1
    if any(counts.values()):
        with transaction.atomic():
            audit_append(
                actor=None,
                action="imaging.staging_swept",
                payload=counts,
                reason="staged objects no ingest will read",
            )
    return counts


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile (the ingest finished)
        return float("inf")
