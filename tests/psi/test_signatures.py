"""Electronic signatures: re-authentication, manifestation, binding, lockout
(21 CFR 11.50, 11.70, 11.200, 11.300(d))."""

import datetime
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from cases.models import Prescription
from psi.api.errors import exception_handler
from psi.canonical import sha256_of
from psi.errors import SignatureRejected, SigningLocked
from psi.models import AuditEvent, Signature, SigningGuard
from psi.signatures import (
    signature_authenticate,
    signature_record,
    signature_sign,
    signature_verify,
    signatures_of,
)

pytestmark = pytest.mark.django_db
WRONG = "not-the-password"


def sign(user, record, password):
    return signature_sign(
        signer=user,
        password=password,
        meaning=Signature.Meaning.AUTHORED,
        record=record,
    )


def refusals(user, action):
    return AuditEvent.objects.filter(
        action=action, object_type="auth.user", object_id=str(user.pk)
    ).count()


def test_signing_with_the_right_password_binds_name_time_meaning_and_content(
    surgeon, prescription_a, password
):
    before = timezone.now()
    signature = sign(surgeon, prescription_a, password)

    assert signature.printed_name == "Sam Cutter"
    assert signature.meaning == "authored"
    assert before <= signature.signed_at <= timezone.now()
    assert signature.content_hash == sha256_of(prescription_a.signed_content())
    assert signature.record == prescription_a
    assert signature_verify(signature).valid
    assert list(signatures_of(prescription_a)) == [signature]
    event = AuditEvent.objects.get(action="signature.signed")
    assert event.payload["signature_id"] == signature.pk
    assert event.payload["content_hash"] == signature.content_hash
    assert str(signature).startswith("Sam Cutter, Authored, ")


def test_a_wrong_password_is_refused_with_403_and_audited(surgeon, prescription_a):
    with pytest.raises(SignatureRejected) as refused:
        sign(surgeon, prescription_a, WRONG)
    assert type(refused.value) is SignatureRejected
    answer = exception_handler(refused.value, {})
    assert answer.status_code == 403
    assert answer.data["code"] == "signature_rejected"
    assert not Signature.objects.exists()
    assert refusals(surgeon, "signature.failed") == 1


@pytest.mark.django_db(transaction=True)
def test_a_refused_attempt_stays_recorded_though_the_callers_work_is_refused(
    surgeon, prescription_a
):
    def prescription_sign_off(prescription, password):
        # A caller's service: authenticate first, then its own transaction.
        signature_authenticate(signer=surgeon, password=password)
        with transaction.atomic():
            prescription.notes = "signed off"
            prescription.save()
            signature_record(signer=surgeon, meaning="authored", record=prescription)

    with pytest.raises(SignatureRejected):
        prescription_sign_off(prescription_a, WRONG)

    # No transaction wraps this test: what is in the database was committed.
    assert Prescription.objects.get(pk=prescription_a.pk).notes == ""
    assert not Signature.objects.exists()
    assert refusals(surgeon, "signature.failed") == 1
    assert SigningGuard.objects.get(user=surgeon).consecutive_failures == 1


def test_five_failures_in_a_row_lock_signing_for_fifteen_minutes(
    surgeon, prescription_a, password, monkeypatch
):
    for _ in range(4):
        with pytest.raises(SignatureRejected) as refused:
            sign(surgeon, prescription_a, WRONG)
        assert type(refused.value) is SignatureRejected
    with pytest.raises(SigningLocked) as locked:
        sign(surgeon, prescription_a, WRONG)
    assert exception_handler(locked.value, {}).status_code == 423
    assert "locked for 15 minutes" in locked.value.message

    guard = SigningGuard.objects.get(user=surgeon)
    lock = guard.locked_until - timezone.now()
    assert datetime.timedelta(minutes=14) < lock <= datetime.timedelta(minutes=15)

    # While locked, even the right password is refused, and that is recorded too.
    with pytest.raises(SigningLocked):
        sign(surgeon, prescription_a, password)
    assert refusals(surgeon, "signature.refused_locked") == 1
    assert refusals(surgeon, "signature.failed") == 5
    assert not Signature.objects.exists()

    later = guard.locked_until + datetime.timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert sign(surgeon, prescription_a, password).signer == surgeon
    guard.refresh_from_db()
    assert guard.locked_until is None and guard.consecutive_failures == 0


def test_a_success_starts_the_count_of_failures_again(
    surgeon, prescription_a, password
):
    for _ in range(4):
        with pytest.raises(SignatureRejected):
            sign(surgeon, prescription_a, WRONG)
    sign(surgeon, prescription_a, password)
    for _ in range(4):
        with pytest.raises(SignatureRejected) as refused:
            sign(surgeon, prescription_a, WRONG)
        assert type(refused.value) is SignatureRejected


def test_someone_elses_password_does_not_sign(surgeon, coordinator, prescription_a):
    coordinator.set_password("coordinators-own-password")
    coordinator.save()
    with pytest.raises(SignatureRejected):
        sign(surgeon, prescription_a, "coordinators-own-password")


def test_an_inactive_user_cannot_sign(surgeon, prescription_a, password):
    surgeon.is_active = False
    surgeon.save()
    with pytest.raises(SignatureRejected):
        sign(surgeon, prescription_a, password)


def test_verification_fails_after_the_signed_record_changes(
    surgeon, prescription_a, password
):
    signature = sign(surgeon, prescription_a, password)
    # Behind the application's back: a queryset update skips every model guard.
    Prescription.objects.filter(pk=prescription_a.pk).update(
        thickness_mm=Decimal("3.00")
    )
    result = signature_verify(Signature.objects.get(pk=signature.pk))
    assert not result.valid
    assert result.current_hash != signature.content_hash


def test_a_signature_moved_to_another_record_does_not_verify(
    surgeon, prescription_a, password
):
    signature = sign(surgeon, prescription_a, password)
    other = Prescription.objects.create(
        case=prescription_a.case,
        version=2,
        prescriber=surgeon,
        prescriber_licence="TEST-LIC-0001",
        institution=prescription_a.institution,
        patient_pseudonym=prescription_a.patient_pseudonym,
        material=Prescription.Material.PEEK,
        thickness_mm=Decimal("4.00"),
    )
    Signature.objects.filter(pk=signature.pk).update(record_id=str(other.pk))
    assert not signature_verify(Signature.objects.get(pk=signature.pk)).valid
