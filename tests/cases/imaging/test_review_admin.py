"""The designer signs the visual review of an accepted study in the admin, through
study_review_sign, as they do through the API; and the imaging pages the roles now
open show them what their cases let them see, and nothing more.

Every patient here is synthetic (tests/cases/conftest.py)."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from cases import services as case_services
from cases.imaging import quality
from cases.imaging.models import (
    AcquisitionProfile,
    DicomPeer,
    ImagingSeries,
    ImagingStudy,
)
from cases.imaging.services import REVIEW_FINDINGS, study_review_passed
from cases.models import Case
from psi.errors import Conflict
from psi.models import AuditEvent, Role, Signature
from psi.orgs import membership_grant
from psi.signatures import printed_name
from tests.cases.conftest import reviewed_study
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

S = Case.Status
REPORT = {"objects": 3, "profile": "PS3.15 Annex E basic", "removed": ["(0010,0030)"]}


def staff_client(user) -> Client:
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(user)
    return client


def study_admin(study=None, what="change") -> str:
    if study is None:
        return reverse(f"admin:cases_imagingstudy_{what}")
    return reverse(f"admin:cases_imagingstudy_{what}", args=[study.pk])


def make_study(case: Case, status=ImagingStudy.Status.ACCEPTED) -> ImagingStudy:
    return ImagingStudy.objects.create(
        case=case,
        study_uid=f"2.25.{uuid.uuid4().int}",
        modality="CT",
        status=status,
        source=ImagingStudy.Source.UPLOAD,
        deid_report=REPORT,
    )


def review_form(password=PASSWORD, **findings) -> dict:
    """Every finding ok unless ``findings`` says otherwise (``motion=("no", "…")``)."""
    data = {"password": password}
    for key in REVIEW_FINDINGS:
        ok, notes = findings.get(key, ("yes", ""))
        data[f"{key}_ok"] = ok
        data[f"{key}_notes"] = notes
    return data


@pytest.fixture
def study(case_at):
    return make_study(case_at(S.SUBMITTED))


@pytest.fixture
def accepted_case(case_at, case_manager):
    """A case whose imaging was accepted, with a signed prescription and no reviewed
    study yet: not ready for design."""
    case = case_at(S.IMAGING_RECEIVED)
    return case_services.case_accept_imaging(actor=case_manager, case=case)


# --- signing -------------------------------------------------------------------------


def test_designer_sees_the_button_and_the_manifestation(study, designer):
    client = staff_client(designer)
    change_page = client.get(study_admin(study))
    assert change_page.status_code == 200
    assert "Sign visual review" in change_page.text
    assert study_admin(study, "review") in change_page.text

    page = client.get(study_admin(study, "review"))

    assert page.status_code == 200
    assert 'id="signature-manifestation"' in page.text
    assert f"<strong>{escape(printed_name(designer))}</strong>" in page.text
    assert "<strong>Reviewed</strong>" in page.text
    for label in REVIEW_FINDINGS.values():
        assert label in page.text
    assert 'name="password"' in page.text


def test_a_wrong_password_is_refused_on_the_form_and_audited(study, designer):
    response = staff_client(designer).post(
        study_admin(study, "review"), review_form(password="guess")
    )

    assert response.status_code == 200
    assert "password is not correct" in response.text
    assert "errors field-password" in response.text
    failure = AuditEvent.objects.get(action="signature.failed")
    assert failure.actor == designer
    study.refresh_from_db()
    assert study.review is None
    assert study.review_findings == {}


def test_designer_signs_the_review_and_the_case_can_go_to_design(
    accepted_case, designer
):
    study = make_study(accepted_case)
    with pytest.raises(Conflict):
        case_services.case_start_design(actor=designer, case=accepted_case)
    client = staff_client(designer)

    response = client.post(
        study_admin(study, "review"),
        review_form(metal_artefacts=("yes", "Small streaks far from the defect")),
    )

    assert response.status_code == 302
    assert response.url == study_admin(study)
    study.refresh_from_db()
    assert study.review.signer == designer
    assert study.review.meaning == Signature.Meaning.REVIEWED
    assert study.review_findings == {
        "motion": {"ok": True, "notes": ""},
        "metal_artefacts": {"ok": True, "notes": "Small streaks far from the defect"},
        "region_coverage": {"ok": True, "notes": ""},
        "healthy_side_coverage": {"ok": True, "notes": ""},
    }
    assert AuditEvent.objects.filter(
        action="imaging.reviewed", object_id=str(study.pk)
    ).exists()
    page = client.get(response.url)
    when = f"{study.review.signed_at:%Y-%m-%d %H:%M:%S} UTC"
    assert escape(f"signed: {printed_name(designer)}, {when}, Reviewed.") in page.text
    assert "Sign visual review" not in page.text

    case = case_services.case_start_design(actor=designer, case=accepted_case)
    assert case.status == S.IN_DESIGN


def test_a_finding_not_ok_needs_notes_and_keeps_design_closed(accepted_case, designer):
    study = make_study(accepted_case)
    client = staff_client(designer)

    refused = client.post(study_admin(study, "review"), review_form(motion=("no", "")))

    assert refused.status_code == 200
    assert "Describe the problem with motion." in refused.text
    assert "errors field-motion_notes" in refused.text
    # The findings are checked before the password: nothing to audit yet.
    assert not AuditEvent.objects.filter(action="signature.failed").exists()
    study.refresh_from_db()
    assert study.review is None

    signed = client.post(
        study_admin(study, "review"),
        review_form(motion=("no", "Patient moved during the scan")),
    )

    assert signed.status_code == 302
    study.refresh_from_db()
    assert study.review_findings["motion"] == {
        "ok": False,
        "notes": "Patient moved during the scan",
    }
    assert not study_review_passed(accepted_case)
    with pytest.raises(Conflict):
        case_services.case_start_design(actor=designer, case=accepted_case)


def test_the_form_asks_for_every_finding(study, designer):
    data = review_form()
    del data["region_coverage_ok"]

    response = staff_client(designer).post(study_admin(study, "review"), data)

    assert response.status_code == 200
    assert "errors field-region_coverage_ok" in response.text
    study.refresh_from_db()
    assert study.review is None


# --- who may sign, and when ----------------------------------------------------------


def test_the_surgeon_sees_the_study_but_may_not_sign(study, surgeon):
    client = staff_client(surgeon)
    page = client.get(study_admin(study))
    assert page.status_code == 200
    assert "Sign visual review" not in page.text

    assert client.get(study_admin(study, "review")).status_code == 403
    response = client.post(study_admin(study, "review"), review_form())

    assert response.status_code == 403
    study.refresh_from_db()
    assert study.review is None


def test_outsider_gets_404_on_the_study_and_its_review(study, outsider):
    client = staff_client(outsider)
    assert client.get(study_admin(study)).status_code == 404
    assert client.get(study_admin(study, "history")).status_code == 404
    assert client.get(study_admin(study, "review")).status_code == 404
    response = client.post(study_admin(study, "review"), review_form())
    assert response.status_code == 404
    assert study.case.reference not in response.text
    study.refresh_from_db()
    assert study.review is None


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        ("rejected", "Only an accepted study is reviewed."),
        ("reviewed", "The study&#x27;s visual review is already signed."),
    ],
)
def test_a_study_that_cannot_be_reviewed_has_no_button_and_the_page_refuses(
    case_at, designer, state, refusal
):
    case = case_at(S.SUBMITTED)
    if state == "rejected":
        study = make_study(case, status=ImagingStudy.Status.REJECTED)
    else:
        study = reviewed_study(case, designer)
    signatures = Signature.objects.count()
    client = staff_client(designer)
    assert "Sign visual review" not in client.get(study_admin(study)).text

    for response in (
        client.get(study_admin(study, "review"), follow=True),
        client.post(study_admin(study, "review"), review_form(), follow=True),
    ):
        assert response.redirect_chain == [(study_admin(study), 302)]
        assert refusal in response.text
        assert 'name="password"' not in response.text

    assert Signature.objects.count() == signatures


# --- the imaging pages the roles now open --------------------------------------------


@pytest.mark.parametrize(
    ("role", "reads_report"),
    [
        ("surgeon", False),
        ("coordinator", False),
        ("case_manager", False),
        ("designer", False),
        ("qa", True),
        ("prrc", True),
        ("auditor", True),
    ],
)
def test_case_roles_open_the_study_pages(personas, study, role, reads_report):
    client = staff_client(personas[role])
    assert client.get(reverse("admin:index")).status_code == 200
    listed = client.get(study_admin(what="changelist"))
    assert listed.status_code == 200
    assert str(study) in listed.text

    page = client.get(study_admin(study))
    history = client.get(study_admin(study, "history"))
    version = client.get(
        reverse(
            "admin:cases_imagingstudy_simple_history",
            args=[study.pk, study.history.latest().history_id],
        )
    )

    for response in (page, history, version):
        assert response.status_code == 200
    for response in (page, version):
        assert "Quality report" in response.text
        assert ("(0010,0030)" in response.text) is reads_report
        assert ("De-identification report" in response.text) is reads_report


def test_the_study_page_costs_the_same_queries_for_more_series(study, designer):
    def add_series(count: int) -> None:
        for number in range(count):
            ImagingSeries.objects.create(
                study=study,
                series_uid=f"2.25.{uuid.uuid4().int}",
                series_number=number + 1,
                previews={"axial": 1},
            )

    def queries_of_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(study_admin(study)).status_code == 200
        return len(queries)

    client = staff_client(designer)
    add_series(1)
    queries_of_the_page()  # caches warmed (content types)
    one = queries_of_the_page()
    add_series(4)

    assert queries_of_the_page() == one


def test_production_opens_the_study_page(manufacturer, study):
    production = UserFactory(username="production")
    membership_grant(
        actor=None, user=production, organisation=manufacturer, role=Role.PRODUCTION
    )
    page = staff_client(production).get(study_admin(study))
    assert page.status_code == 200
    assert "(0010,0030)" not in page.text


def test_outsider_lists_no_studies(study, outsider):
    listed = staff_client(outsider).get(study_admin(what="changelist"))
    assert listed.status_code == 200
    assert str(study) not in listed.text
    assert "0 imaging studies" in listed.text


def test_quality_assurance_edits_acquisition_profiles(qa, designer):
    limits = quality.default_profile("cranial").as_dict()
    url = reverse("admin:cases_acquisitionprofile_add")

    added = staff_client(qa).post(
        url, {"region": "cranial", "limits": json.dumps(limits)}
    )

    assert added.status_code == 302, added.text[:2000]
    profile = AcquisitionProfile.objects.get(region="cranial")
    assert profile.history.latest().history_user == qa
    designer_client = staff_client(designer)
    assert designer_client.get(url).status_code == 403
    change = reverse("admin:cases_acquisitionprofile_change", args=[profile.pk])
    assert designer_client.get(change).status_code == 200
    refused = designer_client.post(
        change, {"region": "cranial", "limits": json.dumps(limits)}
    )
    assert refused.status_code == 403


def test_a_view_only_role_cannot_revert_through_history(qa, designer):
    limits = quality.default_profile("cranial").as_dict()
    staff_client(qa).post(
        reverse("admin:cases_acquisitionprofile_add"),
        {"region": "cranial", "limits": json.dumps(limits)},
    )
    profile = AcquisitionProfile.objects.get()
    version = reverse(
        "admin:cases_acquisitionprofile_simple_history",
        args=[profile.pk, profile.history.latest().history_id],
    )
    client = staff_client(designer)
    assert client.get(version).status_code == 200

    response = client.post(version, {"region": "orbital", "limits": json.dumps(limits)})

    assert response.status_code == 403
    profile.refresh_from_db()
    assert profile.region == "cranial"


def test_coordinator_sees_only_their_hospitals_dicom_peers(
    coordinator, hospital_a, hospital_b
):
    ours = DicomPeer.objects.create(hospital=hospital_a, ae_title="HOSPA_CT")
    theirs = DicomPeer.objects.create(hospital=hospital_b, ae_title="HOSPB_CT")
    client = staff_client(coordinator)

    listed = client.get(reverse("admin:cases_dicompeer_changelist"))

    assert listed.status_code == 200
    assert "HOSPA_CT" in listed.text
    assert "HOSPB_CT" not in listed.text
    assert (
        client.get(reverse("admin:cases_dicompeer_change", args=[ours.pk])).status_code
        == 200
    )
    for name, args in [
        ("admin:cases_dicompeer_change", [theirs.pk]),
        ("admin:cases_dicompeer_history", [theirs.pk]),
        (
            "admin:cases_dicompeer_simple_history",
            [theirs.pk, theirs.history.latest().history_id],
        ),
    ]:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 404, name
        assert "HOSPB_CT" not in response.text


def test_a_study_still_receiving_is_judged_now_from_its_page(
    case_at, case_manager, surgeon, django_capture_on_commit_callbacks
):
    study = make_study(
        case_at(S.IMAGING_RECEIVED), status=ImagingStudy.Status.RECEIVING
    )
    url = study_admin(study, "evaluate")
    assert url not in staff_client(surgeon).get(study_admin(study)).content.decode()
    assert staff_client(surgeon).post(url).status_code == 403
    client = staff_client(case_manager)
    assert url in client.get(study_admin(study)).content.decode()
    assert client.get(url).status_code == 302  # a GET changes nothing
    assert not AuditEvent.objects.filter(action="imaging.evaluation_requested").exists()

    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(url, follow=True)

    assert "will be judged now" in answer.content.decode()
    study.refresh_from_db()
    # No instance was ever stored: judged, and rejected for it.
    assert study.status == ImagingStudy.Status.REJECTED
    assert url not in client.get(study_admin(study)).content.decode()
    refused = client.post(url, follow=True).content.decode()
    assert "The study is already rejected." in refused
