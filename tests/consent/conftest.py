"""Patients and consent for the consent tests (and any test that needs a patient who
has agreed to imaging exchange and design). Every patient here is invented: family
name "Testperson", record numbers "TEST-nnnn"."""

import datetime
import io

import pytest
from django.utils import timezone

from consent.models import Consent, LegalBasis, Patient, Purpose
from consent.services import consent_form_create, consent_record, patient_register
from psi.models import Role
from psi.permissions import grant_to_roles

FAMILY_NAME = "Testperson"
#: A minimal PDF header: what a scanned consent starts with.
PDF_BYTES = b"%PDF-1.4\n% synthetic test scan\n%%EOF\n"


@pytest.fixture
def consent_form(superuser):
    """A form valid since 2024 that asks consent for every purpose."""
    return consent_form_create(
        actor=superuser,
        title="PSI test consent",
        version="1.0",
        language="en",
        text="I agree that my images are shared under a pseudonym.",
        purposes=list(Purpose.values),
        valid_from=datetime.date(2024, 1, 1),
    )


@pytest.fixture
def make_patient(surgeon, hospital_a):
    """Register synthetic patients of hospital A: ``make_patient(**overrides)``."""
    numbers = iter(range(1, 100_000))

    def make(*, actor=None, hospital=None, **overrides):
        number = next(numbers)
        identity = {
            "family_name": FAMILY_NAME,
            "given_names": f"Example{number}",
            "birth_date": datetime.date(1970, 1, number % 28 + 1),
            "sex": Patient.Sex.FEMALE,
            "record_number": f"TEST-{number:04d}",
            **overrides,
        }
        return patient_register(
            actor=actor or surgeon, hospital=hospital or hospital_a, **identity
        )

    return make


@pytest.fixture
def patient(make_patient):
    return make_patient()


CARE_PURPOSES = {
    Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
    Purpose.DESIGN_AND_MANUFACTURE: LegalBasis.EXPLICIT_CONSENT,
}


@pytest.fixture
def give_consent(surgeon, consent_form):
    """Record a consent for a patient: ``give_consent(patient, **overrides)``."""

    def give(patient, *, actor=None, **overrides):
        data = {
            "form": consent_form,
            "purposes": dict(CARE_PURPOSES),
            "method": Consent.Method.ELECTRONIC,
            "signed_at": timezone.now() - datetime.timedelta(days=1),
            **overrides,
        }
        return consent_record(actor=actor or surgeon, patient=patient, **data)

    return give


@pytest.fixture
def make_patient_with_consent(make_patient, give_consent):
    """A synthetic patient of hospital A with a valid electronic consent to imaging
    exchange and to design and manufacture (what a case needs to be submitted)."""

    def make(**overrides):
        patient = make_patient(**overrides)
        give_consent(patient)
        return patient

    return make


@pytest.fixture
def patient_with_consent(make_patient_with_consent):
    return make_patient_with_consent()


@pytest.fixture
def share_with_manufacturer(manufacturer):
    """Let the manufacturer's people see a patient by pseudonym, as opening a case
    does (cases.services.case_create)."""

    def share(patient):
        roles = [
            Role.CASE_MANAGER,
            Role.DESIGNER,
            Role.PRODUCTION,
            Role.QUALITY_ASSURANCE,
            Role.REGULATORY,
            Role.AUDITOR,
        ]
        grant_to_roles(
            patient, manufacturer, {role: ["view_patient"] for role in roles}
        )
        return patient

    return share


@pytest.fixture
def pdf_scan():
    def scan(name="scan.pdf"):
        upload = io.BytesIO(PDF_BYTES)
        upload.name = name
        return upload

    return scan


@pytest.fixture
def staff():
    """Admit a persona to the admin (what it sees there is still decided per
    object)."""

    def make(user):
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        return user

    return make
