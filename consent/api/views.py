"""Views of the consent API: thin callers of ``consent.services``.

Every list and detail goes through the permission gate (``VisibleToUser``), so a
patient or consent the requester may not see answers 404. Patient identity is read
once per response through ``patient_identities``, which logs the read.
"""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from consent.api.filters import ConsentFilter, ConsentFormFilter, PatientFilter
from consent.api.serializers import (
    ConsentConflictSerializer,
    ConsentCreateSerializer,
    ConsentFormCreateSerializer,
    ConsentFormSerializer,
    ConsentSerializer,
    ConsentWithdrawSerializer,
    PatientCreateSerializer,
    PatientIdentityChangeSerializer,
    PatientLookupSerializer,
    PatientSerializer,
)
from consent.selectors import (
    IDENTITY_HISTORY_FIELDS,
    consent_form_list,
    consent_list_visible_to,
    patient_list_visible_to,
    patient_matching_record_number,
)
from consent.services import (
    consent_form_create,
    consent_record,
    consent_withdraw,
    patient_identities,
    patient_register,
    patient_update_identity,
)
from psi.api.history import HistoryEntrySerializer, HistoryMixin, history_entries
from psi.api.permissions import ObjectPermissions
from psi.permissions import has_object_perm

_CONFLICT = OpenApiResponse(
    ConsentConflictSerializer, description="The consent's state forbids this."
)


class ConsentFormPermissions(BasePermission):
    """Consent forms are published texts: any signed-in user reads them; publishing
    one needs the model permission (re-checked by the service)."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        return request.method in SAFE_METHODS or user.has_perm(
            "consent.add_consentform"
        )


class ConsentPermissions(ObjectPermissions):
    """Consent records are read by roles that carry ``consent.view_consent`` (the
    hospital, the auditor), on patients they can see; a role that only knows the
    patient by pseudonym (a designer) has no business with consent records."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        return request.method not in SAFE_METHODS or request.user.has_perm(
            "consent.view_consent"
        )


@extend_schema_view(
    list=extend_schema(
        summary="Patients you can see",
        description="Identity keys appear only on patients of your own hospital; "
        "everyone else sees the pseudonym. A page with identity is one audit event.",
    ),
    retrieve=extend_schema(summary="One patient"),
)
class PatientViewSet(
    HistoryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PatientSerializer
    filterset_class = PatientFilter
    ordering_fields = ["pseudonym", "created_at"]  # never the encrypted fields
    ordering = ["pseudonym"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    object_actions = {"partial_update": "change_patient"}
    history_hidden_fields = IDENTITY_HISTORY_FIELDS

    def get_queryset(self):
        return patient_list_visible_to(self.request.user)

    def _serialize(self, patients: list) -> list:
        # One identity read (one audit event) for everything in this response.
        identities = patient_identities(actor=self.request.user, patients=patients)
        context = {**self.get_serializer_context(), "identities": identities}
        return PatientSerializer(patients, many=True, context=context).data

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(self._serialize(page))
        return Response(self._serialize(list(queryset)))

    def retrieve(self, request, *args, **kwargs):
        return Response(self._serialize([self.get_object()])[0])

    @extend_schema(
        summary="Register a patient",
        request=PatientCreateSerializer,
        responses={201: PatientSerializer},
    )
    def create(self, request, *args, **kwargs):
        serializer = PatientCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = patient_register(actor=request.user, **serializer.validated_data)
        return Response(self._serialize([patient])[0], status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Correct a patient's identity",
        request=PatientIdentityChangeSerializer,
        responses={200: PatientSerializer},
    )
    def partial_update(self, request, *args, **kwargs):
        patient = self.get_object()
        serializer = PatientIdentityChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        reason = changes.pop("reason")
        patient = patient_update_identity(
            actor=request.user, patient=patient, changes=changes, reason=reason
        )
        return Response(self._serialize([patient])[0])

    @extend_schema(
        summary="Find a patient by hospital record number",
        description="Exact match through the record number's keyed digest, among "
        "patients whose identity you may see. A POST, so that the record number "
        "never appears in a URL or an access log.",
        request=PatientLookupSerializer,
        responses={200: PatientSerializer(many=True)},
        filters=False,
    )
    @action(detail=False, methods=["post"], pagination_class=None)
    def lookup(self, request, *args, **kwargs):
        serializer = PatientLookupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        matches = patient_matching_record_number(
            request.user,
            serializer.validated_data["record_number"],
            hospital=serializer.validated_data.get("hospital"),
        )
        return Response(self._serialize(list(matches)))

    @extend_schema(
        summary="History of a patient",
        description="Identity fields show that they changed, never their values; "
        "readers outside the patient's hospital do not see the reasons of identity "
        "corrections either.",
        responses=HistoryEntrySerializer(many=True),
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, *args, **kwargs):
        patient = self.get_object()
        entries = history_entries(patient, hidden_fields=self.history_hidden_fields)
        if not has_object_perm(request.user, "view_patient_identity", patient):
            for entry in entries:
                if set(entry["changes"]) & self.history_hidden_fields:
                    entry["history_change_reason"] = "(hidden)"
        return Response(HistoryEntrySerializer(entries, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="Consent forms"),
    retrieve=extend_schema(summary="One consent form"),
    create=extend_schema(
        summary="Publish a consent form",
        request=ConsentFormCreateSerializer,
        responses={201: ConsentFormSerializer},
    ),
)
class ConsentFormViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ConsentFormSerializer
    permission_classes = [ConsentFormPermissions]
    # Published texts have no anchor: readable by every signed-in user, not gated.
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = ConsentFormFilter
    ordering_fields = ["title", "valid_from", "created_at"]
    ordering = ["title", "-valid_from"]

    def get_queryset(self):
        return consent_form_list(self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = ConsentFormCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        form = consent_form_create(actor=request.user, **serializer.validated_data)
        return Response(
            ConsentFormSerializer(form).data, status=status.HTTP_201_CREATED
        )


@extend_schema_view(
    list=extend_schema(summary="Consent records you can see"),
    retrieve=extend_schema(summary="One consent record"),
)
class ConsentViewSet(
    HistoryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ConsentSerializer
    permission_classes = [ConsentPermissions]
    filterset_class = ConsentFilter
    ordering_fields = ["signed_at", "recorded_at", "withdrawn_at"]
    ordering = ["-signed_at"]
    object_actions = {"withdraw": "change_patient"}
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self):
        return consent_list_visible_to(self.request.user)

    @extend_schema(
        summary="Record a patient's consent",
        description="Send multipart/form-data with the scanned form as `evidence` "
        "(required for paper_scanned), or JSON for electronic consent. In "
        "multipart, `purposes` is one part holding a JSON object.",
        request={
            "multipart/form-data": ConsentCreateSerializer,
            "application/json": ConsentCreateSerializer,
        },
        responses={201: ConsentSerializer},
    )
    def create(self, request, *args, **kwargs):
        serializer = ConsentCreateSerializer(
            data=request.data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        upload = data.pop("evidence", None)
        consent = consent_record(actor=request.user, evidence_upload=upload, **data)
        consent = self.get_queryset().get(pk=consent.pk)
        return Response(ConsentSerializer(consent).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Withdraw a consent",
        description="One action; processing for its purposes stops from now on. "
        "Records kept under legal retention stay. 409 if already withdrawn.",
        request=ConsentWithdrawSerializer,
        responses={200: ConsentSerializer, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, FormParser])
    def withdraw(self, request, *args, **kwargs):
        consent = self.get_object()
        serializer = ConsentWithdrawSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        consent_withdraw(
            actor=request.user,
            consent=consent,
            reason=serializer.validated_data["reason"],
        )
        consent = self.get_queryset().get(pk=consent.pk)
        return Response(ConsentSerializer(consent).data)
