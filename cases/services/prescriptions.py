"""The prescription: written by the treating clinician, signed by the
prescriber, immutable once signed (MDCG 2021-3 Q6)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from django.db import transaction

from cases.models import Case, Prescription
from cases.selectors import PATIENT_IDENTITY
from psi.audit import audit_append
from psi.errors import Conflict, DomainError, PermissionRefused, RecordLocked
from psi.models import Signature
from psi.permissions import has_object_perm, require_object_perm
from psi.signatures import signature_authenticate, signature_record

S = Case.Status


#: While a prescription may still be written or replaced.
_PRESCRIBABLE = frozenset(
    {S.DRAFT, S.SUBMITTED, S.IMAGING_RECEIVED, S.IMAGING_ACCEPTED, S.IN_DESIGN}
)


#: The design characteristics a prescriber writes (and edits while unsigned).
PRESCRIPTION_FIELDS = (
    "prescriber_licence",
    "material",
    "material_other",
    "thickness_mm",
    "screw_count",
    "screw_positions",
    "margins_mm",
    "other_characteristics",
    "notes",
)


def prescription_latest(case: Case) -> Prescription | None:
    return case.prescriptions.order_by("-version").first()


def _clean_prescription(data: Mapping) -> dict:
    unknown = set(data) - set(PRESCRIPTION_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise DomainError(f"Unknown field {name}.", field=name)
    cleaned = dict(data)
    if "material" in cleaned:
        if cleaned["material"] not in Prescription.Material.values:
            raise DomainError(
                f"Choose one of {', '.join(Prescription.Material.values)}.",
                field="material",
            )
        if (
            cleaned["material"] == Prescription.Material.OTHER
            and not (cleaned.get("material_other") or "").strip()
        ):
            raise DomainError("Name the material.", field="material_other")
    for name in ("thickness_mm", "margins_mm"):
        if name in cleaned and cleaned[name] is not None:
            try:
                value = Decimal(str(cleaned[name]))
            except InvalidOperation:
                raise DomainError(
                    "Enter a number of millimetres.", field=name
                ) from None
            if value <= 0 or value >= 1000:
                raise DomainError(
                    "Enter a positive number of millimetres below 1000.", field=name
                )
            cleaned[name] = value.quantize(Decimal("0.01"))
    if "screw_count" in cleaned:
        count = cleaned["screw_count"]
        if not isinstance(count, int) or count < 0 or count > 200:
            raise DomainError(
                "Enter a screw count between 0 and 200.", field="screw_count"
            )
        if count and not (cleaned.get("screw_positions") or "").strip():
            raise DomainError(
                "Give the screw positions for the screws prescribed.",
                field="screw_positions",
            )
    if "prescriber_licence" in cleaned and not cleaned["prescriber_licence"].strip():
        raise DomainError(
            "The prescriber's licence or registration number is required.",
            field="prescriber_licence",
        )
    return cleaned


def _require_prescriber(actor, case: Case) -> None:
    require_object_perm(actor, "view", case)
    if not has_object_perm(actor, "prescribe_case", case):
        raise PermissionRefused("Only clinicians of the case's hospital prescribe.")


def prescription_create(*, actor, case: Case, **characteristics) -> Prescription:
    """Write a prescription; a later one becomes the next version of the case's."""
    required = ("prescriber_licence", "material", "thickness_mm")
    for name in required:
        if characteristics.get(name) in (None, ""):
            raise DomainError("This field is required.", field=name)
    cleaned = _clean_prescription(characteristics)
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("patient")
            .defer(*PATIENT_IDENTITY)
            .get(pk=case.pk)
        )
        _require_prescriber(actor, case)
        if case.status not in _PRESCRIBABLE:
            raise Conflict(
                "The design is past review; a new prescription needs a new case.",
                status=case.status,
            )
        previous = prescription_latest(case)
        prescription = Prescription(
            case=case,
            version=(previous.version + 1) if previous else 1,
            supersedes=previous,
            prescriber=actor,
            institution=case.hospital,
            patient_pseudonym=case.patient.pseudonym,
            **cleaned,
        )
        prescription._history_user = actor
        prescription.save()
        audit_append(
            actor=actor,
            action="prescription.created",
            obj=prescription,
            organisation=case.hospital,
            payload={"case": case.reference, "version": prescription.version},
        )
    return prescription


def _require_prescription_open(actor, prescription: Prescription) -> None:
    """The checks a password cannot change: who may write it, whether it is still
    open, whether the case still takes prescriptions."""
    _require_prescriber(actor, prescription.case)
    if prescription.is_signed:
        raise RecordLocked("A signed prescription cannot change; write a new version.")
    if prescription.prescriber_id != actor.pk:
        raise PermissionRefused("Only the prescriber edits or signs a prescription.")
    if prescription.case.status not in _PRESCRIBABLE:
        raise Conflict(
            "The case no longer takes prescriptions.", status=prescription.case.status
        )


def prescription_update(
    *, actor, prescription: Prescription, changes: Mapping
) -> Prescription:
    """Edit a prescription that is not signed yet."""
    cleaned = _clean_prescription(changes)
    with transaction.atomic():
        prescription = (
            Prescription.objects.select_for_update(of=("self",))
            .select_related("case")
            .get(pk=prescription.pk)
        )
        _require_prescription_open(actor, prescription)
        for name, value in cleaned.items():
            setattr(prescription, name, value)
        _clean_prescription({n: getattr(prescription, n) for n in PRESCRIPTION_FIELDS})
        prescription._history_user = actor
        prescription.save()
        audit_append(
            actor=actor,
            action="prescription.updated",
            obj=prescription,
            organisation=prescription.institution,
            payload={"fields": sorted(cleaned)},
        )
    return prescription


def prescription_sign(
    *, actor, prescription: Prescription, password: str
) -> Prescription:
    """The prescriber signs the prescription (21 CFR 11.50: printed name, time,
    meaning). Call outside any transaction: a failed attempt must stay recorded."""
    prescription = Prescription.objects.select_related("case").get(pk=prescription.pk)
    # Refuse what a password cannot change before asking for one, so that neither a
    # stranger nor a second click on a signed record counts as a failed attempt.
    _require_prescription_open(actor, prescription)
    signature_authenticate(signer=actor, password=password)
    with transaction.atomic():
        prescription = (
            Prescription.objects.select_for_update(of=("self",))
            .select_related("case")
            .get(pk=prescription.pk)
        )
        # Again under the lock: two signing requests must not both sign.
        _require_prescription_open(actor, prescription)
        prescription.signature = signature_record(
            signer=actor,
            meaning=Signature.Meaning.AUTHORED,
            record=prescription,
            reason="prescription",
        )
        prescription._history_user = actor
        prescription.save()
    return prescription
