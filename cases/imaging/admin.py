"""Admin for imaging: acquisition profiles (editable limits), DICOM peers, and
studies (read-only, reports pretty-printed, series with verdicts and previews; the
designer signs the visual review of an accepted study on a page of its own, through
study_review_sign).

Studies are gated by their case (psi.permissions.restrict); their de-identification
report only to the quality roles (``cases.view_deid_report``). Acquisition profiles
are manufacturer-wide configuration behind Django's model permissions; DICOM peers
are shown to members of the peer's hospital. History is read-only everywhere.
"""

from __future__ import annotations

import contextlib
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminRadioSelect
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from cases.admin.base import (
    GatedAdminMixin,
    manifestation,
    posted,
    raise_http,
    signing_notice,
    signing_password_field,
)
from cases.imaging import quality, services
from cases.imaging.models import (
    AcquisitionProfile,
    DicomPeer,
    ImagingSeries,
    ImagingStudy,
)
from psi.admin import ServiceHistoryAdmin
from psi.errors import Conflict, DomainError
from psi.models import Signature
from psi.orgs import user_memberships


def _pretty(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 30em; overflow: auto">{}</pre>',
        json.dumps(value or {}, indent=2, sort_keys=True, ensure_ascii=False),
    )


class AcquisitionProfileForm(forms.ModelForm):
    class Meta:
        model = AcquisitionProfile
        fields = ["region", "limits"]

    def clean_limits(self):
        limits = self.cleaned_data["limits"]
        if not isinstance(limits, dict):
            raise forms.ValidationError("Enter the limits as a JSON object.")
        region = self.cleaned_data.get("region") or limits.get("region")
        try:
            profile = quality.AcquisitionProfile.from_dict(limits)
        except (TypeError, ValueError) as exc:
            raise forms.ValidationError(str(exc)) from exc
        if region and profile.region != region:
            raise forms.ValidationError("The limits' region must match the region.")
        return profile.as_dict()


@admin.register(AcquisitionProfile)
class AcquisitionProfileAdmin(ServiceHistoryAdmin):
    form = AcquisitionProfileForm
    list_display = ["region", "updated_at"]

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        region = initial.get("region")
        with contextlib.suppress(ValueError):
            initial["limits"] = quality.default_profile(region).as_dict()
        return initial


@admin.register(DicomPeer)
class DicomPeerAdmin(ServiceHistoryAdmin):
    list_display = ["ae_title", "hospital", "networks", "is_active", "description"]
    list_filter = ["is_active"]
    search_fields = ["ae_title", "description"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("hospital")
        if request.user.is_superuser:
            return queryset
        ids = [m.organisation_id for m in user_memberships(request.user)]
        return queryset.filter(hospital_id__in=ids)

    def has_delete_permission(self, request, obj=None):
        return False

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        raise Http404("No DICOM peer matches the given query.")

    def _require_visible(self, request, object_id) -> None:
        # simple-history's pages load the peer by id (or from its history), not
        # through get_queryset: another hospital's peer is a 404 there too.
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404("No DICOM peer matches the given query.")

    def history_view(self, request, object_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context)


class SeriesInline(admin.TabularInline):
    model = ImagingSeries
    extra = 0
    can_delete = False
    show_change_link = False
    fields = [
        "series_number",
        "description",
        "instance_count",
        "slice_thickness",
        "quality_verdict",
        "thumbnails",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # Each row shows the series' __str__, which names its study and case.
        return super().get_queryset(request).select_related("study__case")

    @admin.display(description="Previews")
    def thumbnails(self, series):
        return format_html_join(
            " ",
            '<a href="{0}"><img src="{0}" alt="{1}" title="{1}" '
            'style="height: 96px"></a>',
            (
                (
                    reverse(
                        "imaging-series-preview",
                        kwargs={"pk": series.pk, "name": name},
                    ),
                    name,
                )
                for name in sorted(series.previews or {})
            ),
        )


class StudyReviewForm(forms.Form):
    """Each finding of the visual review, ok or not with notes, and the password that
    signs it. Whether notes are needed is study_review_sign's rule, not the form's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, label in services.REVIEW_FINDINGS.items():
            self.fields[f"{key}_ok"] = forms.TypedChoiceField(
                label=label,
                choices=[("yes", "Ok"), ("no", "Not ok")],
                coerce=lambda answer: answer == "yes",
                widget=AdminRadioSelect(attrs={"class": "radiolist inline"}),
            )
            self.fields[f"{key}_notes"] = forms.CharField(
                label=f"{label}: notes",
                required=False,
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                help_text="Required when not ok: say what is wrong.",
            )
        self.fields["password"] = signing_password_field()

    def findings(self) -> dict:
        return {
            key: {
                "ok": self.cleaned_data[f"{key}_ok"],
                "notes": self.cleaned_data[f"{key}_notes"],
            }
            for key in services.REVIEW_FINDINGS
        }

    def add_service_error(self, exc: DomainError) -> None:
        """The service's refusal on the field it names: ``findings.motion`` is the
        motion notes, ``password`` the password; anything else above the form."""
        field = exc.field or ""
        if field.startswith("findings."):
            field = f"{field.removeprefix('findings.')}_notes"
        self.add_error(field if field in self.fields else None, exc.message)


@admin.register(ImagingStudy)
class ImagingStudyAdmin(GatedAdminMixin, SimpleHistoryAdmin):
    list_display = ["__str__", "case", "status", "source", "series_count", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["case__reference"]
    inlines = [SeriesInline]
    fields = [
        "case",
        "status",
        "source",
        "modality",
        "study_date",
        "description",
        "series_count",
        "instance_count",
        "received_at",
        "proposed_series",
        "review",
        "quality",
        "deidentification",
        "findings",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("case", "proposed_series", "review")
        )

    def get_fields(self, request, obj=None):
        # The history pages build their form from these fields too, so the report
        # stays hidden there as well.
        fields = super().get_fields(request, obj)
        if request.user.has_perm("cases.view_deid_report"):
            return fields
        return [name for name in fields if name != "deidentification"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/review/",
                self.admin_site.admin_view(self.review_view),
                name="{}_{}_review".format(*info),
            ),
            path(
                "<path:object_id>/evaluate/",
                self.admin_site.admin_view(self.evaluate_view),
                name="{}_{}_evaluate".format(*info),
            ),
            *super().get_urls(),
        ]

    @staticmethod
    def _refusal(guard, request, study) -> DomainError | None:
        """Why the service behind ``guard`` (``services.require_reviewable``,
        ``services.require_evaluable``) would refuse this user now, or None."""
        try:
            guard(request.user, study)
        except DomainError as exc:
            return exc
        return None

    def change_view(self, request, object_id, form_url="", extra_context=None):
        study = self.get_visible_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "review_url": reverse(
                "admin:cases_imagingstudy_review",
                args=[study.pk],
                current_app=self.admin_site.name,
            )
            if self._refusal(services.require_reviewable, request, study) is None
            else None,
            "evaluate_url": reverse(
                "admin:cases_imagingstudy_evaluate",
                args=[study.pk],
                current_app=self.admin_site.name,
            )
            if self._refusal(services.require_evaluable, request, study) is None
            else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def evaluate_view(self, request, object_id):
        """Judge a study still receiving now (POST only: it queues a job)."""
        study = self.get_visible_object(request, object_id)
        if request.method != "POST":
            return HttpResponseRedirect(self.change_url(study))
        try:
            services.study_evaluation_request(actor=request.user, study=study)
        except DomainError as exc:
            raise_http(exc)
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(
                request,
                f"{study} will be judged now; the result shows here once done.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(self.change_url(study))

    def review_view(self, request, object_id):
        """The designer signs the visual review: the page shows what the signature
        will say (printed name, meaning; the time is taken at signing, in UTC) and
        asks for each finding and the password. Not in a transaction: a refused
        attempt stays recorded."""
        study = self.get_visible_object(request, object_id)
        refusal = self._refusal(services.require_reviewable, request, study)
        if refusal is not None:
            # No form that cannot succeed: refused is 403, a study in the wrong
            # state goes back to its page with the reason.
            raise_http(refusal)
            self.message_user(request, refusal.message, messages.ERROR)
            return HttpResponseRedirect(self.change_url(study))
        form = StudyReviewForm(posted(request))
        if request.method == "POST" and form.is_valid():
            try:
                study = services.study_review_sign(
                    actor=request.user,
                    study=study,
                    password=form.cleaned_data["password"],
                    findings=form.findings(),
                )
            except DomainError as exc:
                raise_http(exc)
                if isinstance(exc, Conflict) and not exc.field:
                    # Reviewed or rejected meanwhile: the form cannot succeed.
                    self.message_user(request, exc.message, messages.ERROR)
                    return HttpResponseRedirect(self.change_url(study))
                form.add_service_error(exc)
            else:
                self.message_user(
                    request,
                    f"Visual review of {study} signed: {manifestation(study.review)}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self.change_url(study))
        return self.render_service_form(
            request,
            title=f"Sign the visual review of {study}",
            form=form,
            obj=study,
            submit_label="Sign",
            intro="By signing you declare that you looked at the images of this "
            "study for motion, metal artefacts and the coverage of the region and of "
            "the healthy side, and found what you record here; design starts only "
            "from a study whose every finding is ok. The signature is the legally "
            "binding equivalent of your handwritten signature (21 CFR 11.100(c)).",
            manifestation=signing_notice(
                request.user, Signature.Meaning.REVIEWED.label
            ),
        )

    @admin.display(description="Quality report")
    def quality(self, study):
        return _pretty(study.quality_report)

    @admin.display(description="De-identification report")
    def deidentification(self, study):
        return _pretty(study.deid_report)

    @admin.display(description="Visual review findings")
    def findings(self, study):
        return _pretty(study.review_findings)
