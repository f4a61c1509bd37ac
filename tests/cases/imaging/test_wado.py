"""WADO-RS transfer syntax negotiation (PS3.18 8.7.3): Explicit VR Little Endian by
default, ``*`` as stored, the header re-encoded but never the pixel bytes, and 406
with a reason for what cannot be produced that way."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from django.core.files.storage import default_storage
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from cases.imaging import quality
from cases.imaging.dicomweb.syntax import accepted_syntaxes
from cases.imaging.models import AcquisitionProfile, ImagingInstance, ImagingStudy
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.services import ingest_enqueue
from cases.imaging.staging import stage_chunks
from cases.models import Case
from psi.files import FileIntegrityError, stored_file_open

pytestmark = pytest.mark.django_db

DICOM = 'multipart/related; type="application/dicom"'
SLICES = 3


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"


@pytest.fixture
def stored_in(case_at, surgeon, tmp_path, django_capture_on_commit_callbacks):
    """A study of a new case ingested from a phantom written in ``syntax``."""
    limits = quality.default_profile("cranial").as_dict()
    AcquisitionProfile.objects.get_or_create(region="cranial", limits=limits)

    def make(syntax: str) -> ImagingStudy:
        case = case_at(Case.Status.SUBMITTED)
        spec = PhantomSpec(slices=SLICES, rows=32, columns=32, transfer_syntax=syntax)
        paths = write_series(tmp_path / syntax, spec)
        staged = [str(stage_chunks(case.pk, [Path(p).read_bytes()])) for p in paths]
        with django_capture_on_commit_callbacks(execute=True):
            ingest_enqueue(actor=surgeon, case=case, paths=staged, source="upload")
        study = ImagingStudy.objects.get(case=case)
        assert set(
            ImagingInstance.objects.filter(study=study).values_list(
                "transfer_syntax_uid", flat=True
            )
        ) == {syntax}
        return study

    return make


def retrieve(client, user, study, accept: str | None = None):
    client.force_login(user)
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    return client.get(f"/dicomweb/studies/{study.study_uid}", **headers)


def parts(response) -> list[tuple[str, bytes]]:
    """Each part's Content-Type and content (RFC 2046, parsed here independently of
    the server's own multipart code)."""
    content_type = response["Content-Type"]
    assert content_type.startswith(DICOM)
    boundary = content_type.rsplit("boundary=", 1)[1].encode()
    body = b"".join(response.streaming_content)
    out = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, content = chunk.partition(b"\r\n\r\n")
        (line,) = [h for h in head.decode().split("\r\n") if h]
        assert line.lower().startswith("content-type:")
        out.append((line.split(":", 1)[1].strip(), content.removesuffix(b"\r\n")))
    return out


def stored_objects(study) -> list[bytes]:
    instances = ImagingInstance.objects.filter(study=study).select_related("file")
    out = []
    for instance in instances.order_by("series_id", "position", "instance_number"):
        with stored_file_open(instance.file) as handle:
            out.append(handle.read())
    return out


def test_default_is_explicit_vr_little_endian_with_pixels_untouched(
    client, designer, stored_in
):
    study = stored_in(ImplicitVRLittleEndian)
    answer = retrieve(client, designer, study)
    assert answer.status_code == 200
    assert "Accept" in answer["Vary"]
    got = parts(answer)
    assert len(got) == SLICES
    for (content_type, content), original in zip(
        got, stored_objects(study), strict=True
    ):
        assert (
            content_type
            == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        )
        sent = pydicom.dcmread(io.BytesIO(content))
        kept = pydicom.dcmread(io.BytesIO(original))
        assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert sent.PixelData == kept.PixelData
        assert sent.SOPInstanceUID == kept.SOPInstanceUID
        assert content[128:132] == b"DICM"


def test_an_altered_object_ends_the_answer_before_its_part(client, designer, stored_in):
    study = stored_in(ExplicitVRLittleEndian)
    instances = ImagingInstance.objects.filter(study=study).select_related("file")
    second = instances.order_by("position", "instance_number")[1].file
    target = Path(default_storage.path(second.storage_name))
    target.chmod(0o600)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte flipped on disk
    target.write_bytes(bytes(data))

    answer = retrieve(client, designer, study, DICOM)
    assert answer.status_code == 200  # the first object went out already
    boundary = answer["Content-Type"].rsplit("boundary=", 1)[1].encode()
    sent = []
    with pytest.raises(FileIntegrityError):
        for chunk in answer.streaming_content:
            sent.append(chunk)
    body = b"".join(sent)
    assert body.count(b"--" + boundary) == 1  # the first part only, never closed
    assert not body.endswith(b"--" + boundary + b"--\r\n")


def test_star_never_answers_in_implicit_vr(client, designer, stored_in):
    # Implicit VR Little Endian is not used with web services (PS3.18 8.7.3).
    study = stored_in(ImplicitVRLittleEndian)
    answer = retrieve(client, designer, study, f"{DICOM}; transfer-syntax=*")
    assert answer.status_code == 200
    assert {ct for ct, _ in parts(answer)} == {
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    }


@pytest.mark.parametrize("accept", [f"{DICOM}; transfer-syntax=*", None, "*/*"])
def test_explicit_little_endian_is_sent_byte_for_byte(
    client, designer, stored_in, accept
):
    study = stored_in(ExplicitVRLittleEndian)
    answer = retrieve(client, designer, study, accept)
    assert answer.status_code == 200
    assert [c for _, c in parts(answer)] == stored_objects(study)


def test_deflated_goes_as_stored_or_inflated(client, designer, stored_in):
    study = stored_in(DeflatedExplicitVRLittleEndian)
    as_stored = retrieve(client, designer, study, f"{DICOM}; transfer-syntax=*")
    assert [c for _, c in parts(as_stored)] == stored_objects(study)
    inflated = parts(retrieve(client, designer, study, DICOM))
    kept = pydicom.dcmread(io.BytesIO(stored_objects(study)[0]))
    sent = pydicom.dcmread(io.BytesIO(inflated[0][1]))
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sent.PixelData == kept.PixelData


@pytest.mark.parametrize(
    "accept",
    [
        f"{DICOM}; transfer-syntax=*",
        f"{DICOM}; transfer-syntax={JPEGBaseline8Bit}",
        # Held only in lossy form: the default gives way (PS3.18 8.7.3.4).
        DICOM,
    ],
)
def test_lossy_study_is_sent_as_stored(client, designer, stored_in, accept):
    study = stored_in(JPEGBaseline8Bit)
    answer = retrieve(client, designer, study, accept)
    assert answer.status_code == 200
    got = parts(answer)
    assert [c for _, c in got] == stored_objects(study)
    assert {ct for ct, _ in got} == {
        f"application/dicom; transfer-syntax={JPEGBaseline8Bit}"
    }


def test_uncompressed_asked_of_a_compressed_study_is_406(client, designer, stored_in):
    study = stored_in(JPEGBaseline8Bit)
    answer = retrieve(
        client, designer, study, f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert answer.status_code == 406
    reason = answer.content.decode()
    assert JPEGBaseline8Bit in reason and "never re-encoded" in reason


@pytest.mark.parametrize(
    "syntax", [JPEG2000Lossless, ImplicitVRLittleEndian, "1.2.840.10008.1.2.2"]
)
def test_syntax_we_cannot_produce_is_406(client, designer, stored_in, syntax):
    study = stored_in(ExplicitVRLittleEndian)
    answer = retrieve(client, designer, study, f"{DICOM}; transfer-syntax={syntax}")
    assert answer.status_code == 406
    assert syntax in answer.content.decode()


def test_the_first_acceptable_choice_wins(client, designer, stored_in):
    study = stored_in(ExplicitVRLittleEndian)
    accept = (
        f"{DICOM}; transfer-syntax={JPEG2000Lossless}, "
        f"multipart/related; type=application/dicom; transfer-syntax=*; q=0.5"
    )
    answer = retrieve(client, designer, study, accept)
    assert answer.status_code == 200
    assert [c for _, c in parts(answer)] == stored_objects(study)


@pytest.mark.parametrize(
    "accept", ["application/json", 'multipart/related; type="image/jpeg"']
)
def test_other_media_types_are_406(client, designer, stored_in, accept):
    study = stored_in(ExplicitVRLittleEndian)
    assert retrieve(client, designer, study, accept).status_code == 406


def test_malformed_transfer_syntax_is_400(client, designer, stored_in):
    study = stored_in(ExplicitVRLittleEndian)
    answer = retrieve(client, designer, study, f"{DICOM}; transfer-syntax=bogus")
    assert answer.status_code == 400


def test_outsider_gets_404_whatever_the_accept(client, outsider, stored_in):
    study = stored_in(JPEGBaseline8Bit)
    accept = f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}"
    assert retrieve(client, outsider, study, accept).status_code == 404


def test_instance_and_series_negotiate_too(client, designer, stored_in):
    study = stored_in(ImplicitVRLittleEndian)
    instance = ImagingInstance.objects.filter(study=study).select_related("series")[0]
    client.force_login(designer)
    base = f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}"
    one = client.get(f"{base}/instances/{instance.sop_instance_uid}")
    ((content_type, _),) = parts(one)
    assert content_type.endswith(ExplicitVRLittleEndian)
    refused = client.get(
        base, HTTP_ACCEPT=f"{DICOM}; transfer-syntax={JPEG2000Lossless}"
    )
    assert refused.status_code == 406


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", [None]),
        ("*/*", [None]),
        (DICOM, [None]),
        ("multipart/related", [None]),
        (f"{DICOM}; transfer-syntax=*", ["*"]),
        (
            f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.2, "
            f'multipart/related; type="application/dicom"; q=0.9',
            [None, "1.2.840.10008.1.2.4.50"],
        ),
        (f"application/json, {DICOM}; q=0, */*; q=0.1", [None]),
    ],
)
def test_accept_header_is_read_in_order_of_preference(accept, expected):
    assert accepted_syntaxes(accept) == expected
