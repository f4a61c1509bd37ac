"""Imaging records: the de-identified studies, series and instances of a case, the
acquisition profiles they are checked against, and the encrypted key that links them
back to the hospital's originals."""

import ipaddress
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from psi.crypto import EncryptedTextField


class AcquisitionProfile(models.Model):
    """Planning-quality limits for one anatomical region (REGULATORY §5), editable by
    the manufacturer's quality staff. ``limits`` holds ``quality.AcquisitionProfile``
    as a dict."""

    region = models.CharField(max_length=20, unique=True)
    limits = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["region"]

    def __str__(self) -> str:
        return f"Acquisition profile: {self.region}"


class PatientImagingKey(models.Model):
    """Per-patient secrets of de-identification: the date shift that keeps intervals
    between studies (PS3.15 Retain Longitudinal Temporal Information with Modified
    Dates). Encrypted: with it, shifted dates could be turned back."""

    patient = models.OneToOneField(
        "consent.Patient", on_delete=models.PROTECT, related_name="imaging_key"
    )
    date_offset_days = EncryptedTextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"imaging key of {self.patient}"


def peer_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The addresses and networks of a DICOM peer's ``networks`` (comma- or
    space-separated; ``10.1.2.3``, ``10.1.0.0/16``, ``2001:db8::/32``); ValueError
    names the first entry that is neither."""
    found = []
    for entry in re.split(r"[\s,]+", text.strip()):
        if not entry:
            continue
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network (such as 10.1.2.3 or "
                "10.1.0.0/16)."
            ) from None
    return found


def validate_peer_networks(text: str) -> None:
    try:
        peer_networks(text)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid") from None


class DicomPeer(models.Model):
    """A hospital's DICOM node allowed to send to our C-STORE listener, known by its
    calling AE title and, where ``networks`` names any, the addresses it calls from
    (an AE title is only a name any node can claim). Others are rejected at
    association."""

    hospital = models.ForeignKey(
        "psi.Organisation", on_delete=models.PROTECT, related_name="dicom_peers"
    )
    ae_title = models.CharField(max_length=16, unique=True)
    networks = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_peer_networks],
        help_text="IP addresses or networks the node calls from, such as "
        "10.1.2.3 or 10.1.0.0/16, separated by commas or spaces. Empty: any address "
        "(rely on the network and TLS instead).",
    )
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["ae_title"]
        verbose_name = "DICOM peer"

    def __str__(self) -> str:
        return f"{self.ae_title} ({self.hospital})"


class ImagingStudy(models.Model):
    """A de-identified DICOM study received for a case."""

    class Status(models.TextChoices):
        RECEIVING = "receiving", "Receiving"
        PROCESSING = "processing", "Processing"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        QUARANTINED = "quarantined", "Quarantined"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Upload"
        DICOMWEB = "dicomweb", "DICOMweb STOW-RS"
        CSTORE = "cstore", "DICOM C-STORE"

    permission_path = "case"

    case = models.ForeignKey(
        "cases.Case", on_delete=models.PROTECT, related_name="studies"
    )
    study_uid = models.CharField(max_length=64, unique=True)
    modality = models.CharField(max_length=16, blank=True)
    study_date = models.DateField(null=True, blank=True, help_text="Shifted")
    description = models.CharField(max_length=200, blank=True)
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.RECEIVING
    )
    quality_report = models.JSONField(default=dict, blank=True)
    deid_report = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    calling_ae_title = models.CharField(max_length=16, blank=True)
    proposed_series = models.ForeignKey(
        "ImagingSeries",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    review = models.OneToOneField(
        "psi.Signature",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The designer's signed visual review",
    )
    review_findings = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(
        null=True, blank=True, help_text="When objects last arrived"
    )
    delivery_complete = models.BooleanField(
        default=False,
        help_text="The sender said the study is complete (an upload ended, an "
        "association was released): it is judged once its objects are in",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "imaging studies"
        permissions = [
            # The report lists what de-identification removed or changed: quality
            # evidence (PS3.15 Annex E), not something every case reader needs.
            ("view_deid_report", "Can view the de-identification report"),
        ]

    def __str__(self) -> str:
        return f"{self.case} study {self.pk}"

    def signed_content(self) -> dict:
        """What the designer's visual-review signature binds."""
        return {
            "record": "cases.imagingstudy",
            "id": self.pk,
            "case": self.case.reference,
            "study_uid": self.study_uid,
            "proposed_series": self.proposed_series.series_uid
            if self.proposed_series_id
            else None,
            "instances": sorted(self.instances.values_list("file__sha256", flat=True)),
            "quality_report": self.quality_report,
            "review_findings": self.review_findings,
        }


class ImagingSeries(models.Model):
    """One de-identified series with its geometry and planning-quality verdict."""

    class Verdict(models.TextChoices):
        PENDING = "pending", "Pending"
        PASS = "pass", "Pass"
        WARN = "warn", "Pass with warnings"
        FAIL = "fail", "Fail"

    permission_path = "study__case"

    study = models.ForeignKey(
        ImagingStudy, on_delete=models.PROTECT, related_name="series"
    )
    series_uid = models.CharField(max_length=64, unique=True)
    series_number = models.IntegerField(null=True, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=200, blank=True)
    instance_count = models.PositiveIntegerField(default=0)
    slice_thickness = models.FloatField(null=True, blank=True)
    spacing = models.FloatField(null=True, blank=True)
    orientation = models.JSONField(default=list, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    pixel_spacing = models.JSONField(default=list, blank=True)
    kernel = models.CharField(max_length=64, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    quality_verdict = models.CharField(
        max_length=8, choices=Verdict.choices, default=Verdict.PENDING
    )
    quality_report = models.JSONField(default=dict, blank=True)
    previews = models.JSONField(
        default=dict, blank=True, help_text="preview name -> StoredFile id"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["study", "series_number", "id"]
        verbose_name_plural = "imaging series"

    def __str__(self) -> str:
        return f"series {self.series_number or self.pk} of {self.study}"


class ImagingInstance(models.Model):
    """One de-identified DICOM object, stored under its SHA-256."""

    permission_path = "case"

    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="+")
    series = models.ForeignKey(
        ImagingSeries, on_delete=models.PROTECT, related_name="instances"
    )
    study = models.ForeignKey(
        ImagingStudy, on_delete=models.PROTECT, related_name="instances"
    )
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    # Keyed HMAC of the original SOP Instance UID: a re-sent object is recognised
    # without keeping the original UID in clear.
    original_uid_hmac = models.CharField(max_length=64)
    file = models.ForeignKey(
        "psi.StoredFile", on_delete=models.PROTECT, related_name="+"
    )
    instance_number = models.IntegerField(null=True, blank=True)
    position = models.FloatField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    # What the planning-quality checks read (``quality.SliceHeader``), kept so a
    # study is judged without opening its files; derived, so not in the history.
    header = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords(excluded_fields=["header"])

    class Meta:
        ordering = ["series", "position", "instance_number"]
        constraints = [
            models.UniqueConstraint(
                fields=["case", "original_uid_hmac"], name="instance_once_per_case"
            )
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class ImagingIdentityLink(models.Model):
    """The way back from de-identified to original UIDs and the identity the hospital
    sent: encrypted, readable only by the patient's hospital (audited
    re-identification)."""

    permission_path = "study__case__patient"

    study = models.ForeignKey(
        ImagingStudy, on_delete=models.PROTECT, related_name="identity_links"
    )
    kind = models.CharField(max_length=10)  # study, series, instance, patient
    deidentified = models.CharField(max_length=64, db_index=True)
    original = EncryptedTextField()
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "kind", "deidentified"], name="identity_link_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} link of {self.study}"
