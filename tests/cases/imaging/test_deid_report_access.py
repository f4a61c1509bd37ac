"""The de-identification report is quality evidence: the manufacturer's quality
assurance, regulatory (PRRC) and auditor roles read it; the people who work on the
case see the study without it, in the REST API and in the admin."""

from __future__ import annotations

import uuid

import pytest

from cases.imaging.models import ImagingStudy
from cases.models import Case

pytestmark = pytest.mark.django_db

REPORT = {"objects": 3, "profile": "PS3.15 Annex E basic", "removed": ["(0010,0030)"]}


@pytest.fixture
def study(case_at):
    return ImagingStudy.objects.create(
        case=case_at(Case.Status.SUBMITTED),
        study_uid=f"2.25.{uuid.uuid4().int}",
        modality="CT",
        status=ImagingStudy.Status.ACCEPTED,
        source=ImagingStudy.Source.UPLOAD,
        deid_report=REPORT,
    )


def _studies(api_as, user) -> list[dict]:
    answer = api_as(user).get("/api/v1/studies/")
    assert answer.status_code == 200
    return answer.json()["results"]


@pytest.mark.parametrize("role", ["qa", "prrc", "auditor"])
def test_quality_roles_read_the_report(api_as, personas, study, role):
    (listed,) = _studies(api_as, personas[role])
    assert listed["deid_report"] == REPORT
    detail = api_as(personas[role]).get(f"/api/v1/studies/{study.pk}/").json()
    assert detail["deid_report"] == REPORT


@pytest.mark.parametrize("role", ["surgeon", "coordinator", "case_manager", "designer"])
def test_case_workers_see_the_study_without_the_report(api_as, personas, study, role):
    (listed,) = _studies(api_as, personas[role])
    assert listed["id"] == study.pk
    assert listed["deid_report"] is None
    detail = api_as(personas[role]).get(f"/api/v1/studies/{study.pk}/").json()
    assert detail["deid_report"] is None
    assert "(0010,0030)" not in str(detail)


def test_outsider_sees_neither_study_nor_report(api_as, outsider, study):
    assert _studies(api_as, outsider) == []
    assert api_as(outsider).get(f"/api/v1/studies/{study.pk}/").status_code == 404


def test_superuser_reads_the_report(api_as, superuser, study):
    (listed,) = _studies(api_as, superuser)
    assert listed["deid_report"] == REPORT


def test_only_the_quality_roles_hold_the_permission(personas):
    holders = {
        name
        for name, user in personas.items()
        if user.has_perm("cases.view_deid_report")
    }
    assert holders == {"qa", "prrc", "auditor"}


# --- admin --------------------------------------------------------------------------


def _admin_page(client, user, study) -> str:
    # Every role of the case opens the study page; the report is what differs.
    client.force_login(user)
    page = client.get(f"/admin/cases/imagingstudy/{study.pk}/change/")
    assert page.status_code == 200
    return page.content.decode()


@pytest.mark.parametrize("role", ["qa", "prrc", "auditor"])
def test_admin_shows_the_report_to_quality_roles(client, personas, study, role):
    html = _admin_page(client, personas[role], study)
    assert "De-identification report" in html
    assert "(0010,0030)" in html


def test_admin_hides_the_report_from_the_designer(client, designer, study):
    html = _admin_page(client, designer, study)
    assert "Quality report" in html
    assert "De-identification report" not in html
    assert "(0010,0030)" not in html


def test_admin_history_hides_the_report_from_the_designer(client, designer, study):
    _admin_page(client, designer, study)
    version = study.history.latest()
    page = client.get(
        f"/admin/cases/imagingstudy/{study.pk}/history/{version.history_id}/"
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "Quality report" in html
    assert "(0010,0030)" not in html
