"""Imaging services: the gate, the ingest of staged DICOM objects and the designer's
signed visual review.

Every way imaging arrives (upload, DICOMweb, the C-STORE listener) stages raw files
(``cases.imaging.staging``) and calls :func:`ingest_enqueue`; the ``imaging.ingest``
job then runs :func:`study_ingest`, which de-identifies, stores, checks and records
the objects. Raw files never leave the staging folder; only de-identified bytes are
stored.

Which cases take imaging (``IMAGING_STATUSES``): a submitted case (first arrival),
one that has received imaging (more series, or a re-sent study), and one whose imaging
was accepted (an additional series for the same study). Once design has started the
design stands on a reviewed, signed study: new imaging then needs the case put back
(or a new case), so ``in_design`` and later refuse it, as do draft, on-hold,
cancelled and closed cases.
"""

from __future__ import annotations

import datetime
import io
import logging
import secrets
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from pydicom.uid import AllTransferSyntaxes
from simple_history.utils import bulk_create_with_history

from cases.imaging import quality
from cases.imaging.deid import deidentify_file, summarise_by_study
from cases.imaging.models import (
    AcquisitionProfile,
    ImagingIdentityLink,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    PatientImagingKey,
)
from cases.imaging.previews import PreviewError, series_previews
from cases.imaging.staging import is_staged, staging_dir, unstage
from cases.models import Case
from cases.selectors import PATIENT_IDENTITY
from consent.models import Purpose
from consent.services import ConsentMissing, consent_require
from psi.audit import audit_append
from psi.crypto import identity_hmac
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.files import stored_file_create, stored_file_open
from psi.jobs import job_enqueue, job_succeed
from psi.models import Job, Signature
from psi.permissions import has_object_perm, require_object_perm
from psi.signatures import signature_authenticate, signature_record

log = logging.getLogger(__name__)

S = Case.Status

#: Case statuses that take imaging (see the module docstring).
IMAGING_STATUSES = frozenset({S.SUBMITTED, S.IMAGING_RECEIVED, S.IMAGING_ACCEPTED})

INGEST_KIND = "imaging.ingest"
INGEST_TASK = "cases.imaging.ingest"

#: Attributes without which an object cannot be placed or checked.
MANDATORY = (
    ("SOPInstanceUID", "SOP Instance UID"),
    ("StudyInstanceUID", "Study Instance UID"),
    ("SeriesInstanceUID", "Series Instance UID"),
    ("SOPClassUID", "SOP Class UID"),
    ("Modality", "Modality"),
)

#: Review findings the designer records, each ok / not ok with notes.
REVIEW_FINDINGS = {
    "motion": "Motion",
    "metal_artefacts": "Metal artefacts",
    "region_coverage": "Coverage of the region",
    "healthy_side_coverage": "Coverage of the healthy side (for mirroring)",
}


# --- the gate and the entry point ---------------------------------------------


def case_for_accession(accession_number: str) -> Case | None:
    """The case whose reference is the Accession Number (``C-2026-00042``), exactly
    (DICOM's trailing padding aside)."""
    reference = (accession_number or "").rstrip(" \x00")
    if not reference:
        return None
    return (
        Case.objects.select_related("patient", "hospital", "manufacturer")
        .defer(*PATIENT_IDENTITY)
        .filter(reference=reference)
        .first()
    )


def imaging_gate(case: Case) -> None:
    """Refuse imaging for a case that does not take it (Conflict) or whose patient
    has no valid consent for imaging exchange (ConsentMissing)."""
    if case.status in (S.CANCELLED, S.CLOSED):
        raise Conflict(
            f"The case is {case.get_status_display().lower()}; it takes no imaging.",
            status=case.status,
        )
    if case.status not in IMAGING_STATUSES:
        raise Conflict(
            f"A case that is {case.get_status_display().lower()} does not take "
            "imaging.",
            status=case.status,
        )
    consent_require(case.patient, Purpose.IMAGING_EXCHANGE)


def _may_send(actor, case: Case) -> bool:
    return has_object_perm(actor, "submit_case", case) or has_object_perm(
        actor, "manage_case", case
    )


def ingest_enqueue(
    *,
    actor,
    case: Case,
    paths: list[str],
    source: str,
    calling_ae_title: str = "",
) -> Job:
    """Queue the ingest of staged files for ``case``; the task starts on commit.

    ``actor`` is the sending user (hospital users with submit_case, manufacturer
    users with manage_case), or None for a DICOM node, named by its calling AE title
    (the listener admitted it as a known peer).
    """
    if source not in ImagingStudy.Source.values:
        raise DomainError(
            f"Choose one of {', '.join(ImagingStudy.Source.values)}.", field="source"
        )
    is_user = getattr(actor, "is_authenticated", False)
    if is_user:
        require_object_perm(actor, "view", case)
        if not _may_send(actor, case):
            raise PermissionRefused("You may not send imaging for this case.")
    elif not calling_ae_title:
        raise PermissionRefused("Imaging needs a known sender.")
    staged = [str(p) for p in paths]
    with transaction.atomic():
        case = (
            Case.objects.select_related("patient")
            .defer(*PATIENT_IDENTITY)
            .get(pk=case.pk)
        )
        imaging_gate(case)
        return job_enqueue(
            kind=INGEST_KIND,
            task_name=INGEST_TASK,
            actor=actor if is_user else None,
            target=case,
            params={
                "case_id": case.pk,
                "paths": staged,
                "source": source,
                "calling_ae_title": calling_ae_title[:16],
                "sender_id": actor.pk if is_user else None,
            },
        )


# --- the ingest job ------------------------------------------------------------


@dataclass
class _Accepted:
    """One object de-identified and stored, waiting for its rows."""

    hmac: str
    sop_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    original: dict[str, str]
    transfer_syntax: str
    instance_number: int | None
    position: float | None
    header: quality.SliceHeader
    file: Any
    deid_path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def _patient_date_offset(patient) -> int:
    """The patient's date shift in days, created once, random and non-zero."""
    key = PatientImagingKey.objects.filter(patient=patient).first()
    if key is None:
        days = (30 + secrets.randbelow(3621)) * secrets.choice((-1, 1))
        try:
            with transaction.atomic():
                key = PatientImagingKey.objects.create(
                    patient=patient, date_offset_days=str(days)
                )
        except IntegrityError:  # a concurrent ingest created it first
            key = PatientImagingKey.objects.get(patient=patient)
    return int(key.date_offset_days)


def _region_profile(region: str) -> quality.AcquisitionProfile:
    row = AcquisitionProfile.objects.filter(region=region).first()
    if row is not None:
        return quality.AcquisitionProfile.from_dict(row.limits)
    try:
        return quality.default_profile(region)
    except ValueError:
        return quality.default_profile(Case.Region.CRANIAL)


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _pixels_complete(path: Path) -> bool:
    """Whether an uncompressed object holds all the pixel bytes its header
    announces (a transfer cut short leaves a header and half an image)."""
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        return True
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is not None and ts.is_compressed:
        return True
    expected = (
        int(ds.get("Rows") or 0)
        * int(ds.get("Columns") or 0)
        * int(ds.get("SamplesPerPixel") or 1)
        * int(ds.get("NumberOfFrames") or 1)
        * int(ds.get("BitsAllocated") or 8)
        // 8
    )
    return len(ds.PixelData) >= expected


def _position(header: quality.SliceHeader) -> float | None:
    return float(header.position[2]) if header.position else None


def _sender_label(sender, calling_ae_title: str) -> str:
    if sender is not None:
        return f"user {sender.get_username()}"
    return f"DICOM node {calling_ae_title}" if calling_ae_title else "unknown sender"


class _Batch:
    """What one run of the ingest learned, file by file."""

    def __init__(self) -> None:
        self.accepted: list[_Accepted] = []
        self.failed: list[dict[str, str]] = []
        self.duplicates = 0
        self.quarantined: list[dict[str, Any]] = []
        self.reports: list[dict] = []
        self.study_uid: str | None = None  # original, for the batch check
        self.patient_id: str | None = None
        self.seen: set[str] = set()

    def fail(self, index: int, reason: str) -> None:
        self.failed.append({"file": f"#{index}", "reason": reason})


def _read_one(
    *,
    index: int,
    path: Path,
    case: Case,
    batch: _Batch,
    known: set[str],
    reviewed_study_uids: set[str],
    workdir: Path,
    offset: int,
    sender,
) -> None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # pydicom raises many types on damaged input
        batch.fail(index, "Not a DICOM file, or the file is truncated.")
        return
    missing = [label for keyword, label in MANDATORY if not _text(ds, keyword)]
    if missing:
        batch.fail(index, f"Missing mandatory attributes: {', '.join(missing)}.")
        return
    ts = str(ds.file_meta.get("TransferSyntaxUID") or "")
    if ts not in AllTransferSyntaxes:
        batch.fail(index, "Unsupported transfer syntax.")
        return
    study_uid, patient_id = _text(ds, "StudyInstanceUID"), _text(ds, "PatientID")
    if batch.study_uid is None:
        batch.study_uid, batch.patient_id = study_uid, patient_id
    elif study_uid != batch.study_uid:
        batch.fail(index, "Belongs to a different study than the rest of the batch.")
        return
    elif patient_id != batch.patient_id:
        batch.fail(index, "Belongs to a different patient than the rest of the batch.")
        return
    sop_uid = _text(ds, "SOPInstanceUID")
    digest = identity_hmac(sop_uid)
    if digest in known or digest in batch.seen:
        batch.duplicates += 1
        return
    try:
        if not _pixels_complete(path):
            batch.fail(index, "The file is truncated: its image data is incomplete.")
            return
        dst = workdir / f"{uuid.uuid4().hex}.dcm"
        result = deidentify_file(
            path,
            dst,
            pseudonym=case.patient.pseudonym,
            uid_secret=settings.UID_SECRET.encode(),
            date_offset_days=offset,
        )
    except Exception:
        log.warning("imaging object %s of case %s unreadable", index, case.pk)
        batch.fail(index, "Not a DICOM file, or the file is truncated.")
        return
    out = result.dataset
    batch.reports.append(result.report)
    if _text(out, "StudyInstanceUID") in reviewed_study_uids:
        batch.fail(
            index,
            "The study was already reviewed and signed; send new images as a new "
            "study.",
        )
        return
    batch.seen.add(digest)
    with dst.open("rb") as handle:
        stored = stored_file_create(
            actor=sender, content=handle, content_type="application/dicom"
        )
    if result.quarantine_reason:
        batch.quarantined.append(
            {
                "file": f"#{index}",
                "stored_file": stored.pk,
                "reason": str(result.quarantine_reason),
            }
        )
        return
    header = quality.SliceHeader.from_dataset(out)
    batch.accepted.append(
        _Accepted(
            hmac=digest,
            sop_uid=_text(out, "SOPInstanceUID"),
            sop_class_uid=_text(out, "SOPClassUID"),
            series_uid=_text(out, "SeriesInstanceUID"),
            study_uid=_text(out, "StudyInstanceUID"),
            original={
                "study": study_uid,
                "series": _text(ds, "SeriesInstanceUID"),
                "instance": sop_uid,
            },
            transfer_syntax=str(out.file_meta.get("TransferSyntaxUID") or ts),
            instance_number=header.instance_number,
            position=_position(header),
            header=header,
            file=stored,
            deid_path=dst,
            meta={
                "modality": _text(out, "Modality")[:16],
                "study_description": _text(out, "StudyDescription")[:200],
                "series_description": _text(out, "SeriesDescription")[:200],
                "study_date": out.get("StudyDate"),
                "patient": {
                    "id": patient_id,
                    "name": _text(ds, "PatientName"),
                },
            },
        )
    )


def _stored_headers(series: ImagingSeries) -> list[quality.SliceHeader]:
    headers = []
    for instance in series.instances.select_related("file"):
        with stored_file_open(instance.file) as handle:
            headers.append(
                quality.SliceHeader.from_dataset(
                    pydicom.dcmread(handle, stop_before_pixels=True)
                )
            )
    return headers


def _previews(sources: list, sender) -> tuple[dict[str, int], str]:
    """Store the series' PNG previews; their StoredFile ids, or why there are none."""
    handles = []
    try:
        opened = []
        for source in sources:
            if isinstance(source, Path):
                opened.append(source)
            else:
                handle = stored_file_open(source)
                handles.append(handle)
                opened.append(handle)
        images = series_previews(opened)
    except PreviewError as exc:
        return {}, str(exc)
    finally:
        for handle in handles:
            handle.close()
    ids = {}
    for name, png in images.items():
        stored = stored_file_create(
            actor=sender,
            content=io.BytesIO(png),
            original_name=f"{name}.png",
            content_type="image/png",
        )
        ids[name] = stored.pk
    return ids, ""


def _shifted_date(value) -> datetime.date | None:
    try:
        return datetime.datetime.strptime(str(value), "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


def study_ingest(job: Job, progress: Callable[[int, str], None]) -> dict:
    """Ingest the job's staged files into one de-identified, checked study.

    Slow work (reading, de-identifying, storing content-addressed bytes, previews)
    runs first, outside any transaction; the rows, the verdict, the case transition,
    the audit event and the job's success then commit together, so a crash or a
    retry leaves one consistent study (objects already ingested are skipped by the
    keyed HMAC of their original SOP Instance UID, unique per case).
    """
    params = job.params
    case = (
        Case.objects.select_related("patient")
        .defer(*PATIENT_IDENTITY)
        .filter(pk=params["case_id"])
        .first()
    )
    paths = [Path(p) for p in params.get("paths", [])]
    result: dict[str, Any] = {
        "accepted": 0,
        "skipped_duplicates": 0,
        "failed": [],
        "quarantined": 0,
        "study_id": None,
    }
    if case is None:
        result["failed"] = [
            {"file": f"#{i}", "reason": "The case no longer exists."}
            for i in range(1, len(paths) + 1)
        ]
        return result
    sender = None
    if params.get("sender_id"):
        sender = get_user_model().objects.filter(pk=params["sender_id"]).first()
    ae_title = params.get("calling_ae_title", "")
    label = _sender_label(sender, ae_title)
    own = [p for p in paths if is_staged(case.pk, p)]

    try:
        imaging_gate(case)
    except (ConsentMissing, Conflict) as refusal:
        # Without consent or an open case the raw objects must not stay either.
        result["failed"] = [
            {"file": f"#{i}", "reason": refusal.message}
            for i in range(1, len(paths) + 1)
        ]
        with transaction.atomic():
            job_succeed(job, result=result, message=refusal.message)
        unstage(own)
        return result

    known = set(
        ImagingInstance.objects.filter(case=case).values_list(
            "original_uid_hmac", flat=True
        )
    )
    reviewed = set(
        ImagingStudy.objects.filter(case=case, review__isnull=False).values_list(
            "study_uid", flat=True
        )
    )
    offset = _patient_date_offset(case.patient)
    batch = _Batch()
    total = max(len(paths), 1)
    with tempfile.TemporaryDirectory(dir=staging_dir(case.pk)) as work:
        workdir = Path(work)
        for index, path in enumerate(paths, 1):
            if path not in own:
                batch.fail(index, "Not a staged file of this case.")
            elif not path.exists():
                batch.fail(index, "The staged file is gone (already ingested?).")
            else:
                _read_one(
                    index=index,
                    path=path,
                    case=case,
                    batch=batch,
                    known=known,
                    reviewed_study_uids=reviewed,
                    workdir=workdir,
                    offset=offset,
                    sender=sender,
                )
            progress(index * 80 // total, f"file {index} of {len(paths)}")
        outcome = _record(
            job=job,
            case=case,
            batch=batch,
            params=params,
            sender=sender,
            label=label,
            progress=progress,
        )
    result.update(outcome)
    # Raw objects go once the rows that replace them are committed.
    transaction.on_commit(lambda: unstage(own))
    return result


def _series_reports(
    study: ImagingStudy | None, batch: _Batch, profile, sender
) -> tuple[dict[str, quality.SeriesReport], dict[str, tuple[dict, str]]]:
    """Quality of every series of the study (stored and new objects), and previews
    of the series that received objects."""
    new_by_series: dict[str, list[_Accepted]] = {}
    for item in batch.accepted:
        new_by_series.setdefault(item.series_uid, []).append(item)
    stored: dict[str, ImagingSeries] = {}
    if study is not None:
        stored = {s.series_uid: s for s in study.series.all()}
    reports, previews = {}, {}
    for uid in sorted(set(stored) | set(new_by_series)):
        new = new_by_series.get(uid, [])
        old = stored.get(uid)
        headers = [n.header for n in new]
        old_files = []
        if old is not None:
            headers += _stored_headers(old)
            old_files = [i.file for i in old.instances.select_related("file")]
        reports[uid] = quality.check_series(headers, profile)
        if new:
            previews[uid] = _previews([n.deid_path for n in new] + old_files, sender)
    return reports, previews


def _record(*, job, case, batch: _Batch, params, sender, label, progress) -> dict:
    study_uid = batch.accepted[0].study_uid if batch.accepted else None
    existing = (
        ImagingStudy.objects.filter(study_uid=study_uid).first() if study_uid else None
    )
    profile = _region_profile(case.anatomical_region)
    reports, previews = _series_reports(existing, batch, profile, sender)
    progress(90, "recording")
    deid_summary = summarise_by_study(batch.reports)
    result: dict[str, Any] = {
        "accepted": 0,
        "skipped_duplicates": batch.duplicates,
        "failed": batch.failed,
        "quarantined": len(batch.quarantined),
        "study_id": existing.pk if existing else None,
    }
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("patient", "hospital")
            .defer(*PATIENT_IDENTITY)
            .get(pk=case.pk)
        )
        imaging_gate(case)
        if not batch.accepted and not batch.quarantined:
            job_succeed(job, result=result, message="nothing new to ingest")
            return result
        first = batch.accepted[0] if batch.accepted else None
        study_uid = first.study_uid if first else _quarantine_study_uid(batch)
        study, _ = ImagingStudy.objects.get_or_create(
            study_uid=study_uid,
            defaults={
                "case": case,
                "modality": first.meta["modality"] if first else "",
                "study_date": _shifted_date(first.meta["study_date"])
                if first
                else None,
                "description": first.meta["study_description"] if first else "",
                "status": ImagingStudy.Status.PROCESSING,
                "source": params["source"],
                "sent_by": sender,
                "calling_ae_title": params.get("calling_ae_title", ""),
            },
        )
        if study.case_id != case.pk:
            raise Conflict("This study was already received for another case.")
        if study.review_id:
            raise Conflict("The study was already reviewed and signed.")
        # Under the case lock: objects a concurrent or earlier attempt stored.
        known = set(
            ImagingInstance.objects.filter(
                case=case, original_uid_hmac__in=[a.hmac for a in batch.accepted]
            ).values_list("original_uid_hmac", flat=True)
        )
        fresh = [a for a in batch.accepted if a.hmac not in known]
        result["skipped_duplicates"] += len(batch.accepted) - len(fresh)
        series_rows = _series_rows(study, fresh, reports, previews, sender)
        instances = [
            ImagingInstance(
                case=case,
                series=series_rows[a.series_uid],
                study=study,
                sop_instance_uid=a.sop_uid,
                sop_class_uid=a.sop_class_uid,
                original_uid_hmac=a.hmac,
                file=a.file,
                instance_number=a.instance_number,
                position=a.position,
                transfer_syntax_uid=a.transfer_syntax,
            )
            for a in fresh
        ]
        bulk_create_with_history(instances, ImagingInstance, default_user=sender)
        _identity_links(study, fresh, case, sender)
        verdict = _study_outcome(study, reports, series_rows, batch, deid_summary)
        study._history_user = sender
        study.save()
        result.update(
            accepted=len(fresh),
            study_id=study.pk,
            status=study.status,
            verdict=verdict.as_dict() if verdict else None,
        )
        audit_append(
            actor=sender,
            action="imaging.study_ingested",
            obj=study,
            organisation=case.hospital,
            payload={
                "case": case.reference,
                "accepted": len(fresh),
                "skipped_duplicates": result["skipped_duplicates"],
                "failed": len(batch.failed),
                "quarantined": len(batch.quarantined),
                "status": study.status,
            },
            reason=f"received from {label}",
        )
        _move_case(case, study, verdict, sender, label, fresh_count=len(fresh))
        job_succeed(job, result=result, message=f"study {study.pk}: {study.status}")
    return result


def _quarantine_study_uid(batch: _Batch) -> str:
    for report in batch.reports:
        if report.get("study_instance_uid"):
            return report["study_instance_uid"]
    raise Conflict("No study could be identified in the objects received.")


def _series_rows(study, fresh, reports, previews, sender) -> dict[str, ImagingSeries]:
    rows = {s.series_uid: s for s in study.series.all()}
    by_series: dict[str, list[_Accepted]] = {}
    for item in fresh:
        by_series.setdefault(item.series_uid, []).append(item)
    for uid, items in by_series.items():
        if uid in rows:
            continue
        header = items[0].header
        series, _ = ImagingSeries.objects.get_or_create(
            series_uid=uid,
            defaults={
                "study": study,
                "series_number": header.series_number,
                "modality": items[0].meta["modality"],
                "description": items[0].meta["series_description"],
                "orientation": list(header.orientation or []),
                "rows": header.rows,
                "columns": header.columns,
                "pixel_spacing": list(header.pixel_spacing or []),
                "kernel": (header.kernel or "")[:64],
                "frame_of_reference_uid": (header.frame_of_reference_uid or "")[:64],
            },
        )
        rows[uid] = series
    for uid, series in rows.items():
        report = reports.get(uid)
        if report is not None:
            series.quality_report = report.as_dict()
            series.quality_verdict = report.verdict
            series.slice_thickness = report.slice_thickness_mm
            series.spacing = report.slice_spacing_mm
            series.instance_count = report.slice_count
        if uid in previews:
            ids, problem = previews[uid]
            if ids:
                series.previews = ids
            elif problem:
                series.quality_report = {**series.quality_report, "preview": problem}
        series._history_user = sender
        series.save()
    return rows


def _identity_links(study, fresh, case, sender) -> None:
    wanted: dict[tuple[str, str], str] = {}
    for item in fresh:
        wanted[("study", item.study_uid)] = item.original["study"]
        wanted[("series", item.series_uid)] = item.original["series"]
        wanted[("instance", item.sop_uid)] = item.original["instance"]
    if fresh:
        patient = fresh[0].meta["patient"]
        wanted[("patient", case.patient.pseudonym)] = (
            f"{patient['id']}\n{patient['name']}"
        )
    have = set(
        ImagingIdentityLink.objects.filter(study=study).values_list(
            "kind", "deidentified"
        )
    )
    links = [
        ImagingIdentityLink(
            study=study, kind=kind, deidentified=deid[:64], original=original
        )
        for (kind, deid), original in wanted.items()
        if (kind, deid[:64]) not in have
    ]
    bulk_create_with_history(links, ImagingIdentityLink, default_user=sender)


def _study_outcome(study, reports, series_rows, batch, deid_summary):
    study.series_count = len(series_rows)
    study.instance_count = ImagingInstance.objects.filter(study=study).count()
    summary = deid_summary.get(study.study_uid)
    if summary:
        previous = study.deid_report or {}
        if previous.get("objects"):
            summary = _merge_deid(previous, summary)
        study.deid_report = summary
    quarantine = list(study.quality_report.get("quarantine", []))
    quarantine += batch.quarantined
    verdict = quality.study_verdict(list(reports.values())) if reports else None
    study.quality_report = {
        "series": {uid: r.as_dict() for uid, r in reports.items()},
        "verdict": verdict.as_dict() if verdict else None,
        "quarantine": quarantine,
    }
    if quarantine:
        study.status = ImagingStudy.Status.QUARANTINED
        study.proposed_series = None
    elif verdict and verdict.accepted:
        study.status = ImagingStudy.Status.ACCEPTED
        study.proposed_series = series_rows.get(verdict.proposed_series_uid)
    else:
        study.status = ImagingStudy.Status.REJECTED
        study.proposed_series = None
    return verdict


def _merge_deid(previous: dict, new: dict) -> dict:
    merged = {
        "objects": previous.get("objects", 0) + new.get("objects", 0),
        "quarantined": previous.get("quarantined", 0) + new.get("quarantined", 0),
        "series": dict(previous.get("series", {})),
        "quarantine_reasons": dict(previous.get("quarantine_reasons", {})),
        "counts": {},
        "totals": {},
    }
    for uid, count in new.get("series", {}).items():
        merged["series"][uid] = merged["series"].get(uid, 0) + count
    for reason, count in new.get("quarantine_reasons", {}).items():
        reasons = merged["quarantine_reasons"]
        reasons[reason] = reasons.get(reason, 0) + count
    for source in (previous, new):
        for category, labels in source.get("counts", {}).items():
            bucket = merged["counts"].setdefault(category, {})
            for name, count in labels.items():
                bucket[name] = bucket.get(name, 0) + count
    merged["totals"] = {c: sum(v.values()) for c, v in merged["counts"].items()}
    return merged


def _move_case(case, study, verdict, sender, label, *, fresh_count: int) -> None:
    from cases import services as case_services

    if case.status == S.SUBMITTED:
        case = case_services.case_receive_imaging(
            actor=sender,
            case=case,
            reason=f"Study {study.pk} received",
            on_behalf_of=label,
        )
    if (
        study.status == ImagingStudy.Status.REJECTED
        and case.status == S.IMAGING_RECEIVED
        and verdict is not None
    ):
        reasons = " ".join(f"- {r}" for r in verdict.reasons)
        case_services.case_request_rescan(
            actor=sender,
            case=case,
            reason=f"{verdict.message} {reasons}".strip(),
            on_behalf_of=label,
        )


# --- the visual review ---------------------------------------------------------


def _clean_findings(findings: dict) -> dict:
    if not isinstance(findings, dict):
        raise DomainError("Give the findings as an object.", field="findings")
    unknown = sorted(set(findings) - set(REVIEW_FINDINGS))
    if unknown:
        raise DomainError(f"Unknown finding {unknown[0]}.", field="findings")
    cleaned = {}
    for key, label in REVIEW_FINDINGS.items():
        value = findings.get(key)
        if not isinstance(value, dict) or not isinstance(value.get("ok"), bool):
            raise DomainError(
                f"Record whether {label.lower()} is ok (ok: true or false).",
                field=f"findings.{key}",
            )
        notes = str(value.get("notes") or "").strip()
        if not value["ok"] and not notes:
            raise DomainError(
                f"Describe the problem with {label.lower()}.",
                field=f"findings.{key}",
            )
        cleaned[key] = {"ok": value["ok"], "notes": notes[:2000]}
    return cleaned


def _require_reviewable(actor, study: ImagingStudy) -> None:
    require_object_perm(actor, "view", study)
    if not has_object_perm(actor, "manage_case", study):
        raise PermissionRefused("Only the manufacturer's staff review imaging.")
    if study.status != ImagingStudy.Status.ACCEPTED:
        raise Conflict("Only an accepted study is reviewed.", status=study.status)
    if study.review_id:
        raise Conflict("The study's visual review is already signed.")


def study_review_sign(
    *, actor, study: ImagingStudy, password: str, findings: dict
) -> ImagingStudy:
    """The designer's visual review (motion, metal artefacts, coverage of the region
    and of the healthy side), signed with the meaning "reviewed" (21 CFR 11.50).
    Call outside any transaction: a failed attempt must stay recorded."""
    cleaned = _clean_findings(findings)
    study = ImagingStudy.objects.select_related("case").get(pk=study.pk)
    _require_reviewable(actor, study)
    signature_authenticate(signer=actor, password=password)
    with transaction.atomic():
        study = (
            ImagingStudy.objects.select_for_update(of=("self",))
            .select_related("case", "proposed_series")
            .get(pk=study.pk)
        )
        _require_reviewable(actor, study)
        study.review_findings = cleaned
        study.review = signature_record(
            signer=actor,
            meaning=Signature.Meaning.REVIEWED,
            record=study,
            reason="imaging visual review",
        )
        study._history_user = actor
        study.save()
        audit_append(
            actor=actor,
            action="imaging.reviewed",
            obj=study,
            organisation=study.case.manufacturer,
            payload={
                "case": study.case.reference,
                "findings_ok": all(f["ok"] for f in cleaned.values()),
            },
        )
    return study


def study_review_passed(case: Case) -> bool:
    """Whether the case has an accepted study whose signed visual review found
    everything ok: what design needs."""
    for study in ImagingStudy.objects.filter(
        case=case, status=ImagingStudy.Status.ACCEPTED, review__isnull=False
    ):
        findings = study.review_findings or {}
        if findings and all(f.get("ok") for f in findings.values()):
            return True
    return False
