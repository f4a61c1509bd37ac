"""The case and its lifecycle (DESIGN.md): one service per transition, each recording
who moved the case, when, and why."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseReferenceCounter, Prescription
from cases.selectors import PATIENT_IDENTITY
from consent.models import Patient, Purpose
from consent.services import consent_require
from psi.audit import audit_append
from psi.errors import Conflict, DomainError, PermissionRefused, RecordLocked
from psi.models import Organisation, Role, Signature
from psi.orgs import user_roles_at
from psi.permissions import grant_to_roles, has_object_perm, require_object_perm
from psi.signatures import signature_authenticate, signature_record

S = Case.Status

#: Object permissions on each case, by role, for the case's hospital …
HOSPITAL_CASE_PERMS: dict[str, list[str]] = {
    Role.CLINICIAN: [
        "view_case",
        "change_case",
        "submit_case",
        "prescribe_case",
        "review_design",
        "record_clinical",
    ],
    Role.CASE_COORDINATOR: [
        "view_case",
        "change_case",
        "submit_case",
        "record_clinical",
    ],
    Role.INTEGRATION: ["view_case"],
}
#: … and for its manufacturer, whose people see the patient by pseudonym only.
MANUFACTURER_CASE_PERMS: dict[str, list[str]] = {
    Role.CASE_MANAGER: ["view_case", "manage_case"],
    Role.DESIGNER: ["view_case", "manage_case"],
    Role.PRODUCTION: ["view_case", "manage_case"],
    Role.QUALITY_ASSURANCE: ["view_case", "release_case"],
    Role.REGULATORY: ["view_case", "release_case"],
    Role.AUDITOR: ["view_case"],
    Role.INTEGRATION: ["view_case", "manage_case"],
}
MANUFACTURER_PATIENT_PERMS = {
    role: ["view_patient"] for role in MANUFACTURER_CASE_PERMS
}

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
#: While a prescription may still be written or replaced.
_PRESCRIBABLE = frozenset(
    {S.DRAFT, S.SUBMITTED, S.IMAGING_RECEIVED, S.IMAGING_ACCEPTED, S.IN_DESIGN}
)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[str]
    target: str | None  # None: back to the status the case was held from
    permissions: tuple[str, ...]
    needs_reason: bool = False
    label: str = ""


def _t(name, sources, target, *permissions, needs_reason=False, label=""):
    sources = frozenset(sources if isinstance(sources, set | frozenset) else {sources})
    return Transition(name, sources, target, permissions, needs_reason, label)


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        _t("submit", S.DRAFT, S.SUBMITTED, "submit_case", label="Submit"),
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
    by ``cases.selectors.case_grants``), saves the queries per case.
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


# --- creating and editing ------------------------------------------------------


def _next_reference(year: int) -> str:
    counter, _ = CaseReferenceCounter.objects.select_for_update().get_or_create(
        year=year
    )
    counter.last += 1
    counter.save()
    return f"C-{year}-{counter.last:05d}"


_EDITABLE_FIELDS = (
    "indication",
    "anatomical_region",
    "side",
    "urgency",
    "planned_surgery_date",
    "regulatory_pathway",
    "pathway_reason",
)


def _validate_case_fields(data: Mapping) -> None:
    choices = {
        "anatomical_region": Case.Region,
        "side": Case.Side,
        "urgency": Case.Urgency,
        "regulatory_pathway": Case.Pathway,
    }
    for field, enum in choices.items():
        if field in data and data[field] not in enum.values:
            raise DomainError(f"Choose one of {', '.join(enum.values)}.", field=field)
    for field in ("indication", "pathway_reason"):
        if field in data and not (data[field] or "").strip():
            raise DomainError("This field is required.", field=field)
    surgery = data.get("planned_surgery_date")
    if surgery and surgery < timezone.localdate():
        raise DomainError(
            "The planned surgery date lies in the past.", field="planned_surgery_date"
        )


def case_create(
    *,
    actor,
    patient: Patient,
    manufacturer: Organisation,
    prescriber,
    indication: str,
    anatomical_region: str,
    side: str,
    regulatory_pathway: str,
    pathway_reason: str,
    urgency: str = Case.Urgency.ROUTINE,
    planned_surgery_date: datetime.date | None = None,
) -> Case:
    """Open a draft case for a patient of the actor's hospital."""
    hospital = patient.hospital
    require_object_perm(actor, "change_patient", patient)
    if not (
        actor.is_superuser
        or user_roles_at(actor, hospital) & {Role.CLINICIAN, Role.CASE_COORDINATOR}
    ):
        raise PermissionRefused("Only the patient's hospital may open a case.")
    if manufacturer.kind != Organisation.Kind.MANUFACTURER:
        raise DomainError("Choose a manufacturer.", field="manufacturer")
    if Role.CLINICIAN not in user_roles_at(prescriber, hospital):
        raise DomainError(
            "The prescriber must be a clinician of the patient's hospital.",
            field="prescriber",
        )
    fields = {
        "indication": indication,
        "anatomical_region": anatomical_region,
        "side": side,
        "urgency": urgency,
        "planned_surgery_date": planned_surgery_date,
        "regulatory_pathway": regulatory_pathway,
        "pathway_reason": pathway_reason,
    }
    _validate_case_fields(fields)
    with transaction.atomic():
        case = Case(
            reference=_next_reference(timezone.now().year),
            patient=patient,
            hospital=hospital,
            manufacturer=manufacturer,
            prescriber=prescriber,
            created_by=actor,
            **fields,
        )
        case._history_user = actor
        case.save()
        grant_to_roles(case, hospital, HOSPITAL_CASE_PERMS)
        grant_to_roles(case, manufacturer, MANUFACTURER_CASE_PERMS)
        grant_to_roles(patient, manufacturer, MANUFACTURER_PATIENT_PERMS)
        audit_append(
            actor=actor,
            action="case.created",
            obj=case,
            organisation=hospital,
            payload={
                "reference": case.reference,
                "patient": patient.pseudonym,
                "manufacturer": manufacturer.pk,
                "pathway": regulatory_pathway,
            },
        )
    return case


def case_update(*, actor, case: Case, changes: Mapping, reason: str = "") -> Case:
    """Edit the case's clinical details while it is still a draft."""
    unknown = set(changes) - set(_EDITABLE_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise DomainError(f"{name} cannot be changed here.", field=name)
    _validate_case_fields(changes)
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case.pk)
        require_object_perm(actor, "change_case", case)
        if case.status != S.DRAFT:
            raise Conflict(
                "Only a draft case can be edited; put it on hold and cancel it, or "
                "record the change in a new prescription version.",
                status=case.status,
            )
        before = {name: getattr(case, name) for name in changes}
        for name, value in changes.items():
            setattr(case, name, value)
        case._history_user = actor
        case._change_reason = reason
        case.save()
        audit_append(
            actor=actor,
            action="case.updated",
            obj=case,
            organisation=case.hospital,
            payload={"changed": sorted(n for n in changes if before[n] != changes[n])},
            reason=reason,
        )
    return case


# --- transitions ---------------------------------------------------------------


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


# --- prescriptions -------------------------------------------------------------

_PRESCRIPTION_FIELDS = (
    "prescriber_licence",
    "material",
    "material_other",
    "thickness_mm",
    "screw_count",
    "screw_positions",
    "margins_mm",
    "other_characteristics",
    "notes",
)


def prescription_latest(case: Case) -> Prescription | None:
    return case.prescriptions.order_by("-version").first()


def _clean_prescription(data: Mapping) -> dict:
    unknown = set(data) - set(_PRESCRIPTION_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise DomainError(f"Unknown field {name}.", field=name)
    cleaned = dict(data)
    if "material" in cleaned:
        if cleaned["material"] not in Prescription.Material.values:
            raise DomainError(
                f"Choose one of {', '.join(Prescription.Material.values)}.",
                field="material",
            )
        if (
            cleaned["material"] == Prescription.Material.OTHER
            and not (cleaned.get("material_other") or "").strip()
        ):
            raise DomainError("Name the material.", field="material_other")
    for name in ("thickness_mm", "margins_mm"):
        if name in cleaned and cleaned[name] is not None:
            try:
                value = Decimal(str(cleaned[name]))
            except InvalidOperation:
                raise DomainError(
                    "Enter a number of millimetres.", field=name
                ) from None
            if value <= 0 or value >= 1000:
                raise DomainError(
                    "Enter a positive number of millimetres below 1000.", field=name
                )
            cleaned[name] = value.quantize(Decimal("0.01"))
    if "screw_count" in cleaned:
        count = cleaned["screw_count"]
        if not isinstance(count, int) or count < 0 or count > 200:
            raise DomainError(
                "Enter a screw count between 0 and 200.", field="screw_count"
            )
        if count and not (cleaned.get("screw_positions") or "").strip():
            raise DomainError(
                "Give the screw positions for the screws prescribed.",
                field="screw_positions",
            )
    if "prescriber_licence" in cleaned and not cleaned["prescriber_licence"].strip():
        raise DomainError(
            "The prescriber's licence or registration number is required.",
            field="prescriber_licence",
        )
    return cleaned


def _require_prescriber(actor, case: Case) -> None:
    require_object_perm(actor, "view", case)
    if not has_object_perm(actor, "prescribe_case", case):
        raise PermissionRefused("Only clinicians of the case's hospital prescribe.")


def prescription_create(*, actor, case: Case, **characteristics) -> Prescription:
    """Write a prescription; a later one becomes the next version of the case's."""
    required = ("prescriber_licence", "material", "thickness_mm")
    for name in required:
        if characteristics.get(name) in (None, ""):
            raise DomainError("This field is required.", field=name)
    cleaned = _clean_prescription(characteristics)
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("patient")
            .defer(*PATIENT_IDENTITY)
            .get(pk=case.pk)
        )
        _require_prescriber(actor, case)
        if case.status not in _PRESCRIBABLE:
            raise Conflict(
                "The design is past review; a new prescription needs a new case.",
                status=case.status,
            )
        previous = prescription_latest(case)
        prescription = Prescription(
            case=case,
            version=(previous.version + 1) if previous else 1,
            supersedes=previous,
            prescriber=actor,
            institution=case.hospital,
            patient_pseudonym=case.patient.pseudonym,
            **cleaned,
        )
        prescription._history_user = actor
        prescription.save()
        audit_append(
            actor=actor,
            action="prescription.created",
            obj=prescription,
            organisation=case.hospital,
            payload={"case": case.reference, "version": prescription.version},
        )
    return prescription


def _require_prescription_open(actor, prescription: Prescription) -> None:
    """The checks a password cannot change: who may write it, whether it is still
    open, whether the case still takes prescriptions."""
    _require_prescriber(actor, prescription.case)
    if prescription.is_signed:
        raise RecordLocked("A signed prescription cannot change; write a new version.")
    if prescription.prescriber_id != actor.pk:
        raise PermissionRefused("Only the prescriber edits or signs a prescription.")
    if prescription.case.status not in _PRESCRIBABLE:
        raise Conflict(
            "The case no longer takes prescriptions.", status=prescription.case.status
        )


def prescription_update(
    *, actor, prescription: Prescription, changes: Mapping
) -> Prescription:
    """Edit a prescription that is not signed yet."""
    cleaned = _clean_prescription(changes)
    with transaction.atomic():
        prescription = (
            Prescription.objects.select_for_update(of=("self",))
            .select_related("case")
            .get(pk=prescription.pk)
        )
        _require_prescription_open(actor, prescription)
        for name, value in cleaned.items():
            setattr(prescription, name, value)
        _clean_prescription({n: getattr(prescription, n) for n in _PRESCRIPTION_FIELDS})
        prescription._history_user = actor
        prescription.save()
        audit_append(
            actor=actor,
            action="prescription.updated",
            obj=prescription,
            organisation=prescription.institution,
            payload={"fields": sorted(cleaned)},
        )
    return prescription


def prescription_sign(
    *, actor, prescription: Prescription, password: str
) -> Prescription:
    """The prescriber signs the prescription (21 CFR 11.50: printed name, time,
    meaning). Call outside any transaction: a failed attempt must stay recorded."""
    prescription = Prescription.objects.select_related("case").get(pk=prescription.pk)
    # Refuse what a password cannot change before asking for one, so that neither a
    # stranger nor a second click on a signed record counts as a failed attempt.
    _require_prescription_open(actor, prescription)
    signature_authenticate(signer=actor, password=password)
    with transaction.atomic():
        prescription = (
            Prescription.objects.select_for_update(of=("self",))
            .select_related("case")
            .get(pk=prescription.pk)
        )
        # Again under the lock: two signing requests must not both sign.
        _require_prescription_open(actor, prescription)
        prescription.signature = signature_record(
            signer=actor,
            meaning=Signature.Meaning.AUTHORED,
            record=prescription,
            reason="prescription",
        )
        prescription._history_user = actor
        prescription.save()
    return prescription
