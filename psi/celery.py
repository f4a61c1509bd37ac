"""The Celery application: ``celery -A psi worker`` and ``celery -A psi beat``."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psi.settings")

app = Celery("psi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_tokens: dict[str, object] = {}


@task_prerun.connect
def _bind_correlation_id(task_id=None, **_):
    # Audit events written by a task carry the task id as their correlation id.
    from psi.middleware import set_correlation_id

    _tokens[task_id] = set_correlation_id(task_id or "")


@task_postrun.connect
def _unbind_correlation_id(task_id=None, **_):
    from psi.middleware import reset_correlation_id

    token = _tokens.pop(task_id, None)
    if token is not None:
        reset_correlation_id(token)


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **_) -> None:
    """Around each task in a worker, as around each web request: connections
    past their age, broken or left unusable are closed, the others kept. (An
    eager task runs inside the caller's request and transaction: untouched.)"""
    if task is not None and not getattr(task.request, "is_eager", False):
        from django.db import close_old_connections

        close_old_connections()


@worker_init.connect
def _keep_database_connections(**_):
    """A worker keeps its database connections from one task to the next
    (``psi.database.keep_connections``). Celery's Django fixup closes every
    connection around every task (settings tell it not to: CELERY_DB_REUSE_MAX).
    Set in the worker's main process before it forks its pool, so every pool
    process inherits it."""
    from psi.database import keep_connections

    keep_connections()
