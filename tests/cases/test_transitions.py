"""The case lifecycle through its services: each step, its guards, its records."""

import pytest

from cases import services
from cases.imaging.models import ImagingStudy
from cases.models import Case, CaseEvent
from cases.services import (
    TRANSITION_SERVICES,
    TRANSITIONS,
    IllegalTransition,
    transitions_from,
)
from consent.models import Consent
from consent.services import ConsentMissing, consent_withdraw
from psi.errors import Conflict, DomainError, NotVisible, PermissionRefused
from psi.models import AuditEvent
from tests.cases.conftest import (
    BEFORE_IMPLANT,
    FROM_IMPLANT,
    HAPPY,
    STEP_ACTOR,
    reviewed_study,
    write_prescription,
)
from tests.factories import PASSWORD

S = Case.Status

#: A status each step cannot start from.
ILLEGAL_FROM = dict.fromkeys(TRANSITIONS, S.DRAFT) | {
    "submit": S.SUBMITTED,
    "hold": S.IMPLANTED,
    "cancel": S.IMPLANTED,
}


def test_every_transition_has_a_service_and_a_test():
    assert set(TRANSITION_SERVICES) == set(TRANSITIONS) == set(HAPPY)


@pytest.mark.parametrize("name", list(HAPPY))
def test_transition_moves_the_case_and_records_who_when_why(name, case_in, personas):
    source, who, reason = HAPPY[name]
    actor = personas[who]
    case = case_in(source)
    expected = TRANSITIONS[name].target or case.held_from_status

    moved = TRANSITION_SERVICES[name](actor=actor, case=case, reason=reason)

    assert moved.status == expected
    case.refresh_from_db()
    assert case.status == expected
    event = case.events.last()
    assert (event.transition, event.from_status, event.to_status) == (
        name,
        source,
        expected,
    )
    assert event.actor == actor
    assert event.reason == reason
    assert event.history.get().history_user == actor
    audit = AuditEvent.objects.filter(
        action=f"case.{name}", object_type="cases.case", object_id=str(case.pk)
    ).get()
    assert audit.actor == actor
    assert audit.reason == reason
    assert audit.payload == {
        "reference": case.reference,
        "from": source,
        "to": expected,
    }
    latest = case.history.first()
    assert latest.status == expected
    assert latest.history_user == actor
    assert latest.history_change_reason == (reason or name)


@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_transition_from_a_wrong_status_is_illegal_and_names_the_allowed_ones(
    name, case_at, personas
):
    status = ILLEGAL_FROM[name]
    case = case_at(status)
    events_before = case.events.count()

    with pytest.raises(IllegalTransition) as refused:
        TRANSITION_SERVICES[name](
            actor=personas[STEP_ACTOR[name]], case=case, reason="Some reason"
        )

    assert refused.value.status == 409
    assert refused.value.extra["status"] == status
    assert refused.value.extra["allowed"] == transitions_from(status)
    assert name not in refused.value.extra["allowed"]
    case.refresh_from_db()
    assert case.status == status
    assert case.events.count() == events_before


def test_designer_cannot_submit(case_in, designer):
    case = case_in(S.DRAFT)
    with pytest.raises(PermissionRefused):
        services.case_submit(actor=designer, case=case)
    case.refresh_from_db()
    assert case.status == S.DRAFT
    assert not case.events.exists()
    assert not AuditEvent.objects.filter(action="case.submit").exists()


def test_surgeon_cannot_release(case_at, surgeon):
    case = case_at(S.IN_MANUFACTURING)
    with pytest.raises(PermissionRefused):
        services.case_release(actor=surgeon, case=case)
    case.refresh_from_db()
    assert case.status == S.IN_MANUFACTURING


def test_coordinator_cannot_approve_a_design(case_at, coordinator):
    case = case_at(S.DESIGN_REVIEW)
    with pytest.raises(PermissionRefused):
        services.case_approve_design(actor=coordinator, case=case)


def test_auditor_may_take_no_step(case_in, auditor):
    case = case_in(S.DRAFT)
    for name in transitions_from(case.status):
        with pytest.raises(PermissionRefused):
            TRANSITION_SERVICES[name](actor=auditor, case=case, reason="Audit")
    assert services.transitions_available(auditor, case) == []


def test_outsider_cannot_see_the_case_to_move_it(case_in, outsider):
    case = case_in(S.DRAFT)
    for name in ("submit", "hold", "cancel"):
        with pytest.raises(NotVisible):
            TRANSITION_SERVICES[name](actor=outsider, case=case, reason="Nosy")
    case.refresh_from_db()
    assert case.status == S.DRAFT


def test_anonymous_cannot_move_a_case(case_in):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(NotVisible):
        services.case_submit(actor=AnonymousUser(), case=case_in(S.DRAFT))


@pytest.mark.parametrize(
    "name", [name for name, t in TRANSITIONS.items() if t.needs_reason]
)
@pytest.mark.parametrize("reason", ["", "   "])
def test_steps_that_need_a_reason_refuse_without_one(name, reason, case_in, personas):
    source, who, _ = HAPPY[name]
    case = case_in(source)
    with pytest.raises(DomainError) as refused:
        TRANSITION_SERVICES[name](actor=personas[who], case=case, reason=reason)
    assert refused.value.status == 400
    assert refused.value.field == "reason"
    case.refresh_from_db()
    assert case.status == source


def test_the_reason_is_optional_where_the_step_needs_none(case_in, surgeon):
    case = services.case_submit(actor=surgeon, case=case_in(S.DRAFT))
    assert case.events.get().reason == ""


@pytest.mark.parametrize("status", [S.DRAFT, S.SUBMITTED, S.IN_DESIGN, S.SHIPPED])
def test_resume_returns_to_the_status_the_case_was_held_from(
    status, case_at, case_manager, surgeon
):
    case = case_at(status)
    held = services.case_hold(actor=surgeon, case=case, reason="Waiting for a date")
    assert (held.status, held.held_from_status) == (S.ON_HOLD, status)
    assert services.transitions_from(S.ON_HOLD) == ["resume", "cancel"]

    resumed = services.case_resume(actor=case_manager, case=held, reason="Date set")

    assert (resumed.status, resumed.held_from_status) == (status, "")
    assert [e.transition for e in resumed.events.all()][-2:] == ["hold", "resume"]


def test_a_case_on_hold_cannot_be_held_again(case_at, case_manager):
    held = services.case_hold(
        actor=case_manager, case=case_at(S.SUBMITTED), reason="First hold"
    )
    with pytest.raises(IllegalTransition):
        services.case_hold(actor=case_manager, case=held, reason="Second hold")


@pytest.mark.parametrize("status", BEFORE_IMPLANT)
def test_a_case_can_be_cancelled_before_implantation(status, case_at, coordinator):
    case = services.case_cancel(
        actor=coordinator, case=case_at(status), reason="Surgery no longer planned"
    )
    assert case.status == S.CANCELLED
    assert services.transitions_from(S.CANCELLED) == []


def test_a_case_on_hold_can_be_cancelled(case_at, case_manager):
    held = services.case_hold(
        actor=case_manager, case=case_at(S.RELEASED), reason="Recall check"
    )
    case = services.case_cancel(actor=case_manager, case=held, reason="Recalled")
    assert (case.status, case.held_from_status) == (S.CANCELLED, "")


@pytest.mark.parametrize("status", FROM_IMPLANT)
def test_nothing_after_implantation_can_be_cancelled_or_held(
    status, case_at, coordinator, case_manager
):
    case = case_at(status)
    with pytest.raises(IllegalTransition):
        services.case_cancel(actor=coordinator, case=case, reason="Too late")
    with pytest.raises(IllegalTransition):
        services.case_hold(actor=case_manager, case=case, reason="Too late")
    case.refresh_from_db()
    assert case.status == status


# --- guards --------------------------------------------------------------------


def _withdraw_consent(case, surgeon):
    for consent in Consent.objects.filter(patient=case.patient):
        consent_withdraw(actor=surgeon, consent=consent, reason="Patient asked")


def test_submit_needs_consent_for_imaging_exchange(case_in, surgeon):
    case = case_in(S.DRAFT)
    _withdraw_consent(case, surgeon)

    with pytest.raises(ConsentMissing) as refused:
        services.case_submit(actor=surgeon, case=case)

    assert refused.value.status == 409
    assert refused.value.extra["purpose"] == "imaging_exchange"
    case.refresh_from_db()
    assert case.status == S.DRAFT
    assert not case.events.exists()
    assert case.history.count() == 1
    assert not AuditEvent.objects.filter(action="case.submit").exists()


def test_submit_needs_consent_that_was_ever_given(new_case, register_patient, surgeon):
    case = new_case(register_patient(consent=False))
    write_prescription(case, surgeon)
    services.prescription_sign(
        actor=surgeon,
        prescription=services.prescription_latest(case),
        password=PASSWORD,
    )
    with pytest.raises(ConsentMissing):
        services.case_submit(actor=surgeon, case=case)


def test_submit_needs_a_prescription(draft_case, surgeon):
    with pytest.raises(Conflict, match="prescription"):
        services.case_submit(actor=surgeon, case=draft_case)


def test_submit_needs_the_prescription_signed(prescription, surgeon):
    with pytest.raises(Conflict, match="signed"):
        services.case_submit(actor=surgeon, case=prescription.case)


def test_submit_needs_the_latest_version_signed(signed_prescription, surgeon):
    write_prescription(signed_prescription.case, surgeon, thickness_mm="2.00")
    with pytest.raises(Conflict, match="latest prescription"):
        services.case_submit(actor=surgeon, case=signed_prescription.case)


def test_imaging_cannot_arrive_after_consent_is_withdrawn(
    case_at, surgeon, case_manager
):
    case = case_at(S.SUBMITTED)
    _withdraw_consent(case, surgeon)
    with pytest.raises(ConsentMissing):
        services.case_receive_imaging(actor=case_manager, case=case)
    case.refresh_from_db()
    assert case.status == S.SUBMITTED


def test_design_does_not_start_on_an_unsigned_new_prescription(
    case_at, surgeon, designer
):
    case = case_at(S.IMAGING_ACCEPTED)
    newer = write_prescription(case, surgeon, thickness_mm="1.20")
    with pytest.raises(Conflict, match="latest prescription"):
        services.case_start_design(actor=designer, case=case)

    services.prescription_sign(actor=surgeon, prescription=newer, password=PASSWORD)
    assert services.case_start_design(actor=designer, case=case).status == S.IN_DESIGN


def _accepted_without_imaging_review(case_at, case_manager) -> Case:
    # accept_imaging by hand: the ``advance`` fixture would add a reviewed study.
    case = case_at(S.IMAGING_RECEIVED)
    return services.case_accept_imaging(actor=case_manager, case=case)


def test_design_does_not_start_without_an_accepted_reviewed_study(
    case_at, case_manager, designer
):
    case = _accepted_without_imaging_review(case_at, case_manager)

    with pytest.raises(Conflict, match="signed visual review") as refused:
        services.case_start_design(actor=designer, case=case)

    assert refused.value.status == 409
    case.refresh_from_db()
    assert case.status == S.IMAGING_ACCEPTED
    assert not case.events.filter(transition="start_design").exists()


def test_design_does_not_start_on_a_study_accepted_but_not_reviewed(
    case_at, case_manager, designer
):
    case = _accepted_without_imaging_review(case_at, case_manager)
    ImagingStudy.objects.create(
        case=case,
        study_uid="2.25.5000001",
        status=ImagingStudy.Status.ACCEPTED,
        source=ImagingStudy.Source.UPLOAD,
    )

    with pytest.raises(Conflict, match="signed visual review"):
        services.case_start_design(actor=designer, case=case)


def test_design_does_not_start_when_a_review_finding_is_not_ok(
    case_at, case_manager, designer
):
    case = _accepted_without_imaging_review(case_at, case_manager)
    reviewed_study(
        case,
        designer,
        motion={"ok": False, "notes": "Blurred slices at the vertex"},
    )

    with pytest.raises(Conflict, match="signed visual review") as refused:
        services.case_start_design(actor=designer, case=case)

    assert refused.value.status == 409
    case.refresh_from_db()
    assert case.status == S.IMAGING_ACCEPTED


def test_design_starts_on_an_accepted_study_reviewed_all_ok(
    case_at, case_manager, designer
):
    case = _accepted_without_imaging_review(case_at, case_manager)
    reviewed_study(case, designer)

    assert services.case_start_design(actor=designer, case=case).status == S.IN_DESIGN


def test_review_waits_for_a_prescription_version_written_during_design(
    case_at, surgeon, designer
):
    case = case_at(S.IN_DESIGN)
    write_prescription(case, surgeon, notes="Add a drainage hole")
    with pytest.raises(Conflict, match="latest prescription"):
        services.case_request_review(actor=designer, case=case)


def test_case_advance_dispatches_by_name(case_in, surgeon):
    case = services.case_advance(
        actor=surgeon, case=case_in(S.DRAFT), transition="submit"
    )
    assert case.status == S.SUBMITTED
    with pytest.raises(DomainError) as refused:
        services.case_advance(actor=surgeon, case=case, transition="teleport")
    assert refused.value.field == "transition"


# --- transitions_available ----------------------------------------------------


def test_available_transitions_depend_on_status_and_person(case_in, personas):
    case = case_in(S.DRAFT)
    available = {
        who: services.transitions_available(user, case)
        for who, user in personas.items()
    }
    assert available["surgeon"] == ["submit", "hold", "cancel"]
    assert available["coordinator"] == ["submit", "hold", "cancel"]
    assert available["designer"] == ["hold", "cancel"]
    assert available["qa"] == []
    assert available["auditor"] == []
    assert available["outsider"] == []


def test_available_transitions_from_a_page_s_grants_agree(case_at, personas, superuser):
    # The list reads a page's grants with its rows (case_rows); what it offers must
    # be what a case's own page offers.
    from cases.api.serializers import TRANSITION_PERMISSIONS, CaseListSerializer
    from cases.selectors import case_list_visible_to, case_rows

    cases = [case_at(S.DRAFT), case_at(S.DESIGN_REVIEW)]
    ids = [c.pk for c in cases]
    for user in [*personas.values(), superuser]:
        rows = case_rows(user, ids, CaseListSerializer.columns, TRANSITION_PERMISSIONS)
        visible = case_list_visible_to(user).filter(pk__in=ids)
        assert {row["id"] for row in rows} == {case.pk for case in visible}
        for row in rows:
            case = next(c for c in cases if c.pk == row["id"])
            assert services.transitions_available(
                user, case, granted=row["granted"]
            ) == services.transitions_available(user, case)


def test_the_whole_path_leaves_a_complete_timeline(case_at):
    case = case_at(S.CLOSED)
    events = list(CaseEvent.objects.filter(case=case))
    assert [e.to_status for e in events] == [
        S.SUBMITTED,
        S.IMAGING_RECEIVED,
        S.IMAGING_ACCEPTED,
        S.IN_DESIGN,
        S.DESIGN_REVIEW,
        S.DESIGN_APPROVED,
        S.IN_MANUFACTURING,
        S.RELEASED,
        S.SHIPPED,
        S.IMPLANTED,
        S.FOLLOW_UP,
        S.CLOSED,
    ]
    assert all(e.actor_id for e in events)
