"""Consent records: recorded per purpose with a legal basis, withdrawn in one
action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from consent.admin.base import REASON_WIDGET, GatedHistoryAdmin, show_error
from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.selectors import (
    consent_form_list,
    consent_list_visible_to,
    patient_list_visible_to,
)
from consent.services import (
    consent_record,
    consent_withdraw,
)
from psi.errors import DomainError
from psi.permissions import has_object_perm


class ConsentRecordForm(forms.Form):
    patient = forms.ModelChoiceField(queryset=Patient.objects.none())
    form = forms.ModelChoiceField(queryset=ConsentForm.objects.none())
    method = forms.ChoiceField(choices=Consent.Method.choices)
    signed_at = forms.SplitDateTimeField(widget=AdminSplitDateTime)
    evidence = forms.FileField(
        required=False,
        help_text="The signed paper form, scanned (PDF, PNG, JPEG or TIFF); "
        "required for a paper consent.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["patient"].queryset = patient_list_visible_to(
            user, "change_patient"
        )
        today = timezone.localdate()
        self.fields["form"].queryset = consent_form_list(user).filter(
            models.Q(valid_to__isnull=True) | models.Q(valid_to__gte=today),
            valid_from__lte=today,
        )
        # One choice per purpose: the legal basis it is given under, or none.
        for purpose in Purpose:
            self.fields[f"purpose_{purpose.value}"] = forms.ChoiceField(
                label=purpose.label,
                required=False,
                choices=[("", "Not given")] + list(LegalBasis.choices),
            )

    def purposes(self) -> dict[str, str]:
        return {
            purpose.value: self.cleaned_data[f"purpose_{purpose.value}"]
            for purpose in Purpose
            if self.cleaned_data.get(f"purpose_{purpose.value}")
        }


class WithdrawForm(forms.Form):
    reason = forms.CharField(
        widget=REASON_WIDGET,
        max_length=2000,
        help_text="Recorded with the withdrawal in history and the audit trail.",
    )


class WithdrawnFilter(admin.SimpleListFilter):
    title = "withdrawn"
    parameter_name = "withdrawn"

    def lookups(self, request, model_admin):
        return [("yes", "Withdrawn"), ("no", "In force")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(withdrawn_at__isnull=self.value() == "no")
        return queryset


class PurposeFilter(admin.SimpleListFilter):
    title = "purpose"
    parameter_name = "purpose"

    def lookups(self, request, model_admin):
        return list(Purpose.choices)

    def queryset(self, request, queryset):
        if self.value() in Purpose.values:
            return queryset.filter(purposes__has_key=self.value())
        return queryset


@admin.register(Consent)
class ConsentAdmin(GatedHistoryAdmin):
    """Consent records (GDPR Art. 7(1)): recorded and withdrawn through the
    services, never edited or deleted."""

    list_display = (
        "__str__",
        "patient",
        "form",
        "method",
        "signed_at",
        "is_withdrawn",
    )
    list_filter = ("method", WithdrawnFilter, PurposeFilter)
    list_select_related = ("patient", "form")
    search_fields = ("patient__pseudonym",)
    search_help_text = "A patient's pseudonym."
    fields = (
        "patient",
        "form",
        "purposes_given",
        "method",
        "evidence_file",
        "signed_at",
        "recorded_by",
        "recorded_at",
        "withdrawn_at",
        "withdrawn_by",
        "withdrawal_reason",
    )
    readonly_fields = fields
    actions = ["withdraw_selected"]

    def get_queryset(self, request):
        return consent_list_visible_to(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_withdraw_permission(self, request) -> bool:
        # Who records consent can withdraw it (GDPR Art. 7(3)); the service decides
        # per patient.
        return request.user.has_perm("consent.add_consent")

    @admin.display(boolean=True, description="Withdrawn")
    def is_withdrawn(self, consent: Consent) -> bool:
        return consent.is_withdrawn

    @admin.display(description="Purposes and legal basis")
    def purposes_given(self, consent: Consent):
        return format_html_join(
            mark_safe("<br>"),
            "{}: {}",
            (
                (
                    Purpose(purpose).label if purpose in Purpose.values else purpose,
                    LegalBasis(basis).label if basis in LegalBasis.values else basis,
                )
                for purpose, basis in sorted(consent.purposes.items())
            ),
        )

    @admin.display(description="Evidence")
    def evidence_file(self, consent: Consent) -> str:
        # The client's file name may carry the patient's name: never shown.
        evidence = consent.evidence
        if evidence is None:
            return "—"
        return (
            f"{evidence.content_type}, {evidence.size} bytes, SHA-256 {evidence.sha256}"
        )

    def get_urls(self):
        return [
            path(
                "<path:object_id>/withdraw/",
                self.admin_site.admin_view(self.withdraw_view),
                name="consent_consent_withdraw",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            extra_context["can_withdraw"] = not obj.is_withdrawn and has_object_perm(
                request.user, "change_patient", obj
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        post = request.method == "POST"
        form = ConsentRecordForm(
            request.POST if post else None,
            request.FILES if post else None,
            user=request.user,
            initial={"patient": request.GET.get("patient")},
        )
        if form.is_valid():
            upload = form.cleaned_data["evidence"]
            try:
                consent = consent_record(
                    actor=request.user,
                    patient=form.cleaned_data["patient"],
                    form=form.cleaned_data["form"],
                    purposes=form.purposes(),
                    method=form.cleaned_data["method"],
                    signed_at=form.cleaned_data["signed_at"],
                    evidence_upload=upload,
                )
            except DomainError as exc:
                show_error(form, exc)
            else:
                self.log_addition(request, consent, [{"added": {}}])
                self.message_user(request, f"{consent} recorded.", messages.SUCCESS)
                return HttpResponseRedirect(self.change_url(consent))
        return self.render_service_form(
            request,
            form,
            title="Record a consent",
            submit_label="Record",
            explanation="Give the legal basis for each purpose the patient agreed "
            "to; leave the others at “Not given”.",
        )

    def _withdraw_page(self, request, consents, form, *, action: bool):
        context = {
            **self.admin_site.each_context(request),
            "title": "Withdraw consent",
            "opts": self.opts,
            "consents": consents,
            "form": form,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/consent/consent/withdraw.html", context)

    def _withdraw(self, request, consents, reason: str) -> int:
        done = 0
        for consent in consents:
            try:
                consent_withdraw(actor=request.user, consent=consent, reason=reason)
            except DomainError as exc:
                self.message_user(request, f"{consent}: {exc.message}", messages.ERROR)
            else:
                self.log_change(
                    request, consent, [{"changed": {"fields": ["Withdrawn at"]}}]
                )
                done += 1
        return done

    def withdraw_view(self, request, object_id):
        consent = self.visible_object_or_404(request, object_id)
        if not self.has_withdraw_permission(request):
            raise PermissionDenied
        form = WithdrawForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            if self._withdraw(request, [consent], form.cleaned_data["reason"]):
                self.message_user(request, f"{consent} withdrawn.", messages.SUCCESS)
            return HttpResponseRedirect(self.change_url(consent))
        return self._withdraw_page(request, [consent], form, action=False)

    @admin.action(
        description="Withdraw the selected consents", permissions=["withdraw"]
    )
    def withdraw_selected(self, request, queryset):
        form = WithdrawForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            done = self._withdraw(request, queryset, form.cleaned_data["reason"])
            if done:
                self.message_user(
                    request, f"{done} consents withdrawn.", messages.SUCCESS
                )
            return None
        return self._withdraw_page(request, list(queryset), form, action=True)
