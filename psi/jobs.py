"""Background jobs: the persisted state of work that Celery runs.

A service creates the Job and enqueues its task when the transaction commits. The task
claims the Job with a state guard, so a duplicate delivery does nothing, and reports
progress on the row. A periodic sweeper re-enqueues jobs whose worker vanished.

Each claim is an *attempt* (``Job.attempts``), and so is each re-send of a job that
no worker took. Only the attempt that holds the job may report progress or finish
it: once a job was taken over (its worker died, or the sweeper re-enqueued it), an
older attempt that is somehow still alive can no longer write. A handler with an
effect (a record, an audit event) writes it in one transaction with
:func:`job_succeed`, so the effect and the success commit together or not at all, and
a job retried after a crash has its effect exactly once.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from celery import current_app
from celery.exceptions import NotRegistered
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import OperationalError, models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules
from kombu.exceptions import OperationalError as BrokerUnavailable

from psi.models import Job

log = logging.getLogger(__name__)

#: Errors worth retrying: the database or broker was briefly away.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, ConnectionError)

Progress = Callable[[int, str], None]


class JobSuperseded(Exception):
    """This attempt no longer holds the job: it was taken over or already ended."""


def tasks_load() -> None:
    """Import the apps' ``tasks`` modules, so their tasks are registered.

    A worker does this when it starts; a web process or the DICOM listener needs
    it before its first job. Not Celery's ``import_default_modules``: in a Django
    project that also runs every system check, a second of CPU in the middle of
    the first request (or the first DICOM transfer)."""
    autodiscover_modules("tasks")


def jobs_prepare() -> None:
    """Get a long-running process ready to send jobs: the tasks registered and the
    broker's client loaded and connected, so the first job does not pay for it
    (the DICOM listener's first transfer would). A broker that is down now is no
    error: each job connects again when it is sent."""
    tasks_load()
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return
    try:
        with current_app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
    except Exception:  # any broker failure means the same here
        log.warning("the broker is not reachable yet; jobs are sent once it is")


def _task(name: str):
    try:
        return current_app.tasks[name]
    except NotRegistered:
        tasks_load()
        return current_app.tasks[name]


def _send(job: Job, countdown: float = 0) -> None:
    try:
        _task(job.task_name).apply_async(args=[job.pk], countdown=countdown or None)
    except BrokerUnavailable:
        # The Job row is committed; the sweeper sends it again once it looks stalled.
        log.exception("job %s did not reach the broker; the sweeper resends", job.pk)


def job_enqueue(
    *,
    kind: str,
    task_name: str,
    actor=None,
    target: models.Model | None = None,
    params: dict | None = None,
    countdown: float = 0,
) -> Job:
    """Create a queued Job and send its task once the transaction commits, to run
    ``countdown`` seconds later at the earliest (eager Celery runs it at once).

    Keep countdowns well below PSI_JOB_STALL_SECONDS: the sweeper takes a job
    queued for longer than that for a lost message and sends it again.
    """
    job = Job.objects.create(
        kind=kind,
        task_name=task_name,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        target_type=ContentType.objects.get_for_model(target) if target else None,
        target_id=str(target.pk) if target else "",
        params=params or {},
    )
    transaction.on_commit(lambda: _send(job, countdown))
    return job


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


def _held(job: Job) -> models.QuerySet[Job]:
    """The job's row, provided the attempt ``job`` stands for still holds it."""
    return Job.objects.filter(
        pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts
    )


def job_progress(job: Job, percent: int, message: str = "") -> None:
    """Report progress, which is also the heartbeat the sweeper watches.

    Raises JobSuperseded when another attempt took the job over, so a handler that
    outlived its takeover stops instead of working on.
    """
    job.progress = max(0, min(100, int(percent)))
    job.message = message[:500]
    job.heartbeat_at = timezone.now()
    # A conditional UPDATE rather than save(): progress and heartbeats are not
    # changes of the record worth a history row, and the condition keeps a
    # superseded attempt from overwriting the one that holds the job.
    updated = _held(job).update(
        progress=job.progress, message=job.message, heartbeat_at=job.heartbeat_at
    )
    if not updated:
        raise JobSuperseded(f"job {job.pk} attempt {job.attempts} was superseded")


def job_succeed(job: Job, *, result: dict | None = None, message: str = "") -> None:
    """Mark the attempt's job succeeded, inside the caller's transaction if any.

    A handler calls this in the ``transaction.atomic()`` block that writes its
    effect. If the attempt no longer holds the job, JobSuperseded is raised and the
    effect rolls back with it.
    """
    with transaction.atomic():
        if _held(job).select_for_update().first() is None:
            raise JobSuperseded(f"job {job.pk} attempt {job.attempts} was superseded")
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


def _end_attempt(job: Job, end: Callable[[Job], None]) -> None:
    # Fail or requeue only while this attempt holds the job: the error of a
    # superseded attempt says nothing about the attempt now running.
    with transaction.atomic():
        if _held(job).select_for_update().first() is None:
            log.warning("job %s attempt %s ended late", job.pk, job.attempts)
            return
        end(job)


def job_execute(
    job_id: int,
    handler: Callable[[Job, Progress], dict | None],
    *,
    takeover: bool = False,
) -> Job | None:
    """Run ``handler`` for the job: claim, run, record the outcome.

    The handler may run again after a crash, so its writes are idempotent or, better,
    committed together with :func:`job_succeed` (then its return value is ignored).
    Otherwise the job succeeds with the handler's return value as its result.
    Transient errors put the job back in the queue and re-raise so Celery retries
    with backoff; any other error fails the job and re-raises.
    """
    job = job_claim(job_id, takeover=takeover)
    if job is None:
        return None

    def progress(percent: int, message: str = "") -> None:
        job_progress(job, percent, message)

    try:
        result = handler(job, progress)
        if job.status != Job.Status.SUCCEEDED:
            job_succeed(job, result=result or {})
    except JobSuperseded:
        log.warning("job %s attempt %s was superseded; stopped", job.pk, job.attempts)
        return None
    except TRANSIENT_ERRORS as exc:
        reason = f"transient error, will retry: {type(exc).__name__}"
        _end_attempt(job, lambda held: job_requeue(held, reason=reason))
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        _end_attempt(job, lambda held: job_fail(held, error=error))
        raise
    return job


def job_sweep(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Re-enqueue jobs that stalled; give up on those out of attempts."""
    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=settings.PSI_JOB_STALL_SECONDS)
    counts = {"requeued": 0, "failed": 0}
    candidates = (
        Job.objects.alias(last_seen=Coalesce("heartbeat_at", "created_at"))
        .filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING], last_seen__lt=stale)
        .order_by()
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
                if job.status == Job.Status.QUEUED and job.started_at is None:
                    error = (
                        f"no worker took it; gave up after {job.attempts + 1} sends "
                        f"(does a worker consume the queue and know {job.task_name}?)"
                    )
                else:
                    error = f"stalled; gave up after {job.attempts} attempts"
                job_fail(job, error=error)
                counts["failed"] += 1
                continue
            if job.status == Job.Status.QUEUED:
                # Sent, and no worker took it: the send counts as an attempt, or a
                # job that no worker knows would be sent again forever.
                job.attempts += 1
            job.status = Job.Status.QUEUED
            job.heartbeat_at = now
            job.message = "re-enqueued after stalling"
            job.save()
            transaction.on_commit(lambda job=job: _send(job))
            counts["requeued"] += 1
    return counts
