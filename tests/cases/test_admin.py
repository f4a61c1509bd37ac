"""The admin pages of cases and prescriptions call the same services as the API."""

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cases import services
from cases.admin.case import CaseCreateForm
from cases.models import Case, Prescription
from cases.selectors import prescriber_choices
from psi.models import AuditEvent, Role
from psi.orgs import membership_grant
from tests.cases.conftest import write_prescription
from tests.factories import PASSWORD

S = Case.Status


def staff_client(user) -> Client:
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(user)
    return client


def case_admin(case=None, what="change", *args) -> str:
    if case is None:
        return reverse(f"admin:cases_case_{what}")
    return reverse(f"admin:cases_case_{what}", args=[case.pk, *args])


def prescription_admin(prescription=None, what="change") -> str:
    if prescription is None:
        return reverse(f"admin:cases_prescription_{what}")
    return reverse(f"admin:cases_prescription_{what}", args=[prescription.pk])


# --- cases -----------------------------------------------------------------------


def test_case_list_shows_only_visible_cases(draft_case, surgeon, outsider, superuser):
    response = staff_client(surgeon).get(case_admin(what="changelist"))
    assert response.status_code == 200
    assert draft_case.reference in response.text
    assert draft_case.patient.pseudonym in response.text
    assert "Testperson" not in response.text
    assert draft_case.reference in (
        staff_client(superuser).get(case_admin(what="changelist")).text
    )
    hidden = staff_client(outsider).get(case_admin(what="changelist"))
    assert hidden.status_code == 200
    assert draft_case.reference not in hidden.text


def test_case_list_searches_by_pseudonym_and_filters_by_status(
    draft_case, case_at, case_manager
):
    submitted = case_at(S.SUBMITTED)
    client = staff_client(case_manager)
    found = client.get(
        case_admin(what="changelist"), {"q": draft_case.patient.pseudonym}
    )
    assert draft_case.reference in found.text
    assert submitted.reference not in found.text
    filtered = client.get(case_admin(what="changelist"), {"status__exact": "submitted"})
    assert submitted.reference in filtered.text
    assert draft_case.reference not in filtered.text


def test_outsider_gets_404_on_a_case_page(draft_case, outsider):
    client = staff_client(outsider)
    assert client.get(case_admin(draft_case)).status_code == 404
    assert client.get(case_admin(draft_case, "history")).status_code == 404
    assert client.get(case_admin(draft_case, "transition", "cancel")).status_code == 404
    response = client.post(
        case_admin(draft_case, "transition", "cancel"), {"reason": "Nosy"}
    )
    assert response.status_code == 404
    draft_case.refresh_from_db()
    assert draft_case.status == S.DRAFT


def test_case_page_offers_the_steps_the_user_may_take(case_in, surgeon, designer):
    case = case_in(S.DRAFT)
    page = staff_client(surgeon).get(case_admin(case))
    assert page.status_code == 200
    assert case_admin(case, "transition", "submit") in page.text
    assert case_admin(case, "transition", "cancel") in page.text
    designer_page = staff_client(designer).get(case_admin(case))
    assert case_admin(case, "transition", "submit") not in designer_page.text
    assert case_admin(case, "transition", "hold") in designer_page.text


def test_a_transition_button_moves_the_case(case_in, surgeon):
    case = case_in(S.DRAFT)
    client = staff_client(surgeon)
    url = case_admin(case, "transition", "submit")
    assert client.get(url).status_code == 200

    response = client.post(url, {"reason": ""})

    assert response.status_code == 302
    assert response.url == case_admin(case)
    case.refresh_from_db()
    assert case.status == S.SUBMITTED
    event = case.events.get()
    assert (event.transition, event.actor) == ("submit", surgeon)
    assert AuditEvent.objects.filter(action="case.submit").exists()
    assert case.history.first().history_user == surgeon


def test_a_transition_that_needs_a_reason_asks_for_it(case_at, case_manager):
    case = case_at(S.SUBMITTED)
    client = staff_client(case_manager)
    url = case_admin(case, "transition", "hold")
    response = client.post(url, {"reason": ""})
    assert response.status_code == 200
    assert "This field is required" in response.text
    case.refresh_from_db()
    assert case.status == S.SUBMITTED

    assert client.post(url, {"reason": "Waiting for imaging"}).status_code == 302
    case.refresh_from_db()
    assert (case.status, case.events.last().reason) == (
        S.ON_HOLD,
        "Waiting for imaging",
    )


def test_a_transition_button_is_refused_without_permission(case_in, designer):
    case = case_in(S.DRAFT)
    response = staff_client(designer).post(case_admin(case, "transition", "submit"))
    assert response.status_code == 403
    case.refresh_from_db()
    assert case.status == S.DRAFT
    assert not case.events.exists()


def test_an_illegal_transition_in_the_admin_says_why(case_at, case_manager):
    case = case_at(S.SUBMITTED)
    response = staff_client(case_manager).post(
        case_admin(case, "transition", "ship"), follow=True
    )
    assert response.status_code == 200
    assert "cannot ship" in response.text
    case.refresh_from_db()
    assert case.status == S.SUBMITTED


def test_bulk_action_moves_the_selected_cases_through_the_service(
    case_at, case_manager, draft_case
):
    first, second = case_at(S.SUBMITTED), case_at(S.SUBMITTED)
    response = staff_client(case_manager).post(
        case_admin(what="changelist"),
        {
            "action": "transition_receive_imaging",
            "_selected_action": [first.pk, second.pk, draft_case.pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    for case in (first, second):
        case.refresh_from_db()
        assert case.status == S.IMAGING_RECEIVED
        assert case.events.last().actor == case_manager
    draft_case.refresh_from_db()
    assert draft_case.status == S.DRAFT
    assert "cannot receive imaging" in response.text


def test_a_case_is_opened_through_the_admin_with_case_create(
    patient, manufacturer, surgeon
):
    client = staff_client(surgeon)
    assert client.get(case_admin(what="add")).status_code == 200
    response = client.post(
        case_admin(what="add"),
        {
            "patient": patient.pseudonym,
            "manufacturer": manufacturer.pk,
            "prescriber": surgeon.pk,
            "indication": "Synthetic mandible reconstruction.",
            "anatomical_region": "mandible",
            "side": "left",
            "urgency": "routine",
            "regulatory_pathway": "eu_custom_made",
            "pathway_reason": "Patient-specific geometry.",
        },
    )
    assert response.status_code == 302
    case = Case.objects.get()
    assert (case.patient, case.status, case.created_by) == (patient, S.DRAFT, surgeon)
    assert AuditEvent.objects.filter(action="case.created").exists()


def test_opening_a_case_in_the_admin_shows_service_refusals_on_the_form(
    patient, manufacturer, surgeon, coordinator
):
    # The form accepts any date; the service refuses one in the past.
    yesterday = timezone.localdate() - datetime.timedelta(days=1)
    response = staff_client(coordinator).post(
        case_admin(what="add"),
        {
            "patient": patient.pseudonym,
            "manufacturer": manufacturer.pk,
            "prescriber": surgeon.pk,
            "indication": "x",
            "anatomical_region": "mandible",
            "side": "left",
            "urgency": "routine",
            "planned_surgery_date": yesterday.isoformat(),
            "regulatory_pathway": "eu_custom_made",
            "pathway_reason": "x",
        },
    )
    assert response.status_code == 200
    assert "The planned surgery date lies in the past." in response.content.decode()
    assert not Case.objects.exists()


def test_the_prescriber_is_chosen_among_clinicians_of_a_shared_organisation(
    surgeon, coordinator, outsider, hospital_a, manufacturer
):
    # The outsider is a clinician of hospital B only; a membership of hospital A in
    # another role does not make them a clinician there.
    membership_grant(
        actor=None, user=outsider, organisation=hospital_a, role=Role.INTEGRATION
    )
    form = CaseCreateForm(user=coordinator)
    assert list(form.fields["prescriber"].queryset) == [surgeon]
    assert outsider not in prescriber_choices(surgeon)


def test_manufacturer_cannot_open_cases_in_the_admin(designer):
    assert staff_client(designer).get(case_admin(what="add")).status_code == 403


def test_status_is_read_only_and_a_submitted_case_cannot_be_edited(case_at, surgeon):
    case = case_at(S.SUBMITTED)
    client = staff_client(surgeon)
    page = client.get(case_admin(case))
    assert page.status_code == 200
    assert 'name="status"' not in page.text
    assert 'name="indication"' not in page.text
    assert client.post(case_admin(case), {"indication": "x"}).status_code == 403


def test_a_draft_is_edited_through_case_update(draft_case, surgeon):
    client = staff_client(surgeon)
    page = client.get(case_admin(draft_case))
    assert 'name="indication"' in page.text
    response = client.post(
        case_admin(draft_case),
        {
            "indication": "Revised synthetic indication.",
            "anatomical_region": draft_case.anatomical_region,
            "side": "right",
            "urgency": draft_case.urgency,
            "planned_surgery_date": "",
            "regulatory_pathway": draft_case.regulatory_pathway,
            "pathway_reason": draft_case.pathway_reason,
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
            "events-MIN_NUM_FORMS": "0",
            "events-MAX_NUM_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    draft_case.refresh_from_db()
    assert draft_case.side == "right"
    assert AuditEvent.objects.filter(action="case.updated").exists()


def test_history_cannot_be_reverted(case_at, surgeon):
    case = case_at(S.SUBMITTED)
    client = staff_client(surgeon)
    assert client.get(case_admin(case, "history")).status_code == 200
    first = case.history.last()
    url = reverse("admin:cases_case_simple_history", args=[case.pk, first.history_id])
    assert client.post(url, {}).status_code == 403
    case.refresh_from_db()
    assert case.status == S.SUBMITTED


def test_cases_cannot_be_deleted_in_the_admin(draft_case, superuser):
    response = staff_client(superuser).get(case_admin(draft_case, "delete"))
    assert response.status_code == 403


# --- prescriptions -----------------------------------------------------------------


def test_a_prescription_is_written_through_the_admin(draft_case, surgeon):
    client = staff_client(surgeon)
    assert client.get(prescription_admin(what="add")).status_code == 200
    response = client.post(
        prescription_admin(what="add"),
        {
            "case": draft_case.pk,
            "prescriber_licence": "TEST-LIC-0003",
            "material": "ti6al4v",
            "thickness_mm": "1.20",
            "screw_count": "0",
        },
    )
    assert response.status_code == 302
    prescription = Prescription.objects.get()
    assert (prescription.version, prescription.prescriber) == (1, surgeon)


def test_the_sign_page_shows_the_manifestation_and_signs(prescription, surgeon):
    client = staff_client(surgeon)
    change_page = client.get(prescription_admin(prescription))
    sign_url = prescription_admin(prescription, "sign")
    assert sign_url in change_page.text
    page = client.get(sign_url)
    assert page.status_code == 200
    assert "Sam Cutter" in page.text
    assert "Authored" in page.text

    response = client.post(sign_url, {"password": PASSWORD})

    assert response.status_code == 302
    prescription.refresh_from_db()
    assert prescription.is_signed
    page = client.get(prescription_admin(prescription))
    signature = prescription.signature
    assert f"{signature.signed_at:%Y-%m-%d %H:%M:%S} UTC" in page.text
    assert "Sam Cutter" in page.text
    assert sign_url not in page.text


def test_a_wrong_password_in_the_admin_is_refused_and_audited(prescription, surgeon):
    response = staff_client(surgeon).post(
        prescription_admin(prescription, "sign"), {"password": "guess"}
    )
    assert response.status_code == 200
    assert "password is not correct" in response.text
    assert AuditEvent.objects.filter(action="signature.failed").exists()
    prescription.refresh_from_db()
    assert not prescription.is_signed


def test_only_the_prescriber_may_sign_in_the_admin(prescription, designer):
    client = staff_client(designer)
    assert prescription_admin(prescription, "sign") not in (
        client.get(prescription_admin(prescription)).text
    )
    response = client.post(
        prescription_admin(prescription, "sign"), {"password": PASSWORD}
    )
    assert response.status_code == 403


def test_a_signed_prescription_is_read_only_in_the_admin(
    signed_prescription, surgeon, superuser
):
    for user in (surgeon, superuser):
        client = staff_client(user)
        page = client.get(prescription_admin(signed_prescription))
        assert page.status_code == 200
        assert 'name="thickness_mm"' not in page.text
        response = client.post(
            prescription_admin(signed_prescription),
            {"thickness_mm": "9.00", "prescriber_licence": "X", "material": "peek"},
        )
        assert response.status_code == 403
        assert (
            client.get(prescription_admin(signed_prescription, "delete")).status_code
            == 403
        )
    signed_prescription.refresh_from_db()
    assert str(signed_prescription.thickness_mm) == "1.50"


def test_an_unsigned_prescription_is_edited_by_its_prescriber(prescription, surgeon):
    response = staff_client(surgeon).post(
        prescription_admin(prescription),
        {
            "prescriber_licence": prescription.prescriber_licence,
            "material": prescription.material,
            "material_other": "",
            "thickness_mm": "1.75",
            "screw_count": prescription.screw_count,
            "screw_positions": prescription.screw_positions,
            "margins_mm": "",
            "other_characteristics": "",
            "notes": "Edited in the admin",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    prescription.refresh_from_db()
    assert (str(prescription.thickness_mm), prescription.notes) == (
        "1.75",
        "Edited in the admin",
    )


@pytest.mark.parametrize("who", ["outsider"])
def test_outsider_gets_404_on_a_prescription_page(who, prescription, personas):
    client = staff_client(personas[who])
    assert client.get(prescription_admin(prescription)).status_code == 404
    assert client.get(prescription_admin(prescription, "sign")).status_code == 404


def test_a_new_version_is_a_new_row_in_the_admin(signed_prescription, surgeon):
    second = write_prescription(signed_prescription.case, surgeon)
    services.prescription_sign(actor=surgeon, prescription=second, password=PASSWORD)
    page = staff_client(surgeon).get(prescription_admin(what="changelist"))
    assert str(signed_prescription) in page.text
    assert str(second) in page.text
