"""The one permission gate: object permissions on anchors, granted to role groups."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from cases.models import Case, Prescription
from consent.models import Patient
from psi.errors import NotVisible, PermissionRefused
from psi.models import Membership
from psi.orgs import membership_revoke, user_deactivate
from psi.permissions import (
    GrantsInRows,
    granted_on,
    grantees_cached_for_request,
    has_object_perm,
    is_gated,
    require_object_perm,
    restrict,
    visible_ids_newest_first,
)

pytestmark = pytest.mark.django_db


def visible_cases(user):
    return set(restrict(Case.objects.all(), user))


def test_the_hospital_and_the_manufacturer_roles_see_their_case(
    case_a, surgeon, coordinator, case_manager, designer, auditor
):
    for user in (surgeon, coordinator, case_manager, designer, auditor):
        assert visible_cases(user) == {case_a}, user


def test_outsider_sees_no_case_and_no_patient(case_a, outsider):
    assert visible_cases(outsider) == set()
    assert not restrict(Patient.objects.all(), outsider).exists()
    assert not has_object_perm(outsider, "view", case_a)


def test_a_case_of_another_hospital_stays_with_that_hospital(
    make_case, hospital_b, outsider, surgeon
):
    theirs = make_case(hospital=hospital_b, prescriber=outsider)
    assert visible_cases(outsider) == {theirs}
    assert theirs not in visible_cases(surgeon)


def test_the_manufacturer_does_not_see_the_patient_unless_granted(
    case_a, case_manager, surgeon
):
    assert not restrict(Patient.objects.all(), case_manager).exists()
    assert list(restrict(Patient.objects.all(), surgeon)) == [case_a.patient]


def test_records_under_a_case_are_authorised_through_it(
    prescription_a, surgeon, designer, outsider
):
    assert list(restrict(Prescription.objects.all(), surgeon)) == [prescription_a]
    assert list(restrict(Prescription.objects.all(), designer)) == [prescription_a]
    assert not restrict(Prescription.objects.all(), outsider).exists()
    assert has_object_perm(surgeon, "view", prescription_a)
    assert not has_object_perm(outsider, "view", prescription_a)


def test_object_actions_follow_the_role_grants(case_a, surgeon, designer, case_manager):
    assert has_object_perm(surgeon, "change", case_a)
    assert has_object_perm(surgeon, "prescribe_case", case_a)
    assert not has_object_perm(surgeon, "manage_case", case_a)
    assert has_object_perm(case_manager, "manage_case", case_a)
    assert not has_object_perm(designer, "manage_case", case_a)
    assert list(restrict(Case.objects.all(), case_manager, "manage_case")) == [case_a]
    assert not restrict(Case.objects.all(), designer, "manage_case").exists()


def test_a_grant_to_one_user_counts_too(case_a, hospital_b, outsider):
    assign_perm("view_case", outsider, case_a)
    assert visible_cases(outsider) == {case_a}
    assert has_object_perm(outsider, "view", case_a)


def test_require_object_perm_hides_from_outsiders_and_refuses_viewers(
    case_a, outsider, designer, case_manager
):
    with pytest.raises(NotVisible):
        require_object_perm(outsider, "manage_case", case_a)
    with pytest.raises(PermissionRefused):
        require_object_perm(designer, "manage_case", case_a)
    require_object_perm(case_manager, "manage_case", case_a)


def test_an_inactive_user_sees_nothing(case_a, surgeon):
    surgeon.is_active = False
    surgeon.save()
    assert visible_cases(surgeon) == set()
    assert not has_object_perm(surgeon, "view", case_a)


def test_a_deactivated_user_loses_every_role(case_a, surgeon):
    user_deactivate(actor=None, user=surgeon, reason="left the hospital")
    assert not surgeon.groups.exists()
    assert not Membership.objects.filter(user=surgeon, is_active=True).exists()
    assert visible_cases(surgeon) == set()


def test_a_revoked_membership_sees_nothing(case_a, surgeon):
    membership = Membership.objects.get(user=surgeon)
    membership_revoke(actor=None, membership=membership, reason="changed role")
    assert visible_cases(surgeon) == set()
    assert not has_object_perm(surgeon, "view", case_a)


def test_anonymous_sees_nothing(case_a):
    from django.contrib.auth.models import AnonymousUser

    assert visible_cases(AnonymousUser()) == set()
    assert not has_object_perm(AnonymousUser(), "view", case_a)


def test_the_superuser_sees_everything(make_case, hospital_b, outsider, superuser):
    mine, theirs = make_case(), make_case(hospital=hospital_b, prescriber=outsider)
    assert visible_cases(superuser) == {mine, theirs}
    assert has_object_perm(superuser, "release_case", theirs)


def test_a_permission_filtered_list_is_the_users_groups_then_one_query(
    make_case, surgeon
):
    for _ in range(5):
        make_case()
    restrict(Case.objects.all(), surgeon).exists()  # warm the permission-id cache
    with CaptureQueriesContext(connection) as queries:
        assert len(list(restrict(Case.objects.all(), surgeon))) == 5
    # The group ids go into the list query as values (see visible_ids).
    assert len(queries) == 2


def test_only_anchored_models_are_gated(db):
    from psi.models import Job, Organisation

    assert is_gated(Case) and is_gated(Patient) and is_gated(Prescription)
    assert not is_gated(Organisation) and not is_gated(Job)


def test_within_a_request_the_gate_reads_the_users_groups_once(make_case, surgeon):
    make_case()
    with (
        grantees_cached_for_request(),
        CaptureQueriesContext(connection) as queries,
    ):
        assert len(list(restrict(Case.objects.all(), surgeon))) == 1
        assert len(list(restrict(Case.objects.all(), surgeon))) == 1
    assert len(queries) == 3  # the groups once, then the two lists


def test_a_membership_revoked_inside_a_request_takes_effect_at_once(make_case, surgeon):
    make_case()
    with grantees_cached_for_request():
        assert restrict(Case.objects.all(), surgeon).count() == 1
        membership = Membership.objects.get(user=surgeon)
        membership_revoke(actor=None, membership=membership, reason="left")
        assert restrict(Case.objects.all(), surgeon).count() == 0


def test_within_a_request_an_object_check_after_the_gate_costs_one_query(
    case_a, case_manager
):
    for codename in ("manage_case", "release_case"):  # warm the permission ids
        has_object_perm(case_manager, codename, case_a)
    with grantees_cached_for_request():
        assert visible_cases(case_manager) == {case_a}
        with CaptureQueriesContext(connection) as queries:
            require_object_perm(case_manager, "manage_case", case_a)
            assert not has_object_perm(case_manager, "release_case", case_a)
    # The user's groups were read by the gate; each check reads only the grants.
    assert len(queries) == 2


def test_a_deactivated_user_sees_nothing_even_with_grants(case_a, surgeon):
    surgeon.is_active = False
    with pytest.raises(NotVisible):
        require_object_perm(surgeon, "view", case_a)
    assert not has_object_perm(surgeon, "view", case_a)


def test_a_one_group_users_ids_come_newest_first_from_the_grants(make_case, surgeon):
    cases = [make_case() for _ in range(3)]
    ids = visible_ids_newest_first(surgeon, Case)
    assert list(ids) == sorted((case.pk for case in cases), reverse=True)
    assert list(ids) == list(
        restrict(Case.objects.order_by("-id"), surgeon).values_list("pk", flat=True)
    )


def test_ids_from_the_grants_alone_only_where_each_id_comes_once(
    case_a, surgeon, outsider, superuser, hospital_a
):
    from django.contrib.auth.models import AnonymousUser

    from psi.models import Role
    from psi.orgs import membership_grant

    assert visible_ids_newest_first(superuser, Case) is None
    assert visible_ids_newest_first(AnonymousUser(), Case) is None
    # A direct grant on a patient is not one on a case.
    assign_perm("view_patient", outsider, case_a.patient)
    assert visible_ids_newest_first(outsider, Case) is not None
    assign_perm("view_case", outsider, case_a)
    assert visible_ids_newest_first(outsider, Case) is None
    membership_grant(
        actor=None, user=surgeon, organisation=hospital_a, role=Role.CASE_COORDINATOR
    )
    assert visible_ids_newest_first(surgeon, Case) is None
    assert visible_cases(surgeon) == {case_a}


def _held_in_rows(user, codenames):
    grants = GrantsInRows(user, Case, codenames)
    rows = grants.annotate(Case.objects.all()).values("pk", *grants.annotations)
    return {row["pk"]: grants.held(row) for row in rows}


def test_grants_read_in_the_rows_query_are_those_of_the_object_checks(
    case_a, surgeon, outsider, case_manager
):
    codenames = ["view_case", "submit_case", "release_case", "manage_case"]
    assign_perm("release_case", surgeon, case_a)  # direct, beside the group's
    assign_perm("view_case", outsider, case_a)
    for user in (surgeon, outsider, case_manager):
        held = _held_in_rows(user, codenames)[case_a.pk]
        assert held == granted_on(user, Case, [case_a.pk], codenames)[case_a.pk]
    # The group's view_case and the user's own release_case, together.
    assert {"view_case", "release_case"} <= _held_in_rows(surgeon, codenames)[case_a.pk]


def test_grants_in_rows_hold_nothing_for_the_inactive_and_all_for_a_superuser(
    case_a, surgeon, superuser
):
    assert GrantsInRows(superuser, Case, ["view"]).holds_all
    surgeon.is_active = False
    grants = GrantsInRows(surgeon, Case, ["view"])
    assert not grants.holds_all
    assert _held_in_rows(surgeon, ["view"]) == {case_a.pk: frozenset()}


def test_grants_in_rows_follow_the_path_to_the_anchor(prescription_a, surgeon):
    grants = GrantsInRows(surgeon, Prescription, ["view", "prescribe_case"])
    (row,) = grants.annotate(Prescription.objects.all()).values(*grants.annotations)
    assert grants.held(row) == {"view_case", "prescribe_case"}
