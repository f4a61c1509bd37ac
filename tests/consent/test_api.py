"""The consent REST API: anonymous 401, invisible 404, permitted 2xx, identity only
for the patient's hospital, and lists whose query count does not grow with the
page."""

import datetime
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.selectors import IDENTITY_FIELDS
from consent.services import consent_withdraw, patient_update_identity
from psi.models import AuditEvent
from tests.consent.conftest import FAMILY_NAME, PDF_BYTES

pytestmark = pytest.mark.django_db

PATIENTS = "/api/v1/patients/"
FORMS = "/api/v1/consent-forms/"
CONSENTS = "/api/v1/consents/"


def identity_reads():
    return list(AuditEvent.objects.filter(action="patient.identity_read"))


def query_count(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries)


def assert_list_cost_is_flat(client, url, add_rows, *, expect_rows=None):
    """The list costs the same number of queries for 5 rows as for 50."""
    add_rows(5)
    query_count(client, url)  # warm caches (permission ids, content types)
    small = query_count(client, url)
    add_rows(45)
    response = client.get(url)
    assert response.json()["count"] == (expect_rows or 50)
    assert query_count(client, url) == small


# --- patients -----------------------------------------------------------------------


def test_anonymous_gets_401_on_patients(api, patient):
    assert api.get(PATIENTS).status_code == 401
    assert api.get(f"{PATIENTS}{patient.pk}/").status_code == 401
    assert api.post(PATIENTS, {}, format="json").status_code == 401
    assert api.patch(f"{PATIENTS}{patient.pk}/", {}).status_code == 401
    assert api.get(f"{PATIENTS}{patient.pk}/history/").status_code == 401


def test_outsider_cannot_see_patient(api_as, outsider, patient):
    client = api_as(outsider)
    assert client.get(PATIENTS).json()["count"] == 0
    assert client.get(f"{PATIENTS}{patient.pk}/").status_code == 404
    assert client.get(f"{PATIENTS}{patient.pk}/history/").status_code == 404
    response = client.patch(
        f"{PATIENTS}{patient.pk}/",
        {"given_names": "X", "reason": "r"},
        format="json",
    )
    assert response.status_code == 404
    lookup = client.post(f"{PATIENTS}lookup/", {"record_number": "TEST-0001"})
    assert lookup.json() == []


def test_surgeon_sees_identity_of_own_patients(api_as, surgeon, patient):
    response = api_as(surgeon).get(f"{PATIENTS}{patient.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["pseudonym"] == patient.pseudonym
    assert body["hospital"] == patient.hospital_id
    assert body["family_name"] == FAMILY_NAME
    assert body["birth_date"] == patient.birth_date.isoformat()
    assert body["record_number"] == "TEST-0001"
    [event] = identity_reads()
    assert event.actor == surgeon
    assert event.object_id == str(patient.pk)


def test_a_page_of_patients_is_one_identity_read(api_as, surgeon, make_patient):
    patients = [make_patient() for _ in range(3)]

    body = api_as(surgeon).get(PATIENTS).json()

    assert {row["family_name"] for row in body["results"]} == {FAMILY_NAME}
    [event] = identity_reads()
    assert event.payload == {"patients": sorted(p.pk for p in patients)}


@pytest.mark.parametrize("persona", ["designer", "case_manager", "qa", "auditor"])
def test_manufacturer_sees_the_pseudonym_only(
    request, api_as, persona, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    client = api_as(request.getfixturevalue(persona))

    listed = client.get(PATIENTS)
    detail = client.get(f"{PATIENTS}{patient.pk}/")

    assert listed.status_code == detail.status_code == 200
    for body in (listed.json()["results"][0], detail.json()):
        assert body["pseudonym"] == patient.pseudonym
        assert not set(IDENTITY_FIELDS) & set(body)  # absent, not null
    for response in (listed, detail):
        assert FAMILY_NAME not in response.content.decode()
        assert "TEST-0001" not in response.content.decode()
    assert identity_reads() == []


def test_manufacturer_sees_nothing_before_a_case(api_as, designer, patient):
    assert api_as(designer).get(f"{PATIENTS}{patient.pk}/").status_code == 404


def test_surgeon_registers_a_patient(api_as, surgeon, hospital_a):
    response = api_as(surgeon).post(
        PATIENTS,
        {
            "hospital": hospital_a.pk,
            "family_name": FAMILY_NAME,
            "given_names": "Api",
            "birth_date": "1980-02-03",
            "sex": "M",
            "record_number": "TEST-0500",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    patient = Patient.objects.get(pseudonym=body["pseudonym"])
    assert patient.created_by == surgeon
    assert body["record_number"] == "TEST-0500"
    assert AuditEvent.objects.filter(action="patient.registered").count() == 1


def test_registering_elsewhere_is_refused(api_as, outsider, hospital_a):
    response = api_as(outsider).post(
        PATIENTS,
        {
            "hospital": hospital_a.pk,
            "family_name": FAMILY_NAME,
            "given_names": "Api",
            "birth_date": "1980-02-03",
            "sex": "M",
            "record_number": "TEST-0501",
        },
        format="json",
    )
    assert response.status_code == 403
    assert not Patient.objects.exists()


def test_registration_errors_name_the_field(api_as, surgeon, hospital_a, patient):
    client = api_as(surgeon)
    base = {
        "hospital": hospital_a.pk,
        "family_name": FAMILY_NAME,
        "given_names": "Api",
        "birth_date": "1980-02-03",
        "sex": "M",
        "record_number": "TEST-0001",  # taken by ``patient``
    }
    taken = client.post(PATIENTS, base, format="json")
    assert taken.status_code == 400
    assert "record_number" in taken.json()

    missing = client.post(PATIENTS, {**base, "sex": "Z"}, format="json")
    assert missing.status_code == 400
    assert "sex" in missing.json()

    future = (timezone.localdate() + datetime.timedelta(days=2)).isoformat()
    late = client.post(
        PATIENTS, {**base, "record_number": "TEST-0502", "birth_date": future}
    )
    assert late.status_code == 400
    assert late.json()["field"] == "birth_date"


def test_surgeon_corrects_identity(api_as, surgeon, patient):
    response = api_as(surgeon).patch(
        f"{PATIENTS}{patient.pk}/",
        {"given_names": "Corrected", "reason": "Typo at admission"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["given_names"] == "Corrected"
    assert Patient.objects.get(pk=patient.pk).given_names == "Corrected"
    event = AuditEvent.objects.get(action="patient.identity_changed")
    assert event.reason == "Typo at admission"


def test_identity_correction_needs_reason_and_a_field(api_as, surgeon, patient):
    client = api_as(surgeon)
    url = f"{PATIENTS}{patient.pk}/"
    no_reason = client.patch(url, {"given_names": "X"}, format="json")
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()
    nothing = client.patch(url, {"reason": "r"}, format="json")
    assert nothing.status_code == 400
    assert client.put(url, {}, format="json").status_code == 405


def test_manufacturer_may_not_correct_identity(
    api_as, designer, patient, share_with_manufacturer
):
    share_with_manufacturer(patient)
    response = api_as(designer).patch(
        f"{PATIENTS}{patient.pk}/", {"given_names": "X", "reason": "r"}, format="json"
    )
    assert response.status_code == 403
    assert Patient.objects.get(pk=patient.pk).given_names != "X"
    assert not AuditEvent.objects.filter(action="patient.identity_changed").exists()


def test_record_number_lookup_is_exact_keyed_and_never_in_the_url(
    api_as, surgeon, designer, make_patient, share_with_manufacturer
):
    patient = make_patient()
    make_patient()
    lookup = f"{PATIENTS}lookup/"

    client = api_as(surgeon)
    found = client.post(lookup, {"record_number": " test-0001"}, format="json").json()
    assert [row["pseudonym"] for row in found] == [patient.pseudonym]
    assert found[0]["record_number"] == "TEST-0001"
    # No substring search on identity.
    assert (
        client.post(lookup, {"record_number": "TEST-000"}, format="json").json() == []
    )
    # Not a query-string filter: the value would land in access logs.
    unfiltered = client.get(PATIENTS, {"record_number": "TEST-0001"}).json()
    assert unfiltered["count"] == 2

    share_with_manufacturer(patient)
    other = api_as(designer).post(lookup, {"record_number": "TEST-0001"}, format="json")
    assert other.json() == []


def test_hospital_filter_and_ordering(
    api_as, surgeon, hospital_a, hospital_b, make_patient
):
    make_patient()
    make_patient()
    client = api_as(surgeon)

    assert client.get(PATIENTS, {"hospital": hospital_a.pk}).json()["count"] == 2
    assert client.get(PATIENTS, {"hospital": hospital_b.pk}).json()["count"] == 0
    assert client.get(PATIENTS, {"hospital": "nope"}).status_code == 400
    newest_first = client.get(PATIENTS, {"ordering": "-created_at"}).json()["results"]
    assert len(newest_first) == 2


def test_patient_history_never_shows_identity(
    api_as, surgeon, designer, patient, share_with_manufacturer
):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"family_name": "Testpersonrenamed"},
        reason="Testpersonrenamed after marriage",
    )
    share_with_manufacturer(patient)

    own = api_as(surgeon).get(f"{PATIENTS}{patient.pk}/history/")
    assert own.status_code == 200
    change = own.json()[0]
    assert change["changes"]["family_name"] == ["(hidden)", "(hidden)"]
    assert change["history_change_reason"] == "Testpersonrenamed after marriage"
    assert set(change["changes"]) == {"family_name"}

    theirs = api_as(designer).get(f"{PATIENTS}{patient.pk}/history/")
    assert theirs.status_code == 200
    assert theirs.json()[0]["history_change_reason"] == "(hidden)"
    assert FAMILY_NAME not in theirs.content.decode()


def test_patient_list_cost_is_flat(api_as, surgeon, make_patient):
    client = api_as(surgeon)

    def add(n):
        for _ in range(n):
            make_patient()

    assert_list_cost_is_flat(client, PATIENTS, add)


def test_pseudonym_list_cost_is_flat(
    api_as, designer, make_patient, share_with_manufacturer
):
    client = api_as(designer)

    def add(n):
        for _ in range(n):
            share_with_manufacturer(make_patient())

    assert_list_cost_is_flat(client, PATIENTS, add)


# --- consent forms ------------------------------------------------------------------


def form_payload(**overrides):
    return {
        "title": "Api consent",
        "version": "3",
        "language": "en",
        "text": "I agree.",
        "purposes": ["imaging_exchange", "research_reuse"],
        "valid_from": "2025-01-01",
        **overrides,
    }


def test_anonymous_gets_401_on_consent_forms(api, consent_form):
    assert api.get(FORMS).status_code == 401
    assert api.get(f"{FORMS}{consent_form.pk}/").status_code == 401
    assert api.post(FORMS, form_payload(), format="json").status_code == 401


@pytest.mark.parametrize("persona", ["surgeon", "designer", "outsider"])
def test_every_signed_in_user_reads_consent_forms(
    request, api_as, persona, consent_form
):
    client = api_as(request.getfixturevalue(persona))
    assert client.get(FORMS).json()["results"][0]["title"] == consent_form.title
    detail = client.get(f"{FORMS}{consent_form.pk}/")
    assert detail.status_code == 200
    assert detail.json()["purposes"] == sorted(Purpose.values)


def test_unknown_consent_form_is_404(api_as, surgeon):
    assert api_as(surgeon).get(f"{FORMS}999999/").status_code == 404


def test_superuser_publishes_a_consent_form(api_as, superuser):
    response = api_as(superuser).post(FORMS, form_payload(), format="json")
    assert response.status_code == 201, response.content
    assert ConsentForm.objects.get(pk=response.json()["id"]).version == "3"


def test_the_prrc_publishes_a_consent_form(api_as, prrc):
    response = api_as(prrc).post(FORMS, form_payload(), format="json")
    assert response.status_code == 201, response.content


def test_publishing_needs_the_permission(api_as, surgeon):
    response = api_as(surgeon).post(FORMS, form_payload(), format="json")
    assert response.status_code == 403
    assert not ConsentForm.objects.exists()


def test_consent_form_errors_name_the_field(api_as, superuser, consent_form):
    client = api_as(superuser)
    bad_purpose = client.post(FORMS, form_payload(purposes=["sales"]), format="json")
    assert bad_purpose.status_code == 400
    assert "purposes" in bad_purpose.json()
    duplicate = client.post(
        FORMS,
        form_payload(title=consent_form.title, version="1.0", language="en"),
        format="json",
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["field"] == "version"


def test_consent_form_list_cost_is_flat(api_as, surgeon, superuser):
    from consent.services import consent_form_create

    client = api_as(surgeon)
    counter = iter(range(1000))

    def add(n):
        for _ in range(n):
            consent_form_create(
                actor=superuser,
                title="Bulk form",
                version=str(next(counter)),
                language="en",
                text="Text",
                purposes=["imaging_exchange"],
                valid_from=datetime.date(2025, 1, 1),
            )

    assert_list_cost_is_flat(client, FORMS, add)


# --- consents -----------------------------------------------------------------------


def consent_payload(patient, form, **overrides):
    return {
        "patient": patient.pk,
        "form": form.pk,
        "purposes": {
            Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
            Purpose.REGULATORY_RETENTION: LegalBasis.PUBLIC_HEALTH,
        },
        "method": "electronic",
        "signed_at": (timezone.now() - datetime.timedelta(hours=1)).isoformat(),
        **overrides,
    }


def test_anonymous_gets_401_on_consents(api, patient_with_consent):
    consent = patient_with_consent.consents.get()
    assert api.get(CONSENTS).status_code == 401
    assert api.get(f"{CONSENTS}{consent.pk}/").status_code == 401
    assert api.post(CONSENTS, {}, format="json").status_code == 401
    assert api.post(f"{CONSENTS}{consent.pk}/withdraw/", {}).status_code == 401
    assert api.get(f"{CONSENTS}{consent.pk}/history/").status_code == 401


def test_outsider_cannot_see_consents(
    api_as, outsider, patient_with_consent, consent_form
):
    consent = patient_with_consent.consents.get()
    client = api_as(outsider)

    assert client.get(CONSENTS).json()["count"] == 0
    assert client.get(f"{CONSENTS}{consent.pk}/").status_code == 404
    assert client.get(f"{CONSENTS}{consent.pk}/history/").status_code == 404
    withdraw = client.post(
        f"{CONSENTS}{consent.pk}/withdraw/", {"reason": "x"}, format="json"
    )
    assert withdraw.status_code == 404
    # Recording consent for someone else's patient: exactly like a missing patient.
    invisible = client.post(
        CONSENTS, consent_payload(patient_with_consent, consent_form), format="json"
    )
    missing = client.post(
        CONSENTS,
        {**consent_payload(patient_with_consent, consent_form), "patient": 999999},
        format="json",
    )
    assert invisible.status_code == missing.status_code == 404
    assert invisible.json() == missing.json()
    assert Consent.objects.count() == 1


def test_surgeon_reads_consents(api_as, surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    client = api_as(surgeon)

    listed = client.get(CONSENTS).json()
    detail = client.get(f"{CONSENTS}{consent.pk}/").json()

    assert listed["count"] == 1
    assert detail["patient_pseudonym"] == patient_with_consent.pseudonym
    assert detail["is_withdrawn"] is False
    assert detail["recorded_by"] == "surgeon"
    assert detail["purposes"]["imaging_exchange"] == LegalBasis.EXPLICIT_CONSENT
    assert FAMILY_NAME not in json.dumps(listed)


def test_auditor_reads_consents_of_shared_patients(
    api_as, auditor, patient_with_consent, share_with_manufacturer
):
    client = api_as(auditor)
    assert client.get(CONSENTS).json()["count"] == 0
    share_with_manufacturer(patient_with_consent)
    assert client.get(CONSENTS).json()["count"] == 1


def test_designer_has_no_business_with_consent_records(
    api_as, designer, patient_with_consent, share_with_manufacturer
):
    share_with_manufacturer(patient_with_consent)
    consent = patient_with_consent.consents.get()
    client = api_as(designer)
    assert client.get(CONSENTS).status_code == 403
    assert client.get(f"{CONSENTS}{consent.pk}/").status_code == 403


def test_surgeon_records_electronic_consent(api_as, surgeon, patient, consent_form):
    response = api_as(surgeon).post(
        CONSENTS, consent_payload(patient, consent_form), format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["method"] == "electronic"
    assert body["evidence"] is None
    assert body["purposes"][Purpose.REGULATORY_RETENTION] == LegalBasis.PUBLIC_HEALTH
    assert Consent.objects.get(pk=body["id"]).recorded_by == surgeon


def test_paper_consent_uploads_its_scan(api_as, surgeon, patient, consent_form):
    payload = consent_payload(patient, consent_form, method="paper_scanned")
    payload["purposes"] = json.dumps(payload["purposes"])
    payload["evidence"] = io.BytesIO(PDF_BYTES)
    payload["evidence"].name = f"{FAMILY_NAME}-consent.pdf"

    response = api_as(surgeon).post(CONSENTS, payload, format="multipart")

    assert response.status_code == 201, response.content
    evidence = response.json()["evidence"]
    assert evidence["content_type"] == "application/pdf"
    assert evidence["size"] == len(PDF_BYTES)
    assert len(evidence["sha256"]) == 64
    # The client's file name may carry the patient's name: never echoed.
    assert FAMILY_NAME not in response.content.decode()


def test_purposes_as_form_parts(api_as, surgeon, patient, consent_form):
    payload = consent_payload(patient, consent_form)
    purposes = payload.pop("purposes")
    for purpose, basis in purposes.items():
        payload[f"purposes.{purpose}"] = basis
    response = api_as(surgeon).post(CONSENTS, payload, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["purposes"] == purposes


def test_paper_consent_without_scan_is_400(api_as, surgeon, patient, consent_form):
    response = api_as(surgeon).post(
        CONSENTS,
        consent_payload(patient, consent_form, method="paper_scanned"),
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "evidence"
    assert "evidence" in response.json()


def test_consent_errors_name_the_field(api_as, surgeon, patient, consent_form):
    client = api_as(surgeon)
    bad_basis = client.post(
        CONSENTS,
        consent_payload(patient, consent_form, purposes={"imaging_exchange": "x"}),
        format="json",
    )
    assert bad_basis.status_code == 400
    assert "purposes" in bad_basis.json()
    bad_json = client.post(
        CONSENTS,
        {**consent_payload(patient, consent_form), "purposes": "{not json"},
        format="multipart",
    )
    assert bad_json.status_code == 400
    assert "purposes" in bad_json.json()


def test_manufacturer_may_not_record_consent(
    api_as, designer, patient, consent_form, share_with_manufacturer
):
    share_with_manufacturer(patient)
    response = api_as(designer).post(
        CONSENTS, consent_payload(patient, consent_form), format="json"
    )
    assert response.status_code == 403


def test_withdraw_once_then_409(api_as, surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    client = api_as(surgeon)
    url = f"{CONSENTS}{consent.pk}/withdraw/"

    assert client.post(url, {}, format="json").status_code == 400
    first = client.post(url, {"reason": "Patient asked"}, format="json")
    again = client.post(url, {"reason": "Again"}, format="json")

    assert first.status_code == 200, first.content
    assert first.json()["is_withdrawn"] is True
    assert first.json()["withdrawn_by"] == "surgeon"
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    assert again.json()["withdrawn_at"]


def test_manufacturer_may_not_withdraw(
    api_as, auditor, patient_with_consent, share_with_manufacturer
):
    share_with_manufacturer(patient_with_consent)
    consent = patient_with_consent.consents.get()
    response = api_as(auditor).post(
        f"{CONSENTS}{consent.pk}/withdraw/", {"reason": "x"}, format="json"
    )
    assert response.status_code == 403
    consent.refresh_from_db()
    assert not consent.is_withdrawn
    assert not AuditEvent.objects.filter(action="consent.withdrawn").exists()


def test_consent_filters(api_as, surgeon, make_patient_with_consent, give_consent):
    first, second = make_patient_with_consent(), make_patient_with_consent()
    consent_withdraw(actor=surgeon, consent=first.consents.get(), reason="Asked")
    give_consent(second, purposes={Purpose.RESEARCH_REUSE: LegalBasis.RESEARCH})
    client = api_as(surgeon)

    def count(**params):
        response = client.get(CONSENTS, params)
        assert response.status_code == 200, response.content
        return response.json()["count"]

    assert count() == 3
    assert count(withdrawn="true") == 1
    assert count(withdrawn="false") == 2
    assert count(purpose="research_reuse") == 1
    assert count(purpose="imaging_exchange", withdrawn="false") == 1
    assert count(patient=second.pk) == 2
    assert client.get(CONSENTS, {"purpose": "sales"}).status_code == 400
    assert client.get(CONSENTS, {"patient": 999999}).status_code == 400


def test_consent_history(api_as, surgeon, patient_with_consent):
    consent = patient_with_consent.consents.get()
    consent_withdraw(actor=surgeon, consent=consent, reason="Asked")

    response = api_as(surgeon).get(f"{CONSENTS}{consent.pk}/history/")

    assert response.status_code == 200
    latest, created = response.json()
    assert created["history_type"] == "+"
    assert latest["history_user"] == "surgeon"
    assert latest["history_change_reason"] == "Asked"
    assert "withdrawn_at" in latest["changes"]


def test_consent_list_cost_is_flat(api_as, surgeon, make_patient_with_consent):
    client = api_as(surgeon)

    def add(n):
        for _ in range(n):
            patient = make_patient_with_consent()
            consent_withdraw(
                actor=surgeon, consent=patient.consents.get(), reason="Asked"
            )

    assert_list_cost_is_flat(client, CONSENTS, add)


def test_consent_list_cost_is_flat_with_evidence(
    api_as, surgeon, make_patient, give_consent, pdf_scan
):
    client = api_as(surgeon)

    def add(n):
        for _ in range(n):
            give_consent(
                make_patient(),
                method=Consent.Method.PAPER_SCANNED,
                evidence_upload=pdf_scan(),
            )

    assert_list_cost_is_flat(client, CONSENTS, add)
