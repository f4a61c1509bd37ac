"""Consent forms: published texts, a new version for every change."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminDateWidget
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect

from consent.admin.base import GatedHistoryAdmin, show_error
from consent.models import ConsentForm, Purpose
from consent.selectors import (
    consent_form_list,
)
from consent.services import (
    consent_form_create,
)
from psi.errors import DomainError


class ConsentFormPublishForm(forms.Form):
    title = forms.CharField(max_length=200)
    version = forms.CharField(max_length=20)
    language = forms.CharField(max_length=10, help_text="BCP 47 tag, e.g. en, de-CH")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))
    purposes = forms.MultipleChoiceField(
        choices=Purpose.choices, widget=forms.CheckboxSelectMultiple
    )
    valid_from = forms.DateField(widget=AdminDateWidget)
    valid_to = forms.DateField(widget=AdminDateWidget, required=False)


@admin.register(ConsentForm)
class ConsentFormAdmin(GatedHistoryAdmin):
    """Published consent texts, readable by every signed-in user; a change is a new
    version, never an edit."""

    list_display = ("title", "version", "language", "valid_from", "valid_to")
    list_filter = ("language",)
    search_fields = ("title",)
    fields = (
        "title",
        "version",
        "language",
        "purposes",
        "valid_from",
        "valid_to",
        "text",
        "created_at",
    )
    readonly_fields = fields
    actions = None

    def get_queryset(self, request):
        return consent_form_list(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ConsentFormPublishForm(
            request.POST if request.method == "POST" else None
        )
        if form.is_valid():
            try:
                consent_form = consent_form_create(
                    actor=request.user, **form.cleaned_data
                )
            except DomainError as exc:
                show_error(form, exc)
            else:
                self.log_addition(request, consent_form, [{"added": {}}])
                self.message_user(
                    request, f"{consent_form} published.", messages.SUCCESS
                )
                return HttpResponseRedirect(self.change_url(consent_form))
        return self.render_service_form(
            request, form, title="Publish a consent form", submit_label="Publish"
        )
