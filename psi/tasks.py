"""Core Celery tasks: the job sweeper and audit-chain verification."""

from celery import shared_task

from psi.audit import audit_verify_job
from psi.jobs import TRANSIENT_ERRORS, job_execute, job_sweep

#: Options every job task shares: late acknowledgement, a bounded retry when the
#: worker process dies mid-task (10 s later, not Celery's default 3 minutes: an
#: ingest the hospital waits for should not stall), and backoff on transient errors.
JOB_TASK_OPTIONS = {
    "bind": True,
    "acks_late": True,
    "retry_on_worker_lost": True,
    "default_retry_delay": 10,
    "max_retries": 3,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 300,
}


@shared_task(name="psi.tasks.job_sweep", ignore_result=True)
def job_sweep_task() -> dict:
    return job_sweep()


@shared_task(name="psi.tasks.audit_verify", **JOB_TASK_OPTIONS)
def audit_verify_task(self, job_id: int) -> None:
    job_execute(job_id, audit_verify_job, takeover=self.request.retries > 0)
