"""Celery tasks of imaging: a few lines each, a Job in and a service called."""

from celery import shared_task
from celery.signals import worker_init

from cases.imaging.deid import DEFAULT_OPTIONS
from cases.imaging.deid.table import compile_profile
from cases.imaging.services import (
    EVALUATE_TASK,
    INGEST_TASK,
    PREVIEWS_TASK,
    STAGING_SWEEP_TASK,
    series_previews_make,
    staging_sweep,
    study_evaluate,
    study_ingest,
)
from psi.jobs import job_execute
from psi.tasks import JOB_TASK_OPTIONS


@shared_task(name=INGEST_TASK, **JOB_TASK_OPTIONS)
def study_ingest_task(self, job_id: int) -> None:
    job_execute(job_id, study_ingest, takeover=self.request.retries > 0)


@shared_task(name=EVALUATE_TASK, **JOB_TASK_OPTIONS)
def study_evaluate_task(self, job_id: int) -> None:
    job_execute(job_id, study_evaluate, takeover=self.request.retries > 0)


@shared_task(name=PREVIEWS_TASK, **JOB_TASK_OPTIONS)
def series_previews_task(self, job_id: int) -> None:
    job_execute(job_id, series_previews_make, takeover=self.request.retries > 0)


@shared_task(name=STAGING_SWEEP_TASK, ignore_result=True)
def staging_sweep_task() -> dict:
    return staging_sweep()


@worker_init.connect
def deid_table_load(**_) -> None:
    """Read and compile the de-identification table in the worker's main process,
    before it forks its pool: every pool process starts with it, instead of each
    spending a tenth of a second of its first ingest on it."""
    compile_profile(DEFAULT_OPTIONS)
