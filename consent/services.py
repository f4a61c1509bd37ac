"""Patients, their identity, and their consent: every write goes through here."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import IO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.selectors import IDENTITY_FIELDS, patient_matching_record_number
from psi.audit import audit_append
from psi.crypto import identity_hmac
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.files import stored_file_create
from psi.models import Organisation, Role, StoredFile
from psi.orgs import user_roles_at
from psi.permissions import (
    grant_to_roles,
    has_object_perm,
    is_active_user,
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
#: Default cap on a consent's evidence scan (``PSI_CONSENT_EVIDENCE_MAX_BYTES``).
EVIDENCE_MAX_BYTES = 25 * 1024 * 1024
# Evidence is a scan or a PDF; the type is read from the content, never trusted from
# the client's header or file name.
_EVIDENCE_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"II*\x00", "image/tiff", "tif"),
    (b"MM\x00*", "image/tiff", "tif"),
)
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ConsentMissing(Conflict):
    """No valid, unwithdrawn consent covers the purpose."""

    code = "consent_missing"


def _require_registrar(actor, hospital: Organisation) -> None:
    if not is_active_user(actor):
        raise PermissionRefused("Sign in to register patients and record consent.")
    if actor.is_superuser:
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
            if not isinstance(value, datetime.date) or isinstance(
                value, datetime.datetime
            ):
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


def _record_number_taken() -> DomainError:
    return DomainError(
        "A patient with this record number is already registered at this hospital.",
        field="record_number",
    )


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
        raise _record_number_taken()
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
                raise _record_number_taken() from None
    raise Conflict("Could not draw a unique pseudonym; try again.")


def patient_update_identity(
    *, actor, patient: Patient, changes: Mapping, reason: str
) -> Patient:
    """Correct identity fields (history keeps the earlier, encrypted values).

    Fields whose value does not change are ignored; when nothing changes, nothing is
    written (no history row, no audit event).
    """
    if not (reason or "").strip():
        raise DomainError("Say why the identity changes.", field="reason")
    if not changes:
        raise DomainError("Give at least one identity field to change.")
    unknown = set(changes) - set(IDENTITY_FIELDS)
    if unknown:
        raise DomainError(
            f"Unknown field {sorted(unknown)[0]}.", field=sorted(unknown)[0]
        )
    with transaction.atomic():
        patient = (
            Patient.objects.select_for_update(of=("self",))
            .select_related("hospital")
            .get(pk=patient.pk)
        )
        require_object_perm(actor, "change_patient", patient)
        if not has_object_perm(actor, "view_patient_identity", patient):
            raise PermissionRefused("You may not change this patient's identity.")
        current = {name: getattr(patient, name) for name in IDENTITY_FIELDS}
        identity = _clean_identity({**current, **changes})
        changed = sorted(
            name for name in IDENTITY_FIELDS if identity[name] != current[name]
        )
        if not changed:
            return patient
        digest = identity_hmac(identity["record_number"])
        if (
            Patient.objects.filter(hospital=patient.hospital, record_number_hmac=digest)
            .exclude(pk=patient.pk)
            .exists()
        ):
            raise _record_number_taken()
        for name in changed:
            setattr(patient, name, identity[name])
        patient.record_number_hmac = digest
        patient._history_user = actor
        patient._change_reason = reason
        try:
            with transaction.atomic():
                patient.save()
        except IntegrityError:  # a concurrent registration took the number
            raise _record_number_taken() from None
        audit_append(
            actor=actor,
            action="patient.identity_changed",
            obj=patient,
            organisation=patient.hospital,
            payload={"fields": changed},
            reason=reason,
        )
    return patient


def patient_identities(*, actor, patients: Iterable[Patient]) -> dict[int, dict]:
    """Identity of the given patients that ``actor`` may read, by patient id.

    Only members of the patient's own hospital with the view-identity permission
    receive identity; every read is one audit event listing the patients read.
    Identity is loaded here, in one query, only for the patients the actor may read:
    callers can pass instances whose identity fields were deferred, so nothing else
    ever decrypts identity (REGULATORY 39).
    """
    ids = {p.pk for p in patients}
    if not ids or not is_active_user(actor):
        return {}
    readable = restrict(
        Patient.objects.filter(pk__in=ids), actor, "view_patient_identity"
    ).only("pk", *IDENTITY_FIELDS)
    identities = {
        row.pk: {name: getattr(row, name) for name in IDENTITY_FIELDS}
        for row in readable
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
    *, actor, hospital: Organisation | None = None, record_number: str
) -> Patient | None:
    """Exact lookup through the keyed HMAC, within what ``actor`` may see with
    identity; without ``hospital``, across every hospital where the actor may."""
    return patient_matching_record_number(
        actor, record_number, hospital=hospital
    ).first()


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
    if not (is_active_user(actor) and actor.has_perm("consent.add_consentform")):
        raise PermissionRefused("You may not publish consent forms.")
    unknown = [p for p in purposes if p not in Purpose.values]
    if not purposes or unknown:
        raise DomainError(
            f"Purposes must be chosen from {', '.join(Purpose.values)}.",
            field="purposes",
        )
    if not _LANGUAGE_TAG.match(language or ""):
        raise DomainError(
            "Give the language as a BCP 47 tag, e.g. en or de-CH.", field="language"
        )
    if valid_to and valid_to < valid_from:
        raise DomainError("valid_to lies before valid_from.", field="valid_to")
    with transaction.atomic():
        if ConsentForm.objects.filter(
            title=title, version=version, language=language
        ).exists():
            raise DomainError(
                f"Version {version} of {title!r} in {language} already exists; "
                "publish a new version instead.",
                field="version",
            )
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


def _evidence_type(upload: IO[bytes]) -> tuple[str, str]:
    head = upload.read(16)
    upload.seek(0)
    for signature, content_type, extension in _EVIDENCE_SIGNATURES:
        if head.startswith(signature):
            return content_type, extension
    raise DomainError(
        "The evidence must be a PDF, PNG, JPEG or TIFF scan.", field="evidence"
    )


def _evidence_store(actor, upload: IO[bytes]) -> StoredFile:
    limit = getattr(settings, "PSI_CONSENT_EVIDENCE_MAX_BYTES", EVIDENCE_MAX_BYTES)
    size = getattr(upload, "size", None)
    if size is None:
        upload.seek(0, 2)
        size = upload.tell()
        upload.seek(0)
    if size > limit:
        raise DomainError(
            f"The evidence is larger than {limit // (1024 * 1024)} MiB.",
            field="evidence",
        )
    if size == 0:
        raise DomainError("The evidence file is empty.", field="evidence")
    content_type, extension = _evidence_type(upload)
    # The client's file name often carries the patient's name; it is not kept.
    return stored_file_create(
        actor=actor,
        content=upload,
        original_name=f"consent-evidence.{extension}",
        content_type=content_type,
        max_bytes=limit,
    )


def consent_record(
    *,
    actor,
    patient: Patient,
    form: ConsentForm,
    purposes: Mapping[str, str],
    method: str,
    signed_at: datetime.datetime,
    evidence: StoredFile | None = None,
    evidence_upload: IO[bytes] | None = None,
) -> Consent:
    """Record the consent a patient gave on ``form``, per purpose with its legal
    basis (REGULATORY 30, 31).

    The evidence is either an existing stored file or an upload
    (``evidence_upload``), which is stored only once the actor is known to be
    allowed to record consent for this patient, inside the same transaction.
    """
    if evidence is not None and evidence_upload is not None:
        raise DomainError("Give the evidence once.", field="evidence")
    with transaction.atomic():
        patient = (
            Patient.objects.select_for_update(of=("self",))
            .select_related("hospital")
            .only("pk", "pseudonym", "hospital")
            .get(pk=patient.pk)
        )
        # Permission first: someone who may not see the patient learns nothing more.
        require_object_perm(actor, "change_patient", patient)
        _require_registrar(actor, patient.hospital)
        if not purposes:
            raise DomainError("Choose at least one purpose.", field="purposes")
        for purpose, basis in purposes.items():
            if purpose not in form.purposes:
                raise DomainError(
                    f"The form does not ask consent for {purpose!r}.",
                    field="purposes",
                )
            if basis not in LegalBasis.values:
                raise DomainError(
                    f"Legal basis for {purpose!r} must be one of "
                    f"{', '.join(LegalBasis.values)}.",
                    field="purposes",
                )
        if method not in Consent.Method.values:
            raise DomainError("Unknown consent method.", field="method")
        if method == Consent.Method.PAPER_SCANNED and not (evidence or evidence_upload):
            raise DomainError(
                "A scanned paper consent needs its scan.", field="evidence"
            )
        if signed_at > timezone.now():
            raise DomainError("The signing time lies in the future.", field="signed_at")
        signed_day = timezone.localdate(signed_at)
        if signed_day < form.valid_from or (
            form.valid_to and signed_day > form.valid_to
        ):
            raise DomainError(
                "The form was not in use on the day of signing.", field="form"
            )
        if evidence_upload is not None:
            evidence = _evidence_store(actor, evidence_upload)
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
                "form_version": form.version,
                "purposes": dict(purposes),
                "method": method,
                "signed_at": signed_at,
                "evidence_sha256": evidence.sha256 if evidence else None,
            },
        )
    return consent


def consent_withdraw(*, actor, consent: Consent, reason: str) -> Consent:
    """Withdraw a consent in one action. Processing for its purposes stops; records
    kept under legal retention stay where they are (GDPR Art. 17(3))."""
    if not (reason or "").strip():
        raise DomainError("Record the reason for the withdrawal.", field="reason")
    with transaction.atomic():
        consent = Consent.objects.select_for_update().get(pk=consent.pk)
        patient = (
            Patient.objects.select_related("hospital")
            .only("pk", "pseudonym", "hospital")
            .get(pk=consent.patient_id)
        )
        require_object_perm(actor, "change_patient", patient)
        if consent.is_withdrawn:
            raise Conflict(
                "This consent was already withdrawn.",
                withdrawn_at=consent.withdrawn_at.isoformat(),
            )
        consent.withdrawn_at = timezone.now()
        consent.withdrawn_by = actor
        consent.withdrawal_reason = reason
        consent._history_user = actor
        consent._change_reason = reason
        consent.save()
        audit_append(
            actor=actor,
            action="consent.withdrawn",
            obj=consent,
            organisation=patient.hospital,
            payload={
                "patient": patient.pseudonym,
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
