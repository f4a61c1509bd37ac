"""Which cases take imaging, from whom, and under what consent.

Which cases take imaging (``IMAGING_STATUSES``): a submitted case (first arrival),
one that has received imaging (more series, or a re-sent study), and one whose imaging
was accepted (an additional series for the same study). Once design has started the
design stands on a reviewed, signed study: new imaging then needs the case put back
(or a new case), so ``in_design`` and later refuse it, as do draft, on-hold,
cancelled and closed cases.
"""

from __future__ import annotations

import ipaddress

from cases.imaging.models import DicomPeer, peer_networks
from cases.models import Case
from cases.selectors import PATIENT_IDENTITY
from consent.models import Purpose
from consent.services import consent_require
from psi.errors import Conflict, PermissionRefused
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


def dicom_peer_admit(calling_ae_title: str, address: str) -> int:
    """The hospital (its id) of the active DICOM peer that calls as
    ``calling_ae_title`` from the IP ``address``; PermissionRefused, saying why,
    when there is none or its ``networks`` leave that address out."""
    calling = (calling_ae_title or "").strip()
    peer = (
        DicomPeer.objects.filter(ae_title=calling, is_active=True)
        .values_list("hospital_id", "networks")
        .first()
    )
    if peer is None:
        raise PermissionRefused(f"Unknown calling AE title {calling!r}.")
    hospital_id, networks = peer
    try:
        allowed = peer_networks(networks)
    except ValueError as error:  # saved around the admin's validation: fail closed
        raise PermissionRefused(
            f"The networks of AE title {calling!r} are not valid: {error}"
        ) from None
    if allowed and not _address_in(address, allowed):
        raise PermissionRefused(
            f"The AE title {calling!r} may not call from {address or 'unknown'}."
        )
    return hospital_id


def _address_in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")  # a zone (fe80::1%eth0) is kept
    except ValueError:
        return False
    # A listener bound to "::" sees IPv4 callers as ::ffff:a.b.c.d.
    mapped = getattr(ip, "ipv4_mapped", None)
    candidates = (ip,) if mapped is None else (ip, mapped)
    # An address of the other IP version is simply not in a network.
    return any(candidate in network for candidate in candidates for network in networks)


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
