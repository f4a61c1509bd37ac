"""What every consent admin shares: the gated history admin, and service
refusals shown on the form."""

from __future__ import annotations

from django import forms
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from simple_history.admin import SimpleHistoryAdmin

from psi.errors import DomainError

#: The reason a service records in history and the audit trail.
REASON_WIDGET = forms.Textarea(attrs={"rows": 3, "cols": 60})


def show_error(form: forms.Form, exc: DomainError) -> None:
    """A service's refusal, on the field it names (or on the whole form)."""
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.message)


class GatedHistoryAdmin(SimpleHistoryAdmin):
    """History through the gate, and never a revert.

    simple-history's own views fall back to the historical rows when the object is
    not in ``get_queryset``; here a row the user cannot see answers 404 first. An
    earlier version never overwrites the record: changes go through services.
    """

    def revert_disabled(self, request, obj=None) -> bool:
        return True

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def visible_object_or_404(self, request, object_id):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} matches the given query.")
        return obj

    def history_view(self, request, object_id, extra_context=None):
        self.visible_object_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self.visible_object_or_404(request, object_id)
        if request.method != "GET":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)

    def render_service_form(
        self,
        request,
        form: forms.Form,
        *,
        title: str,
        submit_label: str,
        obj=None,
        explanation: str = "",
        cancel_url: str = "",
    ):
        """One admin page for a form that calls a service."""
        fieldsets = [(None, {"fields": list(form.fields)})]
        adminform = helpers.AdminForm(form, fieldsets, {})
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": str(obj) if obj else None,
            "opts": self.opts,
            "original": obj,
            "adminform": adminform,
            "errors": helpers.AdminErrorList(form, []),
            "media": self.media + adminform.media,
            "has_file_field": form.is_multipart(),
            "has_view_permission": self.has_view_permission(request, obj),
            "explanation": explanation,
            "submit_label": submit_label,
            "cancel_url": cancel_url
            or reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
        }
        return TemplateResponse(request, "admin/consent/service_form.html", context)

    def change_url(self, obj) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk]
        )
