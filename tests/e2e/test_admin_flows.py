"""A clinician's day in the admin, in a real browser: finding their cases, signing a
prescription with their password, and sending the case to the manufacturer."""

import re
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from cases.models import Case
from cases.services import prescription_latest
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser

#: The signed prescription as the surgeon saw it, for a person to look at.
SCREENSHOT = Path(tempfile.gettempdir()) / "e2e-signed.png"


def _url(live_server, name, *args, **query):
    url = f"{live_server.url}{reverse(name, args=args)}"
    return f"{url}?{urlencode(query)}" if query else url


def test_clinician_sees_only_their_hospitals_cases(
    live_server, admin_login, make_case, staff_surgeon, outsider, hospital_b
):
    ours = [make_case(), make_case(prescription=False)]
    theirs = make_case(clinician=outsider, hospital=hospital_b)

    page = admin_login(staff_surgeon, PASSWORD)
    page.goto(_url(live_server, "admin:cases_case_changelist"))

    results = page.locator("#result_list")
    for case in ours:
        expect(results.get_by_role("link", name=case.reference)).to_be_visible()
    expect(results).not_to_contain_text(theirs.reference)
    expect(page.locator("#changelist")).to_contain_text("2 cases")


def test_outsider_sees_nothing_of_another_hospitals_cases(
    live_server, admin_login, make_case, staff_outsider, hospital_b
):
    case = make_case()
    prescription = prescription_latest(case)
    own = make_case(clinician=staff_outsider, hospital=hospital_b)

    page = admin_login(staff_outsider, PASSWORD)
    page.goto(_url(live_server, "admin:cases_case_changelist"))
    expect(page.get_by_role("link", name=own.reference)).to_be_visible()
    expect(page.locator("#content")).not_to_contain_text(case.reference)
    page.goto(_url(live_server, "admin:cases_prescription_changelist"))
    expect(page.locator("#content")).not_to_contain_text(case.reference)

    for url in [
        _url(live_server, "admin:cases_case_change", case.pk),
        _url(live_server, "admin:cases_case_transition", case.pk, "submit"),
        _url(live_server, "admin:cases_prescription_change", prescription.pk),
        _url(live_server, "admin:cases_prescription_sign", prescription.pk),
    ]:
        response = page.goto(url)
        assert response.status == 404, url
        expect(page.locator("body")).not_to_contain_text(case.reference)


def _open_prescription(page, live_server, case):
    """From the case's page to its latest prescription, through the changelist."""
    page.goto(
        _url(live_server, "admin:cases_prescription_changelist", q=case.reference)
    )
    page.get_by_role("link", name=f"{case.reference} prescription v1").click()
    expect(page.locator("h2", has_text="Signature")).to_be_visible()


def _sign(page, password):
    page.get_by_role("link", name="Sign", exact=True).click()
    # Before the password, the page says what the signature will declare.
    expect(page.locator("#signature-manifestation")).to_contain_text("Sam Cutter")
    expect(page.locator("#signature-manifestation")).to_contain_text("Authored")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign", exact=True).click()


def test_surgeon_signs_the_prescription_and_submits_the_case(
    live_server, admin_login, make_case, staff_surgeon
):
    case = make_case()
    prescription = prescription_latest(case)

    page = admin_login(staff_surgeon, PASSWORD)
    page.goto(_url(live_server, "admin:cases_case_changelist"))
    page.get_by_role("link", name=case.reference).click()
    expect(page.locator(".field-status")).to_contain_text("Draft")
    _open_prescription(page, live_server, case)
    signed_by = page.locator(".field-signature_manifestation")
    expect(signed_by).to_contain_text("Not signed")

    _sign(page, PASSWORD)

    expect(page.locator(".messagelist")).to_contain_text("signed")
    prescription.refresh_from_db()
    assert prescription.is_signed
    # The manifestation 21 CFR 11.50 asks for: printed name, UTC date and time,
    # meaning; on the prescription's own page, where a reader of the record sees it.
    when = prescription.signature.signed_at.strftime("%Y-%m-%d %H:%M:%S")
    expect(signed_by).to_contain_text(f"Sam Cutter, {when} UTC, Authored")
    expect(page.get_by_role("link", name="Sign", exact=True)).to_have_count(0)
    page.screenshot(path=SCREENSHOT, full_page=True)

    page.goto(_url(live_server, "admin:cases_case_change", case.pk))
    page.get_by_role("link", name="Submit", exact=True).click()
    page.get_by_role("button", name="Submit", exact=True).click()

    expect(page.locator(".messagelist")).to_contain_text("now submitted")
    expect(page.locator(".field-status")).to_contain_text("Submitted")
    case.refresh_from_db()
    assert case.status == Case.Status.SUBMITTED


def test_wrong_password_leaves_the_prescription_unsigned(
    live_server, admin_login, make_case, staff_surgeon
):
    case = make_case()
    prescription = prescription_latest(case)

    page = admin_login(staff_surgeon, PASSWORD)
    _open_prescription(page, live_server, case)
    _sign(page, "not-my-password")

    expect(page.locator(".errorlist")).to_contain_text(
        re.compile("password is not correct", re.IGNORECASE)
    )
    expect(page.get_by_label("Password")).to_be_visible()
    prescription.refresh_from_db()
    assert not prescription.is_signed
    page.goto(_url(live_server, "admin:cases_prescription_change", prescription.pk))
    expect(page.locator(".field-signature_manifestation")).to_contain_text("Not signed")
