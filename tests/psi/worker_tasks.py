"""A deliberately slow job for the worker tests, loaded by the worker with
``-I tests.psi.worker_tasks``. Built like the real tasks: job_execute claims the job,
and the effect (an audit event) commits in one transaction with the success."""

import os
import time

from celery import shared_task
from django.db import connection, transaction

from psi.audit import audit_append
from psi.jobs import job_execute, job_succeed
from psi.tasks import JOB_TASK_OPTIONS

SLOW_TASK = "tests.psi.worker_tasks.slow_job"


def slow_handler(job, progress) -> None:
    steps = int(job.params.get("steps", 40))
    pause = float(job.params.get("pause", 0.1))
    # The message names the pool process, so a test can kill exactly that one.
    label = f"pid {os.getpid()}"
    for step in range(steps):
        progress(step * 100 // steps, label)
        time.sleep(pause)
    with transaction.atomic():
        audit_append(
            actor=None,
            action="test.slow_job_done",
            object_type="psi.job",
            object_id=job.pk,
            payload={"attempt": job.attempts},
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        job_succeed(
            job,
            result={
                "attempt": job.attempts,
                "pid": os.getpid(),
                "backend_pid": backend,
            },
        )


# A one-second retry delay instead of Celery's three minutes keeps the test short.
@shared_task(name=SLOW_TASK, **{**JOB_TASK_OPTIONS, "default_retry_delay": 1})
def slow_job_task(self, job_id: int) -> None:
    job_execute(job_id, slow_handler, takeover=self.request.retries > 0)
