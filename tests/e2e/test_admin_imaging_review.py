"""A designer's visual review in the admin, in a real browser: from an accepted study
of a (synthetic) patient's case to the review signed with their password."""

import uuid

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from cases.imaging.models import ImagingStudy
from cases.imaging.services import REVIEW_FINDINGS
from psi.signatures import printed_name
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def accepted_study(make_case):
    return ImagingStudy.objects.create(
        case=make_case(),
        study_uid=f"2.25.{uuid.uuid4().int}",
        modality="CT",
        description="Synthetic head CT",
        status=ImagingStudy.Status.ACCEPTED,
        source=ImagingStudy.Source.UPLOAD,
    )


def test_designer_signs_the_visual_review_of_an_accepted_study(
    live_server, admin_login, staff_designer, accepted_study
):
    page = admin_login(staff_designer, PASSWORD)
    page.goto(f"{live_server.url}{reverse('admin:cases_imagingstudy_changelist')}")
    page.get_by_role("link", name=str(accepted_study)).click()
    expect(page.locator(".field-status")).to_contain_text("Accepted")

    page.get_by_role("link", name="Sign visual review").click()
    # Before the password, the page says what the signature will declare.
    manifestation = page.locator("#signature-manifestation")
    expect(manifestation).to_contain_text(printed_name(staff_designer))
    expect(manifestation).to_contain_text("Reviewed")
    for key in REVIEW_FINDINGS:
        page.locator(f"input[name='{key}_ok'][value='yes']").check()
    page.get_by_label("Metal artefacts: notes").fill(
        "Faint streaks, far from the defect"
    )
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign", exact=True).click()

    expect(page.locator(".messagelist")).to_contain_text("Visual review of")
    expect(page.locator(".messagelist")).to_contain_text("Reviewed")
    expect(page.get_by_role("link", name="Sign visual review")).to_have_count(0)
    accepted_study.refresh_from_db()
    assert accepted_study.review.signer == staff_designer
    assert accepted_study.review_findings["metal_artefacts"] == {
        "ok": True,
        "notes": "Faint streaks, far from the defect",
    }
