"""The case list: its rows are built from column values, not model instances, and
must answer exactly what a case's own endpoint answers; every row passes the gate;
the queries per request do not grow with the page."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from cases import services
from cases.models import Case
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

    with django_assert_num_queries(3 if who == "superuser" else 5) as first:
        assert queries_for(1) == 3
    for page, rows in [(2, 3), (3, 1)]:
        with django_assert_num_queries(len(first.captured_queries)):
            assert queries_for(page) == rows
