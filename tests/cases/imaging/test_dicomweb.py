"""DICOMweb (STOW-RS, QIDO-RS, WADO-RS) through a real client and a live ASGI server.

uvicorn runs in a thread of the test process, so it shares the settings (staging and
storage in tmp, eager Celery) and the test database on SQLite and PostgreSQL alike;
ASGI matters because dicomweb-client sends bodies above 1 MB chunked, which WSGI
servers drop.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
import uvicorn
from dicomweb_client.api import DICOMwebClient
from knox.models import AuthToken
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless

from cases.imaging import quality
from cases.imaging.models import AcquisitionProfile, ImagingInstance, ImagingStudy
from cases.imaging.phantom import PhantomSpec, series
from cases.models import Case
from psi.models import Job

S = Case.Status
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"


@pytest.fixture(autouse=True)
def cranial_profile(transactional_db):
    limits = quality.default_profile("cranial").as_dict()
    limits["min_coverage_mm"] = 5.0
    return AcquisitionProfile.objects.create(region="cranial", limits=limits)


@pytest.fixture
def server(transactional_db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        "psi.asgi:application",
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
    )
    live = uvicorn.Server(config)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not live.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    live.should_exit = True
    thread.join(timeout=10)


def token_for(user) -> str:
    return AuthToken.objects.create(user)[1]


def client_for(server, user) -> DICOMwebClient:
    return DICOMwebClient(
        url=f"{server}/dicomweb",
        headers={"Authorization": f"Token {token_for(user)}"},
    )


def phantom(case, *, slices=6, size=64, seed=7, **spec):
    datasets = list(
        series(PhantomSpec(slices=slices, rows=size, columns=size, seed=seed, **spec))
    )
    for ds in datasets:
        ds.AccessionNumber = case.reference
    return datasets


def uids(item, tag) -> str:
    return item[tag]["Value"][0]


def test_stow_qido_wado_round_trip(server, case_at, surgeon, designer):
    case = case_at(S.SUBMITTED)
    sent = phantom(case)
    answer = client_for(server, surgeon).store_instances(sent)
    referenced = answer.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == {
        ds.SOPInstanceUID for ds in sent
    }
    assert "FailedSOPSequence" not in answer
    assert ImagingInstance.objects.filter(case=case).count() == len(sent)
    job = Job.objects.get(kind="imaging.ingest")
    assert job.status == Job.Status.SUCCEEDED, job.error
    study = ImagingStudy.objects.get(case=case)
    assert study.source == ImagingStudy.Source.DICOMWEB
    # The retrieve URLs point at the de-identified objects.
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study.study_uid}")

    client = client_for(server, designer)
    found = client.search_for_studies()
    assert len(found) == 1
    assert uids(found[0], "0020000D") == study.study_uid != sent[0].StudyInstanceUID
    assert uids(found[0], "00100020") == case.patient.pseudonym
    assert uids(found[0], "00080050") == case.reference
    assert int(uids(found[0], "00201208")) == len(sent)
    assert "Testperson" not in str(found) and "PHANTOM" not in str(found)
    assert client.search_for_studies(search_filters={"AccessionNumber": "nope"}) == []
    pseudonym_word = case.patient.pseudonym.rsplit("-", 1)[1].lower()
    fuzzy = client.search_for_studies(
        fuzzymatching=True,
        search_filters={"PatientName": pseudonym_word, "ModalitiesInStudy": "CT"},
        fields=["StudyTime"],
    )
    assert [uids(f, "0020000D") for f in fuzzy] == [study.study_uid]
    assert client.search_for_studies(search_filters={"StudyDate": "-19000101"}) == []
    found_series = client.search_for_series(study.study_uid)
    series_uid = uids(found_series[0], "0020000E")
    assert series_uid != sent[0].SeriesInstanceUID
    instances = client.search_for_instances(study.study_uid, series_uid)
    assert len(instances) == len(sent)
    originals = {ds.SOPInstanceUID for ds in sent}
    assert not {uids(i, "00080018") for i in instances} & originals

    by_number = {int(ds.InstanceNumber): ds for ds in sent}
    for item in instances:
        got = client.retrieve_instance(
            study.study_uid, series_uid, uids(item, "00080018")
        )
        assert str(got.PatientName) == case.patient.pseudonym
        assert got.PixelData == by_number[int(got.InstanceNumber)].PixelData
    metadata = client.retrieve_series_metadata(study.study_uid, series_uid)
    assert len(metadata) == len(sent)
    assert all("7FE00010" not in m for m in metadata)
    assert len(client.retrieve_study(study.study_uid)) == len(sent)


def test_wado_negotiates_the_transfer_syntax_with_the_client(
    server, case_at, surgeon, designer
):
    case = case_at(S.SUBMITTED)
    sent = phantom(case, transfer_syntax=ImplicitVRLittleEndian)
    client_for(server, surgeon).store_instances(sent)
    instance = ImagingInstance.objects.filter(case=case).select_related("series")[0]
    assert instance.transfer_syntax_uid == ImplicitVRLittleEndian
    where = (
        instance.study.study_uid,
        instance.series.series_uid,
        instance.sop_instance_uid,
    )
    client = client_for(server, designer)
    got = client.retrieve_instance(
        *where, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = next(ds for ds in sent if ds.InstanceNumber == got.InstanceNumber)
    assert got.PixelData == original.PixelData
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance(
            *where, media_types=(("application/dicom", JPEG2000Lossless),)
        )
    assert refused.value.response.status_code == 406


def test_stow_above_one_megabyte_is_chunked_and_stored(server, case_at, surgeon):
    case = case_at(S.SUBMITTED)
    sent = phantom(case, slices=20, size=256, seed=11)
    assert sum(len(ds.PixelData) for ds in sent) > 1024 * 1024
    answer = client_for(server, surgeon).store_instances(sent)
    assert len(answer.ReferencedSOPSequence) == 20
    assert ImagingInstance.objects.filter(case=case).count() == 20


def test_outsider_sees_nothing(server, case_at, surgeon, outsider):
    case = case_at(S.SUBMITTED)
    client_for(server, surgeon).store_instances(phantom(case))
    study = ImagingStudy.objects.get(case=case)
    instance = ImagingInstance.objects.filter(study=study).first()
    client = client_for(server, outsider)
    assert client.search_for_studies() == []
    assert client.search_for_series(study.study_uid) == []
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance(
            study.study_uid, instance.series.series_uid, instance.sop_instance_uid
        )
    assert refused.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_study_metadata(study.study_uid)
    assert refused.value.response.status_code == 404


def test_outsider_cannot_send_to_the_case(server, case_at, outsider, settings):
    case = case_at(S.SUBMITTED)
    with pytest.raises(requests.HTTPError) as refused:
        client_for(server, outsider).store_instances(phantom(case))
    assert refused.value.response.status_code == 409
    assert not ImagingInstance.objects.exists()
    assert not list(settings.PSI_STAGING_DIR.rglob("*.dcm"))


def test_without_consent_stow_answers_409_and_stores_nothing(
    server, case_at, surgeon, settings
):
    from consent.models import Consent
    from consent.services import consent_withdraw

    case = case_at(S.SUBMITTED)
    for consent in Consent.objects.filter(patient=case.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")
    sent = phantom(case)
    with pytest.raises(requests.HTTPError) as refused:
        client_for(server, surgeon).store_instances(sent)
    response = refused.value.response
    assert response.status_code == 409
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    failed = response.json()["00081198"]["Value"]
    assert len(failed) == len(sent)
    assert {uids(f, "00081197") for f in failed} == {0x0110}
    assert "consent" in response.headers["Warning"].lower()
    assert not ImagingInstance.objects.exists()
    assert not Job.objects.filter(kind="imaging.ingest").exists()
    assert not list(settings.PSI_STAGING_DIR.rglob("*.dcm"))


def test_case_header_overrides_accession(server, case_at, surgeon):
    case = case_at(S.SUBMITTED)
    sent = phantom(case)
    for ds in sent:
        ds.AccessionNumber = "SOMETHING-ELSE"
    client = DICOMwebClient(
        url=f"{server}/dicomweb",
        headers={
            "Authorization": f"Token {token_for(surgeon)}",
            "X-PSI-Case": case.reference,
        },
    )
    answer = client.store_instances(sent)
    assert len(answer.ReferencedSOPSequence) == len(sent)
    assert ImagingInstance.objects.filter(case=case).count() == len(sent)


def test_some_failed_answers_202(server, case_at, surgeon):
    case = case_at(S.SUBMITTED)
    sent = phantom(case)
    sent[0].AccessionNumber = "C-0000-NOPE"
    client = client_for(server, surgeon)
    answer = client.store_instances(sent)
    assert len(answer.ReferencedSOPSequence) == len(sent) - 1
    assert len(answer.FailedSOPSequence) == 1
    assert answer.FailedSOPSequence[0].FailureReason == 0x0110


def test_wrong_content_type_is_415(server, surgeon):
    answer = requests.post(
        f"{server}/dicomweb/studies",
        data=b"{}",
        headers={
            "Authorization": f"Token {token_for(surgeon)}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    assert answer.status_code == 415


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ('multipart/related; type="application/dicom+json"; boundary=xyz', 415),
        ("multipart/related; type=application/dicom+json; boundary=xyz", 415),
        ("multipart/related; boundary=xyz", 415),
        ('multipart/related; type="application/dicom"', 400),  # no boundary
        # Media types and parameter names are case-insensitive (RFC 9110 8.3.1).
        ('Multipart/Related; Type="Application/DICOM"; boundary=xyz', 400),
    ],
)
def test_stow_reads_the_content_type_parameters(client, surgeon, content_type, status):
    answer = client.post(
        "/dicomweb/studies",
        data=b"x",  # the test client drops the Content-Type of an empty body
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Token {token_for(surgeon)}",
    )
    assert answer.status_code == status


def test_methods_other_than_read_and_store_are_405(client, surgeon):
    auth = {"HTTP_AUTHORIZATION": f"Token {token_for(surgeon)}"}
    assert client.delete("/dicomweb/studies", **auth).status_code == 405
    assert client.delete("/dicomweb/studies/1.2.3", **auth).status_code == 405
    assert client.post("/dicomweb/studies/1.2.3/metadata", **auth).status_code == 405
    assert client.put("/dicomweb/studies/1.2.3/series", **auth).status_code == 405


def test_unparsable_body_is_400(server, surgeon):
    answer = requests.post(
        f"{server}/dicomweb/studies",
        data=b"--xyz\r\nContent-Type: application/dicom\r\n\r\ntruncated",
        headers={
            "Authorization": f"Token {token_for(surgeon)}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz',
        },
        timeout=10,
    )
    assert answer.status_code == 400


def test_anonymous_is_401(server):
    assert requests.get(f"{server}/dicomweb/studies", timeout=10).status_code == 401
    answer = requests.post(
        f"{server}/dicomweb/studies",
        data=b"",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
        timeout=10,
    )
    assert answer.status_code == 401
    bad = {"Authorization": "Token not-a-token"}
    refused = requests.get(f"{server}/dicomweb/studies", headers=bad, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Token"
    assert "Invalid token" in refused.text


def test_stow_into_another_study_is_refused(server, case_at, surgeon):
    case = case_at(S.SUBMITTED)
    sent = phantom(case)
    with pytest.raises(requests.HTTPError) as refused:
        client_for(server, surgeon).store_instances(sent, study_instance_uid="1.2.3.4")
    response = refused.value.response
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert {uids(f, "00081197") for f in failed} == {0xA900}
    assert not ImagingInstance.objects.exists()


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_multipart_reader_splits_parts_at_any_chunk_size(chunk):
    import io

    from cases.imaging.dicomweb.multipart import MultipartReader

    parts = [b"A" * 100, b"", b"\r\n--xy not a boundary\r\n", b"Z"]
    body = b"preamble"
    for part in parts:
        body += b"\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\n" + part
    body += b"\r\n--xyz--\r\nepilogue"
    reader = MultipartReader(io.BytesIO(body), b"xyz", chunk=chunk)
    got = [(h, b"".join(c)) for h, c in reader.parts()]
    assert [c for _, c in got] == parts
    assert all(h == {"content-type": "application/dicom"} for h, _ in got)
