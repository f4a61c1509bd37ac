"""The ingest: staged objects become de-identified, stored and recorded objects of a
study (``cases.imaging.intake`` does the per-file work), batch by batch; judging the
study is left to ``evaluation`` once all of it is in.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from cases.imaging.deid import summarise_by_study
from cases.imaging.intake import Intake, Received, header_as_json
from cases.imaging.models import (
    ImagingIdentityLink,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    PatientImagingKey,
)
from cases.imaging.services.evaluation import delivery_ended, evaluation_schedule
from cases.imaging.services.gate import (
    imaging_gate,
    locked_case,
    may_send,
    sender_label,
)
from cases.imaging.services.kinds import (
    INGEST_KIND,
    INGEST_TASK,
)
from cases.imaging.staging import (
    readahead,
    staged_in,
    staging_sync,
    unstage,
    work_folder,
)
from cases.models import Case
from cases.selectors import PATIENT_IDENTITY
from consent.services import ConsentMissing
from psi.audit import audit_append
from psi.bulk import bulk_insert
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.jobs import Progress, job_enqueue, job_succeed
from psi.models import Job, StoredFile
from psi.permissions import require_object_perm

S = Case.Status


def ingest_enqueue(
    *,
    actor,
    case: Case,
    paths: list[str],
    source: str,
    calling_ae_title: str = "",
    complete: bool | None = True,
) -> Job:
    """Queue the ingest of staged files for ``case``; the task starts on commit.

    ``actor`` is the sending user (hospital users with submit_case, manufacturer
    users with manage_case), or None for a DICOM node, named by its calling AE title
    (the listener admitted it as a known peer).

    ``complete`` is what the sender said of its study: True, it is all here (an
    upload, the end of an association); False, more is on its way (a batch of an
    association still open), so it is not judged yet; None, nobody knows (STOW-RS,
    an aborted association), so it is judged once it has been quiet for
    PSI_STUDY_STABLE_SECONDS. ``paths`` may be empty, to say only that.
    """
    if source not in ImagingStudy.Source.values:
        raise DomainError(
            f"Choose one of {', '.join(ImagingStudy.Source.values)}.", field="source"
        )
    is_user = getattr(actor, "is_authenticated", False)
    if is_user:
        require_object_perm(actor, "view", case)
        if not may_send(actor, case):
            raise PermissionRefused("You may not send imaging for this case.")
    elif not calling_ae_title:
        raise PermissionRefused("Imaging needs a known sender.")
    staged = [str(p) for p in paths]
    if staged:
        # Upload, STOW-RS and the listener told their senders the objects are
        # stored: their names are on disk before a job can name them.
        staging_sync(case.pk)
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
                "complete": complete,
            },
        )


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


def _dicom_date(value) -> datetime.date | None:
    """A DICOM DA value (already shifted by the de-identification) as a date."""
    try:
        return datetime.datetime.strptime(str(value), "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


def study_ingest(job: Job, progress: Progress) -> dict:
    """Ingest the job's staged files: de-identified objects stored and recorded
    under their study. Judging the study waits until all of it is in
    (:func:`evaluation_schedule`).

    Slow work (reading, de-identifying, storing content-addressed bytes) runs
    first, outside any transaction; the rows, the case's first transition, the
    audit event and the job's success then commit together, so a crash or a retry
    leaves one consistent study (objects already ingested are skipped by the keyed
    HMAC of their original SOP Instance UID, unique per case).
    """
    params = job.params
    case = (
        Case.objects.select_related("patient")
        .defer(*PATIENT_IDENTITY)
        .filter(pk=params["case_id"])
        .first()
    )
    references = [str(reference) for reference in params.get("paths", [])]
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
            for i in range(1, len(references) + 1)
        ]
        return result
    sender = None
    if params.get("sender_id"):
        sender = get_user_model().objects.filter(pk=params["sender_id"]).first()
    label = sender_label(sender, params.get("calling_ae_title", ""))
    staged = staged_in(case.pk, references)
    own = list(staged)

    try:
        imaging_gate(case)
    except (ConsentMissing, Conflict) as refusal:
        # Without consent or an open case the raw objects must not stay either.
        result["failed"] = [
            {"file": f"#{i}", "reason": refusal.message}
            for i in range(1, len(references) + 1)
        ]
        with transaction.atomic():
            job_succeed(job, result=result, message=refusal.message)
        unstage(own)
        return result

    # Unordered: the model's ordering would join and sort the case's instances.
    known = set(
        ImagingInstance.objects.filter(case=case)
        .order_by()
        .values_list("original_uid_hmac", flat=True)
    )
    reviewed = set(
        ImagingStudy.objects.filter(case=case, review__isnull=False).values_list(
            "study_uid", flat=True
        )
    )
    total = max(len(references), 1)
    readahead(own)
    with (
        work_folder(case.pk, job.pk) as work,
        Intake(
            pseudonym=case.patient.pseudonym,
            date_offset_days=_patient_date_offset(case.patient),
            workdir=work,
            known=known,
            reviewed_study_uids=reviewed,
            sender=sender,
        ) as intake,
    ):
        for index, reference in enumerate(references, 1):
            target, present = staged.get(reference, (None, False))
            if target is None:
                intake.fail(index, "Not a staged file of this case.")
            elif not present:
                intake.fail(index, "The staged file is gone (already ingested?).")
            else:
                intake.take(index, target)
            if index % 25 == 0 or index == len(references):
                progress(index * 90 // total, f"file {index} of {len(references)}")
        intake.sync()
        result.update(
            _record(job=job, case=case, intake=intake, params=params, label=label)
        )
    # Raw objects go once the rows that replace them are committed.
    transaction.on_commit(lambda: unstage(own))
    return result


def _record(*, job, case, intake: Intake, params, label) -> dict:
    sender = intake.sender
    complete = params.get("complete", True)
    result: dict[str, Any] = {
        "accepted": 0,
        "skipped_duplicates": intake.duplicates,
        "failed": intake.failed,
        "quarantined": len(intake.quarantined),
        "study_id": None,
    }
    with transaction.atomic():
        case = locked_case(case.pk)
        imaging_gate(case)
        # Under the case lock: objects a concurrent or earlier attempt stored.
        known = set(
            ImagingInstance.objects.filter(
                case=case, original_uid_hmac__in=[r.hmac for r in intake.received]
            )
            .order_by()
            .values_list("original_uid_hmac", flat=True)
        )
        fresh = [r for r in intake.received if r.hmac not in known]
        result["skipped_duplicates"] += len(intake.received) - len(fresh)
        if not fresh and not intake.quarantined:
            if complete is not False:
                delivery_ended(case, job, complete=bool(complete))
            job_succeed(job, result=result, message="nothing new to ingest")
            return result
        study = _study_for(case, fresh, intake, params)
        bulk_insert(
            [r.file for r in fresh] + [q["stored"] for q in intake.quarantined],
            StoredFile,
            history_user=sender,
        )
        series_rows = _series_rows(study, fresh, sender)
        bulk_insert(
            [
                ImagingInstance(
                    case=case,
                    series=series_rows[r.series_uid],
                    study=study,
                    sop_instance_uid=r.sop_uid,
                    sop_class_uid=r.sop_class_uid,
                    original_uid_hmac=r.hmac,
                    file=r.file,
                    instance_number=r.instance_number,
                    position=r.position,
                    transfer_syntax_uid=r.transfer_syntax,
                    header=header_as_json(r.header),
                )
                for r in fresh
            ],
            ImagingInstance,
            history_user=sender,
        )
        _identity_links(study, fresh, case, sender)
        _study_received(study, intake, complete=complete is True)
        study._history_user = sender
        study.save()
        result.update(accepted=len(fresh), study_id=study.pk, status=study.status)
        audit_append(
            actor=sender,
            action="imaging.study_ingested",
            obj=study,
            organisation=case.hospital,
            payload={
                "case": case.reference,
                "accepted": len(fresh),
                "skipped_duplicates": result["skipped_duplicates"],
                "failed": len(intake.failed),
                "quarantined": len(intake.quarantined),
                "status": study.status,
            },
            reason=f"received from {label}",
        )
        if case.status == S.SUBMITTED:
            from cases import services as case_services

            case_services.case_receive_imaging(
                actor=sender,
                case=case,
                reason=f"Study {study.pk} received",
                on_behalf_of=label,
            )
        if complete is not False or study.delivery_complete:
            evaluation_schedule(study, ingest=job)
        job_succeed(job, result=result, message=f"study {study.pk}: {study.status}")
    return result


def _study_for(case, fresh: list[Received], intake: Intake, params) -> ImagingStudy:
    """The study the objects belong to, created on their first arrival."""
    first = fresh[0] if fresh else None
    study_uid = first.study_uid if first else _quarantine_study_uid(intake)
    study, _ = ImagingStudy.objects.get_or_create(
        study_uid=study_uid,
        defaults={
            "case": case,
            "modality": first.meta["modality"] if first else "",
            "study_date": _dicom_date(first.meta["study_date"]) if first else None,
            "description": first.meta["study_description"] if first else "",
            "status": ImagingStudy.Status.RECEIVING,
            "source": params["source"],
            "sent_by": intake.sender,
            "calling_ae_title": params.get("calling_ae_title", ""),
        },
    )
    if study.case_id != case.pk:
        raise Conflict("This study was already received for another case.")
    if study.review_id:
        raise Conflict("The study was already reviewed and signed.")
    return study


def _quarantine_study_uid(intake: Intake) -> str:
    for report in intake.reports:
        if report.get("study_instance_uid"):
            return report["study_instance_uid"]
    raise Conflict("No study could be identified in the objects received.")


def _series_rows(study, fresh: list[Received], sender) -> dict[str, ImagingSeries]:
    """The study's series, those first seen in ``fresh`` created, each with its
    instance count as it will be once ``fresh`` is recorded."""
    rows = {s.series_uid: s for s in study.series.all()}
    by_series: dict[str, list[Received]] = {}
    for item in fresh:
        by_series.setdefault(item.series_uid, []).append(item)
    for uid, items in by_series.items():
        series = rows.get(uid)
        if series is None:
            header = items[0].header
            series = ImagingSeries(
                series_uid=uid,
                study=study,
                series_number=header.series_number,
                modality=items[0].meta["modality"],
                description=items[0].meta["series_description"],
                orientation=list(header.orientation or []),
                rows=header.rows,
                columns=header.columns,
                pixel_spacing=list(header.pixel_spacing or []),
                kernel=(header.kernel or "")[:64],
                frame_of_reference_uid=(header.frame_of_reference_uid or "")[:64],
            )
            rows[uid] = series
        series.instance_count += len(items)
        series.quality_verdict = ImagingSeries.Verdict.PENDING
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
        ImagingIdentityLink.objects.filter(
            study=study, deidentified__in={deid[:64] for _, deid in wanted}
        ).values_list("kind", "deidentified")
    )
    links = [
        ImagingIdentityLink(
            study=study, kind=kind, deidentified=deid[:64], original=original
        )
        for (kind, deid), original in wanted.items()
        if (kind, deid[:64]) not in have
    ]
    bulk_insert(links, ImagingIdentityLink, history_user=sender)


def _study_received(study: ImagingStudy, intake: Intake, *, complete: bool) -> None:
    """New objects re-open the study: counts, de-identification report and
    quarantine list brought up to date, the verdict left to the evaluation."""
    study.series_count = study.series.count()
    study.instance_count = ImagingInstance.objects.filter(study=study).count()
    summary = summarise_by_study(intake.reports).get(study.study_uid)
    if summary:
        previous = study.deid_report or {}
        if previous.get("objects"):
            summary = _merge_deid(previous, summary)
        study.deid_report = summary
    quarantine = list(study.quality_report.get("quarantine", []))
    quarantine += [
        {"file": q["file"], "stored_file": q["stored"].pk, "reason": q["reason"]}
        for q in intake.quarantined
    ]
    study.quality_report = {**study.quality_report, "quarantine": quarantine}
    study.status = ImagingStudy.Status.RECEIVING
    study.proposed_series = None
    study.received_at = timezone.now()
    study.delivery_complete = study.delivery_complete or complete


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
