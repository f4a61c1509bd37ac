"""Query filters of the cases API. An invalid value answers 400, never an empty or
unfiltered list; so does an organisation of none of the cases the requesting user
can see."""

from __future__ import annotations

from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.settings import api_settings

from cases.models import Case, Prescription


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.Filter):
    """An id: a non-integer is a 400; an id you cannot see matches nothing."""

    field_class = forms.IntegerField


class OrganisationOfVisibleCasesFilter(filters.Filter):
    """The id of the case's organisation named by the filter (``hospital``,
    ``manufacturer``); an organisation of none of the cases you can see answers 400.

    Checked only when given, with one query against the gated cases before the
    other filters. A model choice filter built its restricted choices on every list
    request, given or not (``bench/api_cases.py``)."""

    # Not an IdFilter: the schema takes the type from the model's foreign key and the
    # description from help_text, as it did for the model choice filter before.
    field_class = forms.IntegerField
    invalid_choice = "Not an organisation of the cases you can see."

    def filter(self, qs, value):
        if value is None:
            return qs
        lookup = {self.field_name: value}
        if not self.parent.queryset.filter(**lookup).exists():
            raise ValidationError({self.field_name: [self.invalid_choice]})
        return qs.filter(**lookup)


class CaseFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Case.Status.choices)
    anatomical_region = filters.ChoiceFilter(choices=Case.Region.choices)
    urgency = filters.ChoiceFilter(choices=Case.Urgency.choices)
    regulatory_pathway = filters.ChoiceFilter(choices=Case.Pathway.choices)
    hospital = OrganisationOfVisibleCasesFilter(help_text="Id of the hospital.")
    manufacturer = OrganisationOfVisibleCasesFilter(help_text="Id of the manufacturer.")
    created_at = filters.IsoDateTimeFromToRangeFilter(
        help_text="Created in a range: created_at_after and/or created_at_before "
        "(ISO 8601, inclusive)."
    )

    class Meta:
        model = Case
        fields = [
            "status",
            "anatomical_region",
            "urgency",
            "regulatory_pathway",
            "hospital",
            "manufacturer",
            "created_at",
        ]


class PrescriptionFilter(filters.FilterSet):
    case = IdFilter(field_name="case_id", help_text="Id of the case.")

    class Meta:
        model = Prescription
        fields = ["case"]


class StrictOrdering(OrderingFilter):
    """DRF's ordering, except that an unknown field answers 400 instead of being
    ignored, and ties are broken by id so that pages do not overlap."""

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if not params:
            return self.get_default_ordering(view)
        fields = [param.strip() for param in params.split(",") if param.strip()]
        valid = self.remove_invalid_fields(queryset, fields, view, request)
        if len(valid) != len(fields):
            valid_fields = self.get_valid_fields(queryset, view, {"request": request})
            allowed = ", ".join(name for name, _ in valid_fields)
            raise ValidationError(
                {self.ordering_param: [f"Order by one of: {allowed} (- for reverse)."]}
            )
        return [*valid, "-id"]


#: The project's filter backends (the permission gate first), with strict ordering.
FILTER_BACKENDS = [
    StrictOrdering if backend is OrderingFilter else backend
    for backend in api_settings.DEFAULT_FILTER_BACKENDS
]
