"""Celery tasks of imaging: a few lines each, a Job in and a service called."""

from celery import shared_task

from cases.imaging.services import INGEST_TASK, study_ingest
from psi.jobs import job_execute
from psi.tasks import JOB_TASK_OPTIONS


@shared_task(name=INGEST_TASK, **JOB_TASK_OPTIONS)
def study_ingest_task(self, job_id: int) -> None:
    job_execute(job_id, study_ingest, takeover=self.request.retries > 0)
