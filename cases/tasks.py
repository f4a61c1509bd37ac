"""Celery tasks of the cases app (autodiscovered); imaging's live in
cases.imaging.tasks."""

from cases.imaging.tasks import study_ingest_task

__all__ = ["study_ingest_task"]
