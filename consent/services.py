"""Patients, their identity, and their consent: every write goes through here."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from django.db import IntegrityError, transaction
from django.utils import timezone

from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from psi.audit import audit_append
from psi.crypto import identity_hmac
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.models import Organisation, Role, StoredFile
from psi.orgs import user_roles_at
from psi.permissions import (
    grant_to_roles,
    has_object_perm,
    require_object_perm,
    restrict,
)

#: Object permissions the patient's own hospital holds on each of its patients.
HOSPITAL_PATIENT_PERMS: dict[str, list[str]] = {
    Role.CLINICIAN: ["view_patient", "change_patient", "view_patient_identity"],
    Role.CASE_COORDINATOR: ["view_patient", "change_patient", "view_patient_identity"],
    Role.INTEGRATION: ["view_patient"],
}
#: Roles of a hospital that may register patients and record consent.
HOSPITAL_REGISTRARS = {Role.CLINICIAN, Role.CASE_COORDINATOR}
IDENTITY_FIELDS = ("family_name", "given_names", "birth_date", "sex", "record_number")


class ConsentMissing(Conflict):
    """No valid, unwithdrawn consent covers the purpose."""

    code = "consent_missing"


def _require_registrar(actor, hospital: Organisation) -> None:
    if getattr(actor, "is_superuser", False):
        return
    if not user_roles_at(actor, hospital) & HOSPITAL_REGISTRARS:
        raise PermissionRefused(
            "Only clinicians and case coordinators of the patient's hospital may "
            "register patients and record consent."
        )


def _clean_identity(data: Mapping) -> dict:
    cleaned = {}
    for name in IDENTITY_FIELDS:
        value = data.get(name)
        if name == "birth_date":
            if not isinstance(value, datetime.date):
                raise DomainError("A birth date is required.", field=name)
            if value > timezone.localdate():
                raise DomainError("The birth date lies in the future.", field=name)
        elif name == "sex":
            if value not in Patient.Sex.values:
                raise DomainError(
                    f"Sex must be one of {', '.join(Patient.Sex.values)}.", field=name
                )
        else:
            value = (value or "").strip()
            if not value:
                raise DomainError("This field is required.", field=name)
        cleaned[name] = value
    return cleaned


def patient_register(
    *,
    actor,
    hospital: Organisation,
    family_name: str,
    given_names: str,
    birth_date: datetime.date,
    sex: str,
    record_number: str,
) -> Patient:
    """Register a patient of ``hospital`` under a new random pseudonym."""
    if hospital.kind != Organisation.Kind.HOSPITAL:
        raise DomainError("Patients belong to a hospital.", field="hospital")
    _require_registrar(actor, hospital)
    identity = _clean_identity(
        {
            "family_name": family_name,
            "given_names": given_names,
            "birth_date": birth_date,
            "sex": sex,
            "record_number": record_number,
        }
    )
    digest = identity_hmac(identity["record_number"])
    if Patient.objects.filter(hospital=hospital, record_number_hmac=digest).exists():
        raise DomainError(
            "A patient with this record number is already registered at this hospital.",
            field="record_number",
        )
    for _ in range(5):  # a pseudonym collision is rare; draw again
        try:
            with transaction.atomic():
                patient = Patient(
                    hospital=hospital,
                    record_number_hmac=digest,
                    created_by=actor,
                    **identity,
                )
                patient._history_user = actor
                patient.save()
                grant_to_roles(patient, hospital, HOSPITAL_PATIENT_PERMS)
                audit_append(
                    actor=actor,
                    action="patient.registered",
                    obj=patient,
                    organisation=hospital,
                    payload={"pseudonym": patient.pseudonym},
                )
                return patient
        except IntegrityError as exc:
            if "record_number" in str(exc):
                raise DomainError(
                    "A patient with this record number is already registered at "
                    "this hospital.",
                    field="record_number",
                ) from None
    raise Conflict("Could not draw a unique pseudonym; try again.")


def patient_update_identity(
    *, actor, patient: Patient, changes: Mapping, reason: str
) -> Patient:
    """Correct identity fields (history keeps the earlier, encrypted values)."""
    if not reason.strip():
        raise DomainError("Say why the identity changes.", field="reason")
    unknown = set(changes) - set(IDENTITY_FIELDS)
    if unknown:
        raise DomainError(
            f"Unknown field {sorted(unknown)[0]}.", field=sorted(unknown)[0]
        )
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        require_object_perm(actor, "change_patient", patient)
        if not has_object_perm(actor, "view_patient_identity", patient):
            raise PermissionRefused("You may not change this patient's identity.")
        identity = {name: getattr(patient, name) for name in IDENTITY_FIELDS}
        identity.update(changes)
        identity = _clean_identity(identity)
        for name, value in identity.items():
            setattr(patient, name, value)
        patient.record_number_hmac = identity_hmac(identity["record_number"])
        patient._history_user = actor
        patient._change_reason = reason
        patient.save()
        audit_append(
            actor=actor,
            action="patient.identity_changed",
            obj=patient,
            organisation=patient.hospital,
            payload={"fields": sorted(changes)},
            reason=reason,
        )
    return patient


def patient_identities(*, actor, patients: Iterable[Patient]) -> dict[int, dict]:
    """Identity of the given patients that ``actor`` may read, by patient id.

    Only members of the patient's own hospital with the view-identity permission
    receive identity; every read is one audit event listing the patients read.
    """
    patients = list(patients)
    if not patients or not getattr(actor, "is_authenticated", False):
        return {}
    readable = set(
        restrict(
            Patient.objects.filter(pk__in=[p.pk for p in patients]),
            actor,
            "view_patient_identity",
        ).values_list("pk", flat=True)
    )
    identities = {
        p.pk: {name: getattr(p, name) for name in IDENTITY_FIELDS}
        for p in patients
        if p.pk in readable
    }
    if identities:
        audit_append(
            actor=actor,
            action="patient.identity_read",
            object_type="consent.patient",
            object_id=next(iter(identities)) if len(identities) == 1 else "",
            payload={"patients": sorted(identities)},
        )
    return identities


def patient_identity(*, actor, patient: Patient) -> dict | None:
    return patient_identities(actor=actor, patients=[patient]).get(patient.pk)


def patient_find_by_record_number(
    *, actor, hospital: Organisation, record_number: str
) -> Patient | None:
    """Exact lookup through the keyed HMAC, within what ``actor`` may see."""
    return (
        restrict(Patient.objects.all(), actor, "view_patient_identity")
        .filter(hospital=hospital, record_number_hmac=identity_hmac(record_number))
        .first()
    )


def consent_form_create(
    *,
    actor,
    title: str,
    version: str,
    language: str,
    text: str,
    purposes: list[str],
    valid_from: datetime.date,
    valid_to: datetime.date | None = None,
) -> ConsentForm:
    if not (
        getattr(actor, "is_superuser", False)
        or actor.has_perm("consent.add_consentform")
    ):
        raise PermissionRefused("You may not publish consent forms.")
    unknown = [p for p in purposes if p not in Purpose.values]
    if not purposes or unknown:
        raise DomainError(
            f"Purposes must be chosen from {', '.join(Purpose.values)}.",
            field="purposes",
        )
    if valid_to and valid_to < valid_from:
        raise DomainError("valid_to lies before valid_from.", field="valid_to")
    with transaction.atomic():
        form = ConsentForm(
            title=title,
            version=version,
            language=language,
            text=text,
            purposes=sorted(set(purposes)),
            valid_from=valid_from,
            valid_to=valid_to,
        )
        form.full_clean()
        form._history_user = actor
        form.save()
        audit_append(
            actor=actor,
            action="consent_form.published",
            obj=form,
            payload={"title": title, "version": version, "language": language},
        )
    return form


def consent_record(
    *,
    actor,
    patient: Patient,
    form: ConsentForm,
    purposes: Mapping[str, str],
    method: str,
    signed_at: datetime.datetime,
    evidence: StoredFile | None = None,
) -> Consent:
    """Record the consent a patient gave on ``form``, per purpose with its legal
    basis (REGULATORY 30, 31)."""
    if not purposes:
        raise DomainError("Choose at least one purpose.", field="purposes")
    for purpose, basis in purposes.items():
        if purpose not in form.purposes:
            raise DomainError(
                f"The form does not ask consent for {purpose!r}.", field="purposes"
            )
        if basis not in LegalBasis.values:
            raise DomainError(
                f"Legal basis for {purpose!r} must be one of "
                f"{', '.join(LegalBasis.values)}.",
                field="purposes",
            )
    if method not in Consent.Method.values:
        raise DomainError("Unknown consent method.", field="method")
    if method == Consent.Method.PAPER_SCANNED and evidence is None:
        raise DomainError("A scanned paper consent needs its scan.", field="evidence")
    if signed_at > timezone.now():
        raise DomainError("The signing time lies in the future.", field="signed_at")
    signed_day = timezone.localdate(signed_at)
    if signed_day < form.valid_from or (form.valid_to and signed_day > form.valid_to):
        raise DomainError(
            "The form was not in use on the day of signing.", field="form"
        )
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        require_object_perm(actor, "change_patient", patient)
        _require_registrar(actor, patient.hospital)
        consent = Consent(
            patient=patient,
            form=form,
            purposes=dict(purposes),
            method=method,
            evidence=evidence,
            signed_at=signed_at,
            recorded_by=actor,
        )
        consent._history_user = actor
        consent.save()
        audit_append(
            actor=actor,
            action="consent.given",
            obj=consent,
            organisation=patient.hospital,
            payload={
                "patient": patient.pseudonym,
                "form": form.pk,
                "purposes": dict(purposes),
                "method": method,
            },
        )
    return consent


def consent_withdraw(*, actor, consent: Consent, reason: str) -> Consent:
    """Withdraw a consent in one action. Processing for its purposes stops; records
    kept under legal retention stay where they are (GDPR Art. 17(3))."""
    if not reason.strip():
        raise DomainError("Record the reason for the withdrawal.", field="reason")
    with transaction.atomic():
        consent = Consent.objects.select_for_update().get(pk=consent.pk)
        require_object_perm(actor, "change_patient", consent.patient)
        if consent.is_withdrawn:
            raise Conflict(
                "This consent was already withdrawn.",
                withdrawn_at=consent.withdrawn_at.isoformat(),
            )
        consent.withdrawn_at = timezone.now()
        consent.withdrawn_by = actor
        consent.withdrawal_reason = reason
        consent._history_user = actor
        consent.save()
        audit_append(
            actor=actor,
            action="consent.withdrawn",
            obj=consent,
            organisation=consent.patient.hospital,
            payload={
                "patient": consent.patient.pseudonym,
                "purposes": sorted(consent.purposes),
            },
            reason=reason,
        )
    return consent


def consent_valid_for(patient: Patient, purpose: str):
    return Consent.objects.filter(
        patient=patient,
        withdrawn_at__isnull=True,
        signed_at__lte=timezone.now(),
        purposes__has_key=purpose,
    )


def consent_require(patient: Patient, purpose: str) -> Consent:
    """The consent that covers ``purpose`` now, or ConsentMissing."""
    consent = consent_valid_for(patient, purpose).order_by("-signed_at").first()
    if consent is None:
        raise ConsentMissing(
            f"Patient {patient.pseudonym} has no valid consent for "
            f"{Purpose(purpose).label.lower()}.",
            purpose=purpose,
        )
    return consent
