"""The imaging ingest: staged objects become one de-identified, checked study."""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import logging
import os
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from PIL import Image
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from cases.imaging import quality
from cases.imaging.models import (
    AcquisitionProfile,
    ImagingIdentityLink,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    PatientImagingKey,
)
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.services import (
    case_for_accession,
    imaging_gate,
    ingest_enqueue,
    study_ingest,
    study_review_passed,
    study_review_sign,
)
from cases.imaging.staging import Staged, StagedBatch, stage_chunks, staging_dir
from cases.models import Case
from consent.services import ConsentMissing
from psi import durable
from psi.errors import Conflict, PermissionRefused
from psi.files import stored_file_open
from psi.jobs import job_claim
from psi.models import AuditEvent, Job, StoredFile
from tests.factories import PASSWORD

S = Case.Status
SLICES = 30


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"


@pytest.fixture
def cranial_profile(db):
    """The cranial profile with a coverage a 30-slice phantom meets."""
    limits = quality.default_profile("cranial").as_dict()
    limits["min_coverage_mm"] = 25.0
    return AcquisitionProfile.objects.create(region="cranial", limits=limits)


@pytest.fixture(scope="module")
def good_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    return write_series(folder, PhantomSpec(slices=SLICES, seed=11))


@pytest.fixture(scope="module")
def thick_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("thick")
    return write_series(folder, PhantomSpec(slices=16, slice_thickness=2.0, seed=12))


def stage(case, paths) -> list[str]:
    return [str(stage_chunks(case.pk, [Path(p).read_bytes()])) for p in paths]


def from_node(case, references, capture, ae_title="HOSPA_PACS") -> Job:
    """Ingest staged objects as the listener hands them over (no user, an AE
    title), run to the end."""
    with capture(execute=True):
        job = ingest_enqueue(
            actor=None,
            case=case,
            paths=references,
            source="cstore",
            calling_ae_title=ae_title,
        )
    job.refresh_from_db()
    return job


def ingest(case, actor, paths, capture) -> Job:
    staged = stage(case, paths)
    with capture(execute=True):
        job = ingest_enqueue(actor=actor, case=case, paths=staged, source="upload")
    job.refresh_from_db()
    return job


@pytest.fixture
def submitted(case_at):
    return case_at(S.SUBMITTED)


def test_the_staged_names_are_made_durable_before_a_job_names_them(
    submitted, surgeon, good_series, monkeypatch
):
    """Upload, STOW-RS and the listener all hand staged files over through
    ingest_enqueue: the staging folder is fsynced first (a crash after the
    sender was told "stored" must not lose the files' names)."""
    staged = stage(submitted, good_series[:3])
    folder = staging_dir(submitted.pk)
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor):
        if os.path.samestat(os.fstat(descriptor), folder.stat()):
            synced.append(Job.objects.filter(kind="imaging.ingest").count())
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    ingest_enqueue(actor=surgeon, case=submitted, paths=staged, source="upload")
    assert synced == [0]  # once, before the job existed
    ingest_enqueue(actor=surgeon, case=submitted, paths=[], source="upload")
    assert synced == [0]  # nothing staged, nothing to sync


def test_good_series_is_accepted_and_moves_the_case(
    submitted, surgeon, good_series, cranial_profile, django_capture_on_commit_callbacks
):
    job = ingest(submitted, surgeon, good_series, django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["accepted"] == SLICES
    assert job.result["failed"] == []
    study = ImagingStudy.objects.get(pk=job.result["study_id"])
    assert study.status == ImagingStudy.Status.ACCEPTED
    assert study.proposed_series is not None
    assert study.instance_count == SLICES
    assert study.deid_report["objects"] == SLICES
    series = study.proposed_series
    assert series.quality_verdict in ("pass", "warn")
    assert set(series.previews) >= {"middle_axial", "axial", "coronal", "sagittal"}
    png = StoredFile.objects.get(pk=series.previews["middle_axial"])
    with stored_file_open(png) as handle:
        assert Image.open(io.BytesIO(handle.read())).format == "PNG"
    submitted.refresh_from_db()
    assert submitted.status == S.IMAGING_RECEIVED
    event = submitted.events.last()
    assert "on behalf of user" in event.reason
    assert event.actor == surgeon
    assert AuditEvent.objects.filter(action="imaging.study_ingested").exists()
    assert ImagingIdentityLink.objects.filter(study=study, kind="instance").count() == (
        SLICES
    )
    assert PatientImagingKey.objects.get(patient=submitted.patient)
    assert not list(staging_dir(submitted.pk).glob("*.dcm"))
    assert ImagingInstance.history.count() == SLICES


def test_same_series_twice_is_stored_once(
    submitted, surgeon, good_series, cranial_profile, django_capture_on_commit_callbacks
):
    ingest(submitted, surgeon, good_series, django_capture_on_commit_callbacks)
    files = StoredFile.objects.count()
    job = ingest(submitted, surgeon, good_series, django_capture_on_commit_callbacks)
    assert job.result["accepted"] == 0
    assert job.result["skipped_duplicates"] == SLICES
    assert ImagingInstance.objects.filter(case=submitted).count() == SLICES
    assert ImagingStudy.objects.filter(case=submitted).count() == 1
    assert StoredFile.objects.count() == files


def test_a_file_of_a_less_simple_shape_is_ingested_through_the_general_path(
    submitted, surgeon, tmp_path, django_capture_on_commit_callbacks
):
    # Deflated: the pixel data cannot be copied behind a new header byte for byte.
    spec = PhantomSpec(
        slices=2,
        rows=64,
        columns=64,
        seed=13,
        transfer_syntax=DeflatedExplicitVRLittleEndian,
    )
    paths = write_series(tmp_path, spec)

    job = ingest(submitted, surgeon, paths, django_capture_on_commit_callbacks)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["accepted"] == 2, job.result
    instance = ImagingInstance.objects.filter(case=submitted).order_by("pk").first()
    with stored_file_open(instance.file) as handle:
        stored = dcmread(handle)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert str(stored.PatientName) == submitted.patient.pseudonym
    assert not stored.get("PatientBirthDate")
    assert stored.pixel_array.tobytes() in {
        dcmread(p).pixel_array.tobytes() for p in paths
    }


def test_thick_slices_are_rejected_and_a_rescan_requested(
    submitted,
    case_manager,
    thick_series,
    cranial_profile,
    django_capture_on_commit_callbacks,
):
    job = ingest(
        submitted, case_manager, thick_series, django_capture_on_commit_callbacks
    )
    study = ImagingStudy.objects.get(pk=job.result["study_id"])
    assert study.status == ImagingStudy.Status.REJECTED
    assert study.proposed_series is None
    reasons = " ".join(study.quality_report["verdict"]["reasons"])
    assert "2 mm" in reasons or "2.0 mm" in reasons or "thick" in reasons
    submitted.refresh_from_db()
    assert submitted.status == S.SUBMITTED
    rescan = submitted.events.filter(transition="request_rescan").get()
    assert "cannot be used for planning" in rescan.reason
    assert "on behalf of user" in rescan.reason


def test_leak_spot_check_stored_bytes_carry_no_identity(
    submitted, surgeon, good_series, cranial_profile, django_capture_on_commit_callbacks
):
    import pydicom

    original = pydicom.dcmread(good_series[0], stop_before_pixels=True)
    ingest(submitted, surgeon, good_series[:3], django_capture_on_commit_callbacks)
    for instance in ImagingInstance.objects.filter(case=submitted):
        with stored_file_open(instance.file) as handle:
            data = handle.read()
        # Device identity (station "PHANTOMCT1") is kept on purpose; the patient's
        # name and id are not.
        assert str(original.PatientName).encode() not in data
        assert original.PatientID.encode() not in data
        assert original.StudyInstanceUID.encode() not in data
        assert original.SOPInstanceUID.encode() not in data


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_each_stored_file_has_the_hash_and_size_recorded_for_it(
    submitted, surgeon, tmp_path, syntax, django_capture_on_commit_callbacks
):
    # Hashed while written: the fast path (header encoded, pixels copied) and
    # pydicom's general path (deflate) alike.
    spec = PhantomSpec(slices=2, rows=64, columns=64, seed=5, transfer_syntax=syntax)
    paths = write_series(tmp_path, spec)
    ingest(submitted, surgeon, paths, django_capture_on_commit_callbacks)

    instances = ImagingInstance.objects.filter(case=submitted).select_related("file")
    assert len(instances) == 2
    for instance in instances:
        with stored_file_open(instance.file) as handle:
            data = handle.read()
        assert hashlib.sha256(data).hexdigest() == instance.file.sha256
        assert len(data) == instance.file.size


def test_stored_files_are_durable_before_the_rows_naming_them_are_written(
    submitted, surgeon, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    synced: dict[Path, bool] = {}  # path -> whether a row named it at the time
    real = durable._fsync

    def recording(path, flags):
        store = Path(default_storage.location)
        if Path(path).is_relative_to(store):  # not the staging folder
            name = str(Path(path).relative_to(store))
            synced[Path(path)] = StoredFile.objects.filter(storage_name=name).exists()
        real(path, flags)

    monkeypatch.setattr(durable, "_fsync", recording)
    paths = write_series(tmp_path, PhantomSpec(slices=3, rows=64, columns=64, seed=6))
    ingest(submitted, surgeon, paths, django_capture_on_commit_callbacks)

    instances = ImagingInstance.objects.filter(case=submitted).select_related("file")
    stored = [Path(default_storage.path(i.file.storage_name)) for i in instances]
    assert len(stored) == 3
    for path in stored:
        assert synced[path] is False  # synced before its row existed
        assert path.parent in synced  # and so was the folder naming it


def test_non_conformant_values_are_not_quoted_into_the_logs(
    submitted, surgeon, tmp_path, caplog, recwarn, django_capture_on_commit_callbacks
):
    # A birth date in the wrong format, an accession number with a bad character:
    # pydicom's checks would warn quoting them.
    paths = write_series(tmp_path, PhantomSpec(slices=2, rows=64, columns=64, seed=7))
    for path in paths:
        ds = dcmread(path)
        ds[0x00100030] = DataElement(0x00100030, "DA", "1951-03-17")
        ds[0x00200010] = DataElement(0x00200010, "SH", "ST\u00dcDY-NOT-SH")
        ds.save_as(path, enforce_file_format=True)
    recwarn.clear()
    caplog.set_level(logging.DEBUG)

    job = ingest(submitted, surgeon, paths, django_capture_on_commit_callbacks)

    assert job.result["accepted"] == 2, job.result
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "1951" not in said
    assert "NOT-SH" not in said


def test_truncated_and_non_dicom_files_get_a_reason(
    submitted,
    surgeon,
    good_series,
    cranial_profile,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    truncated = tmp_path / "t.dcm"
    truncated.write_bytes(good_series[0].read_bytes()[:-1000])
    header_only = tmp_path / "h.dcm"
    header_only.write_bytes(good_series[1].read_bytes()[:200])
    junk = tmp_path / "j.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    job = ingest(
        submitted,
        surgeon,
        [truncated, header_only, junk, *good_series[2:]],
        django_capture_on_commit_callbacks,
    )
    failed = {f["file"]: f["reason"] for f in job.result["failed"]}
    assert set(failed) == {"#1", "#2", "#3"}
    assert "truncated" in failed["#1"]
    assert "Not a DICOM file" in failed["#3"]
    assert job.result["accepted"] == SLICES - 2


def test_another_study_or_patient_in_the_batch_is_refused_per_file(
    submitted,
    surgeon,
    good_series,
    thick_series,
    cranial_profile,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    import pydicom
    from pydicom.uid import generate_uid

    def copy_of(path, name: str, patient_id: str) -> Path:
        ds = pydicom.dcmread(path)
        ds.PatientID = patient_id
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp_path / name, enforce_file_format=True)
        return tmp_path / name

    patient_id = pydicom.dcmread(good_series[0]).PatientID
    other = copy_of(good_series[0], "other.dcm", "PHANTOM-0002")
    # The same ID written with other padding: not another patient.
    padded = copy_of(good_series[1], "padded.dcm", f" {patient_id} ")
    job = ingest(
        submitted,
        surgeon,
        [*good_series, thick_series[0], other, padded],
        django_capture_on_commit_callbacks,
    )
    assert job.result["failed"] == [
        {
            "file": f"#{SLICES + 1}",
            "reason": "Belongs to a different study than the rest of the batch.",
        },
        {
            "file": f"#{SLICES + 2}",
            "reason": "Belongs to a different patient than the rest of the batch.",
        },
    ]
    assert job.result["accepted"] == SLICES + 1


def test_retry_after_a_crash_leaves_one_study(
    submitted,
    surgeon,
    good_series,
    cranial_profile,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    from cases.imaging.services import ingest

    staged = stage(submitted, good_series)
    with django_capture_on_commit_callbacks(execute=False):
        job = ingest_enqueue(
            actor=surgeon, case=submitted, paths=staged, source="upload"
        )
    claimed = job_claim(job.pk)

    def crash(*args, **kwargs):
        raise RuntimeError("worker died")

    # The worker dies just before the batch's rows commit with the job's success.
    monkeypatch.setattr(ingest, "job_succeed", crash)
    with pytest.raises(RuntimeError):
        study_ingest(claimed, lambda *a: None)
    assert ImagingInstance.objects.filter(case=submitted).count() == 0
    monkeypatch.undo()
    retried = job_claim(job.pk, takeover=True)
    result = study_ingest(retried, lambda *a: None)
    assert result["accepted"] == SLICES
    # The same job run once more (a duplicate delivery after success) is a no-op.
    again = stage(submitted, good_series)
    second = Job.objects.create(
        kind=job.kind, task_name=job.task_name, params={**job.params, "paths": again}
    )
    result = study_ingest(job_claim(second.pk), lambda *a: None)
    assert result["accepted"] == 0
    assert result["skipped_duplicates"] == SLICES
    assert ImagingStudy.objects.filter(case=submitted).count() == 1
    assert ImagingSeries.objects.filter(study__case=submitted).count() == 1
    assert ImagingInstance.objects.filter(case=submitted).count() == SLICES


def test_a_disk_failure_while_storing_leaves_nothing_recorded_and_the_staged_files(
    submitted, surgeon, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    # Stored files are written on the intake's thread: its failure still fails the
    # attempt (to be retried), with no row written and the received objects kept.
    paths = write_series(tmp_path, PhantomSpec(slices=6, rows=64, columns=64, seed=7))
    staged = stage(submitted, paths)
    with django_capture_on_commit_callbacks(execute=False):
        job = ingest_enqueue(
            actor=surgeon, case=submitted, paths=staged, source="upload"
        )
    closes = itertools.count()
    real_close = durable.DurableFile.close

    def full_disk(self):
        if next(closes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_close(self)

    monkeypatch.setattr(durable.DurableFile, "close", full_disk)
    with pytest.raises(OSError):
        study_ingest(job_claim(job.pk), lambda *a: None)
    monkeypatch.undo()

    assert not ImagingInstance.objects.filter(case=submitted).exists()
    assert not ImagingStudy.objects.filter(case=submitted).exists()
    assert all(Path(p).exists() for p in staged)
    assert not list(staging_dir(submitted.pk).glob(".work-*"))
    result = study_ingest(job_claim(job.pk, takeover=True), lambda *a: None)
    assert result["accepted"] == 6


def test_gate_refuses_without_consent(submitted, surgeon):
    from consent.models import Consent
    from consent.services import consent_withdraw

    for consent in Consent.objects.filter(patient=submitted.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")
    with pytest.raises(ConsentMissing):
        imaging_gate(submitted)


def test_gate_refuses_a_cancelled_case(case_at, coordinator):
    from cases.services import case_cancel

    case = case_cancel(
        actor=coordinator, case=case_at(S.SUBMITTED), reason="Patient moved away"
    )
    with pytest.raises(Conflict):
        imaging_gate(case)


def test_gate_refuses_a_draft(case_at):
    with pytest.raises(Conflict):
        imaging_gate(case_at(S.DRAFT))


def test_outsider_cannot_enqueue(submitted, outsider):
    from psi.errors import NotVisible

    with pytest.raises(NotVisible):
        ingest_enqueue(actor=outsider, case=submitted, paths=[], source="upload")


def test_auditor_may_not_send_imaging(submitted, auditor):
    with pytest.raises(PermissionRefused):
        ingest_enqueue(actor=auditor, case=submitted, paths=[], source="upload")


def test_dicom_node_ingest_names_the_ae_title(
    submitted, good_series, cranial_profile, django_capture_on_commit_callbacks
):
    staged = stage(submitted, good_series[:2])
    job = from_node(
        submitted, staged, django_capture_on_commit_callbacks, ae_title="HOSP_A_CT"
    )
    assert job.status == Job.Status.SUCCEEDED
    submitted.refresh_from_db()
    assert "DICOM node HOSP_A_CT" in submitted.events.last().reason


def test_case_for_accession(submitted):
    assert case_for_accession(submitted.reference) == submitted
    assert case_for_accession(submitted.reference + " ") == submitted
    assert case_for_accession("C-1999-00001") is None
    assert case_for_accession("") is None


FINDINGS = {
    "motion": {"ok": True, "notes": ""},
    "metal_artefacts": {"ok": True, "notes": ""},
    "region_coverage": {"ok": True, "notes": ""},
    "healthy_side_coverage": {"ok": True, "notes": "Full contralateral side"},
}


@pytest.fixture
def ingested_study(
    submitted, surgeon, good_series, cranial_profile, django_capture_on_commit_callbacks
) -> ImagingStudy:
    """The good series ingested for the submitted case: an accepted study."""
    job = ingest(submitted, surgeon, good_series, django_capture_on_commit_callbacks)
    return ImagingStudy.objects.get(pk=job.result["study_id"])


def test_designer_signs_the_visual_review(submitted, surgeon, designer, ingested_study):
    study = ingested_study
    with pytest.raises(PermissionRefused):
        study_review_sign(
            actor=surgeon, study=study, password=PASSWORD, findings=FINDINGS
        )
    signed = study_review_sign(
        actor=designer, study=study, password=PASSWORD, findings=FINDINGS
    )
    assert signed.review.meaning == "reviewed"
    assert signed.review_findings["healthy_side_coverage"]["ok"] is True
    assert study_review_passed(submitted)
    with pytest.raises(Conflict):
        study_review_sign(
            actor=designer, study=study, password=PASSWORD, findings=FINDINGS
        )


def test_a_signed_study_takes_no_more_images(
    submitted,
    surgeon,
    designer,
    good_series,
    ingested_study,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    study_review_sign(
        actor=designer, study=ingested_study, password=PASSWORD, findings=FINDINGS
    )
    stored_before = StoredFile.objects.count()
    store = Path(default_storage.path("sha256"))
    files_before = sum(1 for p in store.rglob("*") if p.is_file())
    # New objects of the same study: another series, sent after the sign-off.
    late = write_series(
        tmp_path,
        PhantomSpec(
            slices=2,
            rows=64,
            columns=64,
            seed=99,
            series_number=2,
            study_uid=dcmread(good_series[0], stop_before_pixels=True).StudyInstanceUID,
        ),
    )

    job = ingest(submitted, surgeon, late, django_capture_on_commit_callbacks)

    assert job.result["accepted"] == 0
    assert [f["reason"] for f in job.result["failed"]] == [
        "The study was already reviewed and signed; send new images as a new study."
    ] * 2
    assert StoredFile.objects.count() == stored_before
    assert sum(1 for p in store.rglob("*") if p.is_file()) == files_before
    assert ImagingInstance.objects.filter(case=submitted).count() == SLICES
    assert not list(staging_dir(submitted.pk).glob(".work-*"))


def test_missing_mandatory_attributes_are_named(
    submitted,
    surgeon,
    good_series,
    cranial_profile,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    import pydicom

    ds = pydicom.dcmread(good_series[0])
    del ds.Modality
    del ds.SeriesInstanceUID
    broken = tmp_path / "b.dcm"
    ds.save_as(broken, enforce_file_format=True)
    job = ingest(submitted, surgeon, [broken], django_capture_on_commit_callbacks)
    assert job.result["failed"] == [
        {
            "file": "#1",
            "reason": "Missing mandatory attributes: Series Instance UID, Modality.",
        }
    ]
    assert not ImagingStudy.objects.exists()


def test_consent_withdrawn_before_the_job_runs_refuses_every_file(
    submitted,
    surgeon,
    good_series,
    cranial_profile,
    django_capture_on_commit_callbacks,
):
    from consent.models import Consent
    from consent.services import consent_withdraw

    staged = stage(submitted, good_series[:3])
    with django_capture_on_commit_callbacks(execute=False):
        job = ingest_enqueue(
            actor=surgeon, case=submitted, paths=staged, source="upload"
        )
    for consent in Consent.objects.filter(patient=submitted.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")
    result = study_ingest(job_claim(job.pk), lambda *a: None)
    assert len(result["failed"]) == 3
    assert "no valid consent" in result["failed"][0]["reason"]
    assert not ImagingInstance.objects.exists()
    assert not list(staging_dir(submitted.pk).glob("*.dcm"))


def test_a_job_reads_and_removes_only_its_own_case_staged_files(
    submitted,
    case_at,
    surgeon,
    good_series,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    """Job params are data: paths outside the case's staging folder are refused
    per file and left alone, however they are spelt."""
    other = case_at(S.SUBMITTED)
    others = stage(other, good_series[:1])[0]
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(good_series[0].read_bytes())
    folder = staging_dir(submitted.pk)
    link = folder / "link.dcm"
    link.symlink_to(outside)
    not_dicom = folder / "notes.txt"
    not_dicom.write_bytes(good_series[0].read_bytes())
    own = stage(submitted, good_series[1:3])
    # A record reference is honoured only for a batch file, a whole file only for
    # a file of its own.
    others_batch = StagedBatch(other.pk)
    others_record = others_batch.add([good_series[3].read_bytes()])
    others_batch.close()
    own_batch = StagedBatch(submitted.pk)
    own_record = own_batch.add([good_series[4].read_bytes()])
    own_batch.close()
    paths = [
        others,
        str(folder / ".." / str(other.pk) / Path(others).name),
        str(outside),
        str(link),
        str(not_dicom),
        *own,
        str(folder / "gone.dcm"),
        others_record,
        f"{own[0]}#0+100",
        str(Staged.parse(own_record).path),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        job = ingest_enqueue(
            actor=surgeon, case=submitted, paths=paths, source="upload"
        )
    job.refresh_from_db()

    reasons = {f["file"]: f["reason"] for f in job.result["failed"]}
    assert reasons == {
        **{f"#{i}": "Not a staged file of this case." for i in (1, 2, 3, 5, 9, 10, 11)},
        "#4": "The staged file is gone (already ingested?).",
        "#8": "The staged file is gone (already ingested?).",
    }
    assert job.result["accepted"] == 2
    assert Path(others).exists() and outside.exists() and not_dicom.exists()
    assert Staged.parse(others_record).path.exists()
    assert not any(Path(p).exists() for p in own)


def test_records_of_a_batch_file_are_ingested_and_the_file_removed(
    submitted, good_series, cranial_profile, django_capture_on_commit_callbacks
):
    """The listener stages a batch as records of one file: they are ingested like
    files of their own, a record the file lost fails alone, and the file goes
    once the rows are committed."""
    batch = StagedBatch(submitted.pk)
    records = [batch.add([Path(p).read_bytes()]) for p in good_series]
    batch.close()
    [path] = {Staged.parse(reference).path for reference in records}
    assert path.suffix == ".dcms"
    last = Staged.parse(records[-1])
    os.truncate(path, last.offset + last.length - 1)  # the last one cut short

    job = from_node(submitted, records, django_capture_on_commit_callbacks)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["accepted"] == SLICES - 1
    assert job.result["failed"] == [
        {"file": f"#{SLICES}", "reason": "Not a DICOM file, or the file is truncated."}
    ]
    study = ImagingStudy.objects.get(pk=job.result["study_id"])
    sent = {dcmread(p).InstanceNumber for p in good_series[:-1]}
    assert set(study.instances.values_list("instance_number", flat=True)) == sent
    assert not path.exists()
