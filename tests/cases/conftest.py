"""Cases of synthetic patients of hospital A, made through the services.

Every patient here is invented: family name "Testperson", record numbers TEST-nnnn.
"""

import datetime
import itertools
import uuid

import pytest
from django.utils import timezone

from cases import services
from cases.imaging.models import ImagingStudy
from cases.imaging.services import (
    REVIEW_FINDINGS,
    study_review_passed,
    study_review_sign,
)
from cases.models import Case
from consent.models import Consent, LegalBasis, Patient, Purpose
from consent.services import consent_form_create, consent_record, patient_register
from tests.factories import PASSWORD

S = Case.Status

#: Who takes each step of the main path in these tests.
STEP_ACTOR = {
    "submit": "surgeon",
    "receive_imaging": "case_manager",
    "accept_imaging": "case_manager",
    "request_rescan": "case_manager",
    "start_design": "designer",
    "request_review": "designer",
    "approve_design": "surgeon",
    "request_changes": "surgeon",
    "start_manufacturing": "case_manager",
    "release": "qa",
    "ship": "case_manager",
    "record_implantation": "surgeon",
    "start_follow_up": "surgeon",
    "close": "surgeon",
    "hold": "case_manager",
    "resume": "case_manager",
    "cancel": "coordinator",
}
#: The main path from draft to closed: (step, status it leads to).
MAIN_PATH = [
    ("submit", S.SUBMITTED),
    ("receive_imaging", S.IMAGING_RECEIVED),
    ("accept_imaging", S.IMAGING_ACCEPTED),
    ("start_design", S.IN_DESIGN),
    ("request_review", S.DESIGN_REVIEW),
    ("approve_design", S.DESIGN_APPROVED),
    ("start_manufacturing", S.IN_MANUFACTURING),
    ("release", S.RELEASED),
    ("ship", S.SHIPPED),
    ("record_implantation", S.IMPLANTED),
    ("start_follow_up", S.FOLLOW_UP),
    ("close", S.CLOSED),
]
MAIN_STATUSES = [S.DRAFT] + [status for _, status in MAIN_PATH]
BEFORE_IMPLANT = MAIN_STATUSES[: MAIN_STATUSES.index(S.IMPLANTED)]
FROM_IMPLANT = MAIN_STATUSES[MAIN_STATUSES.index(S.IMPLANTED) :]

#: For each step: a status it starts from, who takes it, the reason given.
HAPPY = {
    "submit": (S.DRAFT, "surgeon", ""),
    "receive_imaging": (S.SUBMITTED, "case_manager", ""),
    "accept_imaging": (S.IMAGING_RECEIVED, "case_manager", ""),
    "request_rescan": (S.IMAGING_RECEIVED, "case_manager", "Motion artefact"),
    "start_design": (S.IMAGING_ACCEPTED, "designer", ""),
    "request_review": (S.IN_DESIGN, "designer", "Ready for review"),
    "approve_design": (S.DESIGN_REVIEW, "surgeon", ""),
    "request_changes": (S.DESIGN_REVIEW, "surgeon", "Thinner rim, please"),
    "start_manufacturing": (S.DESIGN_APPROVED, "case_manager", ""),
    "release": (S.IN_MANUFACTURING, "prrc", ""),
    "ship": (S.RELEASED, "case_manager", ""),
    "record_implantation": (S.SHIPPED, "surgeon", ""),
    "start_follow_up": (S.IMPLANTED, "coordinator", ""),
    "close": (S.FOLLOW_UP, "surgeon", ""),
    "hold": (S.IN_DESIGN, "case_manager", "Surgeon on leave"),
    "resume": (S.ON_HOLD, "case_manager", "Surgeon is back"),
    "cancel": (S.SUBMITTED, "coordinator", "Patient moved away"),
}
_record_numbers = itertools.count(1)


@pytest.fixture
def personas(surgeon, coordinator, case_manager, designer, qa, prrc, auditor, outsider):
    """Everyone, by the names STEP_ACTOR uses."""
    return {
        "surgeon": surgeon,
        "coordinator": coordinator,
        "case_manager": case_manager,
        "designer": designer,
        "qa": qa,
        "prrc": prrc,
        "auditor": auditor,
        "outsider": outsider,
    }


@pytest.fixture
def consent_form(superuser):
    return consent_form_create(
        actor=superuser,
        title="Implant case consent",
        version="1",
        language="en",
        text="Synthetic consent text for tests.",
        purposes=[Purpose.IMAGING_EXCHANGE, Purpose.DESIGN_AND_MANUFACTURE],
        valid_from=timezone.localdate() - datetime.timedelta(days=365),
    )


@pytest.fixture
def register_patient(hospital_a, surgeon, consent_form):
    """Register a synthetic patient of hospital A; with consent for imaging
    exchange and design unless ``consent=False``."""

    def register(*, consent: bool = True) -> Patient:
        number = next(_record_numbers)
        patient = patient_register(
            actor=surgeon,
            hospital=hospital_a,
            family_name="Testperson",
            given_names=f"Pat {number}",
            birth_date=datetime.date(1970, 1, 1),
            sex=Patient.Sex.UNKNOWN,
            record_number=f"TEST-{number:04d}",
        )
        if consent:
            consent_record(
                actor=surgeon,
                patient=patient,
                form=consent_form,
                purposes={
                    Purpose.IMAGING_EXCHANGE: LegalBasis.EXPLICIT_CONSENT,
                    Purpose.DESIGN_AND_MANUFACTURE: LegalBasis.EXPLICIT_CONSENT,
                },
                method=Consent.Method.ELECTRONIC,
                signed_at=timezone.now() - datetime.timedelta(hours=1),
            )
        return patient

    return register


@pytest.fixture
def patient(register_patient):
    return register_patient()


@pytest.fixture
def new_case(surgeon, manufacturer, personas, register_patient):
    """Open a draft case (every persona exists, so its groups hold their grants)."""

    def make(patient: Patient | None = None, **fields) -> Case:
        values = {
            "indication": "Synthetic cranial defect after decompression.",
            "anatomical_region": Case.Region.CRANIAL,
            "side": Case.Side.LEFT,
            "regulatory_pathway": Case.Pathway.EU_CUSTOM_MADE,
            "pathway_reason": "No CE-marked plate fits the defect.",
            **fields,
        }
        return services.case_create(
            actor=surgeon,
            patient=patient or register_patient(),
            manufacturer=manufacturer,
            prescriber=surgeon,
            **values,
        )

    return make


@pytest.fixture
def draft_case(new_case, patient):
    return new_case(patient)


def write_prescription(case: Case, prescriber, **overrides):
    values = {
        "prescriber_licence": "TEST-LIC-0001",
        "material": "ti6al4v",
        "thickness_mm": "1.50",
        "screw_count": 6,
        "screw_positions": "Two per edge, synthetic",
        **overrides,
    }
    return services.prescription_create(actor=prescriber, case=case, **values)


@pytest.fixture
def prescription(draft_case, surgeon):
    return write_prescription(draft_case, surgeon)


@pytest.fixture
def signed_prescription(prescription, surgeon):
    return services.prescription_sign(
        actor=surgeon, prescription=prescription, password=PASSWORD
    )


def reviewed_study(case: Case, designer, **findings) -> ImagingStudy:
    """An accepted study of ``case`` whose visual review ``designer`` signs; every
    finding ok unless ``findings`` says otherwise (REGULATORY 50)."""
    study = ImagingStudy.objects.create(
        case=case,
        study_uid=f"2.25.{uuid.uuid4().int}",
        modality="CT",
        status=ImagingStudy.Status.ACCEPTED,
        source=ImagingStudy.Source.UPLOAD,
    )
    return study_review_sign(
        actor=designer,
        study=study,
        password=PASSWORD,
        findings={key: {"ok": True} for key in REVIEW_FINDINGS} | findings,
    )


@pytest.fixture
def advance(personas):
    """Move a case along the main path until it reaches ``status``, each step by the
    persona that takes it; signs a prescription first when the case needs one, and
    gives a case that reaches imaging_accepted an accepted study with a signed
    visual review (design needs one)."""

    def to(case: Case, status: str) -> Case:
        case.refresh_from_db()
        if status == case.status:
            return case
        latest = services.prescription_latest(case)
        if case.status == S.DRAFT and (latest is None or not latest.is_signed):
            latest = latest or write_prescription(case, personas["surgeon"])
            services.prescription_sign(
                actor=personas["surgeon"], prescription=latest, password=PASSWORD
            )
        start = MAIN_STATUSES.index(case.status)
        for step, reached in MAIN_PATH[start:]:
            if step == "start_design" and not study_review_passed(case):
                reviewed_study(case, personas["designer"])
            case = services.TRANSITION_SERVICES[step](
                actor=personas[STEP_ACTOR[step]], case=case
            )
            if reached == S.IMAGING_ACCEPTED:
                # Ready for design: the reviewed study design needs is there.
                reviewed_study(case, personas["designer"])
            if reached == status:
                return case
        raise AssertionError(f"{status} is not on the main path")

    return to


@pytest.fixture
def case_at(new_case, advance):
    """A new case moved to ``status`` (on the main path, or on hold from draft)."""

    def make(status: str, **fields) -> Case:
        return advance(new_case(**fields), status)

    return make


@pytest.fixture
def case_in(case_at, personas):
    """A case in ``status``, ready for the step HAPPY starts from it: a draft has a
    signed prescription; "on_hold" is held from in_design."""

    def make(status: str) -> Case:
        if status == S.DRAFT:
            case = case_at(S.DRAFT)
            services.prescription_sign(
                actor=personas["surgeon"],
                prescription=write_prescription(case, personas["surgeon"]),
                password=PASSWORD,
            )
            return case
        if status == S.ON_HOLD:
            return services.case_hold(
                actor=personas["case_manager"],
                case=case_at(S.IN_DESIGN),
                reason="Held for a test",
            )
        return case_at(status)

    return make
