"""Background jobs: claim guard, progress, outcome, takeover, sweeper, eager mode."""

import datetime

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from psi.audit import audit_append, audit_verify_enqueue
from psi.jobs import (
    JobSuperseded,
    job_claim,
    job_enqueue,
    job_execute,
    job_progress,
    job_succeed,
    job_sweep,
)
from psi.models import AuditEvent, Job
from psi.tasks import audit_verify_task
from tests.psi.conftest import audit_trigger_disabled

pytestmark = pytest.mark.django_db
VERIFY = "psi.tasks.audit_verify"


def new_job(**fields):
    return Job.objects.create(kind="test.job", task_name=VERIFY, **fields)


def test_a_job_is_sent_only_when_its_transaction_commits(
    django_capture_on_commit_callbacks, surgeon, case_a
):
    with django_capture_on_commit_callbacks() as callbacks:
        job = job_enqueue(
            kind="test.job", task_name=VERIFY, actor=surgeon, target=case_a
        )
        assert job.status == Job.Status.QUEUED
    assert len(callbacks) == 1
    assert (job.target, job.actor) == (case_a, surgeon)


def test_a_countdown_reaches_the_broker(
    monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        audit_verify_task, "apply_async", lambda **kwargs: sent.append(kwargs)
    )
    with django_capture_on_commit_callbacks(execute=True):
        later = job_enqueue(kind="test.job", task_name=VERIFY, countdown=30)
        now = job_enqueue(kind="test.job", task_name=VERIFY)

    assert sent == [
        {"args": [later.pk], "countdown": 30},
        {"args": [now.pk], "countdown": None},
    ]


def test_a_duplicate_delivery_does_nothing():
    job = new_job()
    assert job_claim(job.pk).attempts == 1
    assert job_claim(job.pk) is None
    calls = []
    assert job_execute(job.pk, lambda job, progress: calls.append(job)) is None
    assert calls == []
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 1)


def test_a_finished_job_ignores_a_late_delivery():
    job = new_job()
    job_execute(job.pk, lambda job, progress: {"n": 1})
    calls = []
    assert job_execute(job.pk, lambda job, progress: calls.append(1)) is None
    assert calls == []


def test_a_job_that_is_gone_is_skipped():
    assert job_execute(987654, lambda job, progress: {}) is None


def test_execute_reports_progress_and_records_the_result():
    job = new_job()
    seen = []

    def handler(job, progress):
        progress(40, "reading")
        seen.append(Job.objects.values_list("progress", "message").get(pk=job.pk))
        return {"answer": 42}

    job_execute(job.pk, handler)
    job.refresh_from_db()
    assert seen == [(40, "reading")]
    assert job.status == Job.Status.SUCCEEDED
    assert job.progress == 100
    assert job.result == {"answer": 42}
    assert job.finished_at is not None


def test_progress_is_a_heartbeat_without_history_rows():
    job = job_claim(new_job().pk)
    versions = job.history.count()
    job_progress(job, 250, "x" * 600)
    stored = Job.objects.get(pk=job.pk)
    assert stored.progress == 100
    assert len(stored.message) == 500
    assert stored.heartbeat_at >= job.started_at
    assert job.history.count() == versions


def test_a_failing_handler_fails_the_job_and_reraises():
    job = new_job()

    def handler(job, progress):
        raise ValueError("the mesh is not watertight")

    with pytest.raises(ValueError):
        job_execute(job.pk, handler)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "ValueError: the mesh is not watertight"


def test_a_transient_error_puts_the_job_back_in_the_queue():
    job = new_job()

    def handler(job, progress):
        raise OperationalError("server closed the connection")

    with pytest.raises(OperationalError):
        job_execute(job.pk, handler)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert "will retry" in job.error


def test_a_takeover_claims_a_job_whose_worker_died():
    job = new_job()
    job_claim(job.pk)
    assert job_claim(job.pk) is None
    taken = job_claim(job.pk, takeover=True)
    assert taken.attempts == 2


def test_a_superseded_attempt_can_neither_report_nor_finish_nor_write_its_effect():
    job = new_job()
    first = job_claim(job.pk)
    job_claim(job.pk, takeover=True)

    with pytest.raises(JobSuperseded):
        job_progress(first, 50)
    with pytest.raises(JobSuperseded), transaction.atomic():
        audit_append(actor=None, action="test.effect", object_id=job.pk)
        job_succeed(first, result={"attempt": 1})
    assert not AuditEvent.objects.filter(action="test.effect").exists()
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 2)


def test_execute_stops_quietly_when_its_attempt_was_superseded():
    job = new_job()

    def handler(job, progress):
        job_claim(job.pk, takeover=True)  # another worker took the job over
        progress(10)

    assert job_execute(job.pk, handler) is None
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 2)


def test_a_handler_that_commits_its_effect_with_the_success_finishes_once():
    job = new_job()

    def handler(job, progress):
        with transaction.atomic():
            audit_append(actor=None, action="test.effect", object_id=job.pk)
            job_succeed(job, result={"done": True})

    job_execute(job.pk, handler)
    job_execute(job.pk, handler)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result == {"done": True}
    assert AuditEvent.objects.filter(action="test.effect").count() == 1


class TestSweeper:
    def stalled(self, **fields):
        job = new_job(**fields)
        long_ago = timezone.now() - datetime.timedelta(hours=1)
        Job.objects.filter(pk=job.pk).update(created_at=long_ago)
        return job

    def test_a_stalled_running_job_is_queued_and_sent_again(
        self, django_capture_on_commit_callbacks
    ):
        job = self.stalled(
            status=Job.Status.RUNNING,
            attempts=1,
            heartbeat_at=timezone.now() - datetime.timedelta(hours=1),
        )
        with django_capture_on_commit_callbacks() as sent:
            assert job_sweep() == {"requeued": 1, "failed": 0}
        assert len(sent) == 1
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED
        assert job.message == "re-enqueued after stalling"
        # The heartbeat restarts the clock: the next sweep leaves it alone.
        assert job_sweep() == {"requeued": 0, "failed": 0}

    def test_a_queued_job_whose_message_was_lost_is_sent_again(
        self, django_capture_on_commit_callbacks
    ):
        self.stalled()
        with django_capture_on_commit_callbacks() as sent:
            assert job_sweep()["requeued"] == 1
        assert len(sent) == 1

    def test_a_job_no_worker_ever_takes_is_given_up(self, settings):
        job = self.stalled()
        Job.objects.filter(pk=job.pk).update(task_name="psi.no_such_task")
        later = timezone.now()
        for _ in range(settings.PSI_JOB_MAX_ATTEMPTS):
            later += datetime.timedelta(seconds=settings.PSI_JOB_STALL_SECONDS + 1)
            assert job_sweep(now=later) == {"requeued": 1, "failed": 0}
        later += datetime.timedelta(seconds=settings.PSI_JOB_STALL_SECONDS + 1)
        assert job_sweep(now=later) == {"requeued": 0, "failed": 1}
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED
        assert "no worker took it; gave up after 4 sends" in job.error
        assert "psi.no_such_task" in job.error

    def test_a_job_with_a_recent_heartbeat_is_left_alone(self):
        self.stalled(status=Job.Status.RUNNING, attempts=1, heartbeat_at=timezone.now())
        assert job_sweep() == {"requeued": 0, "failed": 0}

    def test_a_stalled_job_out_of_attempts_fails(self, settings):
        job = self.stalled(
            status=Job.Status.RUNNING,
            attempts=settings.PSI_JOB_MAX_ATTEMPTS,
            heartbeat_at=timezone.now() - datetime.timedelta(hours=1),
        )
        assert job_sweep() == {"requeued": 0, "failed": 1}
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED
        assert "gave up after 3 attempts" in job.error

    def test_finished_jobs_are_never_swept(self):
        self.stalled(status=Job.Status.SUCCEEDED)
        self.stalled(status=Job.Status.FAILED)
        assert job_sweep() == {"requeued": 0, "failed": 0}


def test_an_unreachable_broker_leaves_the_job_to_the_sweeper(
    django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def refuse(*args, **kwargs):
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(audit_verify_task, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        job = job_enqueue(kind="test.job", task_name=VERIFY)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert "sweeper resends" in caplog.text


def test_eager_mode_runs_the_audit_verify_job_in_process(
    django_capture_on_commit_callbacks, auditor
):
    checked = AuditEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        job = audit_verify_enqueue(actor=auditor)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert (job.progress, job.attempts) == (100, 1)
    assert job.result == {
        "ok": True,
        "checked": checked,
        "broken_seq": None,
        "problem": "",
    }
    assert job.message == f"{checked} events verified"
    verified = AuditEvent.objects.get(action="audit.verified")
    assert verified.object_id == str(job.pk)
    assert verified.actor == auditor


def test_the_audit_verify_job_reports_a_broken_chain(
    django_capture_on_commit_callbacks, auditor
):
    with audit_trigger_disabled() as cursor:
        cursor.execute("UPDATE psi_auditevent SET reason = 'forged' WHERE seq = 1")
    with django_capture_on_commit_callbacks(execute=True):
        job = audit_verify_enqueue(actor=auditor)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.result["ok"] is False
    assert job.result["broken_seq"] == 1
    assert job.message == "event #1 was altered after it was written"


def test_verification_reports_progress_per_batch(auditor, monkeypatch):
    from psi import audit

    for i in range(5):
        audit_append(actor=None, action="test.event", payload={"i": i})
    reported = []
    real_verify = audit.audit_verify
    monkeypatch.setattr(
        audit,
        "audit_verify",
        lambda progress: real_verify(batch_size=2, progress=progress),
    )
    job = new_job()
    job_execute(
        job.pk,
        lambda job, progress: audit.audit_verify_job(
            job, lambda p, m="": (reported.append(p), progress(p, m))
        ),
    )
    assert reported and reported == sorted(reported)
    assert all(0 < p <= 100 for p in reported)
