"""Filters of the consent API. Identity is never a filter: it would sit in URLs and
access logs. The exact record-number lookup is a POST (``patients/lookup/``)."""

from __future__ import annotations

import django_filters

from consent.models import Consent, ConsentForm, Patient, Purpose
from consent.selectors import patient_list_visible_to
from psi.models import Organisation


def _hospitals(request):
    return Organisation.objects.filter(kind=Organisation.Kind.HOSPITAL)


def _visible_patients(request):
    # Request-scoped: the browsable API lists only patients the requester can see.
    if request is None:
        return Patient.objects.none()
    return patient_list_visible_to(request.user)


class PatientFilter(django_filters.FilterSet):
    hospital = django_filters.ModelChoiceFilter(queryset=_hospitals)

    class Meta:
        model = Patient
        fields = ["hospital"]


class ConsentFormFilter(django_filters.FilterSet):
    language = django_filters.CharFilter()
    title = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = ConsentForm
        fields = ["language", "title"]


class ConsentFilter(django_filters.FilterSet):
    patient = django_filters.ModelChoiceFilter(queryset=_visible_patients)
    withdrawn = django_filters.BooleanFilter(
        method="filter_withdrawn", label="Withdrawn"
    )
    purpose = django_filters.ChoiceFilter(
        choices=Purpose.choices, method="filter_purpose", label="Covers purpose"
    )

    class Meta:
        model = Consent
        fields = ["patient", "withdrawn", "purpose", "method"]

    def filter_withdrawn(self, queryset, name, value):
        return queryset.filter(withdrawn_at__isnull=not value)

    def filter_purpose(self, queryset, name, value):
        return queryset.filter(purposes__has_key=value)
