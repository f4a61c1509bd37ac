"""Admin of the core records.

Every change goes through a service (psi.orgs): organisations are created and edited,
memberships granted and revoked, users deactivated, each with its audit event. The
audit trail, signatures, jobs and stored files are read-only here for everyone,
superusers included; users are deactivated, never deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from simple_history.admin import SimpleHistoryAdmin

from psi.errors import DomainError
from psi.models import (
    AuditEvent,
    Job,
    Membership,
    Organisation,
    Signature,
    StoredFile,
)
from psi.orgs import (
    ORGANISATION_EDITABLE,
    membership_grant,
    membership_revoke,
    organisation_create,
    organisation_update,
    role_check_exists_at,
    user_deactivate,
    user_reactivate,
)
from psi.selectors import audit_event_list_visible_to
from psi.signatures import signature_verify

User = get_user_model()


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Recorded in the audit trail with the change.",
    )


def _apply_with_reason(
    modeladmin: admin.ModelAdmin,
    request,
    queryset: QuerySet,
    *,
    action_name: str,
    title: str,
    explanation: str,
    apply: Callable[[object, str], object],
):
    """Ask for a reason on an intermediate page, then apply a service to each row."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        done = 0
        for obj in queryset:
            try:
                apply(obj, form.cleaned_data["reason"])
            except DomainError as exc:
                modeladmin.message_user(
                    request, f"{obj}: {exc.message}", messages.ERROR
                )
            else:
                done += 1
        if done:
            modeladmin.message_user(request, f"{title}: {done} done.", messages.SUCCESS)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "explanation": explanation,
        "form": form,
        "queryset": queryset,
        "action_name": action_name,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }
    return TemplateResponse(request, "admin/psi/action_reason.html", context)


def _adopt(target, saved) -> None:
    # The admin logs and redirects with the instance it handed to save_model; make
    # it the row the service saved.
    target.__dict__.update(
        {k: v for k, v in saved.__dict__.items() if not k.startswith("_")}
    )
    target._state.adding = False
    target._state.db = saved._state.db


class ServiceHistoryAdmin(SimpleHistoryAdmin):
    """History pages without "revert": an earlier version comes back as a new,
    audited change, never by overwriting the record from its history."""

    def revert_disabled(self, request, obj=None) -> bool:
        return True

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        # simple-history only hides the revert button; a POST would still save the
        # old version, even for a user who may only view.
        if request.method != "GET":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


class ReadOnlyMixin:
    """Nobody adds, changes or deletes these rows here, superusers included."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, ServiceHistoryAdmin):
    pass


class OrganisationForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = ["kind", "name", "address", "country"]

    def clean_country(self) -> str:
        return self.cleaned_data["country"].upper()


@admin.register(Organisation)
class OrganisationAdmin(ServiceHistoryAdmin):
    form = OrganisationForm
    list_display = ("name", "kind", "country", "created_at")
    list_filter = ("kind", "country")
    search_fields = ("name",)
    ordering = ("name",)

    def get_readonly_fields(self, request, obj=None):
        # The kind decides which roles exist there; it is fixed once created.
        return ("kind", "created_at") if obj else ("created_at",)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        if change:
            changes = {
                field: form.cleaned_data[field]
                for field in form.changed_data
                if field in ORGANISATION_EDITABLE
            }
            _adopt(
                obj,
                organisation_update(actor=request.user, organisation=obj, **changes),
            )
        else:
            _adopt(
                obj,
                organisation_create(
                    actor=request.user,
                    kind=obj.kind,
                    name=obj.name,
                    country=obj.country,
                    address=obj.address,
                ),
            )


class MembershipAddForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["user", "organisation", "role"]

    def clean(self):
        cleaned = super().clean()
        organisation, role = cleaned.get("organisation"), cleaned.get("role")
        if organisation and role:
            try:
                role_check_exists_at(organisation, role)
            except DomainError as exc:
                self.add_error("role", exc.message)
        return cleaned


@admin.register(Membership)
class MembershipAdmin(ServiceHistoryAdmin):
    """Memberships are granted and revoked through psi.orgs only, which keeps the
    organisation-role groups (and so every permission) in step."""

    form = MembershipAddForm
    list_display = ("user", "organisation", "role", "is_active", "created_at")
    list_filter = ("is_active", "role", "organisation__kind")
    list_select_related = ("user", "organisation")
    search_fields = ("user__username", "user__last_name", "organisation__name")
    raw_id_fields = ("user",)
    actions = ["revoke_memberships", "grant_memberships_again"]

    def get_readonly_fields(self, request, obj=None):
        return ("is_active", "created_at") if obj else ()

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_manage_permission(self, request) -> bool:
        return request.user.has_perm("psi.change_membership")

    def save_model(self, request, obj, form, change):
        # Only additions reach here (no change permission).
        _adopt(
            obj,
            membership_grant(
                actor=request.user,
                user=obj.user,
                organisation=obj.organisation,
                role=obj.role,
            ),
        )

    @admin.action(description="Revoke the selected memberships", permissions=["manage"])
    def revoke_memberships(self, request, queryset):
        return _apply_with_reason(
            self,
            request,
            queryset.filter(is_active=True),
            action_name="revoke_memberships",
            title="Revoke memberships",
            explanation="These people lose the role and everything it lets them see.",
            apply=lambda membership, reason: membership_revoke(
                actor=request.user, membership=membership, reason=reason
            ),
        )

    @admin.action(
        description="Grant the selected memberships again", permissions=["manage"]
    )
    def grant_memberships_again(self, request, queryset):
        done = 0
        for membership in queryset.filter(is_active=False, user__is_active=True):
            membership_grant(
                actor=request.user,
                user=membership.user,
                organisation=membership.organisation,
                role=membership.role,
            )
            done += 1
        self.message_user(request, f"{done} memberships granted again.")


class AuditValueFilter(admin.SimpleListFilter):
    """Offers the values that occur in the events the reader may see; the
    ``parameter_name`` is the field filtered on."""

    def lookups(self, request, model_admin):
        field = self.parameter_name
        values = (
            model_admin.get_queryset(request)
            .exclude(**{field: ""})
            .order_by(field)
            .values_list(field, flat=True)
            .distinct()
        )
        return [(value, value) for value in values]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class AuditActionFilter(AuditValueFilter):
    title = "action"
    parameter_name = "action"


class AuditObjectTypeFilter(AuditValueFilter):
    title = "object type"
    parameter_name = "object_type"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The audit chain (21 CFR 11.10(e)): nobody adds, changes or deletes an event
    here, and the database refuses it anyway."""

    list_display = (
        "seq",
        "created_at",
        "actor_name",
        "action",
        "object_type",
        "object_id",
    )
    list_filter = (
        AuditActionFilter,
        AuditObjectTypeFilter,
        ("organisation", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("action", "=object_id")
    date_hierarchy = "created_at"
    ordering = ("-seq",)
    show_full_result_count = False
    actions = None

    def get_queryset(self, request):
        return audit_event_list_visible_to(request.user)


@admin.register(Signature)
class SignatureAdmin(ReadOnlyAdmin):
    list_display = ("printed_name", "meaning", "signed_at", "record_type", "record_id")
    list_filter = ("meaning", "record_type")
    list_select_related = ("record_type",)
    search_fields = ("printed_name", "=record_id", "content_hash")
    readonly_fields = ("verification",)
    date_hierarchy = "signed_at"

    @admin.display(description="Verification")
    def verification(self, signature: Signature) -> str:
        result = signature_verify(signature)
        if result.valid:
            return "Valid: the record still has the content that was signed."
        return "INVALID: the record changed after signing, or is gone."


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "progress_percent",
        "attempts",
        "actor",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind")
    list_select_related = ("actor",)
    search_fields = ("kind", "=target_id")

    @admin.display(description="Progress", ordering="progress")
    def progress_percent(self, job: Job) -> str:
        return f"{job.progress}%"


@admin.register(StoredFile)
class StoredFileAdmin(ReadOnlyAdmin):
    list_display = (
        "sha256",
        "size",
        "content_type",
        "original_name",
        "created_by",
        "created_at",
    )
    list_select_related = ("created_by",)
    search_fields = ("=sha256", "original_name")


admin.site.unregister(User)


@admin.register(User)
class PsiUserAdmin(UserAdmin):
    """Users are deactivated, never deleted: their names stay on what they signed.
    Roles come from memberships, so groups are not edited here."""

    actions = ["deactivate_users", "reactivate_users"]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly += ["is_active", "groups", "last_login", "date_joined"]
        return readonly

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(
        description="Deactivate the selected users (revokes their memberships)",
        permissions=["change"],
    )
    def deactivate_users(self, request, queryset):
        return _apply_with_reason(
            self,
            request,
            queryset.filter(is_active=True).exclude(pk=request.user.pk),
            action_name="deactivate_users",
            title="Deactivate users",
            explanation="They can no longer log in or sign, and lose every role.",
            apply=lambda user, reason: user_deactivate(
                actor=request.user, user=user, reason=reason
            ),
        )

    @admin.action(description="Reactivate the selected users", permissions=["change"])
    def reactivate_users(self, request, queryset):
        return _apply_with_reason(
            self,
            request,
            queryset.filter(is_active=False),
            action_name="reactivate_users",
            title="Reactivate users",
            explanation="They can log in again; grant their memberships anew.",
            apply=lambda user, reason: user_reactivate(
                actor=request.user, user=user, reason=reason
            ),
        )
