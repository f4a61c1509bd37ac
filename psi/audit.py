"""The audit chain: append-only, hash-linked events of what matters legally."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from psi.canonical import sha256_of, to_jsonable
from psi.middleware import correlation_id
from psi.models import AuditEvent, Organisation

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same for every writer of the chain.
_CHAIN_LOCK_KEY = 0x7051_A0D1


def _event_content(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "organisation_id": event.organisation_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "payload": event.payload,
        "reason": event.reason,
        "correlation_id": event.correlation_id,
        "prev_hash": event.prev_hash,
    }


def event_hash(event: AuditEvent) -> str:
    return sha256_of(_event_content(event))


def _lock_chain_head() -> None:
    # Concurrent appends must not both link to the same head. PostgreSQL serialises
    # them with a transaction-scoped advisory lock; SQLite allows one writer anyway.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


def object_label(obj: models.Model) -> str:
    return obj._meta.label_lower


def audit_append(
    *,
    actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str | int | None = "",
    payload: dict | None = None,
    reason: str = "",
    organisation: Organisation | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    if obj is not None:
        object_type = object_label(obj)
        object_id = obj.pk
    actor = actor if getattr(actor, "is_authenticated", False) else None
    with transaction.atomic():
        _lock_chain_head()
        head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
        event = AuditEvent(
            seq=(head["seq"] + 1) if head else 1,
            created_at=timezone.now(),
            actor=actor,
            actor_name=actor.get_username() if actor else "",
            organisation=organisation,
            action=action,
            object_type=object_type,
            object_id="" if object_id is None else str(object_id),
            payload=to_jsonable(payload or {}),
            reason=reason,
            correlation_id=correlation_id(),
            prev_hash=head["hash"] if head else GENESIS_HASH,
        )
        event.hash = event_hash(event)
        event.save(force_insert=True)
    return event


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def audit_verify(*, batch_size: int = 2000, progress=None) -> ChainReport:
    """Recompute the chain from the first event; name the first broken link.

    A link is broken when its stored hash does not match its content, when it does
    not point to the previous event's hash, or when a sequence number is missing.
    """
    total = AuditEvent.objects.count()
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch_size):
        if event.seq != expected_seq:
            return ChainReport(
                checked,
                expected_seq,
                f"event #{expected_seq} is missing (next present is #{event.seq})",
            )
        if event.prev_hash != expected_prev:
            return ChainReport(
                checked,
                event.seq,
                f"event #{event.seq} does not link to #{event.seq - 1}",
            )
        if event_hash(event) != event.hash:
            return ChainReport(
                checked,
                event.seq,
                f"event #{event.seq} was altered after it was written",
            )
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
        if progress and checked % batch_size == 0:
            progress(checked, total)
    return ChainReport(checked)


def audit_verify_job(job, progress) -> dict:
    """Job handler: verify the chain, report progress, record that it was checked.

    The "audit.verified" event commits together with the job's success, so a job
    retried after its worker died records one verification, not two.
    """
    from psi.jobs import job_succeed

    report = audit_verify(
        progress=lambda done, total: progress(done * 100 // max(total, 1), "verifying")
    )
    result = {
        "ok": report.ok,
        "checked": report.checked,
        "broken_seq": report.broken_seq,
        "problem": report.problem,
    }
    if not report.ok:
        log.error("audit chain broken: %s", report.problem)
    with transaction.atomic():
        audit_append(
            actor=job.actor,
            action="audit.verified",
            object_type="psi.job",
            object_id=job.pk,
            payload={
                "ok": report.ok,
                "checked": report.checked,
                "broken_seq": report.broken_seq,
            },
        )
        job_succeed(
            job,
            result=result,
            message=f"{report.checked} events verified"
            if report.ok
            else report.problem,
        )
    return result


def audit_verify_enqueue(*, actor):
    """Verify the chain in the background; the Job shows progress and the outcome."""
    from psi.jobs import job_enqueue

    with transaction.atomic():
        return job_enqueue(
            kind="audit.verify", task_name="psi.tasks.audit_verify", actor=actor
        )
