"""A real Celery worker (prefork, one process) runs jobs against the test database:
the audit-verify job end to end, a job whose pool process is killed mid-run, and a
job the sweeper sends again after its message was lost."""

import datetime
import os
import signal

import pytest
from django.utils import timezone

from psi.audit import audit_append, audit_verify, audit_verify_enqueue
from psi.jobs import job_enqueue, job_sweep
from psi.models import AuditEvent, Job
from tests.psi.worker_tasks import SLOW_TASK
from tests.worker import (
    FINISHED,
    WORKER_TEST_MARKS,
    parent_of,
    running_worker,
    sending_to_the_broker,
    wait_for,
)

pytestmark = WORKER_TEST_MARKS


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(log, imports=("tests.psi.worker_tasks",)) as started:
        yield started


def test_a_real_worker_runs_the_audit_verify_job(worker, auditor):
    for i in range(3):
        audit_append(actor=None, action="test.before", payload={"i": i})
    expected = AuditEvent.objects.count()

    with sending_to_the_broker():
        job = audit_verify_enqueue(actor=auditor)

    job = wait_for(job, lambda j: j.status in FINISHED, worker)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress, job.attempts) == (100, 1)
    assert job.result == {
        "ok": True,
        "checked": expected,
        "broken_seq": None,
        "problem": "",
    }
    assert job.message == f"{expected} events verified"
    assert job.started_at <= job.finished_at
    verified = AuditEvent.objects.get(action="audit.verified")
    assert verified.object_id == str(job.pk) and verified.actor == auditor
    # psi.celery binds the task id as the correlation id of what the task writes.
    assert verified.correlation_id
    assert audit_verify().ok


def test_a_job_whose_pool_process_is_killed_mid_run_finishes_exactly_once(worker):
    with sending_to_the_broker():
        job = job_enqueue(
            kind="test.slow", task_name=SLOW_TASK, params={"steps": 50, "pause": 0.1}
        )

    running = wait_for(
        job,
        lambda j: (
            j.status == Job.Status.RUNNING
            and j.progress >= 10
            and j.message.startswith("pid ")
        ),
        worker,
    )
    pid = int(running.message.split()[1])
    # Kill the pool process executing the task, never anything else.
    assert pid != worker.process.pid and parent_of(pid) == worker.process.pid
    os.kill(pid, signal.SIGKILL)

    done = wait_for(job, lambda j: j.status in FINISHED, worker, timeout=90)
    assert done.status == Job.Status.SUCCEEDED, f"{done.error}\n{worker.tail()}"
    assert done.attempts == 2, "Celery's retry_on_worker_lost took the job over"
    assert done.result["attempt"] == 2 and done.result["pid"] != pid
    effects = AuditEvent.objects.filter(
        action="test.slow_job_done", object_id=str(job.pk)
    )
    assert effects.count() == 1
    assert effects.get().payload == {"attempt": 2}
    assert audit_verify().ok


def test_the_sweeper_resends_a_job_whose_message_was_lost(worker, auditor):
    job = Job.objects.create(
        kind="audit.verify", task_name="psi.tasks.audit_verify", actor=auditor
    )  # never sent: as if the broker lost the message
    Job.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=1)
    )

    with sending_to_the_broker():
        assert job_sweep() == {"requeued": 1, "failed": 0}

    done = wait_for(job, lambda j: j.status in FINISHED, worker)
    assert done.status == Job.Status.SUCCEEDED
    # The send that went nowhere counts as an attempt, the run as the second.
    assert (done.attempts, done.result["ok"]) == (2, True)


def test_a_worker_keeps_its_database_connection_from_task_to_task(worker):
    # psi.celery: without it each task would close its connection at the end and
    # the next would open a new one (a new server process).
    done = []
    for _ in range(2):
        with sending_to_the_broker():
            job = job_enqueue(
                kind="test.slow", task_name=SLOW_TASK, params={"steps": 1, "pause": 0}
            )
        done.append(wait_for(job, lambda j: j.status in FINISHED, worker))
    assert [j.status for j in done] == [Job.Status.SUCCEEDED] * 2
    first, second = (j.result for j in done)
    assert first["pid"] == second["pid"]  # the one pool process ran both
    assert first["backend_pid"] == second["backend_pid"]
