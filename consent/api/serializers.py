"""Serializers of the consent API. Input serializers only shape and type the data;
every rule is checked by ``consent.services``."""

from __future__ import annotations

import json

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from consent.models import Consent, ConsentForm, LegalBasis, Patient, Purpose
from consent.selectors import IDENTITY_FIELDS, patient_list_visible_to
from psi.errors import NotVisible
from psi.models import Organisation

# --- patients -----------------------------------------------------------------------


class _IdentityField:
    """An identity value taken from the identities read (and logged) for the whole
    response by ``patient_identities``; absent for readers who may not see it."""

    def get_attribute(self, instance):
        identity = self.parent.context.get("identities", {}).get(instance.pk)
        if identity is None:
            raise SkipField
        return identity[self.field_name]


class _IdentityCharField(_IdentityField, serializers.CharField):
    pass


class _IdentityDateField(_IdentityField, serializers.DateField):
    pass


class _IdentityChoiceField(_IdentityField, serializers.ChoiceField):
    pass


_IDENTITY_NOTE = " Present only for members of the patient's hospital."


class PatientSerializer(serializers.ModelSerializer):
    """A patient as the reader may see it.

    ``pseudonym``, ``hospital`` and ``created_at`` are always present. The identity
    keys (``family_name``, ``given_names``, ``birth_date``, ``sex``,
    ``record_number``) are present only for readers who hold the view-identity
    permission on that patient (the members of its hospital); for everyone else
    they are absent, not null. Each response that carries identity is one
    ``patient.identity_read`` audit event.
    """

    hospital_name = serializers.CharField(source="hospital.name", read_only=True)
    # Not read-only, so the schema marks them optional (they can be absent); this
    # serializer is never used for input.
    family_name = _IdentityCharField(required=False, help_text=_IDENTITY_NOTE)
    given_names = _IdentityCharField(required=False, help_text=_IDENTITY_NOTE)
    birth_date = _IdentityDateField(required=False, help_text=_IDENTITY_NOTE)
    sex = _IdentityChoiceField(
        choices=Patient.Sex.choices, required=False, help_text=_IDENTITY_NOTE
    )
    record_number = _IdentityCharField(
        required=False, help_text="The hospital's own record number." + _IDENTITY_NOTE
    )

    class Meta:
        model = Patient
        fields = [
            "id",
            "pseudonym",
            "hospital",
            "hospital_name",
            "created_at",
            *IDENTITY_FIELDS,
        ]
        read_only_fields = ["id", "pseudonym", "hospital", "created_at"]


class PatientCreateSerializer(serializers.Serializer):
    hospital = serializers.PrimaryKeyRelatedField(
        queryset=Organisation.objects.all(),
        help_text="A hospital where you are a clinician or case coordinator.",
    )
    family_name = serializers.CharField(max_length=200)
    given_names = serializers.CharField(max_length=200)
    birth_date = serializers.DateField()
    sex = serializers.ChoiceField(choices=Patient.Sex.choices)
    record_number = serializers.CharField(
        max_length=100, help_text="The hospital's own record number."
    )


class PatientIdentityChangeSerializer(serializers.Serializer):
    family_name = serializers.CharField(max_length=200, required=False)
    given_names = serializers.CharField(max_length=200, required=False)
    birth_date = serializers.DateField(required=False)
    sex = serializers.ChoiceField(choices=Patient.Sex.choices, required=False)
    record_number = serializers.CharField(max_length=100, required=False)
    reason = serializers.CharField(
        help_text="Why the identity is corrected (kept in history and the audit trail)."
    )

    # PATCH sends only the fields that change, but the reason always; so this
    # serializer is never partial (and the schema keeps ``reason`` required).
    @property
    def partial(self) -> bool:
        return False

    @partial.setter
    def partial(self, value) -> None:
        pass

    def validate(self, attrs):
        if not set(attrs) & set(IDENTITY_FIELDS):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give at least one identity field to change."]}
            )
        return attrs


# --- consent forms ------------------------------------------------------------------


class ConsentFormSerializer(serializers.ModelSerializer):
    purposes = serializers.ListField(
        child=serializers.ChoiceField(choices=Purpose.choices), read_only=True
    )

    class Meta:
        model = ConsentForm
        fields = [
            "id",
            "title",
            "version",
            "language",
            "text",
            "purposes",
            "valid_from",
            "valid_to",
            "created_at",
        ]
        read_only_fields = fields


class ConsentFormCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=20)
    language = serializers.CharField(
        max_length=10, help_text="BCP 47 tag, e.g. en, de-CH"
    )
    text = serializers.CharField()
    purposes = serializers.ListField(
        child=serializers.ChoiceField(choices=Purpose.choices), allow_empty=False
    )
    valid_from = serializers.DateField()
    valid_to = serializers.DateField(required=False, allow_null=True)


# --- consents -----------------------------------------------------------------------

_PURPOSES_SCHEMA = {
    "type": "object",
    "description": "Purpose -> legal basis (GDPR Art. 6 with the Art. 9(2) "
    f"condition). Purposes: {', '.join(Purpose.values)}.",
    "additionalProperties": {"type": "string", "enum": list(LegalBasis.values)},
    "example": {
        Purpose.IMAGING_EXCHANGE.value: LegalBasis.EXPLICIT_CONSENT.value,
        Purpose.DESIGN_AND_MANUFACTURE.value: LegalBasis.EXPLICIT_CONSENT.value,
    },
}


@extend_schema_field(_PURPOSES_SCHEMA)
class PurposesField(serializers.DictField):
    """Purpose -> legal basis. In a multipart request it is one part holding JSON
    (as OpenAPI encodes objects), or DRF's ``purposes.<purpose>`` parts."""

    child = serializers.CharField()

    def get_value(self, dictionary):
        raw = dictionary.get(self.field_name, empty)
        if isinstance(raw, str):
            return raw
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise serializers.ValidationError(
                    "Give a JSON object of purpose -> legal basis."
                ) from None
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.INT)
class VisiblePatientField(serializers.PrimaryKeyRelatedField):
    """A patient the requester can see; any other id answers 404 exactly like a
    patient that does not exist."""

    def get_queryset(self):
        return patient_list_visible_to(self.context["request"].user)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            return self.get_queryset().get(pk=data)
        except ObjectDoesNotExist:
            raise NotVisible(
                "No patient matches the given query.", field=self.field_name
            ) from None
        except (TypeError, ValueError):
            self.fail("incorrect_type", data_type=type(data).__name__)


class EvidenceSerializer(serializers.Serializer):
    """What identifies the evidence without revealing it: the client's file name
    (which may carry the patient's name) is never shown."""

    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    content_type = serializers.CharField()


class ConsentSerializer(serializers.ModelSerializer):
    patient_pseudonym = serializers.CharField(source="patient.pseudonym")
    form_title = serializers.CharField(source="form.title")
    form_version = serializers.CharField(source="form.version")
    purposes = PurposesField()
    evidence = EvidenceSerializer(allow_null=True)
    recorded_by = serializers.CharField(source="recorded_by.get_username")
    withdrawn_by = serializers.CharField(
        source="withdrawn_by.get_username", allow_null=True
    )
    is_withdrawn = serializers.BooleanField()

    class Meta:
        model = Consent
        fields = [
            "id",
            "patient",
            "patient_pseudonym",
            "form",
            "form_title",
            "form_version",
            "purposes",
            "method",
            "evidence",
            "signed_at",
            "recorded_by",
            "recorded_at",
            "is_withdrawn",
            "withdrawn_at",
            "withdrawn_by",
            "withdrawal_reason",
        ]
        read_only_fields = fields


class ConsentCreateSerializer(serializers.Serializer):
    patient = VisiblePatientField()
    form = serializers.PrimaryKeyRelatedField(queryset=ConsentForm.objects.all())
    purposes = PurposesField()
    method = serializers.ChoiceField(choices=Consent.Method.choices)
    signed_at = serializers.DateTimeField()
    evidence = serializers.FileField(
        required=False,
        help_text="The signed paper form, scanned (PDF, PNG, JPEG or TIFF); required "
        "for paper_scanned, optional for electronic consent. Send the request as "
        "multipart/form-data to include it.",
    )


class ConsentWithdrawSerializer(serializers.Serializer):
    reason = serializers.CharField(
        help_text="Why the consent is withdrawn (kept in history and the audit trail)."
    )


class ConsentConflictSerializer(serializers.Serializer):
    """The answer when the consent's state forbids the request (409)."""

    code = serializers.CharField()
    detail = serializers.CharField()
    withdrawn_at = serializers.DateTimeField(
        required=False, help_text="When the consent was withdrawn."
    )


class PatientLookupSerializer(serializers.Serializer):
    record_number = serializers.CharField(max_length=100)
    hospital = serializers.PrimaryKeyRelatedField(
        queryset=Organisation.objects.filter(kind=Organisation.Kind.HOSPITAL),
        required=False,
    )
