"""The core records every app stands on: organisations and roles, the audit chain,
electronic signatures, background jobs and stored files."""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from simple_history.models import HistoricalRecords


class Organisation(models.Model):
    """A legal entity taking part in cases: a hospital, a manufacturer or a partner."""

    class Kind(models.TextChoices):
        HOSPITAL = "hospital", "Hospital"
        MANUFACTURER = "manufacturer", "Manufacturer"
        DESIGN_PARTNER = "design_partner", "Design partner"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=200, unique=True)
    address = models.TextField(blank=True)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 code")
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(country__regex=r"^[A-Z]{2}$"),
                name="organisation_country_iso2",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    CLINICIAN = "clinician", "Clinician"
    CASE_COORDINATOR = "case_coordinator", "Case coordinator"
    CASE_MANAGER = "case_manager", "Case manager"
    DESIGNER = "designer", "Designer"
    PRODUCTION = "production", "Production"
    QUALITY_ASSURANCE = "quality_assurance", "Quality assurance"
    REGULATORY = "regulatory", "Regulatory (PRRC)"
    AUDITOR = "auditor", "Auditor"
    INTEGRATION = "integration", "Integration"


class Membership(models.Model):
    """A user's role in an organisation. Each active membership puts the user in the
    organisation-role group that carries the role's permissions."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="memberships"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="memberships"
    )
    role = models.CharField(max_length=30, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["organisation__name", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organisation", "role"], name="membership_unique_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} – {self.get_role_display()} at {self.organisation}"


class RoleGroup(models.Model):
    """The Django group that carries one role's permissions in one organisation."""

    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, related_name="role_group"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="role_groups"
    )
    role = models.CharField(max_length=30, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "role"], name="rolegroup_unique"
            )
        ]

    def __str__(self) -> str:
        return self.group.name


class AuditEvent(models.Model):
    """One link of the append-only audit chain (21 CFR 11.10(e), MDR Art. 10).

    ``hash`` is the SHA-256 of the canonical JSON of the event's fields and
    ``prev_hash``; the database refuses UPDATE and DELETE on this table.
    """

    seq = models.BigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=80, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict)
    reason = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id"])]
        permissions = [("verify_auditevent", "Can verify the audit chain")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"


class Signature(models.Model):
    """An electronic signature (21 CFR 11.50, 11.70): printed name, UTC time, meaning,
    bound to the SHA-256 of the signed record's canonical content."""

    class Meaning(models.TextChoices):
        AUTHORED = "authored", "Authored"
        REVIEWED = "reviewed", "Reviewed"
        APPROVED = "approved", "Approved"
        VERIFIED = "verified", "Verified"
        RELEASED = "released", "Released"
        RESPONSIBILITY = "responsibility", "Responsibility"

    signer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signatures"
    )
    printed_name = models.CharField(max_length=300)
    meaning = models.CharField(max_length=20, choices=Meaning.choices)
    signed_at = models.DateTimeField()
    record_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    record_id = models.CharField(max_length=64)
    record = GenericForeignKey("record_type", "record_id")
    content_hash = models.CharField(max_length=64)
    reason = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["signed_at"]
        indexes = [models.Index(fields=["record_type", "record_id"])]

    def __str__(self) -> str:
        when = self.signed_at.strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.printed_name}, {self.get_meaning_display()}, {when} UTC"


class SigningGuard(models.Model):
    """Consecutive failed signing attempts of one user (21 CFR 11.300(d))."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signing_guard"
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"signing guard of {self.user}"


class Job(models.Model):
    """A unit of background work with the state the API and the admin show."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=80)
    task_name = models.CharField(max_length=200)
    target_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.PROTECT
    )
    target_id = models.CharField(max_length=64, blank=True)
    target = GenericForeignKey("target_type", "target_id")
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    result = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jobs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__lte=100), name="job_progress_max_100"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"


class StoredFile(models.Model):
    """A file kept through Django's storage API under a content-derived name.

    The client's file name is metadata only; it never reaches a storage path.
    """

    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=100)
    storage_name = models.CharField(max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} bytes)"
