"""Serializers of the cases API. They shape and parse payloads only: every rule lives
in cases.services, which the views call."""

from __future__ import annotations

import datetime

from django.contrib.auth import get_user_model
from django.db.models import TextChoices
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from cases.models import Case, CaseEvent, Prescription
from cases.selectors import prescriber_choices
from cases.services import TRANSITIONS, transitions_available
from consent.models import Patient
from consent.selectors import patient_list_visible_to
from psi.models import Organisation, Signature
from psi.permissions import restrict
from psi.signatures import printed_name, signature_verify


def _enum_field(choices: list[tuple[str, str]], component: str, doc: str):
    """A choice field documented once, as the named schema component ``component``,
    however many fields use it (a status appears as ``status``, ``from_status``,
    ``to_status``: one enum, not three)."""
    lines = "\n".join(f"* `{value}` - {label}" for value, label in choices)
    schema = {
        "type": "string",
        "enum": [value for value, _ in choices],
        "description": f"{doc}\n\n{lines}",
    }

    @extend_schema_field(schema, component_name=component)
    class EnumField(serializers.ChoiceField):
        def __init__(self, **kwargs):
            kwargs.setdefault("choices", choices)
            super().__init__(**kwargs)

    EnumField.__name__ = EnumField.__qualname__ = f"{component}Field"
    return EnumField


def _choices(enum: type[TextChoices]) -> list[tuple[str, str]]:
    return list(enum.choices)


CaseStatusField = _enum_field(
    _choices(Case.Status), "CaseStatus", "Where the case is in its lifecycle."
)
CaseTransitionField = _enum_field(
    [(name, t.label) for name, t in TRANSITIONS.items()],
    "CaseTransition",
    "A step of the case lifecycle; each has its own endpoint "
    "`POST /api/v1/cases/{id}/<step with dashes>/`.",
)
RegionField = _enum_field(
    _choices(Case.Region), "AnatomicalRegion", "Where the device goes."
)
SideField = _enum_field(_choices(Case.Side), "CaseSide", "Side of the body.")
UrgencyField = _enum_field(_choices(Case.Urgency), "CaseUrgency", "How urgent.")
PathwayField = _enum_field(
    _choices(Case.Pathway),
    "RegulatoryPathway",
    "The device's regulatory route (REGULATORY checklist item 1).",
)
MaterialField = _enum_field(
    _choices(Prescription.Material), "PrescriptionMaterial", "Prescribed material."
)
MeaningField = _enum_field(
    _choices(Signature.Meaning),
    "SignatureMeaning",
    "What the signature means (21 CFR 11.50(a)(3)).",
)

UTC = datetime.UTC


# --- cases ---------------------------------------------------------------------


class CaseSerializer(serializers.ModelSerializer):
    """A case as every endpoint answers it. The patient appears by pseudonym only:
    identity never travels in a case payload."""

    patient = serializers.CharField(
        source="patient.pseudonym",
        read_only=True,
        help_text="The patient's pseudonym.",
    )
    hospital_name = serializers.CharField(source="hospital.name", read_only=True)
    manufacturer_name = serializers.CharField(
        source="manufacturer.name", read_only=True
    )
    prescriber_name = serializers.SerializerMethodField()
    anatomical_region = RegionField(read_only=True)
    side = SideField(read_only=True)
    urgency = UrgencyField(read_only=True)
    regulatory_pathway = PathwayField(read_only=True)
    status = CaseStatusField(read_only=True)
    held_from_status = CaseStatusField(
        read_only=True,
        allow_null=True,
        help_text="While on hold: the status the case resumes to.",
    )
    allowed_transitions = serializers.SerializerMethodField(
        help_text="The steps the case's status allows and you may perform now."
    )

    class Meta:
        model = Case
        fields = [
            "id",
            "reference",
            "patient",
            "hospital",
            "hospital_name",
            "manufacturer",
            "manufacturer_name",
            "prescriber",
            "prescriber_name",
            "indication",
            "anatomical_region",
            "side",
            "urgency",
            "planned_surgery_date",
            "regulatory_pathway",
            "pathway_reason",
            "status",
            "held_from_status",
            "allowed_transitions",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["held_from_status"] = data["held_from_status"] or None
        return data

    def get_prescriber_name(self, case: Case) -> str:
        return printed_name(case.prescriber)

    @extend_schema_field(serializers.ListField(child=CaseTransitionField()))
    def get_allowed_transitions(self, case: Case) -> list[str]:
        return transitions_available(self.context["request"].user, case)


def _person_name(full_name: str, username: str) -> str:
    """``psi.signatures.printed_name`` for a row of plain values."""
    return full_name.strip() or username


#: The object permissions that allowed_transitions depends on.
TRANSITION_PERMISSIONS = tuple(
    sorted({codename for t in TRANSITIONS.values() for codename in t.permissions})
)


class CaseListSerializer(serializers.BaseSerializer):
    """The case list's rows: the same JSON as :class:`CaseSerializer` (which
    documents it), built from a page of plain column values instead of model
    instances.

    Building 50 cases with their patient, organisations and prescriber as model
    objects, then running them through a ModelSerializer, was most of the cost of a
    list request (``bench/api_cases.py``). A row is a dict with the ``columns``
    below and ``granted``: the codenames of TRANSITION_PERMISSIONS that the gate
    grants the user on the case (none are needed for a superuser).
    """

    columns = (
        "id",
        "reference",
        "patient__pseudonym",
        "hospital_id",
        "hospital__name",
        "manufacturer_id",
        "manufacturer__name",
        "prescriber_id",
        "prescriber__first_name",
        "prescriber__last_name",
        "prescriber__username",
        "indication",
        "anatomical_region",
        "side",
        "urgency",
        "planned_surgery_date",
        "regulatory_pathway",
        "pathway_reason",
        "status",
        "held_from_status",
        "created_at",
        "updated_at",
    )
    # Formats as CaseSerializer's fields do (ISO 8601, UTC as "Z").
    _date = serializers.DateField()
    _datetime = serializers.DateTimeField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._transitions: dict[tuple[str, frozenset[str]], list[str]] = {}

    def to_representation(self, row: dict) -> dict:
        full_name = f"{row['prescriber__first_name']} {row['prescriber__last_name']}"
        return {
            "id": row["id"],
            "reference": row["reference"],
            "patient": row["patient__pseudonym"],
            "hospital": row["hospital_id"],
            "hospital_name": row["hospital__name"],
            "manufacturer": row["manufacturer_id"],
            "manufacturer_name": row["manufacturer__name"],
            "prescriber": row["prescriber_id"],
            "prescriber_name": _person_name(full_name, row["prescriber__username"]),
            "indication": row["indication"],
            "anatomical_region": row["anatomical_region"],
            "side": row["side"],
            "urgency": row["urgency"],
            "planned_surgery_date": self._date.to_representation(
                row["planned_surgery_date"]
            ),
            "regulatory_pathway": row["regulatory_pathway"],
            "pathway_reason": row["pathway_reason"],
            "status": row["status"],
            "held_from_status": row["held_from_status"] or None,
            "allowed_transitions": self._allowed_transitions(row),
            "created_at": self._datetime.to_representation(row["created_at"]),
            "updated_at": self._datetime.to_representation(row["updated_at"]),
        }

    def _allowed_transitions(self, row: dict) -> list[str]:
        """The service's answer for the row's status and grants. Given the grants,
        it reads nothing of the case but its status; a page holds few distinct
        pairs of the two, so each is asked once."""
        key = (row["status"], row["granted"])
        if key not in self._transitions:
            self._transitions[key] = transitions_available(
                self.context["request"].user,
                Case(status=row["status"]),
                granted=row["granted"],
            )
        return self._transitions[key]


class _RequestScoped:
    """A related field whose choices are what the requesting user may use."""

    def get_queryset(self):
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return self.scope(super().get_queryset(), user)


class PatientPseudonymField(_RequestScoped, serializers.SlugRelatedField):
    def scope(self, queryset, user):
        return patient_list_visible_to(user)


class PrescriberField(_RequestScoped, serializers.PrimaryKeyRelatedField):
    def scope(self, queryset, user):
        return prescriber_choices(user)


class VisibleCaseField(_RequestScoped, serializers.PrimaryKeyRelatedField):
    def scope(self, queryset, user):
        return restrict(queryset, user)


class CaseCreateSerializer(serializers.Serializer):
    patient = PatientPseudonymField(
        slug_field="pseudonym",
        queryset=Patient.objects.all(),
        help_text="The patient's pseudonym (e.g. PSI-7KQ2-M9XD), as registered by "
        "the patient's hospital. Patients are never named by id or identity here.",
    )
    manufacturer = serializers.PrimaryKeyRelatedField(
        queryset=Organisation.objects.filter(kind=Organisation.Kind.MANUFACTURER),
        help_text="Id of the manufacturer that will design and make the device.",
    )
    prescriber = PrescriberField(
        queryset=get_user_model().objects.filter(is_active=True),
        required=False,
        help_text="User id of the prescribing clinician of the patient's hospital; "
        "defaults to you.",
    )
    indication = serializers.CharField()
    anatomical_region = RegionField()
    side = SideField()
    urgency = UrgencyField(default=Case.Urgency.ROUTINE)
    planned_surgery_date = serializers.DateField(required=False, allow_null=True)
    regulatory_pathway = PathwayField()
    pathway_reason = serializers.CharField(
        help_text="Why the pathway applies (e.g. why the device is custom-made)."
    )


class CaseUpdateSerializer(serializers.Serializer):
    """The clinical details of a draft case; send only what changes."""

    indication = serializers.CharField(required=False)
    anatomical_region = RegionField(required=False)
    side = SideField(required=False)
    urgency = UrgencyField(required=False)
    planned_surgery_date = serializers.DateField(required=False, allow_null=True)
    regulatory_pathway = PathwayField(required=False)
    pathway_reason = serializers.CharField(required=False)
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Why the details change (kept in the history and audit trail).",
    )


class TransitionSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2000,
        help_text="Why (optional for this step); kept on the case timeline.",
    )


class ReasonedTransitionSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=2000,
        help_text="Why (required for this step); kept on the case timeline.",
    )


class CaseConflictSerializer(serializers.Serializer):
    """409: the case's state does not allow the request."""

    code = serializers.CharField(
        help_text="illegal_transition, consent_missing, record_signed or conflict."
    )
    detail = serializers.CharField()
    status = CaseStatusField(
        required=False, help_text="The case's status now (for illegal_transition)."
    )
    allowed = serializers.ListField(
        child=CaseTransitionField(),
        required=False,
        help_text="Steps the case's status allows (for illegal_transition).",
    )
    purpose = serializers.CharField(
        required=False, help_text="The purpose lacking consent (for consent_missing)."
    )


class CaseEventSerializer(serializers.ModelSerializer):
    """One step on the case timeline: who moved it, when, from where to where, why."""

    transition = CaseTransitionField(read_only=True)
    from_status = CaseStatusField(read_only=True)
    to_status = CaseStatusField(read_only=True)
    actor = serializers.SerializerMethodField()
    at = serializers.DateTimeField(read_only=True, default_timezone=UTC)

    class Meta:
        model = CaseEvent
        fields = [
            "id",
            "transition",
            "from_status",
            "to_status",
            "actor",
            "at",
            "reason",
        ]
        read_only_fields = fields

    def get_actor(self, event: CaseEvent) -> str | None:
        if event.actor is None:
            return None
        return printed_name(event.actor)


# --- prescriptions -------------------------------------------------------------


class SignatureManifestationSerializer(serializers.ModelSerializer):
    """The signature as 21 CFR 11.50 asks it to be shown: printed name, date and
    time (UTC), meaning."""

    meaning = MeaningField(read_only=True)
    meaning_display = serializers.CharField(
        source="get_meaning_display", read_only=True
    )
    signed_at = serializers.DateTimeField(read_only=True, default_timezone=UTC)

    class Meta:
        model = Signature
        fields = [
            "printed_name",
            "signed_at",
            "meaning",
            "meaning_display",
            "content_hash",
        ]
        read_only_fields = fields


class PrescriptionSerializer(serializers.ModelSerializer):
    case_reference = serializers.CharField(source="case.reference", read_only=True)
    prescriber_name = serializers.SerializerMethodField()
    institution_name = serializers.CharField(source="institution.name", read_only=True)
    material = MaterialField(read_only=True)
    signature = SignatureManifestationSerializer(read_only=True, allow_null=True)
    is_signed = serializers.BooleanField(read_only=True)
    signature_valid = serializers.SerializerMethodField(
        help_text="Whether the signed content is unchanged since signing "
        "(null while unsigned)."
    )

    class Meta:
        model = Prescription
        fields = [
            "id",
            "case",
            "case_reference",
            "version",
            "supersedes",
            "prescriber",
            "prescriber_name",
            "prescriber_licence",
            "institution",
            "institution_name",
            "patient_pseudonym",
            "material",
            "material_other",
            "thickness_mm",
            "screw_count",
            "screw_positions",
            "margins_mm",
            "other_characteristics",
            "notes",
            "created_at",
            "is_signed",
            "signature",
            "signature_valid",
        ]
        read_only_fields = fields

    def get_prescriber_name(self, prescription: Prescription) -> str:
        return printed_name(prescription.prescriber)

    def get_signature_valid(self, prescription: Prescription) -> bool | None:
        signature = prescription.signature
        if signature is None:
            return None
        # The signed record is the row in hand: hand it to the signature instead of
        # loading it again through the generic relation (one query per row).
        record_field = Signature._meta.get_field("record")
        if not record_field.is_cached(signature):
            record_field.set_cached_value(signature, prescription)
        return signature_verify(signature).valid


class _PrescriptionFields(serializers.Serializer):
    prescriber_licence = serializers.CharField(
        max_length=100, help_text="Registration or licence number under national law"
    )
    material = MaterialField()
    material_other = serializers.CharField(
        max_length=200, required=False, allow_blank=True
    )
    thickness_mm = serializers.DecimalField(max_digits=5, decimal_places=2)
    screw_count = serializers.IntegerField(min_value=0, max_value=200, required=False)
    screw_positions = serializers.CharField(required=False, allow_blank=True)
    margins_mm = serializers.DecimalField(
        max_digits=5, decimal_places=2, required=False, allow_null=True
    )
    other_characteristics = serializers.CharField(required=False, allow_blank=True)
    notes = serializers.CharField(required=False, allow_blank=True)


class PrescriptionCreateSerializer(_PrescriptionFields):
    case = VisibleCaseField(
        queryset=Case.objects.all(), help_text="Id of the case prescribed for."
    )


class PrescriptionUpdateSerializer(_PrescriptionFields):
    """Changes to a prescription that is not signed yet; send only what changes."""


class PrescriptionSignSerializer(serializers.Serializer):
    password = serializers.CharField(
        write_only=True,
        style={"input_type": "password"},
        trim_whitespace=False,
        help_text="Your password, entered again to sign (21 CFR 11.200).",
    )
