"""The consent admin, as the surgeon (and others) use it through Django's test client.

Staff status is set in the tests (``staff`` fixture): the admin admits staff only,
and what a staff member sees there is still decided per object by the gate.
"""

import datetime

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from consent.models import Consent, ConsentForm, Patient, Purpose
from consent.services import consent_withdraw, patient_update_identity
from psi.models import AuditEvent
from tests.consent.conftest import FAMILY_NAME, PDF_BYTES

pytestmark = pytest.mark.django_db


def url(name, *args):
    return reverse(f"admin:consent_{name}", args=args)


@pytest.fixture
def login(client, staff):
    def as_user(user):
        client.force_login(staff(user))
        return client

    return as_user


def identity_reads():
    return AuditEvent.objects.filter(action="patient.identity_read")


# --- patients -----------------------------------------------------------------------


def test_surgeon_sees_patients_by_pseudonym_in_the_list(login, surgeon, patient):
    response = login(surgeon).get(url("patient_changelist"))

    assert response.status_code == 200
    assert patient.pseudonym in response.content.decode()
    assert FAMILY_NAME not in response.content.decode()
    assert not identity_reads().exists()


def test_outsider_list_is_empty(login, outsider, patient):
    response = login(outsider).get(url("patient_changelist"))
    assert response.status_code == 200
    assert patient.pseudonym not in response.content.decode()


def test_search_finds_pseudonyms_never_identity(login, surgeon, make_patient):
    patient, other = make_patient(), make_patient()
    client = login(surgeon)

    def found(term):
        page = client.get(url("patient_changelist"), {"q": term}).content.decode()
        return {p.pseudonym for p in (patient, other) if p.pseudonym in page}

    assert found(patient.pseudonym[4:8]) == {patient.pseudonym}
    # Encrypted fields are never searched as text, and a record number is not
    # looked up from a URL.
    assert found(FAMILY_NAME) == set()
    assert found("TEST-0001") == set()


def test_a_record_number_is_found_from_a_posted_form(login, surgeon, make_patient):
    patient = make_patient()
    client = login(surgeon)
    listing = client.get(url("patient_changelist")).content.decode()
    assert url("patient_find") in listing

    assert client.get(url("patient_find")).status_code == 200
    answer = client.post(url("patient_find"), {"record_number": "test-0001"})

    assert answer.status_code == 302
    assert answer["Location"] == url("patient_change", patient.pk)
    assert "TEST-0001" not in answer["Location"].upper()


def test_an_unknown_record_number_is_said_so(login, surgeon, patient):
    page = login(surgeon).post(url("patient_find"), {"record_number": "TEST-0999"})
    assert page.status_code == 200
    assert (
        "No patient of your hospital has this record number." in page.content.decode()
    )


def test_outsider_cannot_find_by_record_number(login, outsider, patient):
    page = login(outsider).post(url("patient_find"), {"record_number": "TEST-0001"})
    assert page.status_code == 200
    assert patient.pseudonym not in page.content.decode()
    assert "No patient of your hospital" in page.content.decode()


def test_surgeon_sees_identity_on_the_change_page(login, surgeon, patient):
    response = login(surgeon).get(url("patient_change", patient.pk))

    page = response.content.decode()
    assert response.status_code == 200
    assert FAMILY_NAME in page
    assert "TEST-0001" in page
    assert url("patient_identity", patient.pk) in page
    [event] = identity_reads()
    assert event.actor == surgeon


def test_designer_never_sees_identity_in_the_admin(
    login, designer, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    client = login(designer)

    change = client.get(url("patient_change", patient.pk))
    listing = client.get(url("patient_changelist"))

    assert change.status_code == listing.status_code == 200
    for response in (change, listing):
        page = response.content.decode()
        assert patient.pseudonym in page
        assert FAMILY_NAME not in page
        assert "TEST-0001" not in page
        assert patient.given_names not in page
    assert url("patient_identity", patient.pk) not in change.content.decode()
    assert not identity_reads().exists()
    assert client.get(url("patient_identity", patient.pk)).status_code == 403
    assert client.get(url("patient_history", patient.pk)).status_code == 403


def test_outsider_cannot_open_a_patient(login, outsider, patient):
    client = login(outsider)
    change = client.get(url("patient_change", patient.pk))
    assert change.status_code == 302  # the admin's "does not exist" redirect
    assert client.get(url("patient_history", patient.pk)).status_code == 404
    assert client.get(url("patient_identity", patient.pk)).status_code == 404
    first_version = patient.history.earliest().history_id
    historical = client.get(
        reverse(
            "admin:consent_patient_simple_history", args=[patient.pk, first_version]
        )
    )
    assert historical.status_code == 404


def test_surgeon_registers_a_patient_through_the_service(login, surgeon, hospital_a):
    response = login(surgeon).post(
        url("patient_add"),
        {
            "hospital": hospital_a.pk,
            "family_name": FAMILY_NAME,
            "given_names": "Admin",
            "birth_date": "1975-05-06",
            "sex": "F",
            "record_number": "TEST-0800",
        },
    )

    patient = Patient.objects.get()
    assert response.status_code == 302
    assert response.url == url("patient_change", patient.pk)
    assert patient.created_by == surgeon
    assert patient.family_name == FAMILY_NAME
    assert AuditEvent.objects.filter(action="patient.registered").count() == 1
    assert patient.history.get().history_user == surgeon


def test_registration_errors_are_shown_on_the_form(login, surgeon, hospital_a, patient):
    response = login(surgeon).post(
        url("patient_add"),
        {
            "hospital": hospital_a.pk,
            "family_name": FAMILY_NAME,
            "given_names": "Admin",
            "birth_date": "1975-05-06",
            "sex": "F",
            "record_number": patient.record_number,
        },
    )
    assert response.status_code == 200
    assert "already registered" in response.content.decode()
    assert Patient.objects.count() == 1


def test_designer_may_not_register(login, designer):
    assert login(designer).get(url("patient_add")).status_code == 403


def test_surgeon_corrects_identity_with_a_reason(login, surgeon, patient):
    client = login(surgeon)
    form = client.get(url("patient_identity", patient.pk))
    assert form.status_code == 200
    assert FAMILY_NAME in form.content.decode()
    data = {
        "family_name": FAMILY_NAME,
        "given_names": "Corrected",
        "birth_date": patient.birth_date.isoformat(),
        "sex": patient.sex,
        "record_number": patient.record_number,
    }

    without_reason = client.post(url("patient_identity", patient.pk), data)
    assert without_reason.status_code == 200
    assert Patient.objects.get(pk=patient.pk).given_names == patient.given_names

    done = client.post(
        url("patient_identity", patient.pk), {**data, "reason": "Typo at admission"}
    )
    assert done.status_code == 302
    assert Patient.objects.get(pk=patient.pk).given_names == "Corrected"
    event = AuditEvent.objects.get(action="patient.identity_changed")
    assert event.payload == {"fields": ["given_names"]}
    assert event.reason == "Typo at admission"


def test_patient_history_hides_identity_values(login, surgeon, patient):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"given_names": "Renamedperson"},
        reason="Typo",
    )
    client = login(surgeon)

    history = client.get(url("patient_history", patient.pk))

    page = history.content.decode()
    assert history.status_code == 200
    assert "(hidden)" in page
    assert "Renamedperson" not in page
    assert patient.given_names not in page
    version = patient.history.latest().history_id
    form_view = reverse(
        "admin:consent_patient_simple_history", args=[patient.pk, version]
    )
    assert client.get(form_view).status_code == 403
    assert client.post(form_view, {}).status_code == 403


def test_patients_are_never_deleted(login, superuser, patient):
    client = login(superuser)
    assert client.get(url("patient_delete", patient.pk)).status_code == 403


# --- consents -----------------------------------------------------------------------


def test_surgeon_records_consent_in_the_admin(login, surgeon, patient, consent_form):
    client = login(surgeon)
    assert client.get(url("consent_add"), {"patient": patient.pk}).status_code == 200
    signed = timezone.now() - datetime.timedelta(hours=3)

    response = client.post(
        url("consent_add"),
        {
            "patient": patient.pk,
            "form": consent_form.pk,
            "method": "electronic",
            "signed_at_0": signed.date().isoformat(),
            "signed_at_1": signed.strftime("%H:%M:%S"),
            f"purpose_{Purpose.IMAGING_EXCHANGE}": "consent_6_1_a_9_2_a",
        },
    )

    consent = Consent.objects.get()
    assert response.status_code == 302
    assert consent.purposes == {"imaging_exchange": "consent_6_1_a_9_2_a"}
    assert consent.recorded_by == surgeon


def test_paper_consent_in_the_admin_needs_and_stores_the_scan(
    login, surgeon, patient, consent_form
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = login(surgeon)
    signed = timezone.now() - datetime.timedelta(hours=3)
    data = {
        "patient": patient.pk,
        "form": consent_form.pk,
        "method": "paper_scanned",
        "signed_at_0": signed.date().isoformat(),
        "signed_at_1": signed.strftime("%H:%M:%S"),
        f"purpose_{Purpose.IMAGING_EXCHANGE}": "consent_6_1_a_9_2_a",
    }

    missing = client.post(url("consent_add"), data)
    assert missing.status_code == 200
    assert "needs its scan" in missing.content.decode()
    assert not Consent.objects.exists()

    scan = SimpleUploadedFile(f"{FAMILY_NAME}.pdf", PDF_BYTES, "application/pdf")
    stored = client.post(url("consent_add"), {**data, "evidence": scan})
    assert stored.status_code == 302
    consent = Consent.objects.get()
    page = client.get(url("consent_change", consent.pk)).content.decode()
    assert consent.evidence.sha256 in page
    assert FAMILY_NAME not in page  # not even the client's file name


def test_withdraw_button_asks_for_a_reason(login, surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    client = login(surgeon)
    withdraw_url = url("consent_withdraw", consent.pk)

    assert (
        withdraw_url in client.get(url("consent_change", consent.pk)).content.decode()
    )
    assert client.get(withdraw_url).status_code == 200
    assert client.post(withdraw_url, {"reason": ""}).status_code == 200
    assert not Consent.objects.get(pk=consent.pk).is_withdrawn

    done = client.post(withdraw_url, {"reason": "Patient asked at the desk"})

    assert done.status_code == 302
    consent.refresh_from_db()
    assert consent.is_withdrawn
    assert consent.withdrawal_reason == "Patient asked at the desk"
    assert (
        withdraw_url
        not in client.get(url("consent_change", consent.pk)).content.decode()
    )


def test_withdraw_action_on_the_list(login, surgeon, make_patient_with_consent):
    consents = [make_patient_with_consent().consents.get() for _ in range(2)]
    client = login(surgeon)
    selection = {
        "action": "withdraw_selected",
        ACTION_CHECKBOX_NAME: [c.pk for c in consents],
    }

    ask = client.post(url("consent_changelist"), selection)
    assert ask.status_code == 200
    assert "reason" in ask.content.decode()

    done = client.post(
        url("consent_changelist"),
        {**selection, "apply": "yes", "reason": "Both asked"},
    )

    assert done.status_code == 302
    assert Consent.objects.filter(withdrawn_at__isnull=False).count() == 2
    assert AuditEvent.objects.filter(action="consent.withdrawn").count() == 2


def test_withdrawing_a_withdrawn_consent_is_refused(
    login, surgeon, patient_with_consent
):
    consent = patient_with_consent.consents.get()
    consent_withdraw(actor=surgeon, consent=consent, reason="Asked")
    response = login(surgeon).post(
        url("consent_withdraw", consent.pk), {"reason": "Again"}, follow=True
    )
    assert "already withdrawn" in response.content.decode()
    assert AuditEvent.objects.filter(action="consent.withdrawn").count() == 1


def test_consent_history_cannot_revert(login, surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    consent_withdraw(actor=surgeon, consent=consent, reason="Asked")
    client = login(surgeon)
    first = consent.history.earliest().history_id
    version_url = reverse(
        "admin:consent_consent_simple_history", args=[consent.pk, first]
    )

    assert client.get(url("consent_history", consent.pk)).status_code == 200
    assert client.post(version_url, {}).status_code == 403
    assert Consent.objects.get(pk=consent.pk).is_withdrawn


def test_designer_has_no_consent_admin(
    login, designer, patient_with_consent, share_with_manufacturer
):
    share_with_manufacturer(patient_with_consent)
    consent = patient_with_consent.consents.get()
    client = login(designer)
    assert client.get(url("consent_changelist")).status_code == 403
    assert client.get(url("consent_withdraw", consent.pk)).status_code == 403
    assert client.get(url("consent_history", consent.pk)).status_code == 403


def test_outsider_cannot_open_a_consent(login, outsider, patient_with_consent):
    consent = patient_with_consent.consents.get()
    client = login(outsider)
    assert client.get(url("consent_history", consent.pk)).status_code == 404
    assert client.get(url("consent_withdraw", consent.pk)).status_code == 404


# --- consent forms ------------------------------------------------------------------


def test_superuser_publishes_a_consent_form(login, superuser):
    response = login(superuser).post(
        url("consentform_add"),
        {
            "title": "Admin consent",
            "version": "1",
            "language": "en",
            "text": "I agree.",
            "purposes": ["imaging_exchange"],
            "valid_from": "2025-01-01",
        },
    )
    assert response.status_code == 302
    assert ConsentForm.objects.get().purposes == ["imaging_exchange"]


def test_surgeon_reads_but_cannot_publish_consent_forms(login, surgeon, consent_form):
    client = login(surgeon)
    assert client.get(url("consentform_changelist")).status_code == 200
    assert client.get(url("consentform_change", consent_form.pk)).status_code == 200
    assert client.get(url("consentform_add")).status_code == 403
