"""The audit chain: linked, verifiable, append-only (21 CFR 11.10(e))."""

import datetime
import os
import subprocess
import sys
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from psi.audit import GENESIS_HASH, audit_append, audit_verify, event_hash
from psi.models import AuditEvent
from tests.psi.conftest import (
    audit_trigger_disabled,
    on_postgresql,
    subprocess_database_url,
)


def _events(n, actor=None):
    return [
        audit_append(actor=actor, action="test.event", payload={"n": i})
        for i in range(n)
    ]


@pytest.mark.django_db
class TestChain:
    def test_each_event_links_to_the_one_before(self, surgeon):
        first, second = _events(2, surgeon)
        assert second.seq == first.seq + 1
        assert second.prev_hash == first.hash
        assert AuditEvent.objects.get(seq=1).prev_hash == GENESIS_HASH

    def test_the_chain_verifies(self, surgeon):
        _events(5, surgeon)
        report = audit_verify()
        assert report.ok
        assert report.checked == AuditEvent.objects.count()

    def test_an_event_records_actor_object_reason_and_correlation(self, surgeon):
        event = audit_append(
            actor=surgeon,
            action="test.read",
            obj=surgeon,
            reason="checking",
            organisation=surgeon.memberships.get().organisation,
        )
        assert event.actor_name == "surgeon"
        assert (event.object_type, event.object_id) == ("auth.user", str(surgeon.pk))
        assert event.reason == "checking"
        assert event.organisation.name == "Hospital A"

    def test_the_hash_survives_the_round_trip_through_the_database(self, db):
        payload = {
            "when": datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC),
            "day": datetime.date(2026, 1, 2),
            "amount": Decimal("2.50"),
            "ratio": 0.1,
            "nested": {"b": [1, "two", None, True], "a": "Ünïcödé"},
        }
        event = audit_append(actor=None, action="test.types", payload=payload)
        stored = AuditEvent.objects.get(pk=event.pk)
        assert event_hash(stored) == stored.hash == event.hash

    def test_an_anonymous_actor_is_recorded_as_nobody(self, db):
        event = audit_append(actor=None, action="test.system", object_id=None)
        assert event.actor is None and event.actor_name == ""
        assert event.object_id == ""


@pytest.mark.django_db
class TestAuditVerifyCommand:
    def test_an_intact_chain_prints_ok_with_the_count(self, surgeon):
        _events(3, surgeon)
        out = StringIO()
        call_command("audit_verify", stdout=out)
        assert out.getvalue().strip() == (
            f"OK: {AuditEvent.objects.count()} audit events verified"
        )

    def test_an_event_altered_behind_the_applications_back_is_named(self, surgeon):
        target = _events(4, surgeon)[1]
        with audit_trigger_disabled() as cursor:
            cursor.execute(
                "UPDATE psi_auditevent SET reason = %s WHERE seq = %s",
                ["nothing happened", target.seq],
            )
        with pytest.raises(CommandError) as refused:
            call_command("audit_verify")
        assert refused.value.returncode == 1
        assert f"#{target.seq} was altered" in str(refused.value)

    def test_an_altered_event_with_a_recomputed_hash_breaks_the_next_link(
        self, surgeon
    ):
        target, after, *_ = _events(3, surgeon)
        target.reason = "rewritten"
        forged = event_hash(target)
        with audit_trigger_disabled() as cursor:
            cursor.execute(
                "UPDATE psi_auditevent SET reason = %s, hash = %s WHERE seq = %s",
                ["rewritten", forged, target.seq],
            )
        with pytest.raises(CommandError) as refused:
            call_command("audit_verify")
        assert f"#{after.seq} does not link to #{target.seq}" in str(refused.value)

    def test_a_deleted_event_is_named_as_missing(self, surgeon):
        target = _events(4, surgeon)[1]
        with audit_trigger_disabled() as cursor:
            cursor.execute("DELETE FROM psi_auditevent WHERE seq = %s", [target.seq])
        with pytest.raises(CommandError) as refused:
            call_command("audit_verify")
        assert refused.value.returncode == 1
        assert f"#{target.seq} is missing" in str(refused.value)

    def test_a_small_batch_size_finds_the_same_link(self, surgeon):
        _events(2, surgeon)
        with audit_trigger_disabled() as cursor:
            cursor.execute("UPDATE psi_auditevent SET action = 'x' WHERE seq = 1")
        with pytest.raises(CommandError) as refused:
            call_command("audit_verify", "--batch-size", "1")
        assert "BROKEN at event #1" in str(refused.value)


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_audit_verify_as_a_process_exits_non_zero_on_a_broken_chain(surgeon):
    # What cron and CI see: the exit status and the message of a real process.
    _events(3, surgeon)
    env = {**os.environ, "DATABASE_URL": subprocess_database_url()}

    def run():
        return subprocess.run(
            [sys.executable, "manage.py", "audit_verify"],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    intact = run()
    assert intact.returncode == 0, intact.stderr
    assert f"OK: {AuditEvent.objects.count()} audit events verified" in intact.stdout

    with audit_trigger_disabled() as cursor:  # autocommit here: really changed
        cursor.execute("UPDATE psi_auditevent SET reason = 'forged' WHERE seq = 2")
    broken = run()
    assert broken.returncode == 1
    assert "BROKEN at event #2: event #2 was altered" in broken.stderr


@pytest.mark.django_db
class TestAppendOnly:
    def test_the_database_refuses_to_update_an_event(self, surgeon):
        event = _events(1, surgeon)[0]
        with pytest.raises(DatabaseError), transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).update(reason="changed")
        with pytest.raises(DatabaseError), transaction.atomic():
            event.reason = "changed"
            event.save()
        assert AuditEvent.objects.get(pk=event.pk).reason == ""

    def test_raw_sql_cannot_update_an_event_either(self, surgeon):
        event = _events(1, surgeon)[0]
        with (
            pytest.raises(DatabaseError),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(
                "UPDATE psi_auditevent SET reason = 'x' WHERE id = %s", [event.pk]
            )

    @pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="SQLite keeps DELETE possible so that the test runner's flush works "
        "(see migration 0002); audit_verify still finds a deletion",
    )
    def test_the_database_refuses_to_delete_an_event(self, surgeon):
        event = _events(1, surgeon)[0]
        with pytest.raises(DatabaseError), transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).delete()
        with (
            pytest.raises(DatabaseError),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("DELETE FROM psi_auditevent WHERE id = %s", [event.pk])
        assert AuditEvent.objects.filter(pk=event.pk).exists()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_many_connections_keep_one_unforked_chain():
    threads, per_thread = 6, 15
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def append_many(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                with transaction.atomic():
                    audit_append(
                        actor=None, action="test.concurrent", payload={"t": n, "i": i}
                    )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=append_many, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers)
    assert not errors, errors

    total = threads * per_thread
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, total + 1))
    previous = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(previous)) == total, "two events link to the same predecessor"
    report = audit_verify()
    assert report.ok and report.checked == total
