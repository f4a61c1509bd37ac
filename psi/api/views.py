"""Read-only endpoints of the core: organisations, memberships, jobs, audit events.

None of these records hangs under a Case or a Patient, so the viewsets replace the
default filter backends (which start with the anchor gate) and scope their querysets
through psi.selectors.
"""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter, SearchFilter
from rest_framework.response import Response

from psi.api.filtersets import (
    AuditEventFilter,
    JobFilter,
    MembershipFilter,
    OrganisationFilter,
)
from psi.api.history import HistoryMixin
from psi.api.pagination import AuditCursorPagination
from psi.api.permissions import CanReadAuditTrail, IsActiveUser
from psi.api.serializers import (
    AuditEventSerializer,
    JobSerializer,
    MembershipSerializer,
    OrganisationSerializer,
)
from psi.audit import audit_verify_enqueue
from psi.selectors import (
    AUDIT_VERIFY_PERMISSION,
    audit_event_list_visible_to,
    job_list_visible_to,
    membership_list_visible_to,
    organisation_list_visible_to,
)

_SCOPED_FILTERS = [DjangoFilterBackend, OrderingFilter]


@extend_schema_view(
    list=extend_schema(summary="Organisations taking part in cases"),
    retrieve=extend_schema(summary="One organisation"),
)
class OrganisationViewSet(HistoryMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = OrganisationSerializer
    permission_classes = [IsActiveUser]
    filter_backends = [DjangoFilterBackend, SearchFilter, OrderingFilter]
    filterset_class = OrganisationFilter
    search_fields = ["name"]
    ordering_fields = ["name", "country", "kind", "created_at"]
    ordering = ["name"]

    def get_queryset(self):
        return organisation_list_visible_to(self.request.user)


@extend_schema_view(
    list=extend_schema(summary="Memberships of the organisations you belong to"),
    retrieve=extend_schema(summary="One membership"),
)
class MembershipViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = MembershipSerializer
    permission_classes = [IsActiveUser]
    filter_backends = _SCOPED_FILTERS
    filterset_class = MembershipFilter
    ordering_fields = ["created_at", "role"]
    ordering = ["organisation__name", "role", "id"]

    def get_queryset(self):
        return membership_list_visible_to(self.request.user)


@extend_schema_view(
    list=extend_schema(
        summary="Background jobs you started or whose target you may view"
    ),
    retrieve=extend_schema(summary="One job: status, progress and outcome"),
)
class JobViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = JobSerializer
    permission_classes = [IsActiveUser]
    filter_backends = _SCOPED_FILTERS
    filterset_class = JobFilter
    ordering_fields = ["created_at", "finished_at", "status"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return job_list_visible_to(self.request.user)


@extend_schema_view(
    list=extend_schema(
        summary="The audit trail of your organisations",
        description="Readable by auditors, quality assurance and regulatory staff "
        "(psi.view_auditevent). Newest first; pages follow a cursor.",
    ),
    retrieve=extend_schema(summary="One audit event"),
)
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = AuditEventSerializer
    permission_classes = [CanReadAuditTrail]
    required_permissions = {"verify": (AUDIT_VERIFY_PERMISSION,)}
    filter_backends = _SCOPED_FILTERS
    filterset_class = AuditEventFilter
    pagination_class = AuditCursorPagination
    ordering_fields = ["seq"]
    ordering = ["-seq"]

    def get_queryset(self):
        return audit_event_list_visible_to(self.request.user)

    @extend_schema(
        summary="Verify the whole audit chain in the background",
        description="Needs psi.verify_auditevent. Answers the Job; follow it at "
        "/jobs/{id}/. Its result names the first broken link, if any.",
        request=None,
        responses={202: OpenApiResponse(JobSerializer, description="Job queued")},
        filters=False,
    )
    @action(detail=False, methods=["post"], pagination_class=None)
    def verify(self, request):
        job = audit_verify_enqueue(actor=request.user)
        # In the embedded mode the job has already run by now; show its state.
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
