"""The core admin: changes go through services; the audit trail, signatures, jobs and
files are read-only for everyone; users are deactivated, never deleted."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.urls import reverse

from psi.audit import audit_append
from psi.jobs import job_enqueue
from psi.models import (
    AuditEvent,
    Job,
    Membership,
    Organisation,
    Role,
    Signature,
    StoredFile,
)
from psi.orgs import role_group
from psi.signatures import signature_sign
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def url(model, view, *args):
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


def test_every_core_admin_page_loads(admin_client, prescription_a, surgeon, password):
    signature = signature_sign(
        signer=surgeon, password=password, meaning="authored", record=prescription_a
    )
    job = job_enqueue(kind="test.job", task_name="psi.tasks.audit_verify")
    stored = StoredFile.objects.create(
        sha256="a" * 64, size=1, content_type="text/plain", storage_name="x"
    )
    pages = [
        (Organisation, surgeon.memberships.get().organisation.pk),
        (Membership, surgeon.memberships.get().pk),
        (AuditEvent, AuditEvent.objects.first().pk),
        (Signature, signature.pk),
        (Job, job.pk),
        (StoredFile, stored.pk),
        (User, surgeon.pk),
    ]
    for model, pk in pages:
        assert admin_client.get(url(model, "changelist")).status_code == 200, model
        assert admin_client.get(url(model, "change", pk)).status_code == 200, model
        assert admin_client.get(url(model, "history", pk)).status_code == 200, model


class TestAuditTrail:
    def test_nobody_adds_changes_or_deletes_events_not_even_a_superuser(
        self, admin_client, surgeon
    ):
        event = audit_append(actor=surgeon, action="test.event")
        assert admin_client.get(url(AuditEvent, "add")).status_code == 403
        page = admin_client.get(url(AuditEvent, "change", event.pk))
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        response = admin_client.post(
            url(AuditEvent, "change", event.pk), {"action": "forged"}
        )
        assert response.status_code == 403
        assert admin_client.get(url(AuditEvent, "delete", event.pk)).status_code == 403
        changelist = admin_client.get(url(AuditEvent, "changelist"))
        assert b"delete_selected" not in changelist.content
        assert AuditEvent.objects.get(pk=event.pk).action == "test.event"

    def test_the_list_shows_the_chain_columns_and_searches(self, admin_client, surgeon):
        audit_append(actor=surgeon, action="test.findme", object_id="4711")
        page = admin_client.get(url(AuditEvent, "changelist"), {"q": "4711"})
        assert page.status_code == 200
        rows = list(page.context["cl"].result_list)
        assert [e.action for e in rows] == ["test.findme"]
        for column in ("seq", "created_at", "actor_name", "action", "object_type"):
            assert column in page.context["cl"].list_display
        filtered = admin_client.get(
            url(AuditEvent, "changelist"), {"action": "test.findme"}
        )
        assert [e.action for e in filtered.context["cl"].result_list] == ["test.findme"]

    def test_a_staff_auditor_sees_only_their_organisations_events(
        self, client, auditor, hospital_a, manufacturer
    ):
        auditor.is_staff = True
        auditor.save()
        audit_append(actor=None, action="test.h", organisation=hospital_a)
        audit_append(actor=None, action="test.m", organisation=manufacturer)
        client.force_login(auditor)
        page = client.get(url(AuditEvent, "changelist"))
        assert page.status_code == 200
        actions = {e.action for e in page.context["cl"].result_list}
        assert "test.m" in actions and "test.h" not in actions


class TestMemberships:
    def test_adding_a_membership_goes_through_the_grant_service(
        self, admin_client, hospital_a, superuser
    ):
        newcomer = UserFactory(username="newcomer")
        response = admin_client.post(
            url(Membership, "add"),
            {"user": newcomer.pk, "organisation": hospital_a.pk, "role": "clinician"},
        )
        assert response.status_code == 302, response.context["adminform"].errors
        membership = Membership.objects.get(user=newcomer)
        assert membership.is_active
        assert role_group(hospital_a, Role.CLINICIAN) in newcomer.groups.all()
        event = AuditEvent.objects.get(
            action="membership.granted", object_id=str(membership.pk)
        )
        assert event.actor == superuser

    def test_a_role_the_organisation_kind_lacks_is_refused(
        self, admin_client, hospital_a
    ):
        newcomer = UserFactory(username="newcomer")
        response = admin_client.post(
            url(Membership, "add"),
            {"user": newcomer.pk, "organisation": hospital_a.pk, "role": "designer"},
        )
        assert response.status_code == 200
        assert "has no designer role" in str(response.context["adminform"].errors)
        assert not Membership.objects.filter(user=newcomer).exists()

    def test_memberships_cannot_be_edited_or_deleted_directly(
        self, admin_client, surgeon
    ):
        membership = surgeon.memberships.get()
        response = admin_client.post(
            url(Membership, "change", membership.pk), {"role": "case_coordinator"}
        )
        assert response.status_code == 403
        assert (
            admin_client.get(url(Membership, "delete", membership.pk)).status_code
            == 403
        )

    def test_revoking_asks_why_then_calls_the_service(self, admin_client, surgeon):
        membership = surgeon.memberships.get()
        form = {ACTION_CHECKBOX_NAME: [membership.pk], "action": "revoke_memberships"}
        asked = admin_client.post(url(Membership, "changelist"), form)
        assert asked.status_code == 200
        assert b'name="reason"' in asked.content
        membership.refresh_from_db()
        assert membership.is_active

        done = admin_client.post(
            url(Membership, "changelist"),
            {**form, "apply": "yes", "reason": "left the hospital"},
        )
        assert done.status_code == 302
        membership.refresh_from_db()
        assert not membership.is_active
        assert not surgeon.groups.exists()
        event = AuditEvent.objects.get(action="membership.revoked")
        assert event.reason == "left the hospital"

    def test_a_revoked_membership_can_be_granted_again(self, admin_client, surgeon):
        membership = surgeon.memberships.get()
        form = {ACTION_CHECKBOX_NAME: [membership.pk], "action": "revoke_memberships"}
        admin_client.post(
            url(Membership, "changelist"), {**form, "apply": "yes", "reason": "x"}
        )
        admin_client.post(
            url(Membership, "changelist"),
            {
                ACTION_CHECKBOX_NAME: [membership.pk],
                "action": "grant_memberships_again",
            },
        )
        membership.refresh_from_db()
        assert membership.is_active
        assert surgeon.groups.count() == 1


class TestOrganisations:
    def test_creating_and_editing_go_through_services(self, admin_client, superuser):
        created = admin_client.post(
            url(Organisation, "add"),
            {"kind": "hospital", "name": "Hospital C", "country": "at", "address": ""},
        )
        assert created.status_code == 302
        organisation = Organisation.objects.get(name="Hospital C")
        assert organisation.country == "AT"
        assert AuditEvent.objects.filter(
            action="organisation.created", object_id=str(organisation.pk)
        ).exists()

        changed = admin_client.post(
            url(Organisation, "change", organisation.pk),
            {"name": "Hospital C North", "country": "AT", "address": "1 Road"},
        )
        assert changed.status_code == 302
        event = AuditEvent.objects.get(action="organisation.changed")
        assert event.payload["changes"]["name"] == ["Hospital C", "Hospital C North"]
        assert event.actor == superuser
        organisation.refresh_from_db()
        assert organisation.kind == "hospital"

    def test_history_offers_no_revert(self, admin_client, hospital_a):
        history = admin_client.get(url(Organisation, "history", hospital_a.pk))
        record = hospital_a.history.first()
        revert = reverse(
            "admin:psi_organisation_simple_history",
            args=[hospital_a.pk, record.history_id],
        )
        assert history.status_code == 200
        assert admin_client.get(revert).status_code == 200
        posted = {"name": "Reverted", "country": "DE", "address": ""}
        assert admin_client.post(revert, posted).status_code == 403
        hospital_a.refresh_from_db()
        assert hospital_a.name == "Hospital A"

    def test_a_read_only_record_cannot_be_overwritten_from_its_history(
        self, admin_client
    ):
        job = job_enqueue(kind="test.job", task_name="psi.tasks.audit_verify")
        record = job.history.first()
        revert = reverse(
            "admin:psi_job_simple_history", args=[job.pk, record.history_id]
        )
        posted = {"kind": "forged", "task_name": "x", "status": "succeeded"}
        assert admin_client.post(revert, posted).status_code == 403
        job.refresh_from_db()
        assert job.kind == "test.job"


@pytest.mark.parametrize("model", [Signature, Job, StoredFile])
def test_signatures_jobs_and_files_are_read_only(admin_client, model):
    assert admin_client.get(url(model, "add")).status_code == 403


def test_the_signature_page_says_whether_it_still_verifies(
    admin_client, surgeon, password, prescription_a
):
    signature = signature_sign(
        signer=surgeon, password=password, meaning="authored", record=prescription_a
    )
    page = admin_client.get(url(Signature, "change", signature.pk))
    assert b"Valid: the record still has the content that was signed." in page.content
    assert admin_client.post(url(Signature, "change", signature.pk)).status_code == 403


class TestUsers:
    def test_users_cannot_be_deleted(self, admin_client, surgeon):
        assert admin_client.get(url(User, "delete", surgeon.pk)).status_code == 403
        changelist = admin_client.get(url(User, "changelist"))
        assert b"delete_selected" not in changelist.content

    def test_deactivate_asks_why_and_revokes_every_membership(
        self, admin_client, surgeon, superuser
    ):
        form = {ACTION_CHECKBOX_NAME: [surgeon.pk], "action": "deactivate_users"}
        asked = admin_client.post(url(User, "changelist"), form)
        assert asked.status_code == 200 and b'name="reason"' in asked.content

        admin_client.post(
            url(User, "changelist"), {**form, "apply": "yes", "reason": "retired"}
        )
        surgeon.refresh_from_db()
        assert not surgeon.is_active
        assert not surgeon.memberships.filter(is_active=True).exists()
        event = AuditEvent.objects.get(action="user.deactivated")
        assert (event.actor, event.reason) == (superuser, "retired")

    def test_a_superuser_does_not_deactivate_themselves_by_accident(
        self, admin_client, superuser
    ):
        admin_client.post(
            url(User, "changelist"),
            {
                ACTION_CHECKBOX_NAME: [superuser.pk],
                "action": "deactivate_users",
                "apply": "yes",
                "reason": "oops",
            },
        )
        superuser.refresh_from_db()
        assert superuser.is_active

    def test_reactivation_is_audited_and_restores_no_role(self, admin_client, surgeon):
        form = {ACTION_CHECKBOX_NAME: [surgeon.pk], "apply": "yes", "reason": "back"}
        admin_client.post(
            url(User, "changelist"), {**form, "action": "deactivate_users"}
        )
        admin_client.post(
            url(User, "changelist"), {**form, "action": "reactivate_users"}
        )
        surgeon.refresh_from_db()
        assert surgeon.is_active
        assert not surgeon.groups.exists()
        assert AuditEvent.objects.filter(action="user.reactivated").exists()

    def test_groups_and_activity_are_not_edited_on_the_user_form(
        self, admin_client, surgeon
    ):
        page = admin_client.get(url(User, "change", surgeon.pk))
        form_fields = page.context["adminform"].form.fields
        assert "groups" not in form_fields and "is_active" not in form_fields
