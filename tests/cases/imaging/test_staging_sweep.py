"""The staging sweep: raw objects a crash left behind are removed, never those an
ingest will still read."""

from __future__ import annotations

import os
import time

import pytest
from django.conf import settings

from cases.imaging.services import STAGING_SWEEP_TASK, ingest_enqueue, staging_sweep
from cases.imaging.staging import Staged, StagedBatch, stage_chunks, staging_dir
from cases.models import Case
from psi.celery import app
from psi.models import AuditEvent, Job

HOUR = 3600


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"
    settings.PSI_STAGING_GRACE_SECONDS = HOUR


@pytest.fixture
def submitted(case_at):
    return case_at(Case.Status.SUBMITTED)


def staged(case, *, age: float):
    path = stage_chunks(case.pk, [b"raw object with identity"])
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def enqueue(case, actor, paths, capture) -> Job:
    with capture(execute=False):  # queued: no worker takes it
        return ingest_enqueue(
            actor=actor, case=case, paths=[str(p) for p in paths], source="upload"
        )


def test_old_orphans_go_while_young_and_queued_objects_stay(
    submitted, surgeon, django_capture_on_commit_callbacks
):
    orphan = staged(submitted, age=2 * HOUR)
    young = staged(submitted, age=60)
    waiting = staged(submitted, age=2 * HOUR)
    enqueue(submitted, surgeon, [waiting], django_capture_on_commit_callbacks)

    counts = staging_sweep()

    assert counts == {"files": 1, "work_folders": 0}
    assert not orphan.exists()
    assert young.exists()
    assert waiting.exists()
    event = AuditEvent.objects.get(action="imaging.staging_swept")
    assert event.payload == counts
    assert orphan.name not in str(event.payload) + event.reason


def test_objects_of_an_ingest_that_ended_go(
    submitted, surgeon, django_capture_on_commit_callbacks
):
    # The worker died after the commit, before it removed the raw objects; or the
    # job failed for good.
    done = staged(submitted, age=2 * HOUR)
    failed = staged(submitted, age=2 * HOUR)
    succeeded_job = enqueue(
        submitted, surgeon, [done], django_capture_on_commit_callbacks
    )
    failed_job = enqueue(
        submitted, surgeon, [failed], django_capture_on_commit_callbacks
    )
    Job.objects.filter(pk=succeeded_job.pk).update(status=Job.Status.SUCCEEDED)
    Job.objects.filter(pk=failed_job.pk).update(status=Job.Status.FAILED)

    assert staging_sweep() == {"files": 2, "work_folders": 0}
    assert not done.exists()
    assert not failed.exists()


def batch_of(case, count: int, *, age: float) -> list[str]:
    """``count`` objects staged as records of one batch file (as the listener
    stages them), the file last written ``age`` seconds ago."""
    batch = StagedBatch(case.pk)
    references = [batch.add([b"raw object %d" % i]) for i in range(count)]
    batch.close()
    then = time.time() - age
    os.utime(Staged.parse(references[0]).path, (then, then))
    return references


def test_a_batch_file_goes_only_when_no_unfinished_ingest_names_it(
    submitted, surgeon, django_capture_on_commit_callbacks
):
    orphan = batch_of(submitted, 3, age=2 * HOUR)
    waiting = batch_of(submitted, 3, age=2 * HOUR)
    # A job naming one of its records keeps the whole file.
    enqueue(submitted, surgeon, waiting[1:2], django_capture_on_commit_callbacks)

    assert staging_sweep() == {"files": 1, "work_folders": 0}
    assert not Staged.parse(orphan[0]).path.exists()
    assert Staged.parse(waiting[0]).path.exists()


def test_scratch_folders_of_running_attempts_stay(
    submitted, surgeon, django_capture_on_commit_callbacks
):
    running = enqueue(submitted, surgeon, [], django_capture_on_commit_callbacks)
    Job.objects.filter(pk=running.pk).update(status=Job.Status.RUNNING)
    folder = staging_dir(submitted.pk)
    kept, left = folder / f".work-{running.pk}", folder / ".work-999999"
    for work in (kept, left):
        work.mkdir()
        (work / "partial.dcm").write_bytes(b"de-identified, half written")
        then = time.time() - 2 * HOUR
        os.utime(work, (then, then))

    assert staging_sweep() == {"files": 0, "work_folders": 1}
    assert kept.exists()
    assert not left.exists()


def test_nothing_to_sweep_writes_no_audit_event(submitted):
    staged(submitted, age=60)

    assert staging_sweep() == {"files": 0, "work_folders": 0}
    assert not AuditEvent.objects.filter(action="imaging.staging_swept").exists()


def test_beat_runs_the_sweep():
    from cases.imaging import tasks  # registers the imaging tasks

    assert tasks.staging_sweep_task.name == STAGING_SWEEP_TASK
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert STAGING_SWEEP_TASK in schedule
    assert STAGING_SWEEP_TASK in app.tasks
