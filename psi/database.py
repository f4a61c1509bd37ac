"""Database connections of the long-running processes: Celery workers and the DICOM
listener."""

from __future__ import annotations

from django.conf import settings
from django.db import connections


def keep_connections() -> None:
    """Keep this process's database connections from one unit of work to the next
    (a task, a batch handed to the ingest), for PSI_WORKER_CONN_MAX_AGE seconds,
    health-checked before reuse.

    DATABASE_CONN_MAX_AGE is 0 by default (a connection per web request): a process
    that calls ``close_old_connections`` between units of work would otherwise open
    a new connection for each, a few milliseconds here and a new server process
    there. Applies to the connections the process opens afterwards (in every
    thread, and in the processes it forks)."""
    for alias in connections:
        options = connections.settings[alias]
        options["CONN_MAX_AGE"] = settings.PSI_WORKER_CONN_MAX_AGE
        options["CONN_HEALTH_CHECKS"] = True
