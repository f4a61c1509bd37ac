"""The imaging exchange with real processes: dcmtk's storescu sends a series to the
listener, a real Celery worker (prefork, on Redis) ingests and judges it; and an
ingest whose worker process is killed mid-way is taken over and leaves one
consistent study."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cases.imaging import quality
from cases.imaging.listener import Listener
from cases.imaging.models import (
    AcquisitionProfile,
    DicomPeer,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
)
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.services import EVALUATE_KIND, INGEST_KIND, ingest_enqueue
from cases.models import Case
from psi.models import Job, StoredFile
from tests.cases.imaging.test_ingest import stage
from tests.worker import (
    FINISHED,
    WORKER_TEST_MARKS,
    parent_of,
    running_worker,
    sending_to_the_broker,
    wait_for,
)

S = Case.Status
OUR_AE = "PSI_TEST"
PACS_AE = "HOSPA_PACS"

pytestmark = [
    *WORKER_TEST_MARKS,
    pytest.mark.skipif(
        shutil.which("storescu") is None,
        reason="dcmtk's storescu not installed (Debian package dcmtk)",
    ),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Staging and storage folders the test process and the worker share."""
    root = tmp_path_factory.mktemp("shared")
    return {"staging": root / "staging", "media": root / "media"}


@pytest.fixture(scope="module")
def worker(django_db_setup, folders, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        "PSI_STAGING_DIR": str(folders["staging"]),
        "PSI_MEDIA_ROOT": str(folders["media"]),
    }
    with running_worker(log, env=env) as started:
        yield started


@pytest.fixture(autouse=True)
def _shared_folders(settings, folders):
    settings.PSI_STAGING_DIR = folders["staging"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folders["media"])},
        },
    }


@pytest.fixture
def small_profile(db):
    """Limits a 64 x 64 phantom of 10 slices meets: these tests are about
    delivery; the checks have their own."""
    limits = dataclasses.replace(
        quality.default_profile(Case.Region.CRANIAL), min_matrix=64, min_coverage_mm=5
    )
    return AcquisitionProfile.objects.create(
        region=Case.Region.CRANIAL, limits=limits.as_dict()
    )


def judged(study_of, worker, timeout: float = 60) -> ImagingStudy:
    deadline = time.monotonic() + timeout
    while True:
        study = study_of()
        if study is not None and study.status != ImagingStudy.Status.RECEIVING:
            return study
        if time.monotonic() > deadline:
            pytest.fail(
                f"the study was not judged in time; worker log:\n{worker.tail()}"
            )
        time.sleep(0.1)


def test_storescu_to_the_listener_to_a_worker_until_accepted(
    worker, case_at, hospital_a, small_profile, tmp_path, folders
):
    DicomPeer.objects.create(hospital=hospital_a, ae_title=PACS_AE)
    case = case_at(S.SUBMITTED)
    paths = write_series(
        tmp_path / "series",
        PhantomSpec(slices=10, rows=64, columns=64, accession_number=case.reference),
    )
    listener = Listener(
        host="127.0.0.1", port=0, ae_title=OUR_AE, batch_size=4, batch_seconds=3600
    )
    with sending_to_the_broker():
        listener.start()
        try:
            host, port = listener.address
            sent = subprocess.run(
                ["storescu", "-aet", PACS_AE, "-aec", OUR_AE, host, str(port)]
                + [str(p) for p in paths],
                env={**os.environ, "TCP_NODELAY": "1"},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            study = judged(
                lambda: ImagingStudy.objects.filter(case=case).first(), worker
            )
        finally:
            listener.stop(grace=2)

    assert study.status == ImagingStudy.Status.ACCEPTED, study.quality_report
    assert (study.source, study.calling_ae_title) == ("cstore", PACS_AE)
    assert (
        study.instance_count
        == ImagingInstance.objects.filter(study=study).count()
        == 10
    )
    ingests = Job.objects.filter(kind=INGEST_KIND).order_by("pk")
    assert [len(j.params["paths"]) for j in ingests] == [4, 4, 2]
    assert [j.params["complete"] for j in ingests] == [False, False, True]
    assert {j.status for j in ingests} == {Job.Status.SUCCEEDED}
    assert Job.objects.filter(kind=EVALUATE_KIND).count() == 1
    case.refresh_from_db()
    assert case.status == S.IMAGING_RECEIVED
    series = ImagingSeries.objects.get(study=study)
    deadline = time.monotonic() + 30
    while not series.previews and time.monotonic() < deadline:
        time.sleep(0.1)
        series.refresh_from_db()
    assert set(series.previews) == {"middle_axial", "axial", "coronal", "sagittal"}
    # Neither the batch files (.dcms) nor a file of its own (.dcm) stays.
    assert not list(Path(folders["staging"], str(case.pk)).glob("*.dcm*"))


@pytest.fixture(scope="module")
def long_series(tmp_path_factory):
    # Long enough that the ingest is still reading when the test kills it.
    folder = tmp_path_factory.mktemp("long")
    return write_series(folder, PhantomSpec(slices=150, seed=7))


def _pool_process(worker) -> int:
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    return int(children.read_text().split()[0])


def test_an_ingest_whose_worker_dies_is_taken_over_and_stored_once(
    worker, case_at, surgeon, long_series, folders
):
    limits = quality.default_profile(Case.Region.CRANIAL).as_dict()
    limits["min_coverage_mm"] = 100.0
    AcquisitionProfile.objects.create(region=Case.Region.CRANIAL, limits=limits)
    case = case_at(S.SUBMITTED)
    staged = stage(case, long_series)
    with sending_to_the_broker():
        job = ingest_enqueue(actor=surgeon, case=case, paths=staged, source="upload")

        running = wait_for(
            job,
            lambda j: j.status == Job.Status.RUNNING and 0 < j.progress < 90,
            worker,
            timeout=60,
        )
        assert running.attempts == 1
        pid = _pool_process(worker)
        assert parent_of(pid) == worker.process.pid
        os.kill(pid, signal.SIGKILL)

        done = wait_for(job, lambda j: j.status in FINISHED, worker, timeout=120)
        study = judged(lambda: ImagingStudy.objects.filter(case=case).first(), worker)

    assert done.status == Job.Status.SUCCEEDED, f"{done.error}\n{worker.tail()}"
    assert done.attempts == 2, "the retry took the job over"
    assert done.result["accepted"] == 150
    assert study.status == ImagingStudy.Status.ACCEPTED, study.quality_report
    assert study.instance_count == 150
    assert ImagingInstance.objects.filter(case=case).count() == 150
    dicom_rows = StoredFile.objects.filter(content_type="application/dicom")
    assert dicom_rows.count() == 150
    assert len({f.sha256 for f in dicom_rows}) == 150
    staging = Path(folders["staging"], str(case.pk))
    assert not list(staging.glob("*.dcm*")), "the raw objects were removed"
    assert not list(staging.glob(".work-*")), "the killed attempt's files were cleared"
