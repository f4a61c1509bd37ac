"""Admin of patients, consent forms and consent records, where clinicians work.

Every queryset goes through the permission gate; every write is a form that calls a
service in ``consent.services`` (registration, identity correction, consent,
withdrawal, publishing a form) and shows the service's refusal on the form. Identity
is shown only to members of the patient's hospital and read through
``patient_identities``, so each view of it is an audit event. Nothing is deleted,
and history pages never revert a record or show identity values.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminDateWidget, AdminSplitDateTime
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from simple_history.admin import SimpleHistoryAdmin
from simple_history.template_utils import HistoricalRecordContextHelper

from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.selectors import (
    IDENTITY_FIELDS,
    IDENTITY_HISTORY_FIELDS,
    consent_form_list,
    consent_list_visible_to,
    patient_list_visible_to,
    patient_matching_record_number,
)
from consent.services import (
    HOSPITAL_REGISTRARS,
    consent_form_create,
    consent_record,
    consent_withdraw,
    patient_identity,
    patient_register,
    patient_update_identity,
)
from psi.errors import DomainError
from psi.models import Organisation
from psi.orgs import user_memberships
from psi.permissions import has_object_perm

_REASON_WIDGET = forms.Textarea(attrs={"rows": 3, "cols": 60})


def _show_error(form: forms.Form, exc: DomainError) -> None:
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


# --- patients -----------------------------------------------------------------------


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
        widget=_REASON_WIDGET,
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
                _show_error(form, exc)
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
                    _show_error(form, exc)
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


# --- consent forms ------------------------------------------------------------------


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
                _show_error(form, exc)
            else:
                self.log_addition(request, consent_form, [{"added": {}}])
                self.message_user(
                    request, f"{consent_form} published.", messages.SUCCESS
                )
                return HttpResponseRedirect(self.change_url(consent_form))
        return self.render_service_form(
            request, form, title="Publish a consent form", submit_label="Publish"
        )


# --- consents -----------------------------------------------------------------------


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
        widget=_REASON_WIDGET,
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
                _show_error(form, exc)
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
