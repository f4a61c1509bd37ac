"""Two transitions of one case at the same time: one wins, the other answers 409.

Needs real row locks, so PostgreSQL: SQLite has no SELECT ... FOR UPDATE (it locks
the whole database per writer), and its in-memory test database is not shared
between threads.
"""

import threading
import time

import pytest
from django.db import connection, connections, transaction
from rest_framework.test import APIClient

from cases import services
from cases.models import Case
from cases.services import IllegalTransition

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="row locks (SELECT ... FOR UPDATE) and a database shared between "
        "threads need PostgreSQL; run with DATABASE_URL=postgres://...",
    ),
]

S = Case.Status


def _in_thread(target, results, key):
    def run():
        try:
            results[key] = target()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[key] = exc
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def test_two_concurrent_api_transitions_one_wins_the_other_gets_409(
    case_at, case_manager
):
    case = case_at(S.SUBMITTED)
    url = f"/api/v1/cases/{case.pk}/receive-imaging/"
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def post():
        client = APIClient()
        client.force_authenticate(user=case_manager)
        start.wait()
        return client.post(url, format="json")

    threads = [_in_thread(post, results, key) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(results[key].status_code for key in ("a", "b"))
    assert statuses == [200, 409], results
    conflict = next(r for r in results.values() if r.status_code == 409).json()
    assert conflict["status"] == S.IMAGING_RECEIVED
    case.refresh_from_db()
    assert case.status == S.IMAGING_RECEIVED
    assert case.events.filter(transition="receive_imaging").count() == 1


def test_a_transition_waits_for_the_row_lock_and_then_sees_the_new_status(
    case_at, case_manager, coordinator
):
    case = case_at(S.SUBMITTED)
    results: dict[str, object] = {}
    waiting = _in_thread(
        lambda: services.case_receive_imaging(actor=case_manager, case=case),
        results,
        "second",
    )
    with transaction.atomic():
        Case.objects.select_for_update().get(pk=case.pk)
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive(), "the second transition did not wait for the lock"
        services.case_cancel(actor=coordinator, case=case, reason="Surgery off")
    waiting.join(timeout=60)

    assert isinstance(results["second"], IllegalTransition)
    assert results["second"].extra["status"] == S.CANCELLED
    case.refresh_from_db()
    assert case.status == S.CANCELLED
