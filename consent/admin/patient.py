"""Patients: registered, looked up by pseudonym or posted record number, their
identity shown to their own hospital only and corrected through the service."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminDateWidget
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path
from simple_history.template_utils import HistoricalRecordContextHelper

from consent.admin.base import REASON_WIDGET, GatedHistoryAdmin, show_error
from consent.models import Patient
from consent.selectors import (
    IDENTITY_FIELDS,
    IDENTITY_HISTORY_FIELDS,
    patient_list_visible_to,
    patient_matching_record_number,
)
from consent.services import (
    HOSPITAL_REGISTRARS,
    patient_identity,
    patient_register,
    patient_update_identity,
)
from psi.errors import DomainError
from psi.models import Organisation
from psi.orgs import user_memberships
from psi.permissions import has_object_perm


class PatientRegisterForm(forms.Form):
    hospital = forms.ModelChoiceField(queryset=Organisation.objects.none())
    family_name = forms.CharField(max_length=200)
    given_names = forms.CharField(max_length=200)
    birth_date = forms.DateField(widget=AdminDateWidget)
    sex = forms.ChoiceField(choices=Patient.Sex.choices)
    record_number = forms.CharField(
        max_length=100, help_text="The hospital's own record number."
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        hospitals = Organisation.objects.filter(kind=Organisation.Kind.HOSPITAL)
        if not user.is_superuser:
            # Registrars register at their own hospitals; the service checks again.
            hospitals = hospitals.filter(
                pk__in=[
                    m.organisation_id
                    for m in user_memberships(user)
                    if m.role in HOSPITAL_REGISTRARS
                ]
            )
        self.fields["hospital"].queryset = hospitals
        if hospitals.count() == 1:
            self.fields["hospital"].initial = hospitals.first()


class PatientIdentityForm(forms.Form):
    family_name = forms.CharField(max_length=200)
    given_names = forms.CharField(max_length=200)
    birth_date = forms.DateField(widget=AdminDateWidget)
    sex = forms.ChoiceField(choices=Patient.Sex.choices)
    record_number = forms.CharField(max_length=100)
    reason = forms.CharField(
        widget=REASON_WIDGET,
        max_length=2000,
        help_text="Why the identity is corrected; kept in history and the audit trail.",
    )


class _IdentityHiddenContextHelper(HistoricalRecordContextHelper):
    """History shows that identity changed, never its values."""

    def context_for_delta_changes(self, delta):
        changes = super().context_for_delta_changes(delta)
        for entry, change in zip(changes, delta.changes, strict=True):
            if change.field in IDENTITY_HISTORY_FIELDS:
                entry["old"] = entry["new"] = "(hidden)"
        return changes


class PatientFindForm(forms.Form):
    record_number = forms.CharField(
        max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )


@admin.register(Patient)
class PatientAdmin(GatedHistoryAdmin):
    """Patients by pseudonym. The list's search finds a pseudonym (or part of one);
    a record number is looked up on a page of its own, posted, never in a URL (a
    search term lands in the address bar, the browser history and the server's
    access log), through its keyed digest: encrypted fields are never searched as
    text."""

    list_display = ("pseudonym", "hospital", "created_at")
    list_filter = (("hospital", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("hospital",)
    search_fields = ("pseudonym",)
    search_help_text = (
        "A pseudonym. To find a patient by hospital record number, use "
        "Find by record number."
    )
    ordering = ("pseudonym",)
    fields = ("pseudonym", "hospital", "created_at", "created_by")
    readonly_fields = fields
    actions = None

    def get_queryset(self, request):
        return patient_list_visible_to(request.user).select_related("created_by")

    def has_change_permission(self, request, obj=None) -> bool:
        # The record itself never changes here; identity is corrected on its own
        # page, through the service.
        return False

    def _may_correct_identity(self, request, obj) -> bool:
        return has_object_perm(request.user, "change_patient", obj) and has_object_perm(
            request.user, "view_patient_identity", obj
        )

    def get_urls(self):
        return [
            path(
                "find/",
                self.admin_site.admin_view(self.find_view),
                name="consent_patient_find",
            ),
            path(
                "<path:object_id>/identity/",
                self.admin_site.admin_view(self.identity_view),
                name="consent_patient_identity",
            ),
            *super().get_urls(),
        ]

    def find_view(self, request):
        """The patient of the user's hospital with the exact record number, found
        from a posted form and opened by its id: the number never enters a URL."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PatientFindForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            number = form.cleaned_data["record_number"]
            patient = patient_matching_record_number(request.user, number).first()
            if patient is not None:
                return HttpResponseRedirect(self.change_url(patient))
            form.add_error(
                "record_number", "No patient of your hospital has this record number."
            )
        return self.render_service_form(
            request,
            form,
            title="Find a patient by record number",
            submit_label="Find",
            explanation="The exact record number your hospital gave the patient. "
            "Only your hospital's patients are found.",
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and request.method == "GET":
            # One audited read; None for anyone outside the patient's hospital.
            identity = patient_identity(actor=request.user, patient=obj)
            if identity is not None:
                labels = {f.name: f.verbose_name for f in Patient._meta.fields}
                extra_context["identity"] = [
                    (
                        labels[name].capitalize(),
                        Patient.Sex(identity[name]).label
                        if name == "sex"
                        else identity[name],
                    )
                    for name in IDENTITY_FIELDS
                ]
            extra_context["can_correct_identity"] = (
                identity is not None and self._may_correct_identity(request, obj)
            )
            extra_context["can_record_consent"] = request.user.has_perm(
                "consent.add_consent"
            ) and has_object_perm(request.user, "change_patient", obj)
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PatientRegisterForm(
            request.POST if request.method == "POST" else None, user=request.user
        )
        if form.is_valid():
            try:
                patient = patient_register(actor=request.user, **form.cleaned_data)
            except DomainError as exc:
                show_error(form, exc)
            else:
                self.log_addition(request, patient, [{"added": {}}])
                self.message_user(
                    request,
                    f"Patient registered under the pseudonym {patient.pseudonym}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self.change_url(patient))
        return self.render_service_form(
            request,
            form,
            title="Register a patient",
            submit_label="Register",
            explanation="The patient gets a random pseudonym; the identity is "
            "stored encrypted and only your hospital can read it.",
        )

    def identity_view(self, request, object_id):
        patient = self.visible_object_or_404(request, object_id)
        if not self._may_correct_identity(request, patient):
            raise PermissionDenied
        current = patient_identity(actor=request.user, patient=patient)
        form = PatientIdentityForm(
            request.POST if request.method == "POST" else None, initial=current
        )
        if form.is_valid():
            changes = {
                name: form.cleaned_data[name]
                for name in form.changed_data
                if name in IDENTITY_FIELDS
            }
            if not changes:
                form.add_error(None, "Nothing changed.")
            else:
                try:
                    patient_update_identity(
                        actor=request.user,
                        patient=patient,
                        changes=changes,
                        reason=form.cleaned_data["reason"],
                    )
                except DomainError as exc:
                    show_error(form, exc)
                else:
                    labels = [form.fields[name].label or name for name in changes]
                    self.log_change(
                        request, patient, [{"changed": {"fields": sorted(labels)}}]
                    )
                    self.message_user(
                        request, "The identity was corrected.", messages.SUCCESS
                    )
                    return HttpResponseRedirect(self.change_url(patient))
        return self.render_service_form(
            request,
            form,
            obj=patient,
            title="Correct the identity",
            submit_label="Save the correction",
            cancel_url=self.change_url(patient),
        )

    # History: only the patient's hospital, and never identity values.

    def history_view(self, request, object_id, extra_context=None):
        patient = self.visible_object_or_404(request, object_id)
        # Reasons for identity corrections may quote the identity.
        if not has_object_perm(request.user, "view_patient_identity", patient):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self.visible_object_or_404(request, object_id)
        # A historical version in a form would show the identity of that time.
        raise PermissionDenied

    def get_historical_record_context_helper(self, request, historical_record):
        return _IdentityHiddenContextHelper(self.model, historical_record)
