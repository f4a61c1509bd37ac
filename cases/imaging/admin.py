"""Admin for imaging: acquisition profiles (editable limits), DICOM peers, and
studies (read-only, reports pretty-printed, series with verdicts and previews).

Studies are gated by their case (psi.permissions.restrict); acquisition profiles are
manufacturer-wide configuration behind Django's model permissions; DICOM peers are
shown to members of the peer's hospital.
"""

from __future__ import annotations

import contextlib
import json

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from cases.admin.base import GatedAdminMixin
from cases.imaging import quality
from cases.imaging.models import (
    AcquisitionProfile,
    DicomPeer,
    ImagingSeries,
    ImagingStudy,
)
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
class AcquisitionProfileAdmin(SimpleHistoryAdmin):
    form = AcquisitionProfileForm
    list_display = ["region", "updated_at"]

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        region = initial.get("region")
        with contextlib.suppress(ValueError):
            initial["limits"] = quality.default_profile(region).as_dict()
        return initial


@admin.register(DicomPeer)
class DicomPeerAdmin(SimpleHistoryAdmin):
    list_display = ["ae_title", "hospital", "is_active", "description"]
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Quality report")
    def quality(self, study):
        return _pretty(study.quality_report)

    @admin.display(description="De-identification report")
    def deidentification(self, study):
        return _pretty(study.deid_report)

    @admin.display(description="Visual review findings")
    def findings(self, study):
        return _pretty(study.review_findings)
