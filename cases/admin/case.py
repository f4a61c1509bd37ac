"""Cases in the admin: opening a case (case_create), editing a draft (case_update),
and every lifecycle step as a button on the case's page, with the routine steps also
as changelist actions, all through cases.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from simple_history.admin import SimpleHistoryAdmin

from cases import services
from cases.admin.base import (
    GatedAdminMixin,
    form_error,
    posted,
    raise_http,
    transition_label,
)
from cases.models import Case, CaseEvent
from cases.selectors import PATIENT_IDENTITY, prescriber_choices
from cases.services import (
    CASE_EDITABLE_FIELDS,
    TRANSITION_SERVICES,
    TRANSITIONS,
    transitions_available,
)
from consent.models import Patient
from consent.selectors import patient_list_visible_to
from psi.errors import DomainError
from psi.models import Organisation
from psi.permissions import has_object_perm
from psi.signatures import printed_name

#: Steps offered as changelist actions: the routine ones that need no reason and no
#: clinical or quality judgement per case (approval and release stay one at a time).
BULK_TRANSITIONS = (
    "submit",
    "receive_imaging",
    "accept_imaging",
    "start_design",
    "start_manufacturing",
    "ship",
    "start_follow_up",
    "close",
)


class CaseEventInline(admin.TabularInline):
    """The case's timeline, read-only (events are written by the transitions)."""

    model = CaseEvent
    fields = ("at", "transition", "from_status", "to_status", "actor", "reason")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    # The parent case is already behind the gate; its events are part of its page.
    def has_view_permission(self, request, obj=None):
        return True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CaseCreateForm(forms.Form):
    patient = forms.ModelChoiceField(
        queryset=Patient.objects.none(),
        to_field_name="pseudonym",
        help_text="The patient, by pseudonym.",
    )
    manufacturer = forms.ModelChoiceField(
        queryset=Organisation.objects.filter(kind=Organisation.Kind.MANUFACTURER)
    )
    prescriber = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        help_text="The prescribing clinician of the patient's hospital.",
    )
    indication = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    anatomical_region = forms.ChoiceField(choices=Case.Region.choices)
    side = forms.ChoiceField(choices=Case.Side.choices)
    urgency = forms.ChoiceField(
        choices=Case.Urgency.choices, initial=Case.Urgency.ROUTINE
    )
    planned_surgery_date = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    regulatory_pathway = forms.ChoiceField(choices=Case.Pathway.choices)
    pathway_reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why this pathway applies (e.g. why the device is custom-made).",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        # Identity deferred: the choices show pseudonyms and decrypt nothing.
        self.fields["patient"].queryset = patient_list_visible_to(
            user, "change_patient"
        )
        self.fields["prescriber"].queryset = prescriber_choices(user)
        self.fields["prescriber"].label_from_instance = printed_name
        if user in self.fields["prescriber"].queryset:
            self.fields["prescriber"].initial = user.pk


class TransitionForm(forms.Form):
    reason = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3})
    )

    def __init__(self, *args, needs_reason: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = needs_reason
        self.fields["reason"].help_text = (
            "Required for this step." if needs_reason else "Optional."
        )


def _bulk_transition_action(name: str):
    def bulk(modeladmin, request, queryset):
        done, refused = [], []
        # The queryset is the gated changelist's; each case goes through the service,
        # which locks it, checks the actor's permission and the status again.
        for case in queryset.order_by("reference"):
            try:
                TRANSITION_SERVICES[name](actor=request.user, case=case)
            except DomainError as exc:
                refused.append(f"{case.reference}: {exc.message}")
            else:
                done.append(case.reference)
        if done:
            modeladmin.message_user(
                request,
                f"{transition_label(name)}: {', '.join(done)}.",
                messages.SUCCESS,
            )
        for refusal in refused:
            modeladmin.message_user(request, refusal, messages.ERROR)

    bulk.__name__ = f"transition_{name}"
    bulk.short_description = f"{transition_label(name)} the selected cases"
    return bulk


@admin.register(Case)
class CaseAdmin(GatedAdminMixin, SimpleHistoryAdmin):
    list_display = (
        "reference",
        "patient_pseudonym",
        "hospital",
        "manufacturer",
        "anatomical_region",
        "status",
        "urgency",
        "planned_surgery_date",
    )
    list_filter = (
        "status",
        "anatomical_region",
        "urgency",
        "regulatory_pathway",
        ("hospital", RelatedOnlyFieldListFilter),
        ("manufacturer", RelatedOnlyFieldListFilter),
    )
    list_select_related = ("patient", "hospital", "manufacturer", "prescriber")
    search_fields = ("reference", "patient__pseudonym")
    ordering = ("-created_at", "-id")
    date_hierarchy = None
    inlines = [CaseEventInline]
    actions = [_bulk_transition_action(name) for name in BULK_TRANSITIONS]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "reference",
                    "status",
                    "held_from_status",
                    "patient_pseudonym",
                    "hospital",
                    "manufacturer",
                    "prescriber",
                )
            },
        ),
        ("Clinical details", {"fields": CASE_EDITABLE_FIELDS}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )
    readonly_fields = (
        "reference",
        "status",
        "held_from_status",
        "patient_pseudonym",
        "hospital",
        "manufacturer",
        "prescriber",
        "created_by",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset.select_related(*self.list_select_related).defer(
            *PATIENT_IDENTITY
        )

    @admin.display(description="Patient", ordering="patient__pseudonym")
    def patient_pseudonym(self, case: Case) -> str:
        return case.patient.pseudonym

    def has_change_permission(self, request, obj=None):
        # Only a draft's clinical details can change, by its hospital; every other
        # change to a case is a transition (the buttons on its page).
        if not super().has_change_permission(request, obj):
            return False
        return obj is None or (
            obj.status == Case.Status.DRAFT
            and has_object_perm(request.user, "change_case", obj)
        )

    def save_model(self, request, obj, form, change):
        if not change:  # cases are opened through add_view only
            raise PermissionDenied
        services.case_update(
            actor=request.user,
            case=obj,
            changes={name: form.cleaned_data[name] for name in form.changed_data},
        )

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/transition/<str:name>/",
                self.admin_site.admin_view(self.transition_view),
                name="{}_{}_transition".format(*info),
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        """Open a case through ``case_create``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CaseCreateForm(posted(request), user=request.user)
        if request.method == "POST" and form.is_valid():
            try:
                case = services.case_create(actor=request.user, **form.cleaned_data)
            except DomainError as exc:
                form_error(form, exc)
            else:
                self.log_addition(request, case, [{"added": {}}])
                message = f"Case {case.reference} opened as a draft."
                self.message_user(request, message, messages.SUCCESS)
                return HttpResponseRedirect(self.change_url(case))
        return self.render_service_form(
            request, title="Open a case", form=form, submit_label="Open case"
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        case = self.get_visible_object(request, object_id)
        info = self.opts.app_label, self.opts.model_name
        buttons = [
            {
                "label": transition_label(name),
                "url": reverse(
                    "admin:{}_{}_transition".format(*info),
                    args=[case.pk, name],
                    current_app=self.admin_site.name,
                ),
            }
            for name in transitions_available(request.user, case)
        ]
        extra_context = {**(extra_context or {}), "transition_buttons": buttons}
        return super().change_view(request, object_id, form_url, extra_context)

    def transition_view(self, request, object_id, name):
        """One lifecycle step: a confirmation page (with the reason where the step
        needs one) whose POST calls the step's service."""
        if name not in TRANSITIONS:
            raise Http404("No such step.")
        case = self.get_visible_object(request, object_id)
        if not self.has_view_permission(request, case):
            raise PermissionDenied
        transition = TRANSITIONS[name]
        form = TransitionForm(posted(request), needs_reason=transition.needs_reason)
        if request.method == "POST" and form.is_valid():
            try:
                case = TRANSITION_SERVICES[name](
                    actor=request.user, case=case, reason=form.cleaned_data["reason"]
                )
            except DomainError as exc:
                raise_http(exc)
                if exc.status != 400:  # the case's state refused it: say so there
                    self.message_user(request, exc.message, messages.ERROR)
                    return HttpResponseRedirect(self.change_url(case))
                form_error(form, exc)
            else:
                self.log_change(
                    request, case, f"{transition_label(name)} ({case.status})"
                )
                done = (
                    f"{case.reference}: {transition_label(name).lower()} done; the "
                    f"case is now {case.get_status_display().lower()}."
                )
                self.message_user(request, done, messages.SUCCESS)
                return HttpResponseRedirect(self.change_url(case))
        return self.render_service_form(
            request,
            title=f"{transition_label(name)}: {case.reference}",
            form=form,
            obj=case,
            submit_label=transition_label(name),
            intro=f"The case is {case.get_status_display().lower()}.",
        )
