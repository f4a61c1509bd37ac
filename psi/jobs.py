"""Background jobs: the persisted state of work that Celery runs.

A service creates the Job and enqueues its task when the transaction commits. The task
claims the Job with a state guard, so a duplicate delivery does nothing, and reports
progress on the row. A periodic sweeper re-enqueues jobs whose worker vanished.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import OperationalError, models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from psi.models import Job

log = logging.getLogger(__name__)

#: Errors worth retrying: the database or broker was briefly away.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, ConnectionError)

Progress = Callable[[int, str], None]


def _send(job: Job) -> None:
    current_app.tasks[job.task_name].apply_async(args=[job.pk])


def job_enqueue(
    *,
    kind: str,
    task_name: str,
    actor=None,
    target: models.Model | None = None,
    params: dict | None = None,
) -> Job:
    """Create a queued Job and send its task once the transaction commits."""
    job = Job.objects.create(
        kind=kind,
        task_name=task_name,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        target_type=ContentType.objects.get_for_model(target) if target else None,
        target_id=str(target.pk) if target else "",
        params=params or {},
    )
    transaction.on_commit(lambda: _send(job))
    return job


def _save_quietly(job: Job, fields: list[str]) -> None:
    # Progress and heartbeats are not changes of the record worth a history row.
    job.skip_history_when_saving = True
    try:
        job.save(update_fields=fields)
    finally:
        del job.skip_history_when_saving


def job_claim(job_id: int, *, takeover: bool = False) -> Job | None:
    """Move the job to running, or return None if it is finished or taken.

    ``takeover`` is set when Celery retries a task whose worker process died: the
    earlier attempt is known dead, so a job still marked running may be taken.
    """
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in (Job.Status.SUCCEEDED, Job.Status.FAILED):
            return None
        if job.status == Job.Status.RUNNING and not takeover:
            log.info("job %s is already running elsewhere; duplicate ignored", job_id)
            return None
        job.status = Job.Status.RUNNING
        job.attempts += 1
        job.started_at = now
        job.heartbeat_at = now
        job.error = ""
        job.save()
    return job


def job_progress(job: Job, percent: int, message: str = "") -> None:
    job.progress = max(0, min(100, int(percent)))
    job.message = message[:500]
    job.heartbeat_at = timezone.now()
    _save_quietly(job, ["progress", "message", "heartbeat_at"])


def job_succeed(job: Job, *, result: dict | None = None, message: str = "") -> None:
    job.status = Job.Status.SUCCEEDED
    job.progress = 100
    job.result = result or {}
    job.message = message[:500] or job.message
    job.finished_at = timezone.now()
    job.save()


def job_fail(job: Job, *, error: str) -> None:
    job.status = Job.Status.FAILED
    job.error = error
    job.finished_at = timezone.now()
    job.save()


def job_requeue(job: Job, *, reason: str) -> None:
    job.status = Job.Status.QUEUED
    job.error = reason
    job.save()


def job_execute(
    job_id: int,
    handler: Callable[[Job, Progress], dict | None],
    *,
    takeover: bool = False,
) -> Job | None:
    """Run ``handler`` for the job: claim, run, record the outcome.

    The handler does its own writes atomically and idempotently (it may run again
    after a crash). Transient errors put the job back in the queue and re-raise so
    Celery retries with backoff; any other error fails the job and re-raises.
    """
    job = job_claim(job_id, takeover=takeover)
    if job is None:
        return None

    def progress(percent: int, message: str = "") -> None:
        job_progress(job, percent, message)

    try:
        result = handler(job, progress)
    except TRANSIENT_ERRORS as exc:
        job_requeue(job, reason=f"transient error, will retry: {type(exc).__name__}")
        raise
    except Exception as exc:
        job_fail(job, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    job_succeed(job, result=result or {})
    return job


def job_sweep(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Re-enqueue jobs that stalled; give up on those out of attempts."""
    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=settings.PSI_JOB_STALL_SECONDS)
    counts = {"requeued": 0, "failed": 0}
    candidates = (
        Job.objects.alias(last_seen=Coalesce("heartbeat_at", "created_at"))
        .filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING], last_seen__lt=stale)
        .values_list("pk", flat=True)
    )
    for job_id in list(candidates[:500]):
        with transaction.atomic():
            job = (
                Job.objects.select_for_update(skip_locked=True)
                .filter(pk=job_id)
                .first()
            )
            if job is None:
                continue
            last_seen = job.heartbeat_at or job.created_at
            if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING) or (
                last_seen >= stale
            ):
                continue
            if job.attempts >= settings.PSI_JOB_MAX_ATTEMPTS:
                job_fail(job, error=f"stalled; gave up after {job.attempts} attempts")
                counts["failed"] += 1
                continue
            job.status = Job.Status.QUEUED
            job.heartbeat_at = now
            job.message = "re-enqueued after stalling"
            job.save()
            transaction.on_commit(lambda job=job: _send(job))
            counts["requeued"] += 1
    return counts
