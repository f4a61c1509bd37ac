"""Prescriptions: versions, and the prescriber's signature (21 CFR 11.50, 11.70)."""

import datetime
from decimal import Decimal

import pytest
from django.db import connection

from cases import services
from cases.models import Case
from psi.errors import (
    Conflict,
    DomainError,
    NotVisible,
    PermissionRefused,
    RecordLocked,
    SignatureRejected,
    SigningLocked,
)
from psi.models import AuditEvent, Role, Signature
from psi.orgs import membership_grant
from psi.signatures import signature_verify
from tests.cases.conftest import write_prescription
from tests.factories import PASSWORD, UserFactory


def test_first_prescription_is_version_one_for_the_case_patient(
    draft_case, surgeon, hospital_a
):
    prescription = write_prescription(draft_case, surgeon)
    assert prescription.version == 1
    assert prescription.supersedes is None
    assert prescription.prescriber == surgeon
    assert prescription.institution == hospital_a
    assert prescription.patient_pseudonym == draft_case.patient.pseudonym
    assert prescription.thickness_mm == Decimal("1.50")
    assert not prescription.is_signed
    assert prescription.history.get().history_user == surgeon
    assert AuditEvent.objects.filter(
        action="prescription.created", object_id=str(prescription.pk)
    ).exists()


def test_a_later_prescription_is_the_next_version_and_supersedes_the_last(
    signed_prescription, surgeon
):
    second = write_prescription(signed_prescription.case, surgeon, thickness_mm="2")
    third = write_prescription(signed_prescription.case, surgeon, thickness_mm="2.5")
    assert (second.version, third.version) == (2, 3)
    assert second.supersedes == signed_prescription
    assert third.supersedes == second
    signed_prescription.refresh_from_db()
    assert signed_prescription.superseded_by == second
    assert services.prescription_latest(signed_prescription.case) == third


def test_only_clinicians_of_the_case_hospital_prescribe(
    draft_case, designer, coordinator, outsider
):
    with pytest.raises(PermissionRefused):
        write_prescription(draft_case, designer)
    with pytest.raises(PermissionRefused):
        write_prescription(draft_case, coordinator)
    with pytest.raises(NotVisible):
        write_prescription(draft_case, outsider)
    assert not draft_case.prescriptions.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prescriber_licence": ""}, "prescriber_licence"),
        ({"material": "gold"}, "material"),
        ({"material": "other"}, "material_other"),
        ({"thickness_mm": "0"}, "thickness_mm"),
        ({"thickness_mm": "abc"}, "thickness_mm"),
        ({"screw_count": 4, "screw_positions": ""}, "screw_positions"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_prescription_needs_its_characteristics(
    draft_case, surgeon, overrides, field
):
    with pytest.raises(DomainError) as refused:
        write_prescription(draft_case, surgeon, **overrides)
    assert refused.value.field == field


def test_no_new_prescription_once_design_is_past_review(case_at, surgeon):
    case = case_at(Case.Status.DESIGN_REVIEW)
    with pytest.raises(Conflict):
        write_prescription(case, surgeon)


def test_the_prescriber_edits_an_unsigned_prescription(prescription, surgeon):
    edited = services.prescription_update(
        actor=surgeon,
        prescription=prescription,
        changes={"thickness_mm": "1.8", "notes": "Smooth edges"},
    )
    assert edited.thickness_mm == Decimal("1.80")
    assert edited.history.first().history_user == surgeon
    assert edited.history.count() == 2


def test_another_clinician_cannot_edit_or_sign_someone_elses_prescription(
    prescription, hospital_a
):
    colleague = UserFactory(username="colleague")
    membership_grant(
        actor=None, user=colleague, organisation=hospital_a, role=Role.CLINICIAN
    )
    with pytest.raises(PermissionRefused):
        services.prescription_update(
            actor=colleague, prescription=prescription, changes={"notes": "x"}
        )
    with pytest.raises(PermissionRefused):
        services.prescription_sign(
            actor=colleague, prescription=prescription, password=PASSWORD
        )


# --- signing ---------------------------------------------------------------------


def test_signing_records_printed_name_utc_time_meaning_and_content_hash(
    signed_prescription, surgeon
):
    signature = signed_prescription.signature
    assert signature.signer == surgeon
    assert signature.printed_name == "Sam Cutter"
    assert signature.meaning == Signature.Meaning.AUTHORED
    assert signature.signed_at.utcoffset() == datetime.timedelta(0)
    assert len(signature.content_hash) == 64
    assert signature.record == signed_prescription
    assert signature_verify(signature).valid
    assert AuditEvent.objects.filter(
        action="signature.signed",
        object_type="cases.prescription",
        object_id=str(signed_prescription.pk),
    ).exists()
    assert signed_prescription.history.first().history_user == surgeon


def test_a_signed_prescription_cannot_be_edited_through_the_service(
    signed_prescription, surgeon
):
    with pytest.raises(RecordLocked) as refused:
        services.prescription_update(
            actor=surgeon, prescription=signed_prescription, changes={"notes": "x"}
        )
    assert refused.value.status == 409
    signed_prescription.refresh_from_db()
    assert signed_prescription.notes == ""


def test_a_signed_prescription_cannot_be_saved_by_any_path(signed_prescription):
    signed_prescription.thickness_mm = Decimal("3.00")
    with pytest.raises(RecordLocked):
        signed_prescription.save()


def test_a_signed_prescription_cannot_be_signed_again(signed_prescription, surgeon):
    with pytest.raises(RecordLocked):
        services.prescription_sign(
            actor=surgeon, prescription=signed_prescription, password="wrong-one"
        )
    # Refused before the password was checked: no failed attempt counted.
    assert not AuditEvent.objects.filter(action="signature.failed").exists()


def test_signature_fails_verification_after_a_change_behind_the_apps_back(
    signed_prescription,
):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cases_prescription SET thickness_mm = %s WHERE id = %s",
            ["2.40", signed_prescription.pk],
        )
    signature = Signature.objects.get(pk=signed_prescription.signature_id)
    verification = signature_verify(signature)
    assert not verification.valid
    assert verification.current_hash != signature.content_hash


def test_a_wrong_password_is_refused_and_audited(prescription, surgeon):
    with pytest.raises(SignatureRejected) as refused:
        services.prescription_sign(
            actor=surgeon, prescription=prescription, password="not-my-password"
        )
    assert refused.value.status == 403
    assert refused.value.field == "password"
    prescription.refresh_from_db()
    assert not prescription.is_signed
    failed = AuditEvent.objects.get(action="signature.failed")
    assert failed.actor == surgeon


def test_repeated_wrong_passwords_lock_signing(prescription, surgeon, settings):
    settings.PSI_SIGNING_MAX_FAILURES = 2
    with pytest.raises(SignatureRejected):
        services.prescription_sign(
            actor=surgeon, prescription=prescription, password="wrong-1"
        )
    with pytest.raises(SigningLocked) as locked:
        services.prescription_sign(
            actor=surgeon, prescription=prescription, password="wrong-2"
        )
    assert locked.value.status == 423
    # Even the right password waits for the lock to end.
    with pytest.raises(SigningLocked):
        services.prescription_sign(
            actor=surgeon, prescription=prescription, password=PASSWORD
        )
    prescription.refresh_from_db()
    assert not prescription.is_signed


def test_someone_who_may_not_sign_is_refused_before_the_password(
    prescription, designer, outsider
):
    with pytest.raises(PermissionRefused):
        services.prescription_sign(
            actor=designer, prescription=prescription, password="anything"
        )
    with pytest.raises(NotVisible):
        services.prescription_sign(
            actor=outsider, prescription=prescription, password="anything"
        )
    assert not AuditEvent.objects.filter(action="signature.failed").exists()
