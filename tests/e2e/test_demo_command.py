"""The demo command: what a newcomer runs first (``make run``)."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from cases.imaging.models import DicomPeer, ImagingInstance, ImagingStudy
from cases.imaging.services import dicom_peer_admit, study_review_passed
from cases.management.commands.demo import (
    DEMO_PASSWORD,
    DEMO_PEER_AE_TITLE,
    HOSPITAL_A,
    PEOPLE,
)
from cases.models import Case, CaseEvent, Prescription
from consent.models import Consent, Patient
from psi.errors import PermissionRefused
from psi.models import Membership, Organisation, Signature

# Signing opens a durable transaction of its own (a failed attempt must survive), which
# cannot nest inside the per-test transaction of the ``db`` fixture.
pytestmark = pytest.mark.django_db(transaction=True)

S = Case.Status


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    # The demo uploads imaging: staged files go to this test's folder.
    settings.PSI_STAGING_DIR = tmp_path / "staging"


def _demo() -> str:
    out = StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


def _counts() -> dict[str, int]:
    models = [
        Organisation,
        get_user_model(),
        Membership,
        Patient,
        Consent,
        Case,
        Prescription,
        Signature,
        CaseEvent,
        ImagingStudy,
        ImagingInstance,
        DicomPeer,
    ]
    return {model.__name__: model.objects.count() for model in models}


def test_demo_twice_loads_the_same_data_once():
    first_out = _demo()
    first = _counts()
    cases = sorted(Case.objects.values_list("reference", "status"))

    second_out = _demo()

    assert _counts() == first
    assert sorted(Case.objects.values_list("reference", "status")) == cases
    assert "already there" in second_out
    assert first["Organisation"] == 3
    assert first["User"] == len(PEOPLE) + 1  # and the superuser
    assert first["Patient"] == first["Case"] == 7
    assert first["DicomPeer"] == 1
    assert {status for _, status in cases} >= {
        S.DRAFT,
        S.SUBMITTED,
        S.IMAGING_RECEIVED,
        S.IN_DESIGN,
        S.DESIGN_REVIEW,
        S.RELEASED,
        S.CANCELLED,
    }
    # Every case past draft went out with a signed prescription.
    for case in Case.objects.exclude(status=S.DRAFT):
        assert case.prescriptions.get().is_signed, case.reference
    # Every case that went to design did so on an accepted study, ingested through
    # the real service and reviewed by the designer with every finding ok.
    past_imaging = Case.objects.filter(
        status__in=[S.IN_DESIGN, S.DESIGN_REVIEW, S.RELEASED]
    )
    assert past_imaging.count() == 3
    for case in past_imaging:
        study = case.studies.get()
        assert study.status == ImagingStudy.Status.ACCEPTED, case.reference
        assert study.instance_count > 0
        assert study.review.signer.username == "designer"
        assert study.review.meaning == Signature.Meaning.REVIEWED
        assert study_review_passed(case), case.reference
        assert not case.events.filter(transition="request_rescan").exists()
    assert not ImagingStudy.objects.exclude(case__in=past_imaging).exists()
    for out in (first_out, second_out):
        assert "Demo data ready." in out
        assert DEMO_PASSWORD in out
        assert "admin" in out
        for username, organisation, *_ in PEOPLE:
            assert username in out
            assert organisation in out


def test_demo_users_can_log_in():
    _demo()
    User = get_user_model()

    for username in ["admin", *(person[0] for person in PEOPLE)]:
        client = Client()
        assert client.login(username=username, password=DEMO_PASSWORD), username
        user = User.objects.get(username=username)
        if user.is_staff:
            # Through the admin's own login form, as a person would.
            client = Client()
            response = client.post(
                "/admin/login/?next=/admin/",
                {"username": username, "password": DEMO_PASSWORD},
            )
            assert response.status_code == 302, username
            assert response.url == "/admin/", username


def test_the_demo_peer_sends_for_the_first_hospital_from_this_machine_only():
    out = _demo()

    hospital = Organisation.objects.get(name=HOSPITAL_A)
    assert dicom_peer_admit(DEMO_PEER_AE_TITLE, "127.0.0.1") == hospital.pk
    assert dicom_peer_admit(DEMO_PEER_AE_TITLE, "::1") == hospital.pk
    with pytest.raises(PermissionRefused):
        dicom_peer_admit(DEMO_PEER_AE_TITLE, "192.0.2.7")
    # It names the cases that take imaging now, and only those.
    peer_part = out.split("Demo DICOM peer:")[1]
    taking = set(
        Case.objects.filter(status__in=[S.SUBMITTED, S.IMAGING_RECEIVED]).values_list(
            "reference", flat=True
        )
    )
    assert len(taking) == 2
    for case in Case.objects.all():
        assert (case.reference in peer_part) == (case.reference in taking)
    assert f"storescu -aet {DEMO_PEER_AE_TITLE} -aec PSI 127.0.0.1 11112" in peer_part


def test_a_demo_loaded_before_it_had_a_peer_gets_one():
    _demo()
    DicomPeer.objects.all().delete()

    _demo()

    assert DicomPeer.objects.get().ae_title == DEMO_PEER_AE_TITLE
