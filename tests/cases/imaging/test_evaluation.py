"""A study is judged once, when all of it is in: batches of one delivery, in any
order, then one evaluation; and for senders that cannot say when they are done
(STOW-RS), once the study has been quiet."""

from __future__ import annotations

import pytest

from cases.imaging.models import ImagingStudy
from cases.imaging.phantom import PhantomSpec, write_series
from cases.imaging.services import (
    EVALUATE_KIND,
    INGEST_KIND,
    PREVIEWS_KIND,
    ingest_enqueue,
    series_previews_make,
    study_evaluate,
    study_ingest,
)
from cases.models import Case
from psi import jobs
from psi.jobs import job_execute
from psi.models import AuditEvent, Job
from tests.cases.imaging.test_ingest import stage

S = Case.Status
SLICES = 30


@pytest.fixture(autouse=True)
def _staging_in_tmp(settings, tmp_path):
    settings.PSI_STAGING_DIR = tmp_path / "staging"
    settings.PSI_STUDY_STABLE_SECONDS = 45


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """30 slices of 1 mm: the study passes a 25 mm coverage floor, no third of it
    does."""
    folder = tmp_path_factory.mktemp("series")
    return write_series(folder, PhantomSpec(slices=SLICES, rows=128, columns=128))


@pytest.fixture
def profile(db):
    from cases.imaging import quality
    from cases.imaging.models import AcquisitionProfile

    limits = quality.default_profile("cranial").as_dict()
    limits.update(min_coverage_mm=25.0, min_matrix=128)
    return AcquisitionProfile.objects.create(region="cranial", limits=limits)


@pytest.fixture
def sent(monkeypatch):
    """Jobs are recorded as sent (with their countdown) instead of run: each test
    runs them itself, in the order a busy worker pool might."""
    calls: list[tuple[Job, float]] = []
    monkeypatch.setattr(
        jobs, "_send", lambda job, countdown=0: calls.append((job, countdown))
    )
    return calls


@pytest.fixture
def send(surgeon, django_capture_on_commit_callbacks):
    def send_(case, paths, complete) -> Job:
        staged = stage(case, paths)
        with django_capture_on_commit_callbacks(execute=True):
            return ingest_enqueue(
                actor=surgeon,
                case=case,
                paths=staged,
                source="upload",
                complete=complete,
            )

    return send_


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    handlers = {
        INGEST_KIND: study_ingest,
        EVALUATE_KIND: study_evaluate,
        PREVIEWS_KIND: series_previews_make,
    }

    def run_(job: Job) -> Job:
        with django_capture_on_commit_callbacks(execute=True):
            job_execute(job.pk, handlers[job.kind])
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error
        return job

    return run_


def evaluations(sent) -> list[tuple[Job, float]]:
    return [(job, countdown) for job, countdown in sent if job.kind == EVALUATE_KIND]


@pytest.fixture
def submitted(case_at):
    return case_at(S.SUBMITTED)


def test_a_study_sent_in_batches_is_judged_once_when_complete(
    submitted, series, profile, send
):
    # Eager Celery, as in the embedded mode: every job runs as soon as it is sent.
    send(submitted, series[:10], complete=False)
    send(submitted, series[10:20], complete=False)

    study = ImagingStudy.objects.get(case=submitted)
    assert study.status == ImagingStudy.Status.RECEIVING
    assert study.instance_count == 20
    assert not Job.objects.filter(kind=EVALUATE_KIND).exists()
    submitted.refresh_from_db()
    # Ten or twenty slices miss the coverage floor: judged early, they would have
    # sent the case back for a re-scan.
    assert submitted.status == S.IMAGING_RECEIVED

    send(submitted, series[20:], complete=True)

    study.refresh_from_db()
    assert study.status == ImagingStudy.Status.ACCEPTED
    assert study.instance_count == SLICES
    assert study.proposed_series.instance_count == SLICES
    assert study.proposed_series.previews
    assert not study.delivery_complete
    assert Job.objects.filter(kind=EVALUATE_KIND).count() == 1
    submitted.refresh_from_db()
    assert submitted.status == S.IMAGING_RECEIVED
    assert not submitted.events.filter(transition="request_rescan").exists()


def test_a_complete_study_that_fails_sends_the_case_back_once(
    submitted, series, profile, send
):
    send(submitted, series[:10], complete=True)

    study = ImagingStudy.objects.get(case=submitted)
    assert study.status == ImagingStudy.Status.REJECTED
    assert "The scan covers" in study.quality_report["verdict"]["reasons"][0]
    submitted.refresh_from_db()
    assert submitted.status == S.SUBMITTED
    rescan = submitted.events.get(transition="request_rescan")
    assert "on behalf of user" in rescan.reason


def test_batches_finishing_out_of_order_are_judged_once_all_are_in(
    submitted, series, profile, sent, send, run
):
    early = send(submitted, series[:15], complete=False)
    last = send(submitted, series[15:], complete=True)

    run(last)  # the first batch is still queued: nothing is judged yet
    study = ImagingStudy.objects.get(case=submitted)
    assert (study.status, study.delivery_complete) == ("receiving", True)
    assert evaluations(sent) == []

    run(early)  # the last of them: the sender said it was done, so at once
    [(evaluation, countdown)] = evaluations(sent)
    assert countdown == 0

    assert run(evaluation).result["evaluated"] is True
    study.refresh_from_db()
    assert study.status == ImagingStudy.Status.ACCEPTED
    assert study.instance_count == SLICES


def test_a_quiet_study_is_judged_by_the_evaluation_of_its_last_arrival(
    submitted, series, profile, sent, send, run, settings
):
    run(send(submitted, series[:15], complete=None))
    run(send(submitted, series[15:], complete=None))

    (first, wait_1), (second, wait_2) = evaluations(sent)
    assert wait_1 == wait_2 == settings.PSI_STUDY_STABLE_SECONDS
    skipped = run(first)
    assert skipped.result == {
        "evaluated": False,
        "reason": "newer objects arrived; their evaluation judges them",
    }
    assert ImagingStudy.objects.get(case=submitted).status == "receiving"

    assert run(second).result["status"] == ImagingStudy.Status.ACCEPTED


def test_an_evaluation_leaves_the_study_to_a_pending_ingest(
    submitted, series, profile, sent, send, run
):
    run(send(submitted, series[:15], complete=None))
    pending = send(submitted, series[15:], complete=None)
    [(first, _)] = evaluations(sent)

    assert run(first).result["reason"] == "objects are still being ingested"

    run(pending)
    [_, (second, _)] = evaluations(sent)
    assert run(second).result["evaluated"] is True
    assert ImagingStudy.objects.get(case=submitted).instance_count == SLICES


def test_an_empty_last_batch_starts_the_evaluation(
    submitted, series, profile, sent, send, run
):
    run(send(submitted, series, complete=False))
    assert evaluations(sent) == []

    done = run(send(submitted, [], complete=True))

    assert done.result["accepted"] == 0
    [(evaluation, countdown)] = evaluations(sent)
    assert countdown == 0
    assert run(evaluation).result["status"] == ImagingStudy.Status.ACCEPTED


def test_new_objects_reopen_a_judged_study_and_it_is_judged_again(
    submitted, series, profile, send
):
    send(submitted, series[:10], complete=True)
    study = ImagingStudy.objects.get(case=submitted)
    assert study.status == ImagingStudy.Status.REJECTED

    send(submitted, series[10:], complete=True)  # the rest, after a re-scan request

    study.refresh_from_db()
    assert study.status == ImagingStudy.Status.ACCEPTED
    assert study.instance_count == SLICES
    assert Job.objects.filter(kind=EVALUATE_KIND).count() == 2


def test_a_stuck_study_is_judged_on_request(
    submitted,
    series,
    profile,
    send,
    api_as,
    case_manager,
    surgeon,
    outsider,
    django_capture_on_commit_callbacks,
):
    # The association broke off after its batches: nobody said the study is done.
    send(submitted, series, complete=False)
    study = ImagingStudy.objects.get(case=submitted)
    assert study.status == ImagingStudy.Status.RECEIVING
    url = f"/api/v1/studies/{study.pk}/evaluate/"

    assert api_as(outsider).post(url).status_code == 404
    refused = api_as(surgeon).post(url)
    assert refused.status_code == 403, refused.json()

    with django_capture_on_commit_callbacks(execute=True):
        answer = api_as(case_manager).post(url)

    assert answer.status_code == 202, answer.json()
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert job.kind == EVALUATE_KIND
    study.refresh_from_db()
    assert study.status == ImagingStudy.Status.ACCEPTED
    assert AuditEvent.objects.filter(
        action="imaging.evaluation_requested", actor=case_manager
    ).exists()
    again = api_as(case_manager).post(url)
    assert again.status_code == 409
    assert again.json()["status"] == ImagingStudy.Status.ACCEPTED
