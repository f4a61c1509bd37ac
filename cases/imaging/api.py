"""Imaging API: the upload of DICOM files and ZIP archives, the studies with their
quality and de-identification reports, series previews and the signed visual review.

Uploads are streamed: Django's upload handlers spool big files to temporary files,
which are copied into the staging folder in chunks (ZIP members too, while their
real size is counted), so no upload is ever held whole in memory. Client file names
are never used or echoed (they may name the patient): rejections name the upload and
member by number.
"""

from __future__ import annotations

import itertools
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath

from django.conf import settings
from django.http import FileResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from cases.api.filters import FILTER_BACKENDS
from cases.imaging import services
from cases.imaging.models import ImagingSeries, ImagingStudy
from cases.imaging.selectors import series_list_visible_to, study_queryset
from cases.imaging.staging import stage_chunks, unstage
from cases.selectors import case_list_visible_to
from psi.api.permissions import IsActiveUser
from psi.errors import NotVisible, PermissionRefused
from psi.files import FileTooLarge, stored_file_open
from psi.models import StoredFile

_CHUNK = 1024 * 1024
_HEAD = 132
#: Above this ratio of unpacked to packed size a member is treated as a ZIP bomb.
MAX_COMPRESSION_RATIO = 100
#: Members smaller than this are not ratio-checked (a tiny file of zeros packs well).
_RATIO_MIN_BYTES = 64 * 1024
_ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz")
_ZIP_MAGIC = b"PK\x03\x04"


class Rejection(serializers.Serializer):
    file = serializers.CharField(help_text="Upload (and member) by number")
    reason = serializers.CharField()


class UploadJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.IntegerField()
    url = serializers.CharField(help_text="Where the job's status can be followed")


class EvaluationQueuedSerializer(serializers.Serializer):
    job = UploadJobSerializer()


def _job_link(request, job) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "progress": job.progress,
        "url": reverse("job-detail", args=[job.pk], request=request),
    }


class UploadAcceptedSerializer(serializers.Serializer):
    job = UploadJobSerializer()
    staged = serializers.IntegerField(help_text="Objects handed to the ingest job")
    rejected = Rejection(many=True)


class UploadRefusedSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    rejected = Rejection(many=True, required=False)


class UploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        help_text="DICOM files (Part 10) and/or ZIP archives of them",
    )


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Budget:
    """The bytes an upload may still stage (PSI_UPLOAD_MAX_BYTES in all)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise FileTooLarge(
                f"The upload unpacks to more than the limit of {self.limit} bytes; "
                "send the study in smaller parts.",
                field="files",
            )


def _counted(
    first: bytes, rest: Iterator[bytes], budget: _Budget, declared: int | None
) -> Iterator[bytes]:
    size = 0
    for part in itertools.chain((first,), rest):
        size += len(part)
        budget.take(len(part))
        if declared is not None and size > declared:
            raise _Refused("The member is larger than its archive entry says.")
        yield part


def _read_chunks(handle) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


def _looks_dicom(head: bytes) -> bool:
    return len(head) >= _HEAD and head[128:132] == b"DICM"


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "Symbolic links are not accepted in archives."
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "Absolute paths are not accepted in archives."
    if ".." in PurePosixPath(name).parts:
        return "Paths leaving the archive (..) are not accepted."
    if info.flag_bits & 0x1:
        return "Encrypted archive members cannot be read."
    if name.lower().endswith(_ARCHIVE_SUFFIXES):
        return "Nested archives are not accepted; unpack them first."
    if (
        info.file_size > _RATIO_MIN_BYTES
        and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
    ):
        return (
            f"The member expands more than {MAX_COMPRESSION_RATIO}:1 "
            "(a ZIP bomb?); it was not unpacked."
        )
    return None


def _stage_zip(upload, label: str, case_id: int, budget: _Budget, out: dict) -> None:
    try:
        archive = zipfile.ZipFile(upload.file)
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        out["rejected"].append({"file": label, "reason": "Not a readable ZIP archive."})
        return
    declared = sum(i.file_size for i in members if not i.is_dir())
    if budget.used + declared > budget.limit:
        out["rejected"].append(
            {
                "file": label,
                "reason": f"The archive unpacks to more than the limit of "
                f"{budget.limit} bytes (a ZIP bomb?); it was not unpacked.",
            }
        )
        return
    with archive:
        for number, info in enumerate(members, 1):
            if info.is_dir():
                continue
            where = f"{label}, member {number}"
            problem = _member_problem(info)
            if problem:
                out["rejected"].append({"file": where, "reason": problem})
                continue
            try:
                with archive.open(info) as source:
                    head = source.read(_HEAD)
                    if head.startswith(_ZIP_MAGIC):
                        raise _Refused(
                            "Nested archives are not accepted; unpack them first."
                        )
                    if not _looks_dicom(head):
                        raise _Refused("Not a DICOM file; skipped.")
                    path = stage_chunks(
                        case_id,
                        _counted(head, _read_chunks(source), budget, info.file_size),
                    )
                    out["paths"].append(str(path))
            except _Refused as refused:
                out["rejected"].append({"file": where, "reason": refused.reason})
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError):
                out["rejected"].append(
                    {"file": where, "reason": "The member could not be unpacked."}
                )


def _stage_upload(upload, label: str, case_id: int, budget: _Budget, out: dict):
    upload.seek(0)
    head = upload.read(_HEAD)
    upload.seek(0)
    if head.startswith(_ZIP_MAGIC):
        _stage_zip(upload, label, case_id, budget, out)
        return
    if not _looks_dicom(head):
        out["rejected"].append(
            {"file": label, "reason": "Not a DICOM file or a ZIP archive; skipped."}
        )
        return
    path = stage_chunks(
        case_id, _counted(b"", iter(upload.chunks(_CHUNK)), budget, None)
    )
    out["paths"].append(str(path))


class ImagingUploadView(APIView):
    """``POST /cases/{id}/imaging/``: DICOM files and ZIP archives for a case."""

    parser_classes = [MultiPartParser]
    permission_classes = [IsActiveUser]

    @extend_schema(
        summary="Upload DICOM files or ZIP archives for a case",
        description=(
            "Multipart field `files`, repeated. The whole request is capped at "
            "PSI_UPLOAD_MAX_BYTES (413). Consent for imaging exchange and a case "
            "that takes imaging are checked first (409, nothing stored). Answers "
            "202 with the ingest job and the files already refused."
        ),
        request={"multipart/form-data": UploadSerializer},
        responses={
            202: UploadAcceptedSerializer,
            400: UploadRefusedSerializer,
            403: OpenApiResponse(description="May not send imaging for this case"),
            404: OpenApiResponse(description="No such case visible"),
            409: OpenApiResponse(description="No consent, or the case takes none"),
            413: OpenApiResponse(description="The upload is larger than allowed"),
        },
        tags=["imaging"],
    )
    def post(self, request, pk: int):
        case = case_list_visible_to(request.user).filter(pk=pk).first()
        if case is None:
            raise NotVisible("No case matches the given query.")
        if not services.may_send(request.user, case):
            raise PermissionRefused("You may not send imaging for this case.")
        limit = settings.PSI_UPLOAD_MAX_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise FileTooLarge(
                f"The upload is larger than the limit of {limit} bytes; send the "
                "study in smaller parts.",
                field="files",
            )
        # Before the body is read: without consent nothing is staged.
        services.imaging_gate(case)
        uploads = [f for _, files in request.FILES.lists() for f in files]
        if sum(f.size for f in uploads) > limit:
            raise FileTooLarge(
                f"The upload is larger than the limit of {limit} bytes.",
                field="files",
            )
        out: dict = {"paths": [], "rejected": []}
        budget = _Budget(limit)
        try:
            for number, upload in enumerate(uploads, 1):
                _stage_upload(upload, f"upload {number}", case.pk, budget, out)
        except BaseException:
            unstage(out["paths"])
            raise
        if not out["paths"]:
            unstage(out["paths"])
            return Response(
                {
                    "code": "no_dicom",
                    "detail": "No DICOM object was found in the upload.",
                    "rejected": out["rejected"],
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            job = services.ingest_enqueue(
                actor=request.user, case=case, paths=out["paths"], source="upload"
            )
        except BaseException:
            unstage(out["paths"])
            raise
        body = {
            "job": _job_link(request, job),
            "staged": len(out["paths"]),
            "rejected": out["rejected"],
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


# --- studies and series ----------------------------------------------------------


class SeriesSerializer(serializers.ModelSerializer):
    preview_urls = serializers.SerializerMethodField()

    class Meta:
        model = ImagingSeries
        fields = [
            "id",
            "series_uid",
            "series_number",
            "modality",
            "description",
            "instance_count",
            "slice_thickness",
            "spacing",
            "rows",
            "columns",
            "kernel",
            "quality_verdict",
            "quality_report",
            "preview_urls",
        ]

    def get_preview_urls(self, series) -> dict[str, str]:
        request = self.context.get("request")
        return {
            name: reverse(
                "imaging-series-preview",
                kwargs={"pk": series.pk, "name": name},
                request=request,
            )
            for name in sorted(series.previews or {})
        }


class StudySerializer(serializers.ModelSerializer):
    case = serializers.SlugRelatedField(slug_field="reference", read_only=True)
    series = SeriesSerializer(many=True, read_only=True)
    reviewed = serializers.SerializerMethodField()
    deid_report = serializers.SerializerMethodField(
        help_text=(
            "What de-identification removed or replaced (DICOM PS3.15 Annex E). "
            "Quality evidence: shown to the manufacturer's quality assurance, "
            "regulatory (PRRC) and auditor roles (permission "
            "`cases.view_deid_report`); null for everyone else."
        )
    )

    class Meta:
        model = ImagingStudy
        fields = [
            "id",
            "case",
            "study_uid",
            "modality",
            "study_date",
            "description",
            "status",
            "source",
            "series_count",
            "instance_count",
            "proposed_series",
            "quality_report",
            "deid_report",
            "review_findings",
            "reviewed",
            "series",
            "created_at",
        ]

    def get_reviewed(self, study) -> bool:
        return study.review_id is not None

    @extend_schema_field(
        {"type": "object", "additionalProperties": {}, "nullable": True}
    )
    def get_deid_report(self, study) -> dict | None:
        request = self.context.get("request")
        # ModelBackend caches the user's permissions: one query for a whole page.
        if request is None or not request.user.has_perm("cases.view_deid_report"):
            return None
        return study.deid_report


class FindingSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    notes = serializers.CharField(required=False, allow_blank=True)


class ReviewFindingsSerializer(serializers.Serializer):
    motion = FindingSerializer()
    metal_artefacts = FindingSerializer()
    region_coverage = FindingSerializer()
    healthy_side_coverage = FindingSerializer()


class StudyReviewSerializer(serializers.Serializer):
    password = serializers.CharField(style={"input_type": "password"})
    findings = ReviewFindingsSerializer()


class StudyFilter(filters.FilterSet):
    case = filters.NumberFilter(field_name="case_id", help_text="Id of the case.")
    status = filters.ChoiceFilter(choices=ImagingStudy.Status.choices)
    source = filters.ChoiceFilter(choices=ImagingStudy.Source.choices)

    class Meta:
        model = ImagingStudy
        fields = ["case", "status", "source"]


class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    """Imaging studies of the cases you may see (the gate filters by case)."""

    serializer_class = StudySerializer
    queryset = study_queryset()
    filter_backends = FILTER_BACKENDS
    filterset_class = StudyFilter
    ordering_fields = ["created_at", "id"]
    # The services decide (manage_case).
    object_actions = {"review": "view", "evaluate": "view"}

    @extend_schema(
        summary="Sign the visual review of an accepted study",
        request=StudyReviewSerializer,
        responses={200: StudySerializer},
        tags=["imaging"],
    )
    @action(detail=True, methods=["post"])
    def review(self, request, pk=None):
        study = self.get_object()
        payload = StudyReviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        study = services.study_review_sign(
            actor=request.user,
            study=study,
            password=payload.validated_data["password"],
            findings=request.data.get("findings") or {},
        )
        study = study_queryset().get(pk=study.pk)
        return Response(self.get_serializer(study).data)

    @extend_schema(
        summary="Judge a study still receiving now",
        description="For a study whose sender will send nothing more but could "
        "not say so (an interrupted association, a STOW-RS client done early). "
        "409 when the study is judged already or objects are still being ingested.",
        request=None,
        responses={202: EvaluationQueuedSerializer},
        tags=["imaging"],
    )
    @action(detail=True, methods=["post"])
    def evaluate(self, request, pk=None):
        job = services.study_evaluation_request(
            actor=request.user, study=self.get_object()
        )
        return Response(
            {"job": _job_link(request, job)}, status=status.HTTP_202_ACCEPTED
        )


class SeriesViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Series of visible studies, and their PNG previews."""

    # ``preview`` is routed by hand in cases/urls.py: ``…/previews/{name}.png``
    # takes no trailing slash, which the router would add.

    serializer_class = SeriesSerializer
    queryset = ImagingSeries.objects.select_related("study")

    @extend_schema(
        summary="A PNG preview of the series",
        description="Bone-window preview: the middle axial slice at full "
        "resolution, or an axial, coronal or sagittal reconstruction.",
        operation_id="series_preview",
        parameters=[
            OpenApiParameter(
                "name",
                str,
                OpenApiParameter.PATH,
                enum=["middle_axial", "axial", "coronal", "sagittal"],
            )
        ],
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such series or preview"),
        },
        tags=["imaging"],
    )
    def preview(self, request, pk=None, name=None):
        series = self.get_object()
        file_id = (series.previews or {}).get(name)
        stored = StoredFile.objects.filter(pk=file_id).first() if file_id else None
        if stored is None:
            raise NotVisible("The series has no such preview.")
        response = FileResponse(stored_file_open(stored), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response

    def get_queryset(self):
        return series_list_visible_to(self.request.user)
