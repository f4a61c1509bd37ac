"""Whole flows: a real browser (Debian's chromium driven by Playwright) against
pytest-django's live server, and the data those flows start from, built through the
services the way a hospital would build it.

The live server is pytest-django's ``live_server``: tests that use it run with
``transactional_db``, so what the test writes is committed and the server's thread
sees it (with SQLite's in-memory test database too, which pytest-django shares).
"""

import datetime
import os
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from cases import services as case_services
from cases.models import Case
from consent.models import Consent, LegalBasis, Patient, Purpose
from consent.services import consent_form_create, consent_record, patient_register

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Milliseconds a page or a locator may take before the test fails instead of hanging.
TIMEOUT_MS = 15_000


# --- the browser ---------------------------------------------------------------


@pytest.fixture(scope="session")
def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(apt-get install chromium); never `playwright install`."
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio event loop running in this thread from
    # start() to stop(), so Django sees every ORM call the test makes here (building
    # data, checking results) as made from async code and raises
    # SynchronousOnlyOperation. The calls are in fact synchronous and nothing else
    # runs on that loop, so the check is switched off while Playwright runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        yield playwright
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser(_playwright):
    browser = _playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    """A fresh page in its own context: no cookies shared between tests."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def admin_login(live_server, page):
    """Log ``user`` into the admin through its login form, as a person would."""

    def login(user, password):
        page.goto(f"{live_server.url}/admin/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#user-tools")).to_contain_text("Log out")
        return page

    return login


# --- people and their cases ----------------------------------------------------


def _staff(user):
    # The admin admits staff only; what they see there is still decided per object.
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


@pytest.fixture
def staff_surgeon(surgeon):
    return _staff(surgeon)


@pytest.fixture
def staff_outsider(outsider):
    return _staff(outsider)


@pytest.fixture
def staff_designer(designer):
    return _staff(designer)


@pytest.fixture
def consent_form(superuser):
    return consent_form_create(
        actor=superuser,
        title="PSI implant consent",
        version="1.0",
        language="en",
        text="I agree that my images are shared under a pseudonym.",
        purposes=list(Purpose.values),
        valid_from=datetime.date(2024, 1, 1),
    )


@pytest.fixture
def make_case(surgeon, hospital_a, manufacturer, consent_form):
    """A draft case with consent for imaging exchange, opened by ``clinician`` (the
    surgeon of hospital A unless told) at their ``hospital``, with an unsigned
    prescription unless ``prescription=False``."""
    numbers = iter(range(1, 1000))

    def make(*, clinician=None, hospital=None, prescription=True):
        clinician = clinician or surgeon
        hospital = hospital or hospital_a
        number = next(numbers)
        patient = patient_register(
            actor=clinician,
            hospital=hospital,
            family_name=f"Testpatient{number}",
            given_names="Sample",
            birth_date=datetime.date(1970, 1, number % 28 + 1),
            sex=Patient.Sex.FEMALE,
            record_number=f"E2E-{number:04d}",
        )
        consent_record(
            actor=clinician,
            patient=patient,
            form=consent_form,
            purposes={
                Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
                Purpose.DESIGN_AND_MANUFACTURE: LegalBasis.EXPLICIT_CONSENT,
            },
            method=Consent.Method.ELECTRONIC,
            signed_at=timezone.now() - datetime.timedelta(days=1),
        )
        case = case_services.case_create(
            actor=clinician,
            patient=patient,
            manufacturer=manufacturer,
            prescriber=clinician,
            indication="Cranial defect after tumour resection",
            anatomical_region=Case.Region.CRANIAL,
            side=Case.Side.LEFT,
            regulatory_pathway=Case.Pathway.EU_CUSTOM_MADE,
            pathway_reason="No CE-marked device fits this patient's anatomy.",
        )
        if prescription:
            case_services.prescription_create(
                actor=clinician,
                case=case,
                prescriber_licence="E2E-LICENCE-001",
                material="peek",
                thickness_mm="4.0",
                screw_count=6,
                screw_positions="Three along each margin, 10 mm apart",
                margins_mm="2.0",
            )
        return case

    return make
