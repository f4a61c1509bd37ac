"""Electronic signatures (21 CFR 11.50, 11.70, 11.200, 11.300(d)).

A signable record implements ``signed_content() -> dict``: the canonical content that
the signature binds, including the SHA-256 of each of its files. The signature stores
the SHA-256 of that content; :func:`signature_verify` recomputes it, so a record that
changed after signing shows its signature as invalid.

Signing re-authenticates the signer at that moment. A failed attempt is recorded in a
transaction of its own, so it survives the refusal, and consecutive failures lock
signing for a while. Call the signing services outside any other transaction.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils import timezone

from psi.audit import audit_append
from psi.canonical import sha256_of
from psi.errors import SignatureRejected, SigningLocked
from psi.models import Signature, SigningGuard

security_log = logging.getLogger("psi.security")


def printed_name(user) -> str:
    return user.get_full_name().strip() or user.get_username()


def _content_hash(record: models.Model) -> str:
    return sha256_of(record.signed_content())


def signature_authenticate(*, signer, password: str, request=None) -> None:
    """Re-authenticate ``signer``; refuse (and remember) a wrong password.

    Every refusal is written to the audit chain in a transaction of its own that
    commits before the exception is raised, so it survives the refusal.
    """
    now = timezone.now()
    with transaction.atomic(durable=True):
        guard, _ = SigningGuard.objects.select_for_update().get_or_create(user=signer)
        locked_until = guard.locked_until
        if locked_until and locked_until > now:
            audit_append(
                actor=signer,
                action="signature.refused_locked",
                obj=signer,
                payload={"locked_until": locked_until},
            )
            outcome = "locked"
        else:
            user = authenticate(
                request, username=signer.get_username(), password=password or ""
            )
            if user is not None and user.pk == signer.pk and user.is_active:
                if guard.consecutive_failures or guard.locked_until:
                    guard.consecutive_failures = 0
                    guard.locked_until = None
                    guard.save()
                return
            guard.consecutive_failures += 1
            outcome = "failed"
            if guard.consecutive_failures >= settings.PSI_SIGNING_MAX_FAILURES:
                guard.locked_until = now + datetime.timedelta(
                    seconds=settings.PSI_SIGNING_LOCK_SECONDS
                )
                guard.consecutive_failures = 0
                outcome = "now_locked"
            guard.save()
            audit_append(
                actor=signer,
                action="signature.failed",
                obj=signer,
                payload={"locked": outcome == "now_locked"},
            )
    # 21 CFR 11.300(d): attempts at unauthorised use are reported to security.
    security_log.warning(
        "signing refused for user %s (%s)", signer.pk, outcome.replace("_", " ")
    )
    if outcome == "locked":
        raise SigningLocked(
            "Signing is locked after repeated failed attempts; try again after "
            f"{locked_until:%H:%M} UTC.",
            field="password",
        )
    if outcome == "now_locked":
        raise SigningLocked(
            "Wrong password. Signing is now locked for "
            f"{settings.PSI_SIGNING_LOCK_SECONDS // 60} minutes.",
            field="password",
        )
    raise SignatureRejected("The password is not correct.", field="password")


def signature_record(
    *, signer, meaning: str, record: models.Model, reason: str = ""
) -> Signature:
    """Bind a signature to ``record``'s current content (after authentication)."""
    signature = Signature.objects.create(
        signer=signer,
        printed_name=printed_name(signer),
        meaning=meaning,
        signed_at=timezone.now(),
        record_type=ContentType.objects.get_for_model(record),
        record_id=str(record.pk),
        content_hash=_content_hash(record),
        reason=reason,
    )
    audit_append(
        actor=signer,
        action="signature.signed",
        obj=record,
        payload={
            "signature_id": signature.pk,
            "meaning": meaning,
            "content_hash": signature.content_hash,
            "printed_name": signature.printed_name,
        },
        reason=reason,
    )
    return signature


def signature_sign(
    *, signer, password: str, meaning: str, record: models.Model, reason: str = ""
) -> Signature:
    """Re-authenticate and sign ``record`` in one call."""
    signature_authenticate(signer=signer, password=password)
    with transaction.atomic():
        return signature_record(
            signer=signer, meaning=meaning, record=record, reason=reason
        )


@dataclass(frozen=True)
class Verification:
    signature: Signature
    valid: bool
    current_hash: str


def signature_verify(signature: Signature) -> Verification:
    record = signature.record
    if record is None:
        return Verification(signature, False, "")
    current = _content_hash(record)
    return Verification(signature, current == signature.content_hash, current)


def signatures_of(record: models.Model) -> models.QuerySet[Signature]:
    return Signature.objects.filter(
        record_type=ContentType.objects.get_for_model(record), record_id=str(record.pk)
    ).select_related("signer")
