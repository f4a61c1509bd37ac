"""The Celery application: ``celery -A psi worker`` and ``celery -A psi beat``."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

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
