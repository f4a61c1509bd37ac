"""Query filters of the core endpoints. Invalid values answer 400 (django-filter);
psi.api.schema documents that answer."""

import django_filters

from psi.models import AuditEvent, Job, Membership, Organisation, Role


class OrganisationFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Organisation.Kind.choices)
    country = django_filters.CharFilter(
        method="filter_country", help_text="ISO 3166-1 alpha-2 code"
    )

    class Meta:
        model = Organisation
        fields = ["kind", "country"]

    def filter_country(self, queryset, name, value):
        return queryset.filter(country=value.upper())


class MembershipFilter(django_filters.FilterSet):
    # Plain ids, not model choices: a choice field would list every organisation
    # and user in the browsable API.
    organisation = django_filters.NumberFilter(field_name="organisation_id")
    user = django_filters.NumberFilter(field_name="user_id")
    role = django_filters.ChoiceFilter(choices=Role.choices)
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Membership
        fields = ["organisation", "user", "role", "is_active"]


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    kind = django_filters.CharFilter()
    target_type = django_filters.CharFilter(
        method="filter_target_type", help_text="app_label.model, e.g. cases.case"
    )
    target_id = django_filters.CharFilter()

    class Meta:
        model = Job
        fields = ["status", "kind", "target_type", "target_id"]

    def filter_target_type(self, queryset, name, value):
        app_label, _, model = value.lower().partition(".")
        return queryset.filter(
            target_type__app_label=app_label, target_type__model=model
        )


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter()
    object_type = django_filters.CharFilter(help_text="e.g. cases.case")
    object_id = django_filters.CharFilter()
    actor = django_filters.NumberFilter(field_name="actor_id", help_text="User id")
    actor_name = django_filters.CharFilter()
    organisation = django_filters.NumberFilter(field_name="organisation_id")
    created_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="created_at_after / created_at_before, ISO 8601"
    )

    class Meta:
        model = AuditEvent
        fields = [
            "action",
            "object_type",
            "object_id",
            "actor",
            "actor_name",
            "organisation",
            "created_at",
        ]
