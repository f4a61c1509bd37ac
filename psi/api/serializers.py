"""Serializers of the core records. All read-only: the core's writes go through
services (psi.orgs, psi.audit, psi.jobs), never through a serializer."""

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from psi.models import AuditEvent, Job, Membership, Organisation


class UserSummarySerializer(serializers.ModelSerializer):
    full_name = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "full_name"]
        read_only_fields = fields

    def get_full_name(self, user) -> str:
        return user.get_full_name().strip()


class OrganisationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organisation
        fields = ["id", "kind", "name", "address", "country", "created_at"]
        read_only_fields = fields


class MembershipSerializer(serializers.ModelSerializer):
    user = UserSummarySerializer(read_only=True)
    organisation_name = serializers.CharField(
        source="organisation.name", read_only=True
    )

    class Meta:
        model = Membership
        fields = [
            "id",
            "user",
            "organisation",
            "organisation_name",
            "role",
            "is_active",
            "created_at",
        ]
        read_only_fields = fields


@extend_schema_field(OpenApiTypes.STR)
class ContentTypeLabelField(serializers.Field):
    """A content type as ``app_label.model`` (``cases.case``)."""

    def to_representation(self, value) -> str:
        return f"{value.app_label}.{value.model}"


class JobSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    target_type = ContentTypeLabelField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "message",
            "result",
            "error",
            "attempts",
            "target_type",
            "target_id",
            "actor",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "created_at",
            "actor",
            "actor_name",
            "organisation",
            "action",
            "object_type",
            "object_id",
            "payload",
            "reason",
            "correlation_id",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(
        trim_whitespace=False, style={"input_type": "password"}
    )


class TokenResponseSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="Shown once; send it as 'Authorization: Token <token>'."
    )
    expiry = serializers.DateTimeField(allow_null=True)
    user = UserSummarySerializer()
