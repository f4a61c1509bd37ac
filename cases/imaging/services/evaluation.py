"""Judging a complete study: planning quality of every series, the verdict, the
proposed series, and the case sent back for a re-scan when nothing passes.
"""

from __future__ import annotations

import pydicom
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from cases.imaging import quality
from cases.imaging.intake import header_from_json
from cases.imaging.models import (
    AcquisitionProfile,
    ImagingInstance,
    ImagingStudy,
)
from cases.imaging.services.gate import locked_case, sender_label
from cases.imaging.services.kinds import (
    EVALUATE_KIND,
    EVALUATE_TASK,
    INGEST_KIND,
)
from cases.imaging.services.previewing import previews_enqueue
from cases.models import Case
from psi.audit import audit_append
from psi.errors import Conflict, PermissionRefused
from psi.files import stored_file_open
from psi.jobs import Progress, job_enqueue, job_succeed
from psi.models import Job, StoredFile
from psi.permissions import has_object_perm, require_object_perm

S = Case.Status


def _ingest_pending(case_id: int, *, besides: Job | None = None) -> bool:
    """Whether an ingest of the case is still queued or running."""
    pending = Job.objects.filter(
        kind=INGEST_KIND,
        target_type=ContentType.objects.get_for_model(Case),
        target_id=str(case_id),
        status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
    )
    if besides is not None:
        pending = pending.exclude(pk=besides.pk)
    return pending.exists()


def evaluation_schedule(
    study: ImagingStudy, *, ingest: Job | None = None
) -> Job | None:
    """Queue the study's evaluation, unless more of it is still on its way.

    Every ingest that recorded objects calls this under the case's lock (unless
    its sender said more is coming), as does the last ingest of a delivery that
    recorded none. While another ingest of the
    case is queued or running nothing is queued: that one calls this in turn when
    it commits. A study whose sender said it is complete (an upload ended, an
    association was released) is judged at once; otherwise (STOW-RS has no end of
    study) after PSI_STUDY_STABLE_SECONDS, and an evaluation that finds objects
    newer than those it was queued for leaves the study to the evaluation their
    ingest queued. Batches may finish in any order; the study is judged once, on
    all of them.
    """
    if _ingest_pending(study.case_id, besides=ingest):
        return None
    return job_enqueue(
        kind=EVALUATE_KIND,
        task_name=EVALUATE_TASK,
        actor=ingest.actor if ingest is not None else None,
        target=study,
        params={
            "study_id": study.pk,
            "received_at": study.received_at.isoformat() if study.received_at else "",
        },
        countdown=0 if study.delivery_complete else settings.PSI_STUDY_STABLE_SECONDS,
    )


def require_evaluable(actor, study: ImagingStudy) -> None:
    """Refuse unless ``actor`` may ask now for ``study`` to be judged: the
    manufacturer's staff, a study still receiving. Interfaces ask it to decide
    whether to offer the request; the request asks it again."""
    require_object_perm(actor, "view", study)
    if not has_object_perm(actor, "manage_case", study):
        raise PermissionRefused("Only the manufacturer's staff ask for a judgement.")
    if study.status != ImagingStudy.Status.RECEIVING:
        raise Conflict(
            f"The study is already {study.get_status_display().lower()}.",
            status=study.status,
        )


def study_evaluation_request(*, actor, study: ImagingStudy) -> Job:
    """Judge now a study still receiving, at a person's request: its sender will
    send nothing more but could not say so (a listener stopped mid-association, a
    STOW-RS client done early, an ingest that failed for good). The manufacturer's
    staff may ask; the request is audited and the evaluation queued at once."""
    require_evaluable(actor, study)
    with transaction.atomic():
        case = locked_case(study.case_id)
        study = ImagingStudy.objects.select_for_update().get(pk=study.pk)
        # Again under the lock: an evaluation may have judged it meanwhile.
        require_evaluable(actor, study)
        if _ingest_pending(case.pk):
            raise Conflict(
                "Objects of this case are still being ingested; the study is judged "
                "once they are in."
            )
        study.delivery_complete = True
        study._history_user = actor
        study.save()
        audit_append(
            actor=actor,
            action="imaging.evaluation_requested",
            obj=study,
            organisation=case.manufacturer,
            payload={"case": case.reference, "instances": study.instance_count},
        )
        return evaluation_schedule(study)


def delivery_ended(case: Case, ingest: Job, *, complete: bool) -> None:
    """The last batch of a delivery brought nothing new: the studies of the case
    still receiving are judged (at once if the sender said it was done)."""
    for study in ImagingStudy.objects.select_for_update().filter(
        case=case, status=ImagingStudy.Status.RECEIVING
    ):
        if complete and not study.delivery_complete:
            study.delivery_complete = True
            study.save(update_fields=["delivery_complete", "updated_at"])
        evaluation_schedule(study, ingest=ingest)


def _stored_header(instance_file) -> quality.SliceHeader:
    """A header read from the stored file, for objects ingested before headers
    were kept on their rows."""
    with stored_file_open(instance_file) as handle:
        return quality.SliceHeader.from_dataset(
            pydicom.dcmread(handle, stop_before_pixels=True)
        )


def _series_headers(study: ImagingStudy) -> dict[str, list[quality.SliceHeader]]:
    headers: dict[str, list[quality.SliceHeader]] = {}
    rows = ImagingInstance.objects.filter(study=study).values_list(
        "series__series_uid", "header", "file_id"
    )
    files = {}
    for series_uid, header, file_id in rows.iterator(chunk_size=2000):
        if header:
            headers.setdefault(series_uid, []).append(header_from_json(header))
        else:
            files.setdefault(series_uid, []).append(file_id)
    for series_uid, file_ids in files.items():
        for stored in StoredFile.objects.filter(pk__in=file_ids):
            headers.setdefault(series_uid, []).append(_stored_header(stored))
    return headers


def _skip(job: Job, why: str) -> dict:
    result = {"evaluated": False, "reason": why}
    job_succeed(job, result=result, message=why)
    return result


def study_evaluate(job: Job, progress: Progress) -> dict:
    """Judge a study whose objects are all in: the planning quality of every series
    (from the headers kept on the instance rows, no file opened), the verdict and
    the proposed series, and for a study with no passing series the case sent back
    for a re-scan with the reasons in plain words. Previews of the series follow in
    a job of their own: people need them, the verdict does not."""
    params = job.params
    with transaction.atomic():
        study = ImagingStudy.objects.filter(pk=params["study_id"]).first()
        if study is None:
            return _skip(job, "the study no longer exists")
        case = locked_case(study.case_id)
        study = (
            ImagingStudy.objects.select_for_update(of=("self",))
            .select_related("sent_by")
            .get(pk=study.pk)
        )
        received = study.received_at.isoformat() if study.received_at else ""
        if study.status != ImagingStudy.Status.RECEIVING:
            return _skip(job, f"the study is already {study.get_status_display()}")
        if received != params.get("received_at", ""):
            return _skip(job, "newer objects arrived; their evaluation judges them")
        if _ingest_pending(case.pk):
            return _skip(job, "objects are still being ingested")
        progress(10, "checking planning quality")
        profile = region_profile(case.anatomical_region)
        reports = {
            uid: quality.check_series(headers, profile)
            for uid, headers in sorted(_series_headers(study).items())
        }
        series_rows = {s.series_uid: s for s in study.series.all()}
        for uid, report in reports.items():
            series = series_rows[uid]
            series.quality_report = report.as_dict()
            series.quality_verdict = report.verdict
            series.slice_thickness = report.slice_thickness_mm
            series.spacing = report.slice_spacing_mm
            series.instance_count = report.slice_count
            series.save()
        verdict = _judge(study, reports, series_rows)
        study.delivery_complete = False
        study.save()
        label = sender_label(study.sent_by, study.calling_ae_title)
        audit_append(
            actor=None,
            action="imaging.study_evaluated",
            obj=study,
            organisation=case.manufacturer,
            payload={
                "case": case.reference,
                "status": study.status,
                "series": {uid: r.verdict for uid, r in reports.items()},
                "proposed_series": verdict.proposed_series_uid if verdict else None,
            },
            reason=f"planning-quality check of the study received from {label}",
        )
        _move_case(case, study, verdict, label)
        previews_enqueue(study, [s.pk for s in series_rows.values()])
        result = {
            "evaluated": True,
            "study_id": study.pk,
            "status": study.status,
            "verdict": verdict.as_dict() if verdict else None,
        }
        job_succeed(job, result=result, message=f"study {study.pk}: {study.status}")
    return result


def region_profile(region: str) -> quality.AcquisitionProfile:
    """The acquisition profile a study of ``region`` is judged on: this
    installation's (edited in the admin), else PSI's default (cranial for a region
    that has none)."""
    row = AcquisitionProfile.objects.filter(region=region).first()
    if row is not None:
        return quality.AcquisitionProfile.from_dict(row.limits)
    try:
        return quality.default_profile(region)
    except ValueError:
        return quality.default_profile(Case.Region.CRANIAL)


def _judge(study: ImagingStudy, reports, series_rows):
    """Set the study's verdict, status and proposed series; return the verdict."""
    quarantine = list(study.quality_report.get("quarantine", []))
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


def _move_case(case, study, verdict, label: str) -> None:
    from cases import services as case_services

    if (
        study.status == ImagingStudy.Status.REJECTED
        and case.status == S.IMAGING_RECEIVED
        and verdict is not None
    ):
        reasons = " ".join(f"- {r}" for r in verdict.reasons)
        case_services.case_request_rescan(
            actor=None,
            case=case,
            reason=f"{verdict.message} {reasons}".strip(),
            on_behalf_of=label,
        )
