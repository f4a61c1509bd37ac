"""Long-running processes keep their database connection between units of work."""

import threading

import pytest
from django.db import close_old_connections, connection, connections

from psi.database import keep_connections

from .conftest import on_postgresql


def _same_connection_after_cleanup() -> bool:
    """In a thread of its own, as the listener's hand-over thread: whether the
    connection survives the clean-up between two units of work."""
    kept = []

    def unit_of_work():
        try:
            connection.ensure_connection()
            first = connection.connection
            close_old_connections()
            kept.append(connection.connection is first and first is not None)
        finally:
            connection.close()

    thread = threading.Thread(target=unit_of_work)
    thread.start()
    thread.join()
    return kept[0]


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_long_running_process_keeps_its_connection(monkeypatch, settings):
    options = connections.settings["default"]
    for name in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS"):  # restored afterwards
        monkeypatch.setitem(options, name, options[name])
    monkeypatch.setitem(options, "CONN_MAX_AGE", 0)
    assert not _same_connection_after_cleanup()  # a web process's default
    settings.PSI_WORKER_CONN_MAX_AGE = 600
    keep_connections()
    assert options["CONN_MAX_AGE"] == 600 and options["CONN_HEALTH_CHECKS"]
    assert _same_connection_after_cleanup()
