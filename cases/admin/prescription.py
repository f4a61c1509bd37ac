"""Prescriptions in the admin: written through prescription_create, edited while
unsigned through prescription_update, signed on a page of their own that shows the
21 CFR 11.50 manifestation; read-only once signed, never deleted."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from simple_history.admin import SimpleHistoryAdmin

from cases import services
from cases.admin.base import (
    GatedAdminMixin,
    form_error,
    manifestation,
    posted,
    raise_http,
    signing_notice,
    signing_password_field,
)
from cases.models import Case, Prescription
from cases.services import PRESCRIPTION_FIELDS
from psi.errors import DomainError
from psi.permissions import has_object_perm, restrict
from psi.signatures import signature_verify


class PrescriptionCreateForm(forms.ModelForm):
    case = forms.ModelChoiceField(queryset=Case.objects.none())

    class Meta:
        model = Prescription
        fields = PRESCRIPTION_FIELDS

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["case"].queryset = restrict(
            Case.objects.order_by("-created_at"), user, "prescribe_case"
        )
        self.order_fields(["case", *PRESCRIPTION_FIELDS])

    def _post_clean(self):
        # Field parsing only: the rules are prescription_create's.
        pass


class SignForm(forms.Form):
    password = signing_password_field()


@admin.register(Prescription)
class PrescriptionAdmin(GatedAdminMixin, SimpleHistoryAdmin):
    list_display = (
        "__str__",
        "case",
        "version",
        "prescriber",
        "material",
        "thickness_mm",
        "is_signed",
        "created_at",
    )
    list_filter = ("material",)
    list_select_related = ("case", "prescriber", "signature")
    search_fields = ("case__reference", "patient_pseudonym")
    ordering = ("-created_at", "-id")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "case",
                    "version",
                    "supersedes",
                    "prescriber",
                    "institution",
                    "patient_pseudonym",
                )
            },
        ),
        ("Design characteristics", {"fields": PRESCRIPTION_FIELDS}),
        (
            "Signature (21 CFR 11.50)",
            {"fields": ("signature_manifestation", "signature_valid", "created_at")},
        ),
    )
    readonly_fields = (
        "case",
        "version",
        "supersedes",
        "prescriber",
        "institution",
        "patient_pseudonym",
        "signature_manifestation",
        "signature_valid",
        "created_at",
    )

    @admin.display(boolean=True, description="Signed")
    def is_signed(self, prescription: Prescription) -> bool:
        return prescription.is_signed

    @admin.display(description="Signed by")
    def signature_manifestation(self, prescription: Prescription) -> str:
        if prescription.signature is None:
            return "Not signed"
        return manifestation(prescription.signature)

    @admin.display(boolean=True, description="Signature valid")
    def signature_valid(self, prescription: Prescription) -> bool | None:
        if prescription.signature is None:
            return None
        return signature_verify(prescription.signature).valid

    def _may_write(self, request, prescription: Prescription) -> bool:
        return (
            not prescription.is_signed
            and prescription.prescriber_id == request.user.pk
            and has_object_perm(request.user, "prescribe_case", prescription)
        )

    def has_change_permission(self, request, obj=None):
        # A signed prescription is read-only for everyone: a change is a new version.
        # Prescribers hold object permissions on their cases, not a model-wide change
        # permission, so the object decides.
        if obj is None:
            return super().has_change_permission(request) or self.has_add_permission(
                request
            )
        return self._may_write(request, obj)

    def save_model(self, request, obj, form, change):
        if not change:  # prescriptions are written through add_view only
            raise PermissionDenied
        services.prescription_update(
            actor=request.user,
            prescription=obj,
            changes={name: form.cleaned_data[name] for name in form.changed_data},
        )

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/sign/",
                self.admin_site.admin_view(self.sign_view),
                name="{}_{}_sign".format(*info),
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        """Write a prescription through ``prescription_create``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PrescriptionCreateForm(posted(request), user=request.user)
        if request.method == "POST" and form.is_valid():
            data = {name: form.cleaned_data.get(name) for name in PRESCRIPTION_FIELDS}
            data = {name: value for name, value in data.items() if value is not None}
            try:
                prescription = services.prescription_create(
                    actor=request.user, case=form.cleaned_data["case"], **data
                )
            except DomainError as exc:
                raise_http(exc)
                form_error(form, exc)
            else:
                self.log_addition(request, prescription, [{"added": {}}])
                self.message_user(
                    request,
                    f"{prescription} written; sign it to make it valid.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self.change_url(prescription))
        return self.render_service_form(
            request,
            title="Write a prescription",
            form=form,
            submit_label="Write prescription",
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        prescription = self.get_visible_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "sign_url": reverse(
                "admin:cases_prescription_sign",
                args=[prescription.pk],
                current_app=self.admin_site.name,
            )
            if self._may_write(request, prescription)
            else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def sign_view(self, request, object_id):
        """The prescriber signs: the page shows what the signature will say (printed
        name, meaning; the time is taken at signing, in UTC) and asks for the
        password. Not in a transaction: a refused attempt stays recorded."""
        prescription = self.get_visible_object(request, object_id)
        form = SignForm(posted(request))
        if request.method == "POST" and form.is_valid():
            try:
                prescription = services.prescription_sign(
                    actor=request.user,
                    prescription=prescription,
                    password=form.cleaned_data["password"],
                )
            except DomainError as exc:
                raise_http(exc)
                if exc.field == "password":  # wrong password, or signing locked
                    form_error(form, exc)
                else:
                    self.message_user(request, exc.message, messages.ERROR)
                    return HttpResponseRedirect(self.change_url(prescription))
            else:
                self.message_user(
                    request,
                    f"{prescription} signed: {manifestation(prescription.signature)}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self.change_url(prescription))
        return self.render_service_form(
            request,
            title=f"Sign {prescription}",
            form=form,
            obj=prescription,
            submit_label="Sign",
            intro="By signing you declare that you authored this prescription; the "
            "signature is the legally binding equivalent of your handwritten "
            "signature (21 CFR 11.100(c)).",
            manifestation=signing_notice(request.user, "Authored"),
        )
