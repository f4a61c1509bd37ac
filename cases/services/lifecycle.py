"""The case lifecycle (DESIGN.md): one service per transition, each recording who
moved the case, when, and why, under a row lock so that concurrent transitions
have one winner."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from cases.models import Case, CaseEvent
from cases.selectors import PATIENT_IDENTITY
from cases.services.prescriptions import prescription_latest
from consent.models import Purpose
from consent.services import consent_require
from psi.audit import audit_append
from psi.errors import Conflict, DomainError, PermissionRefused
from psi.permissions import has_object_perm, require_object_perm

S = Case.Status


_BEFORE_IMPLANT = frozenset(
    {
        S.DRAFT,
        S.SUBMITTED,
        S.IMAGING_RECEIVED,
        S.IMAGING_ACCEPTED,
        S.IN_DESIGN,
        S.DESIGN_REVIEW,
        S.DESIGN_APPROVED,
        S.IN_MANUFACTURING,
        S.RELEASED,
        S.SHIPPED,
    }
)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[str]
    target: str | None  # None: back to the status the case was held from
    permissions: tuple[str, ...]
    needs_reason: bool = False
    label: str = ""  # what admin buttons and API docs call the step


def _t(name, sources, target, *permissions, needs_reason=False, label=""):
    sources = frozenset(sources if isinstance(sources, set | frozenset) else {sources})
    label = label or name.replace("_", " ").capitalize()
    return Transition(name, sources, target, permissions, needs_reason, label)


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        _t("submit", S.DRAFT, S.SUBMITTED, "submit_case"),
        _t("receive_imaging", S.SUBMITTED, S.IMAGING_RECEIVED, "manage_case"),
        _t("accept_imaging", S.IMAGING_RECEIVED, S.IMAGING_ACCEPTED, "manage_case"),
        _t(
            "request_rescan",
            S.IMAGING_RECEIVED,
            S.SUBMITTED,
            "manage_case",
            needs_reason=True,
        ),
        _t("start_design", S.IMAGING_ACCEPTED, S.IN_DESIGN, "manage_case"),
        _t("request_review", S.IN_DESIGN, S.DESIGN_REVIEW, "manage_case"),
        _t("approve_design", S.DESIGN_REVIEW, S.DESIGN_APPROVED, "review_design"),
        _t(
            "request_changes",
            S.DESIGN_REVIEW,
            S.IN_DESIGN,
            "review_design",
            needs_reason=True,
        ),
        _t("start_manufacturing", S.DESIGN_APPROVED, S.IN_MANUFACTURING, "manage_case"),
        _t("release", S.IN_MANUFACTURING, S.RELEASED, "release_case"),
        _t("ship", S.RELEASED, S.SHIPPED, "manage_case"),
        _t("record_implantation", S.SHIPPED, S.IMPLANTED, "record_clinical"),
        _t("start_follow_up", S.IMPLANTED, S.FOLLOW_UP, "record_clinical"),
        _t("close", S.FOLLOW_UP, S.CLOSED, "record_clinical", "manage_case"),
        _t(
            "hold",
            _BEFORE_IMPLANT,
            S.ON_HOLD,
            "submit_case",
            "manage_case",
            needs_reason=True,
        ),
        _t("resume", S.ON_HOLD, None, "submit_case", "manage_case", needs_reason=True),
        _t(
            "cancel",
            _BEFORE_IMPLANT | {S.ON_HOLD},
            S.CANCELLED,
            "submit_case",
            "manage_case",
            needs_reason=True,
        ),
    ]
}


class IllegalTransition(Conflict):
    code = "illegal_transition"


def transitions_from(status: str) -> list[str]:
    return [t.name for t in TRANSITIONS.values() if status in t.sources]


def transitions_available(
    user, case: Case, *, granted: Collection[str] | None = None
) -> list[str]:
    """Transitions the case's status allows and ``user`` may perform.

    ``granted``, the codenames ``user`` holds on ``case`` (as read for a whole page
    by ``cases.selectors.case_rows``), saves the queries per case.
    """
    if granted is None:
        return [
            name
            for name in transitions_from(case.status)
            if any(
                has_object_perm(user, p, case) for p in TRANSITIONS[name].permissions
            )
        ]
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return []
    return [
        name
        for name in transitions_from(case.status)
        if user.is_superuser or any(p in granted for p in TRANSITIONS[name].permissions)
    ]


def _transition(
    *,
    actor,
    case: Case,
    name: str,
    reason: str = "",
    guard: Callable[[Case], None] | None = None,
    on_behalf_of: str = "",
) -> Case:
    """``on_behalf_of`` is the system path (imaging ingest): no permission check on
    ``actor`` (the sending user, or None for a DICOM node), who is still recorded,
    and the reason names the sender."""
    transition = TRANSITIONS[name]
    reason = (reason or "").strip()
    if transition.needs_reason and not reason:
        raise DomainError("Give a reason for this step.", field="reason")
    if on_behalf_of:
        reason = f"{reason} [by the imaging ingest on behalf of {on_behalf_of}]".strip()
    with transaction.atomic():
        # The row lock makes concurrent transitions queue: the second one sees the
        # status the first one left and is refused with 409. ``of=("self",)`` locks
        # the case only, not the patient and organisations joined for reading.
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("patient", "hospital", "manufacturer")
            .defer(*PATIENT_IDENTITY)
            .get(pk=case.pk)
        )
        if not on_behalf_of:
            require_object_perm(actor, "view", case)
            if not any(has_object_perm(actor, p, case) for p in transition.permissions):
                raise PermissionRefused(
                    f"You may not {name.replace('_', ' ')} this case."
                )
        if case.status not in transition.sources:
            raise IllegalTransition(
                f"A case that is {case.get_status_display().lower()} cannot "
                f"{name.replace('_', ' ')}.",
                status=case.status,
                allowed=transitions_from(case.status),
            )
        if guard:
            guard(case)
        source = case.status
        target = transition.target or case.held_from_status
        if name == "hold":
            case.held_from_status = source
        elif source == S.ON_HOLD:
            # Resumed or cancelled: the case is no longer held from anywhere.
            case.held_from_status = ""
        case.status = target
        case._history_user = actor
        # simple-history keeps at most 100 characters; the CaseEvent and the audit
        # event carry the whole reason.
        case._change_reason = (reason or name)[:100]
        case.save()
        event = CaseEvent(
            case=case,
            transition=name,
            from_status=source,
            to_status=target,
            actor=actor if getattr(actor, "is_authenticated", False) else None,
            at=timezone.now(),
            reason=reason,
        )
        event._history_user = event.actor
        event.save()
        audit_append(
            actor=actor,
            action=f"case.{name}",
            obj=case,
            organisation=case.hospital,
            payload={"reference": case.reference, "from": source, "to": target},
            reason=reason,
        )
    return case


def _require_signed_prescription(case: Case, step: str) -> None:
    # REGULATORY 2: the prescription is signed before design starts; a newer,
    # unsigned version written meanwhile stops the case until it is signed too.
    latest = prescription_latest(case)
    if latest is None or not latest.is_signed:
        raise Conflict(
            f"The case needs its latest prescription signed by the prescriber "
            f"before it can {step}.",
            status=case.status,
        )


def _submit_guard(case: Case) -> None:
    consent_require(case.patient, Purpose.IMAGING_EXCHANGE)
    _require_signed_prescription(case, "be submitted")


def _imaging_exchange_guard(case: Case) -> None:
    # Imaging reaches the manufacturer only under consent; a withdrawal between
    # submission and arrival stops the exchange (GDPR Art. 7(3), REGULATORY 30).
    consent_require(case.patient, Purpose.IMAGING_EXCHANGE)


def _start_design_guard(case: Case) -> None:
    # Imported here: the imaging services move cases through this module.
    from cases.imaging.services import study_review_passed

    _require_signed_prescription(case, "go to design")
    # REGULATORY 50: design starts only on an accepted study whose visual review
    # (motion, artefacts, coverage) is signed with every finding ok.
    if not study_review_passed(case):
        raise Conflict(
            "The case needs an accepted imaging study with a signed visual review "
            "that found everything ok before it can go to design.",
            status=case.status,
        )


def _request_review_guard(case: Case) -> None:
    _require_signed_prescription(case, "go to design review")


def case_submit(*, actor, case: Case, reason: str = "") -> Case:
    """Send the case to the manufacturer: needs consent for imaging exchange and a
    signed prescription."""
    return _transition(
        actor=actor, case=case, name="submit", reason=reason, guard=_submit_guard
    )


def case_receive_imaging(
    *, actor, case: Case, reason: str = "", on_behalf_of: str = ""
) -> Case:
    """Imaging arrived at the manufacturer: needs consent for imaging exchange.

    ``on_behalf_of`` (the sender's user name or calling AE title) is for the imaging
    ingest only, which moves the case for the system; interfaces never pass it.
    """
    return _transition(
        actor=actor,
        case=case,
        name="receive_imaging",
        reason=reason,
        guard=_imaging_exchange_guard,
        on_behalf_of=on_behalf_of,
    )


def case_accept_imaging(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="accept_imaging", reason=reason)


def case_request_rescan(
    *, actor, case: Case, reason: str, on_behalf_of: str = ""
) -> Case:
    """Back to the hospital for a new scan; ``on_behalf_of`` as for
    :func:`case_receive_imaging` (the ingest rejecting a study)."""
    return _transition(
        actor=actor,
        case=case,
        name="request_rescan",
        reason=reason,
        on_behalf_of=on_behalf_of,
    )


def case_start_design(*, actor, case: Case, reason: str = "") -> Case:
    """Design starts: needs the latest prescription signed."""
    return _transition(
        actor=actor,
        case=case,
        name="start_design",
        reason=reason,
        guard=_start_design_guard,
    )


def case_request_review(*, actor, case: Case, reason: str = "") -> Case:
    """The design goes to the surgeon's review: needs the latest prescription
    signed (a version written during design must be signed first)."""
    return _transition(
        actor=actor,
        case=case,
        name="request_review",
        reason=reason,
        guard=_request_review_guard,
    )


def case_approve_design(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="approve_design", reason=reason)


def case_request_changes(*, actor, case: Case, reason: str) -> Case:
    return _transition(actor=actor, case=case, name="request_changes", reason=reason)


def case_start_manufacturing(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(
        actor=actor, case=case, name="start_manufacturing", reason=reason
    )


def case_release(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="release", reason=reason)


def case_ship(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="ship", reason=reason)


def case_record_implantation(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(
        actor=actor, case=case, name="record_implantation", reason=reason
    )


def case_start_follow_up(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="start_follow_up", reason=reason)


def case_close(*, actor, case: Case, reason: str = "") -> Case:
    return _transition(actor=actor, case=case, name="close", reason=reason)


def case_hold(*, actor, case: Case, reason: str) -> Case:
    return _transition(actor=actor, case=case, name="hold", reason=reason)


def case_resume(*, actor, case: Case, reason: str) -> Case:
    return _transition(actor=actor, case=case, name="resume", reason=reason)


def case_cancel(*, actor, case: Case, reason: str) -> Case:
    return _transition(actor=actor, case=case, name="cancel", reason=reason)


#: The service behind each transition name, for interfaces that dispatch by name
#: (API actions, admin buttons, upper layers).
TRANSITION_SERVICES: dict[str, Callable[..., Case]] = {
    "submit": case_submit,
    "receive_imaging": case_receive_imaging,
    "accept_imaging": case_accept_imaging,
    "request_rescan": case_request_rescan,
    "start_design": case_start_design,
    "request_review": case_request_review,
    "approve_design": case_approve_design,
    "request_changes": case_request_changes,
    "start_manufacturing": case_start_manufacturing,
    "release": case_release,
    "ship": case_ship,
    "record_implantation": case_record_implantation,
    "start_follow_up": case_start_follow_up,
    "close": case_close,
    "hold": case_hold,
    "resume": case_resume,
    "cancel": case_cancel,
}


def case_advance(*, actor, case: Case, transition: str, reason: str = "") -> Case:
    """Perform the named transition through its own service."""
    try:
        service = TRANSITION_SERVICES[transition]
    except KeyError:
        raise DomainError(
            f"Unknown transition {transition!r}.", field="transition"
        ) from None
    return service(actor=actor, case=case, reason=reason)
