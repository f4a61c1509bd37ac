"""Which cases take imaging, from whom, and under what consent.

Which cases take imaging (``IMAGING_STATUSES``): a submitted case (first arrival),
one that has received imaging (more series, or a re-sent study), and one whose imaging
was accepted (an additional series for the same study). Once design has started the
design stands on a reviewed, signed study: new imaging then needs the case put back
(or a new case), so ``in_design`` and later refuse it, as do draft, on-hold,
cancelled and closed cases.
"""

from __future__ import annotations

from cases.models import Case
from cases.selectors import PATIENT_IDENTITY
from consent.models import Purpose
from consent.services import consent_require
from psi.errors import Conflict
from psi.permissions import has_object_perm

S = Case.Status

#: Case statuses that take imaging (see the module docstring).
IMAGING_STATUSES = frozenset({S.SUBMITTED, S.IMAGING_RECEIVED, S.IMAGING_ACCEPTED})


def case_for_accession(accession_number: str) -> Case | None:
    """The case whose reference is the Accession Number (``C-2026-00042``), exactly
    (DICOM's trailing padding aside)."""
    reference = (accession_number or "").rstrip(" \x00")
    if not reference:
        return None
    return (
        Case.objects.select_related("patient", "hospital", "manufacturer")
        .defer(*PATIENT_IDENTITY)
        .filter(reference=reference)
        .first()
    )


def imaging_gate(case: Case) -> None:
    """Refuse imaging for a case that does not take it (Conflict) or whose patient
    has no valid consent for imaging exchange (ConsentMissing)."""
    if case.status in (S.CANCELLED, S.CLOSED):
        raise Conflict(
            f"The case is {case.get_status_display().lower()}; it takes no imaging.",
            status=case.status,
        )
    if case.status not in IMAGING_STATUSES:
        raise Conflict(
            f"A case that is {case.get_status_display().lower()} does not take "
            "imaging.",
            status=case.status,
        )
    consent_require(case.patient, Purpose.IMAGING_EXCHANGE)


def may_send(actor, case: Case) -> bool:
    return has_object_perm(actor, "submit_case", case) or has_object_perm(
        actor, "manage_case", case
    )


def locked_case(case_id: int) -> Case:
    return (
        Case.objects.select_for_update(of=("self",))
        .select_related("patient", "hospital", "manufacturer")
        .defer(*PATIENT_IDENTITY)
        .get(pk=case_id)
    )


def sender_label(sender, calling_ae_title: str) -> str:
    if sender is not None:
        return f"user {sender.get_username()}"
    return f"DICOM node {calling_ae_title}" if calling_ae_title else "unknown sender"
