"""The core REST API: organisations, memberships, jobs, audit events, tokens.

For every endpoint: anonymous 401, permitted 2xx, invisible 404, and a list whose
query count does not grow with the number of rows.
"""

import pytest
from django.contrib.auth import get_user_model
from knox.models import AuthToken

from psi.api.history import history_entries
from psi.audit import audit_append
from psi.jobs import job_enqueue
from psi.models import AuditEvent, Job, Membership, Role
from psi.orgs import membership_grant, membership_revoke, organisation_update
from tests.factories import OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db
API = "/api/v1"
VERIFY = "psi.tasks.audit_verify"


def ids(response):
    return {row["id"] for row in response.data["results"]}


@pytest.mark.parametrize(
    "url",
    [
        "/organisations/",
        "/organisations/1/",
        "/organisations/1/history/",
        "/memberships/",
        "/memberships/1/",
        "/jobs/",
        "/jobs/1/",
        "/audit-events/",
        "/audit-events/1/",
    ],
)
def test_anonymous_gets_401_with_the_token_challenge(api, url):
    response = api.get(API + url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_anonymous_cannot_start_verification(api):
    assert api.post(f"{API}/audit-events/verify/").status_code == 401


def test_an_inactive_user_gets_nothing(api_as, surgeon):
    surgeon.is_active = False
    surgeon.save()
    assert api_as(surgeon).get(f"{API}/organisations/").status_code == 403


class TestOrganisations:
    def test_any_user_lists_the_organisations(
        self, api_as, outsider, hospital_a, manufacturer
    ):
        response = api_as(outsider).get(f"{API}/organisations/")
        assert response.status_code == 200
        assert {row["name"] for row in response.data["results"]} == {
            "Hospital A",
            "Hospital B",
            "Implant Works",
        }

    def test_filters_search_and_ordering(self, api_as, outsider, manufacturer):
        api = api_as(outsider)
        by_kind = api.get(f"{API}/organisations/", {"kind": "manufacturer"})
        assert [row["name"] for row in by_kind.data["results"]] == ["Implant Works"]
        by_country = api.get(f"{API}/organisations/", {"country": "fr"})
        assert [row["name"] for row in by_country.data["results"]] == ["Implant Works"]
        searched = api.get(f"{API}/organisations/", {"search": "hospital"})
        assert [row["name"] for row in searched.data["results"]] == ["Hospital B"]
        ordered = api.get(f"{API}/organisations/", {"ordering": "-name"})
        names = [row["name"] for row in ordered.data["results"]]
        assert names == sorted(names, reverse=True)

    def test_an_invalid_filter_value_answers_400_naming_the_field(
        self, api_as, outsider
    ):
        response = api_as(outsider).get(f"{API}/organisations/", {"kind": "castle"})
        assert response.status_code == 400
        assert "kind" in response.data

    def test_detail_and_a_missing_one(self, api_as, outsider, manufacturer):
        api = api_as(outsider)
        response = api.get(f"{API}/organisations/{manufacturer.pk}/")
        assert response.status_code == 200
        assert response.data["country"] == "FR"
        assert api.get(f"{API}/organisations/999999/").status_code == 404

    def test_history_shows_each_change_with_old_and_new_values(
        self, api_as, superuser, manufacturer
    ):
        organisation_update(
            actor=superuser, organisation=manufacturer, name="Implant Works Ltd"
        )
        response = api_as(superuser).get(
            f"{API}/organisations/{manufacturer.pk}/history/"
        )
        assert response.status_code == 200
        newest, created = response.data
        assert newest["history_type"] == "~"
        assert newest["changes"] == {"name": ["Implant Works", "Implant Works Ltd"]}
        assert created["history_type"] == "+"
        assert created["changes"] == {}

    def test_history_can_hide_values(self, manufacturer, superuser):
        organisation_update(
            actor=superuser, organisation=manufacturer, address="2 Other Road"
        )
        newest = history_entries(manufacturer, hidden_fields=frozenset({"address"}))[0]
        assert newest["changes"] == {"address": ["(hidden)", "(hidden)"]}

    def test_the_list_costs_the_same_queries_for_5_and_50_rows(
        self, count_queries, outsider
    ):
        for i in range(5):
            OrganisationFactory(name=f"Clinic {i:02d}")
        few, _ = count_queries(outsider, f"{API}/organisations/")
        for i in range(5, 50):
            OrganisationFactory(name=f"Clinic {i:02d}")
        many, response = count_queries(outsider, f"{API}/organisations/")
        assert response.data["count"] > 50
        assert few == many


class TestMemberships:
    def test_a_member_sees_the_memberships_of_their_organisations(
        self, api_as, surgeon, coordinator, outsider, designer
    ):
        response = api_as(surgeon).get(f"{API}/memberships/")
        assert response.status_code == 200
        assert {row["user"]["username"] for row in response.data["results"]} == {
            "surgeon",
            "coordinator",
        }
        row = response.data["results"][0]
        assert row["organisation_name"] == "Hospital A"

    def test_an_outsider_gets_404_for_another_organisations_membership(
        self, api_as, surgeon, outsider
    ):
        membership = Membership.objects.get(user=surgeon)
        api = api_as(outsider)
        assert api.get(f"{API}/memberships/{membership.pk}/").status_code == 404
        own = Membership.objects.get(user=outsider)
        assert api.get(f"{API}/memberships/{own.pk}/").status_code == 200

    def test_a_revoked_member_sees_no_membership(self, api_as, surgeon, coordinator):
        membership_revoke(
            actor=None, membership=surgeon.memberships.get(), reason="moved"
        )
        response = api_as(surgeon).get(f"{API}/memberships/")
        assert response.data["results"] == []

    def test_the_superuser_sees_them_all(self, api_as, superuser, surgeon, outsider):
        response = api_as(superuser).get(f"{API}/memberships/")
        assert response.data["count"] == Membership.objects.count() == 2

    def test_filters_and_an_invalid_role(self, api_as, surgeon, coordinator):
        api = api_as(surgeon)
        clinicians = api.get(f"{API}/memberships/", {"role": "clinician"})
        assert [r["user"]["username"] for r in clinicians.data["results"]] == [
            "surgeon"
        ]
        assert api.get(f"{API}/memberships/", {"role": "king"}).status_code == 400
        assert api.get(f"{API}/memberships/", {"user": "x"}).status_code == 400

    def test_the_list_costs_the_same_queries_for_5_and_50_rows(
        self, count_queries, superuser, hospital_a
    ):
        def add(n, start):
            for i in range(start, start + n):
                user = UserFactory(username=f"member{i:02d}")
                membership_grant(
                    actor=None, user=user, organisation=hospital_a, role=Role.CLINICIAN
                )

        add(5, 0)
        few, _ = count_queries(superuser, f"{API}/memberships/")
        add(45, 5)
        many, response = count_queries(superuser, f"{API}/memberships/")
        assert response.data["count"] == 50
        assert few == many


class TestJobs:
    def enqueue(self, actor=None, target=None, kind="test.job"):
        # The tasks are not sent: jobs stay queued for the API to show.
        return Job.objects.get(
            pk=job_enqueue(kind=kind, task_name=VERIFY, actor=actor, target=target).pk
        )

    def test_the_starter_and_viewers_of_the_target_see_the_job(
        self, api_as, surgeon, case_manager, outsider, designer, case_a
    ):
        job = self.enqueue(actor=surgeon, target=case_a)
        for user in (surgeon, case_manager, designer):
            response = api_as(user).get(f"{API}/jobs/")
            assert ids(response) == {job.pk}, user
        detail = api_as(case_manager).get(f"{API}/jobs/{job.pk}/")
        assert detail.status_code == 200
        assert detail.data["target_type"] == "cases.case"
        assert detail.data["target_id"] == str(case_a.pk)
        assert detail.data["actor"] == "surgeon"
        assert detail.data["status"] == "queued"

    def test_an_outsider_gets_404(self, api_as, surgeon, outsider, case_a):
        job = self.enqueue(actor=surgeon, target=case_a)
        api = api_as(outsider)
        assert ids(api.get(f"{API}/jobs/")) == set()
        assert api.get(f"{API}/jobs/{job.pk}/").status_code == 404

    def test_a_job_without_target_is_its_starters_alone(
        self, api_as, auditor, surgeon, superuser
    ):
        job = self.enqueue(actor=auditor)
        assert ids(api_as(auditor).get(f"{API}/jobs/")) == {job.pk}
        assert api_as(surgeon).get(f"{API}/jobs/{job.pk}/").status_code == 404
        assert ids(api_as(superuser).get(f"{API}/jobs/")) == {job.pk}

    def test_filters_by_status_and_kind(self, api_as, surgeon, case_a):
        job = self.enqueue(actor=surgeon, target=case_a, kind="mesh.export")
        self.enqueue(actor=surgeon, kind="other")
        api = api_as(surgeon)
        assert ids(api.get(f"{API}/jobs/", {"kind": "mesh.export"})) == {job.pk}
        assert len(ids(api.get(f"{API}/jobs/", {"status": "queued"}))) == 2
        assert ids(api.get(f"{API}/jobs/", {"status": "failed"})) == set()
        assert api.get(f"{API}/jobs/", {"status": "stuck"}).status_code == 400
        of_case = {"target_type": "cases.case", "target_id": str(case_a.pk)}
        assert ids(api.get(f"{API}/jobs/", of_case)) == {job.pk}
        assert ids(api.get(f"{API}/jobs/", {"target_type": "consent.patient"})) == set()

    def test_the_list_costs_the_same_queries_for_5_and_50_rows(
        self, count_queries, surgeon, case_manager, make_case
    ):
        cases = [make_case() for _ in range(3)]

        def add(n):
            for i in range(n):
                self.enqueue(actor=surgeon, target=cases[i % 3])

        add(5)
        few, _ = count_queries(case_manager, f"{API}/jobs/")
        add(45)
        many, response = count_queries(case_manager, f"{API}/jobs/")
        assert response.data["count"] == 50
        assert few == many


class TestAuditEvents:
    @pytest.fixture
    def events(self, hospital_a, manufacturer):
        return {
            "manufacturer": audit_append(
                actor=None, action="test.m", organisation=manufacturer, object_id=7
            ),
            "hospital": audit_append(
                actor=None, action="test.h", organisation=hospital_a, object_id=8
            ),
        }

    def test_an_auditor_reads_the_trail_of_their_organisation_only(
        self, api_as, auditor, events
    ):
        api = api_as(auditor)
        response = api.get(f"{API}/audit-events/")
        assert response.status_code == 200
        actions = {row["action"] for row in response.data["results"]}
        assert "test.m" in actions and "test.h" not in actions
        assert "membership.granted" in actions  # the auditor's own grant
        mine = events["manufacturer"]
        assert api.get(f"{API}/audit-events/{mine.pk}/").status_code == 200
        theirs = events["hospital"]
        assert api.get(f"{API}/audit-events/{theirs.pk}/").status_code == 404

    def test_qa_and_regulatory_read_it_too(self, api_as, qa, prrc, events):
        for user in (qa, prrc):
            response = api_as(user).get(f"{API}/audit-events/", {"action": "test.m"})
            assert response.status_code == 200
            assert len(response.data["results"]) == 1

    def test_roles_without_the_permission_are_refused(
        self, api_as, surgeon, designer, events
    ):
        for user in (surgeon, designer):
            assert api_as(user).get(f"{API}/audit-events/").status_code == 403

    def test_a_revoked_auditor_reads_nothing(self, api_as, auditor, events):
        membership_revoke(
            actor=None, membership=auditor.memberships.get(), reason="left"
        )
        auditor = get_user_model().objects.get(pk=auditor.pk)
        assert api_as(auditor).get(f"{API}/audit-events/").status_code == 403

    def test_the_superuser_reads_everything(self, api_as, superuser, events):
        response = api_as(superuser).get(f"{API}/audit-events/", {"page_size": 200})
        assert {row["id"] for row in response.data["results"]} == set(
            AuditEvent.objects.values_list("pk", flat=True)
        )

    def test_filters(self, api_as, superuser, surgeon, events):
        api = api_as(superuser)
        own = audit_append(actor=surgeon, action="test.s", obj=surgeon)
        url = f"{API}/audit-events/"

        def actions(**query):
            response = api.get(url, query)
            assert response.status_code == 200, response.data
            return [row["action"] for row in response.data["results"]]

        assert actions(action="test.h") == ["test.h"]
        assert actions(object_type="auth.user", object_id=str(surgeon.pk)) == ["test.s"]
        assert actions(actor=surgeon.pk) == ["test.s"]
        assert actions(actor_name="surgeon") == ["test.s"]
        assert actions(created_at_after=own.created_at.isoformat()) == ["test.s"]
        before = events["manufacturer"].created_at.isoformat()
        assert "test.s" not in actions(created_at_before=before)
        assert api.get(url, {"actor": "someone"}).status_code == 400
        assert api.get(url, {"created_at_after": "yesterday"}).status_code == 400

    def test_pages_follow_a_cursor_newest_first(self, api_as, superuser, events):
        response = api_as(superuser).get(f"{API}/audit-events/", {"page_size": 1})
        assert response.data["results"][0]["seq"] == AuditEvent.objects.count()
        assert "cursor=" in response.data["next"]
        oldest = api_as(superuser).get(
            f"{API}/audit-events/", {"ordering": "seq", "page_size": 1}
        )
        assert oldest.data["results"][0]["seq"] == 1

    def test_the_list_costs_the_same_queries_for_5_and_50_rows(
        self, count_queries, auditor, manufacturer
    ):
        def add(n):
            for i in range(n):
                audit_append(
                    actor=auditor,
                    action="test.n",
                    organisation=manufacturer,
                    payload={"i": i},
                )

        add(5)
        few, _ = count_queries(auditor, f"{API}/audit-events/?action=test.n")
        add(45)
        many, response = count_queries(auditor, f"{API}/audit-events/?action=test.n")
        assert len(response.data["results"]) == 50
        assert few == many


class TestVerifyEndpoint:
    # Tasks run in this process: tests/conftest.py makes Celery eager.

    def test_an_auditor_starts_verification_and_gets_the_job(
        self, api_as, auditor, django_capture_on_commit_callbacks
    ):
        api = api_as(auditor)
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(f"{API}/audit-events/verify/")
        assert response.status_code == 202
        assert response.data["kind"] == "audit.verify"
        assert response.data["actor"] == "auditor"
        job = api.get(f"{API}/jobs/{response.data['id']}/")
        assert job.status_code == 200
        assert job.data["status"] == "succeeded"
        assert job.data["progress"] == 100
        assert job.data["result"]["ok"] is True

    @pytest.mark.django_db(transaction=True)
    def test_in_the_embedded_mode_the_answer_shows_the_finished_job(
        self, api_as, auditor
    ):
        response = api_as(auditor).post(f"{API}/audit-events/verify/")
        assert response.status_code == 202
        assert response.data["status"] == "succeeded"
        assert response.data["result"]["checked"] >= 1

    def test_the_job_is_sent_after_the_request_commits(
        self, api_as, qa, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=False) as sent:
            response = api_as(qa).post(f"{API}/audit-events/verify/")
        assert response.status_code == 202
        assert response.data["status"] == "queued"
        assert len(sent) == 1

    def test_regulatory_may_read_but_not_start_verification(self, api_as, prrc):
        assert api_as(prrc).post(f"{API}/audit-events/verify/").status_code == 403

    def test_a_clinician_may_not_start_verification(self, api_as, surgeon):
        assert api_as(surgeon).post(f"{API}/audit-events/verify/").status_code == 403


class TestTokens:
    def test_username_and_password_give_a_token_shown_once(
        self, api, surgeon, password
    ):
        response = api.post(
            f"{API}/auth/token/", {"username": "surgeon", "password": password}
        )
        assert response.status_code == 200
        token = response.data["token"]
        assert response.data["user"]["username"] == "surgeon"
        assert response.data["expiry"] is None
        stored = AuthToken.objects.get(user=surgeon)
        assert token not in (stored.digest, stored.token_key)
        assert AuditEvent.objects.filter(
            action="auth.token_created", actor=surgeon
        ).exists()

        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api.get(f"{API}/organisations/").status_code == 200

    def test_wrong_credentials_get_400(self, api, surgeon):
        response = api.post(
            f"{API}/auth/token/", {"username": "surgeon", "password": "nope"}
        )
        assert response.status_code == 400
        assert "non_field_errors" in response.data
        assert not AuthToken.objects.exists()
        missing = api.post(f"{API}/auth/token/", {"username": "surgeon"})
        assert missing.status_code == 400 and "password" in missing.data

    def test_an_inactive_user_gets_no_token(self, api, surgeon, password):
        surgeon.is_active = False
        surgeon.save()
        response = api.post(
            f"{API}/auth/token/", {"username": "surgeon", "password": password}
        )
        assert response.status_code == 400

    def test_logout_revokes_the_token(self, api, surgeon, password):
        token = api.post(
            f"{API}/auth/token/", {"username": "surgeon", "password": password}
        ).data["token"]
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api.post(f"{API}/auth/logout/").status_code == 204
        assert api.get(f"{API}/organisations/").status_code == 401
        assert AuditEvent.objects.filter(action="auth.token_revoked").exists()

    def test_logout_without_a_token_is_401(self, api):
        assert api.post(f"{API}/auth/logout/").status_code == 401

    def test_a_garbage_token_is_401(self, api, surgeon):
        api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
        assert api.get(f"{API}/organisations/").status_code == 401

    def test_a_deactivated_users_token_stops_working(self, api, surgeon, password):
        token = api.post(
            f"{API}/auth/token/", {"username": "surgeon", "password": password}
        ).data["token"]
        surgeon.is_active = False
        surgeon.save()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api.get(f"{API}/organisations/").status_code == 401

    def test_password_guessing_is_throttled(self, api, surgeon):
        answers = [
            api.post(f"{API}/auth/token/", {"username": "surgeon", "password": "x"})
            for _ in range(21)
        ]
        assert answers[-1].status_code == 429
