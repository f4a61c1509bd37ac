"""What every admin page of the cases app shares: the permission gate, and small pages
that call one service each."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from cases.services import TRANSITIONS
from psi.errors import DomainError, NotVisible, PermissionRefused
from psi.permissions import has_object_perm, restrict
from psi.signatures import printed_name

SERVICE_FORM_TEMPLATE = "admin/cases/service_form.html"


def transition_label(name: str) -> str:
    return TRANSITIONS[name].label


def posted(request):
    # An empty POST is still a submission (a step that needs no reason).
    return request.POST if request.method == "POST" else None


def form_error(form: forms.Form, exc: DomainError) -> None:
    """Show a service's refusal on the field it names, else above the form."""
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.message)


def raise_http(exc: DomainError) -> None:
    """The gate's answers as the admin gives them: unseen is 404, refused is 403."""
    if isinstance(exc, NotVisible):
        raise Http404(exc.message) from exc
    if isinstance(exc, PermissionRefused):
        raise PermissionDenied(exc.message) from exc


def signing_password_field() -> forms.CharField:
    """The password a signer enters again on every signing page (21 CFR 11.200)."""
    return forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Enter your password again to sign (21 CFR 11.200).",
    )


def signing_notice(user, meaning: str) -> str:
    """What a signing page says the signature will show (21 CFR 11.50)."""
    return format_html(
        "Signed by <strong>{}</strong> &middot; meaning <strong>{}</strong> "
        "&middot; date and time recorded at signing, in UTC.",
        printed_name(user),
        meaning,
    )


def manifestation(signature) -> str:
    """A signature as the record shows it: printed name, UTC time, meaning."""
    when = signature.signed_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{signature.printed_name}, {when} UTC, {signature.get_meaning_display()}"


class GatedAdminMixin:
    """The permission gate for an admin: querysets restricted to what the user may
    view (superusers see everything), an unseen object a 404 rather than the admin's
    "perhaps it was deleted" redirect, history shown only for visible objects and
    never reverted (a revert would write around the services)."""

    def get_queryset(self, request):
        return restrict(super().get_queryset(request), request.user)

    def has_view_permission(self, request, obj=None):
        if not super().has_view_permission(request, obj):
            return False
        return obj is None or has_object_perm(request.user, "view", obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        raise Http404(f"No {opts.verbose_name} matches the given query.")

    def get_visible_object(self, request, object_id):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} matches the given query.")
        return obj

    def history_view(self, request, object_id, extra_context=None):
        self.get_visible_object(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self.get_visible_object(request, object_id)
        if request.method == "POST":
            raise PermissionDenied("History is read-only.")
        return super().history_form_view(request, object_id, version_id, extra_context)

    def revert_disabled(self, request, obj=None):
        return True

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The admin's change form runs the service in save_model; a refusal there
        # (a rule the form cannot know) comes back as a message on the same page.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            raise_http(exc)
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def render_service_form(self, request, *, title, form, obj=None, **context):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "original": obj,
            "form": form,
            **context,
        }
        return TemplateResponse(request, SERVICE_FORM_TEMPLATE, context)

    def change_url(self, obj) -> str:
        info = self.opts.app_label, self.opts.model_name
        return reverse(
            f"admin:{info[0]}_{info[1]}_change",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )
