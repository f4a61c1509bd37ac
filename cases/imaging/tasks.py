"""Celery tasks of imaging: a few lines each, a Job in and a service called."""

from celery import shared_task

from cases.imaging.services import (
    EVALUATE_TASK,
    INGEST_TASK,
    PREVIEWS_TASK,
    series_previews_make,
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
