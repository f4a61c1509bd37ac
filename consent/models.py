"""The data subject: the patient, known by a pseudonym, and the consent records."""

import secrets

from django.conf import settings
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase
from simple_history.models import HistoricalRecords

from psi.crypto import EncryptedDateField, EncryptedTextField

# Crockford base32 without look-alikes (no I, L, O, U): readable over the phone.
PSEUDONYM_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_pseudonym() -> str:
    """A random pseudonym such as ``PSI-7KQ2-M9XD`` (never derived from identity)."""
    chars = "".join(secrets.choice(PSEUDONYM_ALPHABET) for _ in range(8))
    return f"PSI-{chars[:4]}-{chars[4:]}"


class Patient(models.Model):
    """A patient of one hospital. Identity is encrypted at rest and readable only by
    that hospital; everyone else knows the patient by the pseudonym (GDPR Art. 4(5))."""

    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    pseudonym = models.CharField(
        max_length=13, unique=True, default=new_pseudonym, editable=False
    )
    hospital = models.ForeignKey(
        "psi.Organisation", on_delete=models.PROTECT, related_name="patients"
    )
    family_name = EncryptedTextField()
    given_names = EncryptedTextField()
    birth_date = EncryptedDateField()
    sex = EncryptedTextField(choices=Sex.choices)
    record_number = EncryptedTextField(help_text="The hospital's own record number")
    # Keyed HMAC of the record number: exact lookup without decrypting.
    record_number_hmac = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["pseudonym"]
        constraints = [
            models.UniqueConstraint(
                fields=["hospital", "record_number_hmac"],
                name="patient_unique_record_number",
            )
        ]
        permissions = [("view_patient_identity", "Can see the patient's identity")]

    def __str__(self) -> str:
        return self.pseudonym


class PatientUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE)


class PatientGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE)


class Purpose(models.TextChoices):
    IMAGING_EXCHANGE = "imaging_exchange", "Imaging exchange"
    DESIGN_AND_MANUFACTURE = "design_and_manufacture", "Design and manufacture"
    REGULATORY_RETENTION = "regulatory_retention", "Retention of regulatory records"
    RESEARCH_REUSE = "research_reuse", "Research reuse"


class LegalBasis(models.TextChoices):
    """GDPR Art. 6 with the Art. 9(2) condition for health data."""

    EXPLICIT_CONSENT = "consent_6_1_a_9_2_a", "Explicit consent (Art. 6(1)(a), 9(2)(a))"
    HEALTH_CARE = "care_6_1_c_9_2_h", "Health care (Art. 6(1)(c), 9(2)(h))"
    PUBLIC_HEALTH = (
        "public_health_6_1_c_9_2_i",
        "Public health, device safety (Art. 9(2)(i))",
    )
    RESEARCH = "research_6_1_e_9_2_j", "Scientific research (Art. 9(2)(j))"


class ConsentForm(models.Model):
    """A versioned consent text in one language, as shown to patients."""

    title = models.CharField(max_length=200)
    version = models.CharField(max_length=20)
    language = models.CharField(max_length=10, help_text="BCP 47 tag, e.g. en, de-CH")
    text = models.TextField()
    purposes = models.JSONField(
        default=list, help_text="The purposes this form asks consent for"
    )
    valid_from = models.DateField()
    valid_to = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["title", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["title", "version", "language"],
                name="consentform_unique_version",
            ),
            models.CheckConstraint(
                condition=models.Q(valid_to__isnull=True)
                | models.Q(valid_to__gte=models.F("valid_from")),
                name="consentform_valid_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} v{self.version} ({self.language})"


class Consent(models.Model):
    """The patient's documented consent (GDPR Art. 7(1)), per purpose with its legal
    basis; withdrawal is one action and leaves retained records in place."""

    class Method(models.TextChoices):
        PAPER_SCANNED = "paper_scanned", "Signed paper, scanned"
        ELECTRONIC = "electronic", "Electronic"

    permission_path = "patient"

    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="consents"
    )
    form = models.ForeignKey(ConsentForm, on_delete=models.PROTECT, related_name="+")
    purposes = models.JSONField(help_text="purpose -> legal basis")
    method = models.CharField(max_length=20, choices=Method.choices)
    evidence = models.ForeignKey(
        "psi.StoredFile",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    signed_at = models.DateTimeField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    withdrawal_reason = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-signed_at"]

    def __str__(self) -> str:
        return f"Consent {self.pk} of {self.patient}"

    @property
    def is_withdrawn(self) -> bool:
        return self.withdrawn_at is not None
