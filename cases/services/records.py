"""Opening and editing a case: its reference, its fields, and the object
permissions its hospital and manufacturer get on it."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from django.db import transaction
from django.utils import timezone

from cases.models import Case, CaseReferenceCounter
from consent.models import Patient
from consent.services import HOSPITAL_REGISTRARS
from psi.audit import audit_append
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.models import Organisation, Role
from psi.orgs import user_roles_at
from psi.permissions import grant_to_roles, require_object_perm

S = Case.Status


#: Object permissions on each case, by role, for the case's hospital …
HOSPITAL_CASE_PERMS: dict[str, list[str]] = {
    Role.CLINICIAN: [
        "view_case",
        "change_case",
        "submit_case",
        "prescribe_case",
        "review_design",
        "record_clinical",
    ],
    Role.CASE_COORDINATOR: [
        "view_case",
        "change_case",
        "submit_case",
        "record_clinical",
    ],
    Role.INTEGRATION: ["view_case"],
}


#: … and for its manufacturer, whose people see the patient by pseudonym only.
MANUFACTURER_CASE_PERMS: dict[str, list[str]] = {
    Role.CASE_MANAGER: ["view_case", "manage_case"],
    Role.DESIGNER: ["view_case", "manage_case"],
    Role.PRODUCTION: ["view_case", "manage_case"],
    Role.QUALITY_ASSURANCE: ["view_case", "release_case"],
    Role.REGULATORY: ["view_case", "release_case"],
    Role.AUDITOR: ["view_case"],
    Role.INTEGRATION: ["view_case", "manage_case"],
}


MANUFACTURER_PATIENT_PERMS = {
    role: ["view_patient"] for role in MANUFACTURER_CASE_PERMS
}


def _next_reference(year: int) -> str:
    counter, _ = CaseReferenceCounter.objects.select_for_update().get_or_create(
        year=year
    )
    counter.last += 1
    counter.save()
    return f"C-{year}-{counter.last:05d}"


#: The clinical details of a draft that ``case_update`` may change.
CASE_EDITABLE_FIELDS = (
    "indication",
    "anatomical_region",
    "side",
    "urgency",
    "planned_surgery_date",
    "regulatory_pathway",
    "pathway_reason",
)


def _validate_case_fields(data: Mapping) -> None:
    choices = {
        "anatomical_region": Case.Region,
        "side": Case.Side,
        "urgency": Case.Urgency,
        "regulatory_pathway": Case.Pathway,
    }
    for field, enum in choices.items():
        if field in data and data[field] not in enum.values:
            raise DomainError(f"Choose one of {', '.join(enum.values)}.", field=field)
    for field in ("indication", "pathway_reason"):
        if field in data and not (data[field] or "").strip():
            raise DomainError("This field is required.", field=field)
    surgery = data.get("planned_surgery_date")
    if surgery and surgery < timezone.localdate():
        raise DomainError(
            "The planned surgery date lies in the past.", field="planned_surgery_date"
        )


def case_create(
    *,
    actor,
    patient: Patient,
    manufacturer: Organisation,
    prescriber,
    indication: str,
    anatomical_region: str,
    side: str,
    regulatory_pathway: str,
    pathway_reason: str,
    urgency: str = Case.Urgency.ROUTINE,
    planned_surgery_date: datetime.date | None = None,
) -> Case:
    """Open a draft case for a patient of the actor's hospital."""
    hospital = patient.hospital
    require_object_perm(actor, "change_patient", patient)
    if not (actor.is_superuser or user_roles_at(actor, hospital) & HOSPITAL_REGISTRARS):
        raise PermissionRefused("Only the patient's hospital may open a case.")
    if manufacturer.kind != Organisation.Kind.MANUFACTURER:
        raise DomainError("Choose a manufacturer.", field="manufacturer")
    if Role.CLINICIAN not in user_roles_at(prescriber, hospital):
        raise DomainError(
            "The prescriber must be a clinician of the patient's hospital.",
            field="prescriber",
        )
    fields = {
        "indication": indication,
        "anatomical_region": anatomical_region,
        "side": side,
        "urgency": urgency,
        "planned_surgery_date": planned_surgery_date,
        "regulatory_pathway": regulatory_pathway,
        "pathway_reason": pathway_reason,
    }
    _validate_case_fields(fields)
    with transaction.atomic():
        case = Case(
            reference=_next_reference(timezone.now().year),
            patient=patient,
            hospital=hospital,
            manufacturer=manufacturer,
            prescriber=prescriber,
            created_by=actor,
            **fields,
        )
        case._history_user = actor
        case.save()
        grant_to_roles(case, hospital, HOSPITAL_CASE_PERMS)
        grant_to_roles(case, manufacturer, MANUFACTURER_CASE_PERMS)
        grant_to_roles(patient, manufacturer, MANUFACTURER_PATIENT_PERMS)
        audit_append(
            actor=actor,
            action="case.created",
            obj=case,
            organisation=hospital,
            payload={
                "reference": case.reference,
                "patient": patient.pseudonym,
                "manufacturer": manufacturer.pk,
                "pathway": regulatory_pathway,
            },
        )
    return case


def case_update(*, actor, case: Case, changes: Mapping, reason: str = "") -> Case:
    """Edit the case's clinical details while it is still a draft."""
    unknown = set(changes) - set(CASE_EDITABLE_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise DomainError(f"{name} cannot be changed here.", field=name)
    _validate_case_fields(changes)
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case.pk)
        require_object_perm(actor, "change_case", case)
        if case.status != S.DRAFT:
            raise Conflict(
                "Only a draft case can be edited; put it on hold and cancel it, or "
                "record the change in a new prescription version.",
                status=case.status,
            )
        before = {name: getattr(case, name) for name in changes}
        for name, value in changes.items():
            setattr(case, name, value)
        case._history_user = actor
        case._change_reason = reason
        case.save()
        audit_append(
            actor=actor,
            action="case.updated",
            obj=case,
            organisation=case.hospital,
            payload={"changed": sorted(n for n in changes if before[n] != changes[n])},
            reason=reason,
        )
    return case
