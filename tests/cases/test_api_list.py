"""The case list: its rows are built from column values, not model instances, and
must answer exactly what a case's own endpoint answers; every row passes the gate;
the queries per request do not grow with the page. Without filters, the list of a
user granted through one group is paged from the grants alone: the same list."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm
from rest_framework.test import APIClient

from cases import services
from cases.api.serializers import TRANSITION_PERMISSIONS, CaseListSerializer
from cases.models import Case
from cases.selectors import case_rows
from psi.models import Role
from psi.orgs import membership_grant
from tests.factories import UserFactory

S = Case.Status
LIST = reverse("case-list")


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def listed(user, **params) -> list[dict]:
    response = client_for(user).get(LIST, {"page_size": 200, **params})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def detail(user, case) -> dict:
    response = client_for(user).get(reverse("case-detail", args=[case.pk]))
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def cases(case_at, case_in, register_patient, hospital_a, manufacturer, surgeon):
    """Cases in several states: a draft with a planned date, one further on, one
    on hold (held_from_status set), and one whose prescriber has no full name."""
    nameless = UserFactory(username="nameless", first_name="", last_name="")
    membership_grant(
        actor=None, user=nameless, organisation=hospital_a, role=Role.CLINICIAN
    )
    return [
        case_at(
            S.DRAFT,
            planned_surgery_date=timezone.localdate() + datetime.timedelta(days=9),
        ),
        case_at(S.DESIGN_REVIEW),
        case_in(S.ON_HOLD),
        services.case_create(
            actor=surgeon,
            patient=register_patient(),
            manufacturer=manufacturer,
            prescriber=nameless,
            indication="Synthetic orbital floor defect.",
            anatomical_region=Case.Region.ORBITAL,
            side=Case.Side.RIGHT,
            regulatory_pathway=Case.Pathway.US_CUSTOM_520B,
            pathway_reason="Synthetic reason.",
        ),
    ]


@pytest.mark.parametrize(
    "who", ["surgeon", "coordinator", "case_manager", "designer", "qa", "auditor"]
)
def test_each_row_is_what_the_case_endpoint_answers(who, cases, personas):
    user = personas[who]
    rows = listed(user)
    assert {row["id"] for row in rows} >= {case.pk for case in cases}
    for row in rows:
        expected = detail(user, Case.objects.get(pk=row["id"]))
        # The same fields in the same order, with the same values and types.
        assert list(row) == list(expected)
        assert row == expected


def test_a_superuser_sees_every_row_with_every_transition(cases, superuser):
    rows = listed(superuser)
    assert {row["id"] for row in rows} >= {case.pk for case in cases}
    for row in rows:
        assert row == detail(superuser, Case.objects.get(pk=row["id"]))


def test_the_rows_show_names_dates_and_the_held_status(cases, surgeon):
    rows = {row["id"]: row for row in listed(surgeon)}
    planned, reviewed, held, nameless = (rows[case.pk] for case in cases)
    assert planned["prescriber_name"] == "Sam Cutter"
    assert planned["planned_surgery_date"] == cases[0].planned_surgery_date.isoformat()
    assert planned["created_at"].endswith("Z")
    assert planned["held_from_status"] is None
    assert reviewed["allowed_transitions"]  # the surgeon reviews designs
    assert held["status"] == S.ON_HOLD
    assert held["held_from_status"] == S.IN_DESIGN
    assert nameless["prescriber_name"] == "nameless"


def test_the_outsider_lists_nothing(cases, outsider):
    assert listed(outsider) == []


def test_a_direct_grant_to_a_user_shows_the_case_and_its_transitions(cases, outsider):
    case = cases[0]
    assign_perm("cases.view_case", outsider, case)
    assign_perm("cases.submit_case", outsider, case)
    (row,) = listed(outsider)
    assert row["id"] == case.pk
    assert row == detail(outsider, case)
    assert "cancel" in row["allowed_transitions"]


def test_an_organisation_filter_of_unseen_cases_answers_400_naming_it(
    cases, outsider, surgeon, manufacturer
):
    response = client_for(outsider).get(LIST, {"manufacturer": manufacturer.pk})
    assert response.status_code == 400
    assert "manufacturer" in response.json()
    assert len(listed(surgeon, manufacturer=manufacturer.pk)) == len(cases)


@pytest.mark.parametrize("who", ["surgeon", "case_manager", "superuser"])
def test_queries_do_not_grow_with_the_page_number(
    who, new_case, register_patient, personas, superuser, django_assert_num_queries
):
    user = superuser if who == "superuser" else personas[who]
    for _ in range(7):
        new_case(register_patient(consent=False))
    client = client_for(user)
    client.get(LIST)  # warm the permission id cache

    def queries_for(page: int) -> int:
        response = client.get(LIST, {"page_size": 3, "page": page})
        assert response.status_code == 200
        return len(response.json()["results"])

    with django_assert_num_queries(3 if who == "superuser" else 4) as first:
        assert queries_for(1) == 3
    for page, rows in [(2, 3), (3, 1)]:
        with django_assert_num_queries(len(first.captured_queries)):
            assert queries_for(page) == rows


#: A filter that keeps every case: the list is then read through the case table.
EVERY_CASE = {"created_at_after": "2000-01-01T00:00:00Z"}


@pytest.fixture
def two_roles(hospital_a):
    """A clinician who also coordinates at the same hospital: two groups, both
    granting view_case and submit_case on the hospital's cases."""
    user = UserFactory(username="two-roles", first_name="Tia", last_name="Roles")
    for role in (Role.CLINICIAN, Role.CASE_COORDINATOR):
        membership_grant(actor=None, user=user, organisation=hospital_a, role=role)
    return user


@pytest.mark.parametrize("who", ["surgeon", "case_manager", "auditor", "outsider"])
def test_without_filters_the_list_is_the_one_the_case_table_gives(who, cases, personas):
    user = personas[who]
    for page_size in (200, 2):
        for page in (1, 2, "last"):
            params = {"page_size": page_size, "page": page}
            plain = client_for(user).get(LIST, params)
            filtered = client_for(user).get(LIST, {**params, **EVERY_CASE})
            assert plain.status_code == filtered.status_code
            if plain.status_code != 200:
                continue
            plain, filtered = plain.json(), filtered.json()
            assert plain["results"] == filtered["results"]
            assert plain["count"] == filtered["count"]
            assert plain["count_capped"] == filtered["count_capped"]


def test_without_filters_a_one_group_list_reads_the_case_table_once(cases, surgeon):
    client = client_for(surgeon)
    client.get(LIST)  # warm the permission id cache
    with CaptureQueriesContext(connection) as queries:
        rows = client.get(LIST).json()["results"]
    assert len(rows) == len(cases)
    # The count and the page's ids come from the grants; only the rows read cases.
    table = Case._meta.db_table
    reading_cases = [q for q in queries if f'FROM "{table}"' in q["sql"]]
    assert len(reading_cases) == 1


def test_a_user_in_two_groups_sees_each_case_once_with_its_transitions(
    cases, two_roles
):
    rows = listed(two_roles)
    ids = [row["id"] for row in rows]
    assert ids == sorted({case.pk for case in cases}, reverse=True)
    for row in rows:
        assert row == detail(two_roles, Case.objects.get(pk=row["id"]))
    draft = next(row for row in rows if row["id"] == cases[0].pk)
    # submit_case, granted by both groups, counts once.
    assert draft["allowed_transitions"] == ["submit", "hold", "cancel"]


def test_the_rows_leave_out_a_case_the_user_no_longer_sees(cases, outsider):
    first, second = cases[0], cases[1]
    for case in (first, second):
        assign_perm("cases.view_case", outsider, case)
    assign_perm("cases.submit_case", outsider, first)
    ids = [second.pk, first.pk]  # read through the gate a moment ago
    remove_perm("cases.view_case", outsider, second)
    rows = case_rows(outsider, ids, CaseListSerializer.columns, TRANSITION_PERMISSIONS)
    assert [row["id"] for row in rows] == [first.pk]
    assert rows[0]["granted"] == {"submit_case"}


def test_the_rows_of_a_superuser_need_no_grant(cases, superuser, outsider):
    ids = [case.pk for case in reversed(cases)]
    columns = CaseListSerializer.columns
    rows = case_rows(superuser, ids, columns, TRANSITION_PERMISSIONS)
    assert [row["id"] for row in rows] == ids
    assert all(row["granted"] == frozenset() for row in rows)
    assert case_rows(outsider, ids, columns, TRANSITION_PERMISSIONS) == []
