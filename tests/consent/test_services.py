"""The consent services: happy path, each guard, permission, history and audit."""

import datetime
import io

import pytest
from django.utils import timezone

from consent.models import Consent, LegalBasis, Patient, Purpose
from consent.services import (
    ConsentMissing,
    consent_form_create,
    consent_record,
    consent_require,
    consent_withdraw,
    patient_find_by_record_number,
    patient_identities,
    patient_identity,
    patient_register,
    patient_update_identity,
)
from psi.audit import audit_verify
from psi.errors import Conflict, DomainError, NotVisible, PermissionRefused
from psi.models import AuditEvent
from tests.consent.conftest import CARE_PURPOSES, FAMILY_NAME

pytestmark = pytest.mark.django_db


def events(action, obj=None):
    found = AuditEvent.objects.filter(action=action)
    if obj is not None:
        found = found.filter(object_id=str(obj.pk))
    return list(found)


def identity(**overrides):
    return {
        "family_name": FAMILY_NAME,
        "given_names": "Example",
        "birth_date": datetime.date(1970, 1, 1),
        "sex": Patient.Sex.FEMALE,
        "record_number": "TEST-9001",
        **overrides,
    }


# --- patient_register ---------------------------------------------------------------


def test_surgeon_registers_patient_under_random_pseudonym(surgeon, hospital_a):
    patient = patient_register(actor=surgeon, hospital=hospital_a, **identity())

    assert patient.pseudonym.startswith("PSI-")
    assert FAMILY_NAME.upper() not in patient.pseudonym
    record = patient.history.get()
    assert record.history_type == "+"
    assert record.history_user == surgeon
    [event] = events("patient.registered", patient)
    assert event.actor == surgeon
    assert event.payload == {"pseudonym": patient.pseudonym}
    assert FAMILY_NAME not in str(event.payload)
    assert audit_verify().ok


def test_registration_gives_the_hospital_identity_access(surgeon, coordinator, patient):
    assert patient_identity(actor=coordinator, patient=patient)["family_name"] == (
        FAMILY_NAME
    )


def test_coordinator_may_register(coordinator, hospital_a):
    patient = patient_register(actor=coordinator, hospital=hospital_a, **identity())
    assert patient.created_by == coordinator


def test_registration_needs_a_hospital(superuser, manufacturer):
    with pytest.raises(DomainError) as error:
        patient_register(actor=superuser, hospital=manufacturer, **identity())
    assert error.value.field == "hospital"


@pytest.mark.parametrize("persona", ["designer", "outsider", "case_manager"])
def test_only_the_hospitals_registrars_may_register(request, persona, hospital_a):
    actor = request.getfixturevalue(persona)
    with pytest.raises(PermissionRefused):
        patient_register(actor=actor, hospital=hospital_a, **identity())
    assert not Patient.objects.exists()


def test_anonymous_may_not_register(hospital_a):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionRefused):
        patient_register(actor=AnonymousUser(), hospital=hospital_a, **identity())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("family_name", "  "),
        ("given_names", ""),
        ("record_number", ""),
        ("birth_date", None),
        ("birth_date", "1970-01-01"),
        ("sex", "X"),
    ],
)
def test_registration_rejects_incomplete_identity(surgeon, hospital_a, field, value):
    with pytest.raises(DomainError) as error:
        patient_register(
            actor=surgeon, hospital=hospital_a, **identity(**{field: value})
        )
    assert error.value.field == field
    assert not Patient.objects.exists()


def test_birth_date_may_not_lie_in_the_future(surgeon, hospital_a):
    tomorrow = timezone.localdate() + datetime.timedelta(days=1)
    with pytest.raises(DomainError) as error:
        patient_register(
            actor=surgeon, hospital=hospital_a, **identity(birth_date=tomorrow)
        )
    assert error.value.field == "birth_date"


def test_record_number_is_unique_per_hospital(
    surgeon, outsider, hospital_a, hospital_b
):
    patient_register(actor=surgeon, hospital=hospital_a, **identity())
    with pytest.raises(DomainError) as error:
        # Same number, other spelling: the digest normalises case and spaces.
        patient_register(
            actor=surgeon,
            hospital=hospital_a,
            **identity(record_number=" test-9001 ", given_names="Other"),
        )
    assert error.value.field == "record_number"
    # Another hospital may use the same number for its own patient.
    patient_register(actor=outsider, hospital=hospital_b, **identity())
    assert Patient.objects.count() == 2


# --- patient_update_identity --------------------------------------------------------


def test_surgeon_corrects_identity_with_a_reason(surgeon, patient):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"given_names": "Corrected", "sex": Patient.Sex.OTHER},
        reason="Spelling error at admission",
    )

    fresh = Patient.objects.get(pk=patient.pk)
    assert fresh.given_names == "Corrected"
    assert fresh.sex == Patient.Sex.OTHER
    latest = fresh.history.latest()
    assert latest.history_type == "~"
    assert latest.history_user == surgeon
    assert latest.history_change_reason == "Spelling error at admission"
    [event] = events("patient.identity_changed", patient)
    assert event.payload == {"fields": ["given_names", "sex"]}
    assert event.reason == "Spelling error at admission"
    assert "Corrected" not in str(event.payload)


def test_changing_the_record_number_updates_its_digest(surgeon, hospital_a, patient):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"record_number": "TEST-7777"},
        reason="Merged records",
    )
    assert (
        patient_find_by_record_number(
            actor=surgeon, hospital=hospital_a, record_number="TEST-7777"
        )
        == patient
    )
    assert (
        patient_find_by_record_number(
            actor=surgeon, hospital=hospital_a, record_number=patient.record_number
        )
        is None
    )


def test_identity_correction_needs_a_reason(surgeon, patient):
    with pytest.raises(DomainError) as error:
        patient_update_identity(
            actor=surgeon, patient=patient, changes={"given_names": "X"}, reason=" "
        )
    assert error.value.field == "reason"


def test_identity_correction_knows_only_identity_fields(surgeon, patient):
    with pytest.raises(DomainError) as error:
        patient_update_identity(
            actor=surgeon, patient=patient, changes={"hospital": 1}, reason="r"
        )
    assert error.value.field == "hospital"
    with pytest.raises(DomainError):
        patient_update_identity(actor=surgeon, patient=patient, changes={}, reason="r")


def test_identity_correction_validates_values(surgeon, patient):
    with pytest.raises(DomainError) as error:
        patient_update_identity(
            actor=surgeon, patient=patient, changes={"sex": "Q"}, reason="r"
        )
    assert error.value.field == "sex"


def test_unchanged_identity_writes_nothing(surgeon, patient):
    before = patient.history.count()
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"family_name": FAMILY_NAME},
        reason="Checked",
    )
    assert patient.history.count() == before
    assert not events("patient.identity_changed")


def test_record_number_correction_may_not_take_anothers(surgeon, make_patient):
    first, second = make_patient(), make_patient()
    with pytest.raises(DomainError) as error:
        patient_update_identity(
            actor=surgeon,
            patient=second,
            changes={"record_number": first.record_number},
            reason="Typo",
        )
    assert error.value.field == "record_number"


def test_outsider_cannot_see_patient_to_correct(outsider, patient):
    with pytest.raises(NotVisible):
        patient_update_identity(
            actor=outsider, patient=patient, changes={"given_names": "X"}, reason="r"
        )


def test_designer_may_not_correct_identity(designer, patient, share_with_manufacturer):
    share_with_manufacturer(patient)
    with pytest.raises(PermissionRefused):
        patient_update_identity(
            actor=designer, patient=patient, changes={"given_names": "X"}, reason="r"
        )
    assert not events("patient.identity_changed")


# --- patient_identities -------------------------------------------------------------


def test_identity_read_is_one_audit_event_per_call(surgeon, make_patient):
    patients = [make_patient() for _ in range(3)]

    identities = patient_identities(actor=surgeon, patients=patients)

    assert {i["family_name"] for i in identities.values()} == {FAMILY_NAME}
    assert set(identities) == {p.pk for p in patients}
    [event] = events("patient.identity_read")
    assert event.actor == surgeon
    assert event.payload == {"patients": sorted(p.pk for p in patients)}


def test_identity_read_of_one_patient_names_it(surgeon, patient):
    patient_identity(actor=surgeon, patient=patient)
    [event] = events("patient.identity_read")
    assert event.object_type == "consent.patient"
    assert event.object_id == str(patient.pk)


def test_identity_works_on_deferred_rows(surgeon, patient):
    deferred = Patient.objects.defer("family_name", "record_number").get(pk=patient.pk)
    assert patient_identity(actor=surgeon, patient=deferred)["record_number"] == (
        patient.record_number
    )


@pytest.mark.parametrize("persona", ["designer", "auditor", "qa", "outsider"])
def test_others_never_receive_identity(
    request, persona, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    actor = request.getfixturevalue(persona)
    assert patient_identities(actor=actor, patients=[patient]) == {}
    assert patient_identity(actor=actor, patient=patient) is None
    assert not events("patient.identity_read")


def test_identity_read_returns_only_the_readable(
    surgeon, outsider, hospital_b, make_patient
):
    ours = make_patient()
    theirs = make_patient(actor=outsider, hospital=hospital_b)
    assert set(patient_identities(actor=surgeon, patients=[ours, theirs])) == {ours.pk}


# --- patient_find_by_record_number --------------------------------------------------


def test_find_by_record_number_through_the_digest(surgeon, hospital_a, patient):
    found = patient_find_by_record_number(
        actor=surgeon, hospital=hospital_a, record_number=" test-0001 "
    )
    assert found == patient
    assert patient_find_by_record_number(actor=surgeon, record_number="TEST-0001") == (
        patient
    )
    assert (
        patient_find_by_record_number(
            actor=surgeon, hospital=hospital_a, record_number="TEST-9999"
        )
        is None
    )


@pytest.mark.parametrize("persona", ["designer", "outsider"])
def test_others_cannot_look_up_record_numbers(
    request, persona, hospital_a, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    actor = request.getfixturevalue(persona)
    assert (
        patient_find_by_record_number(
            actor=actor, hospital=hospital_a, record_number="TEST-0001"
        )
        is None
    )


# --- consent_form_create ------------------------------------------------------------


def form_data(**overrides):
    return {
        "title": "Implant consent",
        "version": "2.0",
        "language": "de-CH",
        "text": "Ich willige ein.",
        "purposes": [Purpose.IMAGING_EXCHANGE, Purpose.IMAGING_EXCHANGE],
        "valid_from": datetime.date(2025, 1, 1),
        **overrides,
    }


def test_consent_form_is_published_with_history_and_audit(superuser):
    form = consent_form_create(actor=superuser, **form_data())

    assert form.purposes == [Purpose.IMAGING_EXCHANGE]
    assert form.history.get().history_user == superuser
    [event] = events("consent_form.published", form)
    assert event.payload["version"] == "2.0"


def test_holder_of_the_model_permission_may_publish(qa):
    from django.contrib.auth.models import Permission

    qa.user_permissions.add(Permission.objects.get(codename="add_consentform"))
    qa = type(qa).objects.get(pk=qa.pk)  # fresh permission cache
    assert consent_form_create(actor=qa, **form_data()).pk


@pytest.mark.parametrize("persona", ["surgeon", "designer", "outsider"])
def test_others_may_not_publish_consent_forms(request, persona):
    with pytest.raises(PermissionRefused):
        consent_form_create(actor=request.getfixturevalue(persona), **form_data())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"purposes": []}, "purposes"),
        ({"purposes": ["marketing"]}, "purposes"),
        ({"valid_to": datetime.date(2024, 12, 31)}, "valid_to"),
        ({"language": "english!"}, "language"),
    ],
)
def test_consent_form_guards(superuser, overrides, field):
    with pytest.raises(DomainError) as error:
        consent_form_create(actor=superuser, **form_data(**overrides))
    assert error.value.field == field


def test_a_version_is_published_once(superuser):
    consent_form_create(actor=superuser, **form_data())
    with pytest.raises(DomainError) as error:
        consent_form_create(actor=superuser, **form_data(text="Changed"))
    assert error.value.field == "version"


# --- consent_record -----------------------------------------------------------------


def test_surgeon_records_electronic_consent(surgeon, patient, consent_form):
    signed_at = timezone.now() - datetime.timedelta(hours=2)
    consent = consent_record(
        actor=surgeon,
        patient=patient,
        form=consent_form,
        purposes=CARE_PURPOSES,
        method=Consent.Method.ELECTRONIC,
        signed_at=signed_at,
    )

    assert consent.recorded_by == surgeon
    assert consent.evidence is None
    assert consent.history.get().history_user == surgeon
    [event] = events("consent.given", consent)
    assert event.payload["patient"] == patient.pseudonym
    assert event.payload["form_version"] == "1.0"
    assert event.payload["method"] == "electronic"
    assert event.payload["purposes"] == {
        "imaging_exchange": LegalBasis.EXPLICIT_CONSENT,
        "design_and_manufacture": LegalBasis.EXPLICIT_CONSENT,
    }
    assert event.organisation == patient.hospital


def test_paper_consent_needs_its_scan(give_consent, patient):
    with pytest.raises(DomainError) as error:
        give_consent(patient, method=Consent.Method.PAPER_SCANNED)
    assert error.value.field == "evidence"
    assert not Consent.objects.exists()


def test_paper_consent_stores_the_scan(give_consent, patient, pdf_scan):
    consent = give_consent(
        patient,
        method=Consent.Method.PAPER_SCANNED,
        evidence_upload=pdf_scan(f"{FAMILY_NAME}.pdf"),
    )
    assert consent.evidence.content_type == "application/pdf"
    assert consent.evidence.original_name == "consent-evidence.pdf"
    assert consent.evidence.size > 0
    [event] = events("consent.given", consent)
    assert event.payload["evidence_sha256"] == consent.evidence.sha256


def test_evidence_must_be_a_scan(give_consent, patient):
    upload = io.BytesIO(b"MZ\x90\x00 not a scan")
    with pytest.raises(DomainError) as error:
        give_consent(
            patient, method=Consent.Method.PAPER_SCANNED, evidence_upload=upload
        )
    assert error.value.field == "evidence"


def test_evidence_has_a_size_cap(give_consent, patient, settings, pdf_scan):
    settings.PSI_CONSENT_EVIDENCE_MAX_BYTES = 10
    with pytest.raises(DomainError) as error:
        give_consent(
            patient, method=Consent.Method.PAPER_SCANNED, evidence_upload=pdf_scan()
        )
    assert error.value.field == "evidence"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"purposes": {}}, "purposes"),
        ({"purposes": {"marketing": LegalBasis.EXPLICIT_CONSENT}}, "purposes"),
        ({"purposes": {Purpose.IMAGING_EXCHANGE: "because"}}, "purposes"),
        ({"method": "telepathy"}, "method"),
    ],
)
def test_consent_guards(give_consent, patient, overrides, field):
    with pytest.raises(DomainError) as error:
        give_consent(patient, **overrides)
    assert error.value.field == field


def test_signing_time_may_not_lie_in_the_future(give_consent, patient):
    with pytest.raises(DomainError) as error:
        give_consent(patient, signed_at=timezone.now() + datetime.timedelta(hours=1))
    assert error.value.field == "signed_at"


def test_form_must_be_in_use_on_the_day_of_signing(give_consent, patient):
    before = timezone.make_aware(datetime.datetime(2023, 6, 1, 12))
    with pytest.raises(DomainError) as error:
        give_consent(patient, signed_at=before)
    assert error.value.field == "form"


def test_outsider_cannot_record_consent(give_consent, outsider, patient):
    with pytest.raises(NotVisible):
        give_consent(patient, actor=outsider)


def test_manufacturer_may_not_record_consent(
    give_consent, designer, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    with pytest.raises(PermissionRefused):
        give_consent(patient, actor=designer)
    assert not Consent.objects.exists()


# --- consent_withdraw and consent_require ------------------------------------------


def test_consent_require_finds_the_covering_consent(patient_with_consent):
    consent = consent_require(patient_with_consent, Purpose.IMAGING_EXCHANGE)
    assert consent.patient == patient_with_consent


def test_consent_require_refuses_uncovered_purposes(patient_with_consent, patient):
    with pytest.raises(ConsentMissing) as error:
        consent_require(patient_with_consent, Purpose.RESEARCH_REUSE)
    assert error.value.status == 409
    assert error.value.extra == {"purpose": Purpose.RESEARCH_REUSE}
    with pytest.raises(ConsentMissing):
        consent_require(patient, Purpose.IMAGING_EXCHANGE)


def test_withdrawal_blocks_processing_and_keeps_the_record(
    surgeon, patient_with_consent
):
    consent = patient_with_consent.consents.get()

    consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked by phone")

    with pytest.raises(ConsentMissing):
        consent_require(patient_with_consent, Purpose.IMAGING_EXCHANGE)
    consent.refresh_from_db()
    assert consent.is_withdrawn
    assert consent.withdrawn_by == surgeon
    assert consent.withdrawal_reason == "Patient asked by phone"
    assert consent.purposes  # what was agreed stays on record
    latest = consent.history.latest()
    assert latest.history_type == "~"
    assert latest.history_user == surgeon
    assert latest.history_change_reason == "Patient asked by phone"
    [event] = events("consent.withdrawn", consent)
    assert event.reason == "Patient asked by phone"
    assert event.payload["patient"] == patient_with_consent.pseudonym


def test_a_later_consent_covers_again(surgeon, patient_with_consent, give_consent):
    consent_withdraw(
        actor=surgeon, consent=patient_with_consent.consents.get(), reason="Asked"
    )
    renewed = give_consent(patient_with_consent)
    assert consent_require(patient_with_consent, Purpose.IMAGING_EXCHANGE) == renewed


def test_withdrawing_twice_is_a_conflict(surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    consent_withdraw(actor=surgeon, consent=consent, reason="Asked")
    with pytest.raises(Conflict) as error:
        consent_withdraw(actor=surgeon, consent=consent, reason="Again")
    assert error.value.status == 409
    assert "withdrawn_at" in error.value.extra
    assert len(events("consent.withdrawn")) == 1


def test_withdrawal_needs_a_reason(surgeon, patient_with_consent):
    with pytest.raises(DomainError) as error:
        consent_withdraw(
            actor=surgeon, consent=patient_with_consent.consents.get(), reason=""
        )
    assert error.value.field == "reason"


def test_coordinator_may_withdraw(coordinator, patient_with_consent):
    consent = consent_withdraw(
        actor=coordinator, consent=patient_with_consent.consents.get(), reason="Asked"
    )
    assert consent.withdrawn_by == coordinator


def test_outsider_cannot_withdraw(outsider, patient_with_consent):
    with pytest.raises(NotVisible):
        consent_withdraw(
            actor=outsider, consent=patient_with_consent.consents.get(), reason="x"
        )


def test_manufacturer_may_not_withdraw(
    designer, patient_with_consent, share_with_manufacturer
):
    share_with_manufacturer(patient_with_consent)
    with pytest.raises(PermissionRefused):
        consent_withdraw(
            actor=designer, consent=patient_with_consent.consents.get(), reason="x"
        )
    assert not patient_with_consent.consents.get().is_withdrawn
