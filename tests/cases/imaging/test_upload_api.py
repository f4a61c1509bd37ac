"""The imaging API: upload, studies, previews, the signed review."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from cases.imaging import quality
from cases.imaging.models import AcquisitionProfile, ImagingInstance, ImagingStudy
from cases.imaging.phantom import PhantomSpec, write_series
from cases.models import Case
from psi.models import Job, StoredFile
from tests.factories import PASSWORD

S = Case.Status
SLICES = 30


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"


@pytest.fixture(autouse=True)
def cranial_profile(db):
    limits = quality.default_profile("cranial").as_dict()
    limits["min_coverage_mm"] = 25.0
    return AcquisitionProfile.objects.create(region="cranial", limits=limits)


@pytest.fixture(scope="module")
def series_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upload")
    return write_series(folder, PhantomSpec(slices=SLICES, seed=21))


@pytest.fixture
def submitted(case_at):
    return case_at(S.SUBMITTED)


def staged_files(settings) -> list[Path]:
    return list(Path(settings.PSI_STAGING_DIR).rglob("*.dcm"))


def url(case) -> str:
    return f"/api/v1/cases/{case.pk}/imaging/"


def as_upload(path: Path, name: str = "x.dcm") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, Path(path).read_bytes(), "application/dicom")


def zipped(members: dict[str, bytes], name="study.zip") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return SimpleUploadedFile(name, buffer.getvalue(), "application/zip")


def post(client, case, files, capture):
    with capture(execute=True):
        return client.post(url(case), {"files": files}, format="multipart")


def test_upload_of_a_good_series_is_accepted(
    api_as,
    surgeon,
    designer,
    submitted,
    series_files,
    django_capture_on_commit_callbacks,
    settings,
):
    files = [as_upload(p, f"Testperson_{i}.dcm") for i, p in enumerate(series_files)]
    answer = post(api_as(surgeon), submitted, files, django_capture_on_commit_callbacks)
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    assert body["staged"] == SLICES
    assert body["rejected"] == []
    job = Job.objects.get(pk=body["job"]["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["accepted"] == SLICES
    assert not staged_files(settings)
    submitted.refresh_from_db()
    assert submitted.status == S.IMAGING_RECEIVED

    client = api_as(designer)
    listing = client.get("/api/v1/studies/")
    assert listing.status_code == 200
    study = listing.json()["results"][0]
    assert study["status"] == "accepted"
    assert study["proposed_series"] == study["series"][0]["id"]
    assert study["deid_report"] is None  # quality roles only
    assert "Testperson" not in str(listing.json())
    preview_url = study["series"][0]["preview_urls"]["middle_axial"]
    png = client.get(preview_url)
    assert png.status_code == 200
    assert png["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(b"".join(png.streaming_content)))
    assert image.format == "PNG"

    review = client.post(
        f"/api/v1/studies/{study['id']}/review/",
        {
            "password": PASSWORD,
            "findings": {
                "motion": {"ok": True},
                "metal_artefacts": {"ok": True},
                "region_coverage": {"ok": True},
                "healthy_side_coverage": {"ok": True, "notes": "Whole skull"},
            },
        },
        format="json",
    )
    assert review.status_code == 200, review.json()
    assert review.json()["reviewed"] is True


def test_same_series_twice_is_stored_once(
    api_as, surgeon, submitted, series_files, django_capture_on_commit_callbacks
):
    client = api_as(surgeon)
    for _ in range(2):
        answer = post(
            client,
            submitted,
            [zipped({f"s/{p.name}": p.read_bytes() for p in series_files})],
            django_capture_on_commit_callbacks,
        )
        assert answer.status_code == 202
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert job.result["skipped_duplicates"] == SLICES
    assert ImagingInstance.objects.filter(case=submitted).count() == SLICES
    assert ImagingStudy.objects.filter(case=submitted).count() == 1


def test_without_consent_nothing_is_staged(
    api_as,
    surgeon,
    submitted,
    series_files,
    settings,
    django_capture_on_commit_callbacks,
):
    from consent.models import Consent
    from consent.services import consent_withdraw

    for consent in Consent.objects.filter(patient=submitted.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")
    answer = post(
        api_as(surgeon),
        submitted,
        [as_upload(series_files[0])],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 409
    assert answer.json()["code"] == "consent_missing"
    assert not staged_files(settings)
    assert not Job.objects.exists()


def test_cancelled_case_refuses_imaging(
    api_as,
    surgeon,
    coordinator,
    case_at,
    series_files,
    settings,
    django_capture_on_commit_callbacks,
):
    from cases.services import case_cancel

    case = case_cancel(
        actor=coordinator, case=case_at(S.SUBMITTED), reason="Patient moved away"
    )
    answer = post(
        api_as(surgeon),
        case,
        [as_upload(series_files[0])],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 409
    assert not staged_files(settings)


def test_zip_members_are_checked(
    api_as, surgeon, submitted, series_files, django_capture_on_commit_callbacks
):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("a.dcm", series_files[0].read_bytes())
    members = {
        "ok/1.dcm": series_files[0].read_bytes(),
        "../../etc/evil.dcm": series_files[1].read_bytes(),
        "/abs/evil.dcm": series_files[2].read_bytes(),
        "bomb.dcm": b"\0" * (5 * 1024 * 1024),
        "inner.zip": inner.getvalue(),
        "renamed.dcm": inner.getvalue(),
        "notes.txt": b"hello, this is not DICOM" * 20,
    }
    answer = post(
        api_as(surgeon),
        submitted,
        [zipped(members)],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 202, answer.json()
    reasons = {r["file"]: r["reason"] for r in answer.json()["rejected"]}
    assert answer.json()["staged"] == 1
    assert "leaving the archive" in reasons["upload 1, member 2"]
    assert "Absolute paths" in reasons["upload 1, member 3"]
    assert "ZIP bomb" in reasons["upload 1, member 4"]
    assert "Nested archives" in reasons["upload 1, member 5"]
    assert "Nested archives" in reasons["upload 1, member 6"]
    assert "Not a DICOM file" in reasons["upload 1, member 7"]


def test_a_zip_with_a_symlink_member_is_refused_per_member(
    api_as, surgeon, submitted, series_files, django_capture_on_commit_callbacks
):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.dcm", series_files[0].read_bytes())
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    upload = SimpleUploadedFile("s.zip", buffer.getvalue(), "application/zip")
    answer = post(
        api_as(surgeon), submitted, [upload], django_capture_on_commit_callbacks
    )
    assert answer.status_code == 202
    assert answer.json()["rejected"] == [
        {
            "file": "upload 1, member 2",
            "reason": "Symbolic links are not accepted in archives.",
        }
    ]


def test_oversized_upload_answers_413(
    api_as,
    surgeon,
    submitted,
    series_files,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.PSI_UPLOAD_MAX_BYTES = 100_000
    answer = post(
        api_as(surgeon),
        submitted,
        [as_upload(series_files[0])],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 413
    assert "limit of 100000 bytes" in answer.json()["detail"]
    assert not staged_files(settings)


def test_truncated_dicom_gets_a_per_file_reason(
    api_as, surgeon, submitted, series_files, django_capture_on_commit_callbacks
):
    cut = SimpleUploadedFile("cut.dcm", series_files[0].read_bytes()[:-5000])
    answer = post(
        api_as(surgeon),
        submitted,
        [cut, *[as_upload(p) for p in series_files[1:]]],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 202
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert job.result["failed"] == [
        {"file": "#1", "reason": "The file is truncated: its image data is incomplete."}
    ]


def test_nothing_dicom_answers_400(
    api_as, surgeon, submitted, django_capture_on_commit_callbacks
):
    junk = SimpleUploadedFile("a.txt", b"plain text" * 100)
    answer = post(
        api_as(surgeon), submitted, [junk], django_capture_on_commit_callbacks
    )
    assert answer.status_code == 400
    assert answer.json()["rejected"][0]["file"] == "upload 1"


def test_outsider_gets_404(
    api_as,
    outsider,
    submitted,
    series_files,
    settings,
    django_capture_on_commit_callbacks,
):
    answer = post(
        api_as(outsider),
        submitted,
        [as_upload(series_files[0])],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 404
    assert not staged_files(settings)


def test_auditor_may_see_but_not_upload(
    api_as, auditor, submitted, series_files, django_capture_on_commit_callbacks
):
    answer = post(
        api_as(auditor),
        submitted,
        [as_upload(series_files[0])],
        django_capture_on_commit_callbacks,
    )
    assert answer.status_code == 403


def test_anonymous_gets_401(api, submitted):
    assert api.post(url(submitted), {}, format="multipart").status_code == 401
    assert api.get("/api/v1/studies/").status_code == 401


def test_outsider_sees_no_study_or_preview(
    api_as,
    surgeon,
    outsider,
    submitted,
    series_files,
    django_capture_on_commit_callbacks,
):
    post(
        api_as(surgeon),
        submitted,
        [as_upload(p) for p in series_files],
        django_capture_on_commit_callbacks,
    )
    study = ImagingStudy.objects.get(case=submitted)
    series = study.series.get()
    client = api_as(outsider)
    assert client.get("/api/v1/studies/").json()["results"] == []
    assert client.get(f"/api/v1/studies/{study.pk}/").status_code == 404
    preview = f"/api/v1/series/{series.pk}/previews/axial.png"
    assert client.get(preview).status_code == 404


def test_a_preview_whose_bytes_changed_is_refused_not_served(
    api_as, surgeon, submitted, series_files, django_capture_on_commit_callbacks
):
    client = api_as(surgeon)
    post(
        client,
        submitted,
        [as_upload(p) for p in series_files],
        django_capture_on_commit_callbacks,
    )
    series = ImagingStudy.objects.get(case=submitted).series.get()
    preview = f"/api/v1/series/{series.pk}/previews/axial.png"
    intact = client.get(preview)
    assert intact.status_code == 200
    assert b"".join(intact.streaming_content).startswith(b"\x89PNG")

    stored = StoredFile.objects.get(pk=series.previews["axial"])
    target = Path(default_storage.path(stored.storage_name))
    target.chmod(0o600)
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")

    answer = client.get(preview)
    assert answer.status_code == 500
    assert answer.json()["code"] == "file_integrity"


def test_admin_shows_the_study_read_only_with_previews(
    client,
    superuser,
    surgeon,
    submitted,
    series_files,
    api_as,
    django_capture_on_commit_callbacks,
):
    post(
        api_as(surgeon),
        submitted,
        [as_upload(p) for p in series_files],
        django_capture_on_commit_callbacks,
    )
    study = ImagingStudy.objects.get(case=submitted)
    client.force_login(superuser)
    page = client.get(f"/admin/cases/imagingstudy/{study.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<img" in html and "previews/axial.png" in html
    assert "proposed for design" in html


def test_admin_profile_limits_are_validated():
    from cases.imaging.admin import AcquisitionProfileForm

    limits = quality.default_profile("orbital").as_dict()
    good = AcquisitionProfileForm(data={"region": "orbital", "limits": limits})
    assert good.is_valid(), good.errors
    bad = AcquisitionProfileForm(
        data={"region": "orbital", "limits": {**limits, "min_matrix": -1}}
    )
    assert not bad.is_valid()
    assert "min_matrix" in str(bad.errors["limits"])


def test_studies_are_listed_by_case_and_status(
    api_as,
    surgeon,
    submitted,
    case_at,
    series_files,
    django_capture_on_commit_callbacks,
):
    other = case_at(S.SUBMITTED)
    files = [as_upload(p) for p in series_files]
    post(api_as(surgeon), submitted, files, django_capture_on_commit_callbacks)
    client = api_as(surgeon)

    def ids(**params):
        answer = client.get("/api/v1/studies/", params)
        assert answer.status_code == 200, answer.json()
        return [s["case"] for s in answer.json()["results"]]

    assert len(ids(case=submitted.pk)) == 1
    assert ids(case=other.pk) == []
    assert len(ids(status="accepted")) == 1
    assert ids(status="rejected") == []
    refused = client.get("/api/v1/studies/", {"status": "judged"})
    assert refused.status_code == 400
    assert "status" in str(refused.json())
