"""Viewsets of the cases API: thin callers of cases.services.

Visibility is the project's gate (psi.api.filters.VisibleToUser, first of the filter
backends): a case you cannot see answers 404 on every endpoint. Whether you may do
something to a case you see is the service's decision (403), and whether the case's
state allows it too (409).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.settings import api_settings

from cases import services
from cases.api.filters import (
    FILTER_BACKENDS,
    CaseFilter,
    PrescriptionFilter,
)
from cases.api.serializers import (
    TRANSITION_PERMISSIONS,
    CaseConflictSerializer,
    CaseCreateSerializer,
    CaseEventSerializer,
    CaseListSerializer,
    CaseSerializer,
    CaseUpdateSerializer,
    PrescriptionCreateSerializer,
    PrescriptionSerializer,
    PrescriptionSignSerializer,
    PrescriptionUpdateSerializer,
    ReasonedTransitionSerializer,
    TransitionSerializer,
)
from cases.selectors import (
    case_events_of,
    case_ids_newest_first,
    case_queryset,
    case_rows,
    prescription_queryset,
)
from cases.services import TRANSITION_SERVICES, TRANSITIONS
from psi.api.history import HistoryMixin

CONFLICT = OpenApiResponse(
    CaseConflictSerializer, description="The case's state does not allow this."
)


@extend_schema(tags=["cases"])
@extend_schema_view(
    list=extend_schema(
        summary="List the cases you can see",
        # The rows are CaseListSerializer's, which answers CaseSerializer's JSON.
        responses=CaseSerializer(many=True),
        description="Newest first unless `ordering` says otherwise. An invalid "
        "filter or ordering value answers 400.",
    ),
    retrieve=extend_schema(summary="A case"),
    history=extend_schema(summary="The case's change history"),
)
class CaseViewSet(
    HistoryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Cases: one patient's implant from prescription to follow-up."""

    queryset = case_queryset()
    serializer_class = CaseSerializer
    filter_backends = FILTER_BACKENDS
    filterset_class = CaseFilter
    ordering_fields = ["created_at", "reference", "planned_surgery_date", "status"]
    # Newest first by id: the order of creation, and one the database reads from
    # the primary key index alongside the permission filter (with created_at it
    # sorts every visible case before skipping to a deep page).
    ordering = ["-id"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    # Read by psi.api.permissions.ObjectPermissions. Transitions ask only for
    # sight of the case: the transition's service decides who may take each step.
    object_actions = {
        "partial_update": "change_case",
        **dict.fromkeys(TRANSITIONS, "view"),
    }

    def list(self, request, *args, **kwargs):
        """Pages the ids of the cases, then reads the page's rows as plain values
        with the grants behind their allowed_transitions, in one query, for
        CaseListSerializer: the same number of queries whatever the page and its
        size."""
        pks = self._ids(request)
        page = self.paginate_queryset(pks)
        rows = case_rows(
            request.user,
            list(pks) if page is None else page,
            CaseListSerializer.columns,
            TRANSITION_PERMISSIONS,
        )
        data = CaseListSerializer(
            rows, many=True, context=self.get_serializer_context()
        ).data
        if page is None:
            return Response(data)
        return self.get_paginated_response(data)

    def _ids(self, request):
        """The ids of the listed cases in order. Asked for no filter and no
        ordering, the gate's own ids, newest first, are the list: read, where the
        selector can, from the grants without the cases."""
        paging = {api_settings.URL_FORMAT_OVERRIDE}
        if self.paginator is not None:
            paging |= {
                self.paginator.page_query_param,
                self.paginator.page_size_query_param,
            }
        if request.query_params.keys() <= paging and self.ordering == ["-id"]:
            ids = case_ids_newest_first(request.user)
            if ids is not None:
                return ids
        return self.filter_queryset(self.get_queryset()).values_list("pk", flat=True)

    @extend_schema(
        summary="Open a draft case",
        request=CaseCreateSerializer,
        responses={201: CaseSerializer},
    )
    def create(self, request, *args, **kwargs):
        body = CaseCreateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        data.setdefault("prescriber", request.user)
        case = services.case_create(actor=request.user, **data)
        case = self.get_queryset().get(pk=case.pk)
        return Response(self.get_serializer(case).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a draft case",
        description="Only a draft can be edited; later changes go into a new "
        "prescription version.",
        request=CaseUpdateSerializer,
        responses={200: CaseSerializer, 409: CONFLICT},
    )
    def partial_update(self, request, *args, **kwargs):
        case = self.get_object()
        body = CaseUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        reason = changes.pop("reason", "")
        case = services.case_update(
            actor=request.user, case=case, changes=changes, reason=reason
        )
        case = self.get_queryset().get(pk=case.pk)
        return Response(self.get_serializer(case).data)

    @extend_schema(
        summary="The case's timeline",
        description="Every step the case took: who, when, from where to where, why. "
        "Oldest first.",
        responses=CaseEventSerializer(many=True),
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def events(self, request, *args, **kwargs):
        case = self.get_object()
        events = case_events_of(request.user, case)
        return Response(CaseEventSerializer(events, many=True).data)

    def _transition(self, request, name: str, body_class) -> Response:
        case = self.get_object()
        body = body_class(data=request.data)
        body.is_valid(raise_exception=True)
        case = TRANSITION_SERVICES[name](
            actor=request.user, case=case, reason=body.validated_data.get("reason", "")
        )
        case = self.get_queryset().get(pk=case.pk)
        return Response(self.get_serializer(case).data)


def _transition_description(name: str) -> str:
    transition = TRANSITIONS[name]
    service = TRANSITION_SERVICES[name]
    sources = ", ".join(f"`{s}`" for s in sorted(transition.sources))
    target = f"`{transition.target}`" if transition.target else "its held-from status"
    permissions = " or ".join(f"`{p}`" for p in transition.permissions)
    lines = [
        f"Moves the case from {sources} to {target}.",
        f"Needs the object permission {permissions} on the case (else 403).",
        "A reason is required (else 400)."
        if transition.needs_reason
        else "A reason is optional.",
        "From any other status: 409 with the case's `status` and the `allowed` steps.",
        f"Calls `cases.services.{service.__name__}`.",
    ]
    if service.__doc__:
        lines.append(" ".join(service.__doc__.split()))
    return "\n\n".join(lines)


def _transition_action(name: str):
    """One documented endpoint ``POST cases/{id}/<name with dashes>/`` per
    transition of the table, each calling that transition's service."""
    transition = TRANSITIONS[name]
    body_class = TransitionSerializer
    if transition.needs_reason:
        body_class = ReasonedTransitionSerializer
    slug = name.replace("_", "-")

    def view(self, request, *args, **kwargs):
        return self._transition(request, name, body_class)

    view.__name__ = name
    view.__qualname__ = f"CaseViewSet.{name}"
    view.__doc__ = _transition_description(name)
    view = action(detail=True, methods=["post"], url_path=slug, url_name=slug)(view)
    # After @action, which would replace the schema that extend_schema attaches.
    return extend_schema(
        operation_id=f"v1_cases_{name}",
        summary=transition.label,
        description=_transition_description(name),
        request=body_class,
        responses={200: CaseSerializer, 409: CONFLICT},
    )(view)


for _name in TRANSITIONS:
    # A transition must never shadow a viewset method ("update", "list", ...).
    assert not hasattr(CaseViewSet, _name), _name
    setattr(CaseViewSet, _name, _transition_action(_name))
del _name


@extend_schema(tags=["prescriptions"])
@extend_schema_view(
    list=extend_schema(summary="List the prescriptions of the cases you can see"),
    retrieve=extend_schema(summary="A prescription"),
    history=extend_schema(summary="The prescription's change history"),
)
class PrescriptionViewSet(
    HistoryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Prescriptions: the prescriber's signed design characteristics for a case
    (MDR Art. 2(3)); a signed one never changes, a change is a new version."""

    queryset = prescription_queryset()
    serializer_class = PrescriptionSerializer
    filter_backends = FILTER_BACKENDS
    filterset_class = PrescriptionFilter
    ordering_fields = ["created_at", "version"]
    ordering = ["-created_at", "-id"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    object_actions = {"partial_update": "prescribe_case", "sign": "prescribe_case"}

    @extend_schema(
        summary="Write a prescription",
        description="The first prescription of a case is version 1; a later one is "
        "the next version and supersedes the previous one. Only clinicians of the "
        "case's hospital prescribe; you become the prescriber.",
        request=PrescriptionCreateSerializer,
        responses={201: PrescriptionSerializer, 409: CONFLICT},
    )
    def create(self, request, *args, **kwargs):
        body = PrescriptionCreateSerializer(
            data=request.data, context={"request": request}
        )
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        case = data.pop("case")
        prescription = services.prescription_create(
            actor=request.user, case=case, **data
        )
        prescription = self.get_queryset().get(pk=prescription.pk)
        return Response(
            self.get_serializer(prescription).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Edit an unsigned prescription",
        description="A signed prescription cannot change: 409 (`record_signed`); "
        "write a new version instead.",
        request=PrescriptionUpdateSerializer,
        responses={200: PrescriptionSerializer, 409: CONFLICT},
    )
    def partial_update(self, request, *args, **kwargs):
        prescription = self.get_object()
        body = PrescriptionUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        prescription = services.prescription_update(
            actor=request.user,
            prescription=prescription,
            changes=dict(body.validated_data),
        )
        prescription = self.get_queryset().get(pk=prescription.pk)
        return Response(self.get_serializer(prescription).data)

    @extend_schema(
        summary="Sign the prescription",
        description="The prescriber signs with their password (21 CFR 11.200). The "
        "answer shows the signature's manifestation (21 CFR 11.50): printed name, "
        "date and time in UTC, meaning `authored`. A wrong password answers 403 with "
        "`field: password` and is recorded; repeated failures lock signing (423).",
        request=PrescriptionSignSerializer,
        responses={
            200: PrescriptionSerializer,
            409: CONFLICT,
            423: OpenApiResponse(
                description="Signing is locked after repeated failed attempts."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def sign(self, request, *args, **kwargs):
        # Not in a transaction: a refused password must stay recorded (the service
        # commits the failed attempt on its own before it raises).
        prescription = self.get_object()
        body = PrescriptionSignSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        prescription = services.prescription_sign(
            actor=request.user,
            prescription=prescription,
            password=body.validated_data["password"],
        )
        prescription = self.get_queryset().get(pk=prescription.pk)
        return Response(self.get_serializer(prescription).data)
