"""The case: one patient's implant from prescription to follow-up."""

from django.conf import settings
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase
from simple_history.models import HistoricalRecords

from psi.errors import RecordLocked


class Case(models.Model):
    """One patient-specific device request, carried through its lifecycle."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        IMAGING_RECEIVED = "imaging_received", "Imaging received"
        IMAGING_ACCEPTED = "imaging_accepted", "Imaging accepted"
        IN_DESIGN = "in_design", "In design"
        DESIGN_REVIEW = "design_review", "Design review"
        DESIGN_APPROVED = "design_approved", "Design approved"
        IN_MANUFACTURING = "in_manufacturing", "In manufacturing"
        RELEASED = "released", "Released"
        SHIPPED = "shipped", "Shipped"
        IMPLANTED = "implanted", "Implanted"
        FOLLOW_UP = "follow_up", "Follow-up"
        CLOSED = "closed", "Closed"
        ON_HOLD = "on_hold", "On hold"
        CANCELLED = "cancelled", "Cancelled"

    class Region(models.TextChoices):
        CRANIAL = "cranial", "Cranial"
        ORBITAL = "orbital", "Orbital"
        MIDFACE = "midface", "Midface"
        MANDIBLE = "mandible", "Mandible"
        MAXILLA = "maxilla", "Maxilla"
        DENTAL = "dental", "Dental"
        PELVIS = "pelvis", "Pelvis"
        LONG_BONE = "long_bone", "Long bone"
        SPINE = "spine", "Spine"
        OTHER = "other", "Other"

    class Side(models.TextChoices):
        LEFT = "left", "Left"
        RIGHT = "right", "Right"
        BILATERAL = "bilateral", "Bilateral"
        MIDLINE = "midline", "Midline"
        NOT_APPLICABLE = "n/a", "Not applicable"

    class Urgency(models.TextChoices):
        ROUTINE = "routine", "Routine"
        URGENT = "urgent", "Urgent"
        EMERGENCY = "emergency", "Emergency"

    class Pathway(models.TextChoices):
        """The regulatory route of the device (MDCG 2021-3; FDA CDE guidance 2014)."""

        EU_CUSTOM_MADE = "eu_custom_made", "EU custom-made device (MDR Annex XIII)"
        EU_PATIENT_MATCHED = "eu_patient_matched", "EU CE-marked patient-matched device"
        US_CUSTOM_520B = "us_custom_520b", "US custom device (FD&C Act 520(b))"
        US_ENVELOPE = "us_envelope", "US cleared/approved envelope device"
        INVESTIGATIONAL = (
            "investigational",
            "Investigational (IDE / clinical investigation)",
        )
        OTHER = "other", "Other"

    reference = models.CharField(max_length=20, unique=True, editable=False)
    patient = models.ForeignKey(
        "consent.Patient", on_delete=models.PROTECT, related_name="cases"
    )
    hospital = models.ForeignKey(
        "psi.Organisation", on_delete=models.PROTECT, related_name="hospital_cases"
    )
    manufacturer = models.ForeignKey(
        "psi.Organisation", on_delete=models.PROTECT, related_name="manufacturer_cases"
    )
    prescriber = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="prescribed_cases",
    )
    indication = models.TextField()
    anatomical_region = models.CharField(max_length=20, choices=Region.choices)
    side = models.CharField(max_length=10, choices=Side.choices)
    urgency = models.CharField(
        max_length=10, choices=Urgency.choices, default=Urgency.ROUTINE
    )
    planned_surgery_date = models.DateField(null=True, blank=True)
    regulatory_pathway = models.CharField(max_length=30, choices=Pathway.choices)
    pathway_reason = models.TextField(
        help_text="Why this pathway applies (e.g. why the device is custom-made)"
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.DRAFT, editable=False
    )
    # The status a case on hold returns to when resumed.
    held_from_status = models.CharField(
        max_length=20, choices=Status.choices, blank=True, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["-created_at", "-id"], name="case_newest_first"),
        ]
        permissions = [
            ("submit_case", "Can submit and cancel the hospital's cases"),
            ("prescribe_case", "Can write and sign prescriptions"),
            ("manage_case", "Can move the case through the manufacturer's steps"),
            ("review_design", "Can approve designs or request changes"),
            ("release_case", "Can release devices"),
            ("record_clinical", "Can record implantation and follow-up"),
        ]

    def __str__(self) -> str:
        return self.reference


class CaseUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Case, on_delete=models.CASCADE)


class CaseGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Case, on_delete=models.CASCADE)


class CaseReferenceCounter(models.Model):
    """The last case number issued in a year (``C-2026-00042``)."""

    year = models.PositiveSmallIntegerField(primary_key=True)
    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last}"


class CaseEvent(models.Model):
    """One transition of a case: who moved it, when, from where to where, and why."""

    permission_path = "case"

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="events")
    transition = models.CharField(max_length=40)
    from_status = models.CharField(max_length=20, choices=Case.Status.choices)
    to_status = models.CharField(max_length=20, choices=Case.Status.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    at = models.DateTimeField()
    reason = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.case}: {self.from_status} → {self.to_status}"


class Prescription(models.Model):
    """The prescriber's written prescription with specific design characteristics
    (MDR Art. 2(3); MDCG 2021-3 Q6: a DICOM set alone is no prescription).
    Immutable once signed; a change is a new version."""

    class Material(models.TextChoices):
        TITANIUM = "ti6al4v", "Titanium alloy (Ti-6Al-4V)"
        PURE_TITANIUM = "cp_ti", "Commercially pure titanium"
        PEEK = "peek", "PEEK"
        PMMA = "pmma", "PMMA"
        HYDROXYAPATITE = "ha", "Hydroxyapatite"
        OTHER = "other", "Other"

    permission_path = "case"

    case = models.ForeignKey(
        Case, on_delete=models.PROTECT, related_name="prescriptions"
    )
    version = models.PositiveIntegerField(editable=False)
    supersedes = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="superseded_by",
        editable=False,
    )
    prescriber = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="prescriptions"
    )
    prescriber_licence = models.CharField(
        max_length=100, help_text="Registration or licence number under national law"
    )
    institution = models.ForeignKey(
        "psi.Organisation", on_delete=models.PROTECT, related_name="+"
    )
    patient_pseudonym = models.CharField(max_length=13, editable=False)
    material = models.CharField(max_length=20, choices=Material.choices)
    material_other = models.CharField(max_length=200, blank=True)
    thickness_mm = models.DecimalField(max_digits=5, decimal_places=2)
    screw_count = models.PositiveSmallIntegerField(default=0)
    screw_positions = models.TextField(blank=True)
    margins_mm = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True
    )
    other_characteristics = models.TextField(blank=True)
    notes = models.TextField(blank=True)
    signature = models.OneToOneField(
        "psi.Signature",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["case", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "version"], name="prescription_unique_version"
            ),
            models.CheckConstraint(
                condition=models.Q(thickness_mm__gt=0),
                name="prescription_thickness_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.case} prescription v{self.version}"

    def save(self, *args, **kwargs):
        # Whatever path tries it (service, admin, shell), a signed prescription
        # stays as signed; the signing save itself still finds the row unsigned.
        if (
            self.pk
            and type(self).objects.filter(pk=self.pk, signature__isnull=False).exists()
        ):
            raise RecordLocked(
                "A signed prescription cannot change; write a new version."
            )
        super().save(*args, **kwargs)

    @property
    def is_signed(self) -> bool:
        return self.signature_id is not None

    def signed_content(self) -> dict:
        """What the prescriber's signature binds (21 CFR 11.70)."""
        return {
            "record": "cases.prescription",
            "id": self.pk,
            "case": self.case.reference,
            "version": self.version,
            "prescriber_id": self.prescriber_id,
            "prescriber_licence": self.prescriber_licence,
            "institution_id": self.institution_id,
            "patient_pseudonym": self.patient_pseudonym,
            "material": self.material,
            "material_other": self.material_other,
            "thickness_mm": str(self.thickness_mm),
            "screw_count": self.screw_count,
            "screw_positions": self.screw_positions,
            "margins_mm": None if self.margins_mm is None else str(self.margins_mm),
            "other_characteristics": self.other_characteristics,
            "notes": self.notes,
        }


# Imaging records live in their own module; imported here so Django finds them.
from cases.imaging.models import (  # noqa: E402
    AcquisitionProfile,
    DicomPeer,
    ImagingIdentityLink,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    PatientImagingKey,
)

__all__ = [
    "AcquisitionProfile",
    "Case",
    "CaseEvent",
    "CaseGroupObjectPermission",
    "CaseReferenceCounter",
    "CaseUserObjectPermission",
    "DicomPeer",
    "ImagingIdentityLink",
    "ImagingInstance",
    "ImagingSeries",
    "ImagingStudy",
    "PatientImagingKey",
    "Prescription",
]
