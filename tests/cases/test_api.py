"""The cases REST API: every endpoint answers 401 anonymous, 404 to whoever cannot see
the case, 2xx to whoever may; transitions answer 403, 409 and 400 as documented."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from cases import services
from cases.models import Case
from cases.services import TRANSITIONS, transitions_from
from consent.models import Consent
from consent.services import consent_withdraw
from psi.models import AuditEvent
from tests.cases.conftest import HAPPY, write_prescription
from tests.factories import PASSWORD

S = Case.Status


def slug(name: str) -> str:
    return name.replace("_", "-")


def case_url(case=None, what: str = "") -> str:
    if case is None:
        return reverse("case-list")
    if not what:
        return reverse("case-detail", args=[case.pk])
    return reverse(f"case-{what}", args=[case.pk])


def prescription_url(prescription=None, what: str = "") -> str:
    if prescription is None:
        return reverse("prescription-list")
    if not what:
        return reverse("prescription-detail", args=[prescription.pk])
    return reverse(f"prescription-{what}", args=[prescription.pk])


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


@pytest.fixture
def signed_case(signed_prescription):
    return signed_prescription.case


def _case_payload(patient, manufacturer, **overrides):
    return {
        "patient": patient.pseudonym,
        "manufacturer": manufacturer.pk,
        "indication": "Synthetic orbital floor fracture.",
        "anatomical_region": "orbital",
        "side": "right",
        "regulatory_pathway": "eu_custom_made",
        "pathway_reason": "Defect geometry is patient-specific.",
        **overrides,
    }


# --- every endpoint: 401 / 404 / 2xx --------------------------------------------

#: (method, url builder, body, who may, expected status)
READS = [
    ("get", lambda c, p: case_url(c), "surgeon"),
    ("get", lambda c, p: case_url(c), "designer"),
    ("get", lambda c, p: case_url(c, "events"), "auditor"),
    ("get", lambda c, p: case_url(c, "history"), "qa"),
    ("get", lambda c, p: prescription_url(p), "designer"),
    ("get", lambda c, p: prescription_url(p, "history"), "surgeon"),
]


@pytest.mark.parametrize(("method", "url", "who"), READS)
def test_object_reads(method, url, who, signed_prescription, personas):
    case = signed_prescription.case
    target = url(case, signed_prescription)
    assert getattr(client_for(None), method)(target).status_code == 401
    assert getattr(client_for(personas["outsider"]), method)(target).status_code == 404
    response = getattr(client_for(personas[who]), method)(target)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("url", [case_url, prescription_url])
def test_lists_answer_401_anonymous_and_nothing_to_the_outsider(
    url, signed_prescription, outsider, surgeon
):
    assert client_for(None).get(url()).status_code == 401
    response = client_for(outsider).get(url())
    assert response.status_code == 200
    assert response.json()["count"] == 0
    assert client_for(surgeon).get(url()).json()["count"] == 1


def test_object_writes_answer_401_anonymous_and_404_to_the_outsider(
    signed_prescription, outsider
):
    case = signed_prescription.case
    writes = [
        ("patch", case_url(case), {"indication": "x"}),
        ("patch", prescription_url(signed_prescription), {"notes": "x"}),
        ("post", prescription_url(signed_prescription, "sign"), {"password": "x"}),
        *[
            ("post", case_url(case, slug(name)), {"reason": "x"})
            for name in TRANSITIONS
        ],
    ]
    for method, url, body in writes:
        anonymous = getattr(client_for(None), method)(url, body, format="json")
        assert anonymous.status_code == 401, url
        hidden = getattr(client_for(outsider), method)(url, body, format="json")
        assert hidden.status_code == 404, url
    case.refresh_from_db()
    assert case.status == S.DRAFT


def test_creating_answers_401_anonymous(patient, manufacturer, draft_case):
    assert (
        client_for(None)
        .post(case_url(), _case_payload(patient, manufacturer), format="json")
        .status_code
        == 401
    )
    assert (
        client_for(None)
        .post(prescription_url(), {"case": draft_case.pk}, format="json")
        .status_code
        == 401
    )


# --- cases -----------------------------------------------------------------------


def test_surgeon_opens_a_case_by_patient_pseudonym(patient, manufacturer, surgeon):
    response = client_for(surgeon).post(
        case_url(),
        _case_payload(patient, manufacturer, urgency="urgent"),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["patient"] == patient.pseudonym
    assert body["status"] == "draft"
    assert body["prescriber"] == surgeon.pk
    assert body["urgency"] == "urgent"
    assert body["reference"].startswith("C-")
    assert body["allowed_transitions"] == ["submit", "hold", "cancel"]
    assert Case.objects.get(pk=body["id"]).created_by == surgeon


def test_a_case_cannot_be_opened_for_a_patient_you_cannot_see(
    patient, manufacturer, outsider, designer
):
    for user in (outsider, designer):
        response = client_for(user).post(
            case_url(), _case_payload(patient, manufacturer), format="json"
        )
        assert response.status_code == 400
        assert "patient" in response.json()
    assert not Case.objects.exists()


def test_opening_a_case_reports_the_service_refusal_on_its_field(
    patient, manufacturer, surgeon, coordinator
):
    response = client_for(surgeon).post(
        case_url(),
        _case_payload(
            patient,
            manufacturer,
            planned_surgery_date=str(timezone.localdate() - datetime.timedelta(1)),
        ),
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "planned_surgery_date"
    # A coordinator names the prescriber; themselves they are not one.
    response = client_for(coordinator).post(
        case_url(), _case_payload(patient, manufacturer), format="json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "prescriber"


def test_a_case_payload_never_carries_patient_identity(signed_case, surgeon):
    client = client_for(surgeon)
    for url in (
        case_url(),
        case_url(signed_case),
        case_url(signed_case, "events"),
        case_url(signed_case, "history"),
    ):
        content = client.get(url).content
        assert b"Testperson" not in content
        assert b"TEST-0" not in content
        assert b"1970" not in content
    assert not AuditEvent.objects.filter(action="patient.identity_read").exists()


def test_retrieve_shows_the_transitions_the_user_may_take(signed_case, personas):
    allowed = {
        who: client_for(user).get(case_url(signed_case)).json()["allowed_transitions"]
        for who, user in personas.items()
        if who != "outsider"
    }
    assert allowed["surgeon"] == ["submit", "hold", "cancel"]
    assert allowed["designer"] == ["hold", "cancel"]
    assert allowed["auditor"] == []


def test_draft_details_are_edited_by_the_hospital(draft_case, surgeon, designer):
    url = case_url(draft_case)
    response = client_for(surgeon).patch(
        url, {"side": "bilateral", "reason": "Both sides affected"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["side"] == "bilateral"
    assert draft_case.history.first().history_change_reason == "Both sides affected"
    assert client_for(designer).patch(url, {"side": "left"}).status_code == 403
    response = client_for(surgeon).patch(url, {"side": "sideways"}, format="json")
    assert response.status_code == 400
    assert "side" in response.json()


def test_only_a_draft_can_be_edited(case_at, surgeon):
    case = case_at(S.SUBMITTED)
    response = client_for(surgeon).patch(
        case_url(case), {"indication": "Changed"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["status"] == "submitted"


def test_put_and_delete_are_not_offered(draft_case, surgeon):
    client = client_for(surgeon)
    assert client.put(case_url(draft_case), {}).status_code == 405
    assert client.delete(case_url(draft_case)).status_code == 405


# --- transitions -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_each_transition_endpoint_moves_the_case(name, case_in, personas):
    source, who, reason = HAPPY[name]
    case = case_in(source)
    expected = TRANSITIONS[name].target or case.held_from_status
    body = {"reason": reason} if reason else {}

    response = client_for(personas[who]).post(
        case_url(case, slug(name)), body, format="json"
    )

    assert response.status_code == 200, response.content
    payload = response.json()
    assert payload["status"] == expected
    assert payload["allowed_transitions"] == services.transitions_available(
        personas[who], Case.objects.get(pk=case.pk)
    )
    assert case.events.last().transition == name
    assert AuditEvent.objects.filter(action=f"case.{name}").exists()


def test_an_illegal_transition_answers_409_with_status_and_allowed(
    case_at, case_manager
):
    case = case_at(S.SUBMITTED)
    response = client_for(case_manager).post(case_url(case, "ship"), format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "illegal_transition"
    assert body["status"] == "submitted"
    assert body["allowed"] == transitions_from(S.SUBMITTED)


def test_a_transition_without_permission_answers_403(case_in, designer, surgeon):
    draft = case_in(S.DRAFT)
    response = client_for(designer).post(case_url(draft, "submit"), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"

    services.case_submit(actor=surgeon, case=draft)
    draft.refresh_from_db()
    assert draft.status == S.SUBMITTED


def test_surgeon_cannot_release_through_the_api(case_at, surgeon):
    case = case_at(S.IN_MANUFACTURING)
    response = client_for(surgeon).post(case_url(case, "release"), format="json")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "name", [name for name, t in TRANSITIONS.items() if t.needs_reason]
)
def test_a_missing_reason_answers_400(name, case_in, personas):
    source, who, _ = HAPPY[name]
    case = case_in(source)
    client = client_for(personas[who])
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        response = client.post(case_url(case, slug(name)), body, format="json")
        assert response.status_code == 400, body
        assert "reason" in response.json()
    case.refresh_from_db()
    assert case.status == source


def test_submit_without_consent_answers_409_and_changes_nothing(case_in, surgeon):
    case = case_in(S.DRAFT)
    for consent in Consent.objects.filter(patient=case.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")
    response = client_for(surgeon).post(case_url(case, "submit"), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "consent_missing"
    case.refresh_from_db()
    assert case.status == S.DRAFT


def test_events_are_the_timeline_oldest_first(case_at, auditor):
    case = case_at(S.IMAGING_ACCEPTED)
    response = client_for(auditor).get(case_url(case, "events"))
    assert response.status_code == 200
    events = response.json()
    assert [e["transition"] for e in events] == [
        "submit",
        "receive_imaging",
        "accept_imaging",
    ]
    assert events[0]["from_status"] == "draft"
    assert events[0]["actor"] == "Sam Cutter"
    assert events[0]["at"].endswith("Z")


def test_history_lists_versions_with_their_user(case_at, qa):
    case = case_at(S.SUBMITTED)
    entries = client_for(qa).get(case_url(case, "history")).json()
    assert entries[0]["changes"]["status"] == ["draft", "submitted"]
    assert entries[0]["history_user"] == "surgeon"


# --- list: filters, ordering, query count ------------------------------------


def test_list_filters(new_case, case_at, surgeon, hospital_a, manufacturer):
    cranial = new_case(anatomical_region="cranial", urgency="urgent")
    new_case(anatomical_region="mandible")
    submitted = case_at(S.SUBMITTED, regulatory_pathway="us_custom_520b")
    client = client_for(surgeon)

    def refs(**params):
        response = client.get(case_url(), params)
        assert response.status_code == 200, response.content
        return {row["reference"] for row in response.json()["results"]}

    assert refs(status="submitted") == {submitted.reference}
    assert refs(anatomical_region="cranial", urgency="urgent") == {cranial.reference}
    assert refs(regulatory_pathway="us_custom_520b") == {submitted.reference}
    assert len(refs(hospital=hospital_a.pk, manufacturer=manufacturer.pk)) == 3
    future = (timezone.now() + datetime.timedelta(days=1)).isoformat()
    assert refs(created_at_after=future) == set()
    assert len(refs(created_at_before=future)) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"status": "lost"},
        {"anatomical_region": "elbow"},
        {"urgency": "whenever"},
        {"regulatory_pathway": "none"},
        {"hospital": "abc"},
        {"hospital": "999999"},
        {"created_at_after": "yesterday"},
        {"ordering": "indication"},
        {"ordering": "-nonsense"},
    ],
)
def test_an_invalid_filter_answers_400(params, draft_case, surgeon):
    response = client_for(surgeon).get(case_url(), params)
    assert response.status_code == 400
    # The answer names the parameter (a range by its stem: created_at).
    (name,) = params
    assert any(name.startswith(key) for key in response.json())


def test_the_hospital_filter_offers_only_hospitals_of_visible_cases(
    draft_case, outsider, hospital_a
):
    response = client_for(outsider).get(case_url(), {"hospital": hospital_a.pk})
    assert response.status_code == 400


def test_list_ordering(new_case, surgeon):
    first = new_case(planned_surgery_date=timezone.localdate() + datetime.timedelta(9))
    second = new_case(planned_surgery_date=timezone.localdate() + datetime.timedelta(3))
    client = client_for(surgeon)

    def refs(ordering):
        rows = client.get(case_url(), {"ordering": ordering}).json()["results"]
        return [row["reference"] for row in rows]

    assert refs("planned_surgery_date") == [second.reference, first.reference]
    assert refs("-reference") == [second.reference, first.reference]
    assert refs("created_at") == [first.reference, second.reference]
    assert refs("status,reference") == [first.reference, second.reference]


def _queries_for(client, url) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"page_size": 100})
    assert response.status_code == 200
    return len(queries), response.json()["count"]


def test_case_list_queries_do_not_grow_with_the_page(
    new_case, register_patient, case_manager, surgeon
):
    for user in (case_manager, surgeon):
        client_for(user).get(case_url())  # warm the permission id cache
    for _ in range(5):
        new_case(register_patient(consent=False))
    small = {
        u: _queries_for(client_for(u), case_url()) for u in (case_manager, surgeon)
    }
    for _ in range(45):
        new_case(register_patient(consent=False))
    large = {
        u: _queries_for(client_for(u), case_url()) for u in (case_manager, surgeon)
    }
    for user in (case_manager, surgeon):
        assert small[user][1] == 5
        assert large[user][1] == 50
        assert small[user][0] == large[user][0]


def test_prescription_list_queries_do_not_grow_with_the_page(
    new_case, register_patient, surgeon, designer
):
    def add_prescriptions(count):
        for _ in range(count):
            case = new_case(register_patient(consent=False))
            services.prescription_sign(
                actor=surgeon,
                prescription=write_prescription(case, surgeon),
                password=PASSWORD,
            )

    client = client_for(designer)
    client.get(prescription_url())
    add_prescriptions(5)
    small = _queries_for(client, prescription_url())
    add_prescriptions(45)
    large = _queries_for(client, prescription_url())
    assert (small[1], large[1]) == (5, 50)
    assert small[0] == large[0]


# --- prescriptions -----------------------------------------------------------------


def test_surgeon_writes_a_prescription_for_the_case_in_the_body(draft_case, surgeon):
    response = client_for(surgeon).post(
        prescription_url(),
        {
            "case": draft_case.pk,
            "prescriber_licence": "TEST-LIC-0002",
            "material": "peek",
            "thickness_mm": "4.00",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1
    assert body["case_reference"] == draft_case.reference
    assert body["patient_pseudonym"] == draft_case.patient.pseudonym
    assert body["is_signed"] is False
    assert body["signature"] is None
    assert body["signature_valid"] is None


def test_prescriptions_are_written_only_by_clinicians_of_the_case(
    draft_case, designer, outsider
):
    body = {
        "case": draft_case.pk,
        "prescriber_licence": "X",
        "material": "peek",
        "thickness_mm": "4",
    }
    response = client_for(designer).post(prescription_url(), body, format="json")
    assert response.status_code == 403
    response = client_for(outsider).post(prescription_url(), body, format="json")
    assert response.status_code == 400
    assert "case" in response.json()


def test_prescriptions_filter_by_case(signed_prescription, new_case, surgeon):
    other = write_prescription(new_case(), surgeon)
    client = client_for(surgeon)
    rows = client.get(prescription_url(), {"case": other.case_id}).json()["results"]
    assert [row["id"] for row in rows] == [other.pk]
    assert client.get(prescription_url(), {"case": "x"}).status_code == 400


def test_an_unsigned_prescription_is_edited_by_its_prescriber(prescription, surgeon):
    response = client_for(surgeon).patch(
        prescription_url(prescription), {"margins_mm": "2.50"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["margins_mm"] == "2.50"


def test_a_signed_prescription_cannot_be_edited_through_the_api(
    signed_prescription, surgeon
):
    response = client_for(surgeon).patch(
        prescription_url(signed_prescription), {"notes": "Too late"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "record_signed"
    signed_prescription.refresh_from_db()
    assert signed_prescription.notes == ""


def test_signing_returns_the_signature_manifestation(prescription, surgeon):
    response = client_for(surgeon).post(
        prescription_url(prescription, "sign"), {"password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["is_signed"] is True
    assert body["signature_valid"] is True
    signature = body["signature"]
    assert signature["printed_name"] == "Sam Cutter"
    assert signature["meaning"] == "authored"
    assert signature["meaning_display"] == "Authored"
    signed_at = datetime.datetime.fromisoformat(signature["signed_at"])
    assert signature["signed_at"].endswith("Z")
    assert signed_at.utcoffset() == datetime.timedelta(0)
    assert len(signature["content_hash"]) == 64


def test_a_wrong_password_answers_403_and_is_audited(prescription, surgeon):
    response = client_for(surgeon).post(
        prescription_url(prescription, "sign"), {"password": "guess"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["field"] == "password"
    assert AuditEvent.objects.filter(action="signature.failed", actor=surgeon).exists()
    prescription.refresh_from_db()
    assert not prescription.is_signed


def test_locked_signing_answers_423(prescription, surgeon, settings):
    settings.PSI_SIGNING_MAX_FAILURES = 1
    client = client_for(surgeon)
    url = prescription_url(prescription, "sign")
    assert client.post(url, {"password": "guess"}, format="json").status_code == 423
    response = client.post(url, {"password": PASSWORD}, format="json")
    assert response.status_code == 423
    assert response.json()["code"] == "signing_locked"


def test_signing_needs_a_password_and_the_prescriber(prescription, designer, surgeon):
    url = prescription_url(prescription, "sign")
    assert client_for(surgeon).post(url, {}, format="json").status_code == 400
    assert (
        client_for(designer).post(url, {"password": "x"}, format="json").status_code
        == 403
    )


def test_signature_validity_shows_a_change_behind_the_apps_back(
    signed_prescription, designer
):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cases_prescription SET notes = %s WHERE id = %s",
            ["tampered", signed_prescription.pk],
        )
    body = client_for(designer).get(prescription_url(signed_prescription)).json()
    assert body["signature_valid"] is False
    listed = client_for(designer).get(prescription_url()).json()["results"]
    assert listed[0]["signature_valid"] is False
