"""The designer's visual review of an accepted study, signed (21 CFR 11.50): what
design needs before it may start.
"""

from __future__ import annotations

from django.db import transaction

from cases.imaging.models import (
    ImagingStudy,
)
from cases.models import Case
from psi.audit import audit_append
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.models import Signature
from psi.permissions import has_object_perm, require_object_perm
from psi.signatures import signature_authenticate, signature_record

#: Review findings the designer records, each ok / not ok with notes.
REVIEW_FINDINGS = {
    "motion": "Motion",
    "metal_artefacts": "Metal artefacts",
    "region_coverage": "Coverage of the region",
    "healthy_side_coverage": "Coverage of the healthy side (for mirroring)",
}


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


def require_reviewable(actor, study: ImagingStudy) -> None:
    """Refuse unless ``actor`` may sign the visual review of ``study`` now: the
    manufacturer's staff, an accepted study, no review yet. Interfaces ask it to
    decide whether to offer the signing; the signing asks it again."""
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
    require_reviewable(actor, study)
    signature_authenticate(signer=actor, password=password)
    with transaction.atomic():
        study = (
            ImagingStudy.objects.select_for_update(of=("self",))
            .select_related("case", "proposed_series")
            .get(pk=study.pk)
        )
        require_reviewable(actor, study)
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
