"""DICOMweb (PS3.18) for the imaging exchange: STOW-RS to send a study for a case,
QIDO-RS to search the de-identified studies one may see, WADO-RS to retrieve them.

STOW-RS reads the ``multipart/related`` body in chunks and writes each part straight
to the staging folder (``stage_chunks``), so no request is held whole in memory. The
target case is the instance's Accession Number, equal to the case reference, unless
the ``X-PSI-Case: <reference>`` header names it. The sender needs the same rights as
for the REST upload, and the case must pass the consent and case gate; accepted parts
go to the ingest job (``ingest_enqueue``).

The Referenced SOP Sequence names the instances accepted for ingest under the UIDs
the sender used (the sender matches them); their Retrieve URLs point at where the
de-identified objects appear once the ingest has stored them: QIDO and WADO only know
de-identified UIDs and values.

Clients authenticate with a token (``Authorization: Token <key>``); a browser
session is accepted for reads only (the views are CSRF-exempt, so writes need the
token). Invisible studies answer 404, as missing ones do.
"""

from __future__ import annotations

import io
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pydicom
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from pydicom.uid import AllTransferSyntaxes
from rest_framework.exceptions import AuthenticationFailed

from cases.imaging import services
from cases.imaging.deid import pseudonymous_uid
from cases.imaging.models import ImagingInstance, ImagingSeries, ImagingStudy
from cases.imaging.staging import stage_chunks, unstage
from cases.selectors import case_list_visible_to
from psi.api.auth import TokenAuthentication
from psi.errors import DomainError
from psi.files import stored_file_open
from psi.permissions import restrict

DICOM_JSON = "application/dicom+json"
_CHUNK = 1024 * 1024
#: Bytes of a part read before staging it: enough for the header of any slice.
_HEAD = 256 * 1024
_MAX_PART_HEADERS = 16 * 1024
_QIDO_LIMIT = 100
_QIDO_MAX = 1000

# PS3.18 Table I.2-1 / PS3.4 Annex GG failure reasons for STOW-RS.
PROCESSING_FAILURE = 0x0110  # 272
SOP_CLASS_NOT_SUPPORTED = 0x0122  # 290
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122  # 49442
DOES_NOT_MATCH = 0xA900  # 43264: e.g. another study than the URL names
CANNOT_UNDERSTAND = 0xC000  # 49152

_PEEK_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
]


class _Unparsable(Exception):
    pass


class _TooLarge(Exception):
    pass


# --- responses and authentication -----------------------------------------------


def _dicom_json(body, status: int = 200, **headers) -> JsonResponse:
    response = JsonResponse(
        body, status=status, safe=False, content_type=DICOM_JSON, json_dumps_params={}
    )
    for name, value in headers.items():
        response[name] = value
    return response


def _problem(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def _user(request):
    """The token's user; a session's user for reads only (no CSRF on writes)."""
    try:
        result = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    if result is not None:
        return result[0]
    user = getattr(request, "user", None)
    if (
        request.method in ("GET", "HEAD")
        and getattr(user, "is_authenticated", False)
        and user.is_active
    ):
        return user
    return None


def _authenticated(view: Callable) -> Callable:
    @csrf_exempt
    def wrapped(request, *args, **kwargs):
        user = _user(request)
        if user is None:
            return _problem(401, "Authentication credentials were not provided.")
        return view(request, user, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _element(vr: str, *values) -> dict:
    values = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _study_url(request, study_uid: str) -> str:
    return request.build_absolute_uri(reverse("dicomweb-study", args=[study_uid]))


def _instance_url(request, study: str, series: str, instance: str) -> str:
    return request.build_absolute_uri(
        reverse("dicomweb-instance", args=[study, series, instance])
    )


# --- the multipart/related reader --------------------------------------------------


def _boundary(content_type: str) -> bytes | None:
    main, _, params = content_type.partition(";")
    if main.strip().lower() != "multipart/related":
        return None
    found = re.search(r'boundary\s*=\s*("([^"]+)"|[^;\s]+)', params, re.IGNORECASE)
    if not found:
        return b""
    return (found.group(2) or found.group(1)).encode("latin-1")


class MultipartReader:
    """The parts of a ``multipart/related`` body read from ``stream`` in chunks
    (RFC 2046): for each part its headers and an iterator over its content, which
    must be consumed before the next part is asked for."""

    def __init__(self, stream, boundary: bytes, chunk: int = _CHUNK) -> None:
        self.stream = stream
        self.chunk = chunk
        self.delimiter = b"\r\n--" + boundary
        self.buffer = b"\r\n"  # the first delimiter may open the body
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _find(self, needle: bytes, limit: int | None = None) -> int:
        while True:
            index = self.buffer.find(needle)
            if index >= 0:
                return index
            if limit is not None and len(self.buffer) > limit:
                raise _Unparsable("The part headers are too long.")
            if not self._fill():
                raise _Unparsable("The multipart body ends too early.")

    def _after_delimiter(self) -> bool:
        """Consume the rest of a delimiter line; False at the closing one."""
        while len(self.buffer) < 2 and self._fill():
            pass
        if self.buffer.startswith(b"--"):
            return False
        end = self._find(b"\r\n", limit=1024)
        if self.buffer[:end].strip(b" \t"):
            raise _Unparsable("A boundary line carries unexpected text.")
        self.buffer = self.buffer[end + 2 :]
        return True

    def _content(self) -> Iterator[bytes]:
        keep = len(self.delimiter)
        while True:
            index = self.buffer.find(self.delimiter)
            if index >= 0:
                if index:
                    yield self.buffer[:index]
                self.buffer = self.buffer[index + keep :]
                return
            if len(self.buffer) > keep:
                out = self.buffer[: -keep + 1]
                self.buffer = self.buffer[-keep + 1 :]
                yield out
            if not self._fill():
                raise _Unparsable("The multipart body ends inside a part.")

    def parts(self) -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        index = self._find(self.delimiter, limit=_MAX_PART_HEADERS)  # preamble
        self.buffer = self.buffer[index + len(self.delimiter) :]
        while self._after_delimiter():
            end = self._find(b"\r\n\r\n", limit=_MAX_PART_HEADERS)
            if end == 0:
                headers = {}
            else:
                headers = {}
                for line in self.buffer[:end].decode("latin-1").split("\r\n"):
                    name, sep, value = line.partition(":")
                    if not sep:
                        raise _Unparsable("A part header is malformed.")
                    headers[name.strip().lower()] = value.strip()
            self.buffer = self.buffer[end + 4 :]
            content = self._content()
            yield headers, content
            for _ in content:  # whatever the caller left unread
                pass


# --- STOW-RS -------------------------------------------------------------------


class _Stow:
    """One STOW-RS request: parts staged per case, and the answer's items."""

    def __init__(self, request, user, study_uid: str | None) -> None:
        self.request = request
        self.user = user
        self.study_uid = study_uid
        self.override = request.headers.get("X-PSI-Case", "").strip()
        self.cases: dict[str, tuple[object | None, str]] = {}
        self.staged: dict[int, list[tuple[str, dict]]] = {}
        self.case_by_id: dict[int, object] = {}
        self.failed: list[dict] = []
        self.warnings: list[str] = []
        self.budget = settings.PSI_UPLOAD_MAX_BYTES
        self.used = 0

    def fail(self, number: int, uids: dict, code: int, text: str) -> None:
        item = {"00081197": _element("US", code)}
        if uids.get("SOPClassUID"):
            item["00081150"] = _element("UI", uids["SOPClassUID"])
        if uids.get("SOPInstanceUID"):
            item["00081155"] = _element("UI", uids["SOPInstanceUID"])
        self.failed.append(item)
        self.warnings.append(text)

    def case_for(self, reference: str):
        """The case a reference names, if the sender may send to it; else None and
        why (a missing and an invisible case read alike)."""
        if reference in self.cases:
            return self.cases[reference]
        case = services.case_for_accession(reference)
        visible = case_list_visible_to(self.user)
        if case is None or not visible.filter(pk=case.pk).exists():
            answer = (None, "No case matches the Accession Number or X-PSI-Case.")
        elif not services._may_send(self.user, case):
            answer = (None, "You may not send imaging for this case.")
        else:
            try:
                services.imaging_gate(case)
                answer = (case, "")
            except DomainError as refusal:
                answer = (None, refusal.message)
        self.cases[reference] = answer
        return answer

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.used += len(chunk)
            if self.used > self.budget:
                raise _TooLarge
            yield chunk

    def part(self, number: int, headers: dict, content: Iterator[bytes]) -> None:
        kind = headers.get("content-type", "application/dicom").split(";")[0]
        if kind.strip().lower() != "application/dicom":
            self.fail(number, {}, SOP_CLASS_NOT_SUPPORTED, "Not application/dicom.")
            return
        head, content = b"", self._counted(content)
        for chunk in content:
            head += chunk
            if len(head) >= _HEAD:
                break
        if head[128:132] != b"DICM" and head.startswith(b"\x02\x00"):
            # A Part 10 object written without its preamble (pydicom's dcmwrite
            # of a dataset read without one, as dicomweb-client sends them).
            head = bytes(128) + b"DICM" + head
        uids = _peek(head)
        if uids is None:
            self.fail(number, {}, CANNOT_UNDERSTAND, "Not a readable DICOM object.")
            return
        if not uids["SOPInstanceUID"] or not uids["SOPClassUID"]:
            self.fail(number, uids, CANNOT_UNDERSTAND, "SOP UIDs are missing.")
            return
        if uids["TransferSyntaxUID"] not in AllTransferSyntaxes:
            self.fail(
                number,
                uids,
                TRANSFER_SYNTAX_NOT_SUPPORTED,
                "Unsupported transfer syntax.",
            )
            return
        if self.study_uid and uids["StudyInstanceUID"] != self.study_uid:
            self.fail(
                number, uids, DOES_NOT_MATCH, "Belongs to another study than the URL."
            )
            return
        reference = self.override or uids["AccessionNumber"]
        case, reason = self.case_for(reference) if reference else (None, "")
        if case is None:
            self.fail(
                number,
                uids,
                PROCESSING_FAILURE,
                reason or "No Accession Number and no X-PSI-Case header.",
            )
            return
        path = stage_chunks(case.pk, itertools.chain((head,), content))
        self.case_by_id[case.pk] = case
        self.staged.setdefault(case.pk, []).append((str(path), uids | {"n": number}))

    def all_paths(self) -> list[str]:
        return [p for items in self.staged.values() for p, _ in items]

    def enqueue(self) -> list[dict]:
        referenced = []
        pending = dict(self.staged)
        for case_id, items in self.staged.items():
            paths = [p for p, _ in items]
            try:
                services.ingest_enqueue(
                    actor=self.user,
                    case=self.case_by_id[case_id],
                    paths=paths,
                    source=ImagingStudy.Source.DICOMWEB,
                )
            except DomainError as refusal:
                unstage(paths)
                for _, uids in items:
                    self.fail(uids["n"], uids, PROCESSING_FAILURE, refusal.message)
                continue
            except BaseException:
                # Files of cases not yet handed to a job would stay behind.
                unstage(p for items in pending.values() for p, _ in items)
                raise
            finally:
                pending.pop(case_id, None)
            for _, uids in items:
                referenced.append(uids)
        return referenced


def _peek(head: bytes) -> dict[str, str] | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True)
    except Exception:  # pydicom raises many types on damaged input
        return None
    out = {k: str(ds.get(k) or "").strip(" \x00") for k in _PEEK_TAGS}
    out["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID") or "")
    return out


def _deid(uid: str) -> str:
    return pseudonymous_uid(uid, settings.UID_SECRET.encode())


def _stow(request, user, study_uid: str | None) -> HttpResponse:
    full_type = request.META.get("CONTENT_TYPE", "")
    boundary = _boundary(full_type)
    if boundary is None or 'type="application/dicom"' not in full_type.replace(
        "type=application/dicom", 'type="application/dicom"'
    ):
        return _problem(
            415, 'Send multipart/related; type="application/dicom" with a boundary.'
        )
    if not boundary:
        return _problem(400, "The multipart/related body has no boundary.")
    stow = _Stow(request, user, study_uid)
    try:
        reader = MultipartReader(request, boundary)
        for number, (headers, content) in enumerate(reader.parts(), 1):
            stow.part(number, headers, content)
    except _Unparsable as problem:
        unstage(stow.all_paths())
        return _problem(400, str(problem))
    except _TooLarge:
        unstage(stow.all_paths())
        return _problem(413, "The request is larger than the upload limit.")
    except BaseException:
        unstage(stow.all_paths())
        raise
    referenced = stow.enqueue()
    if not referenced and not stow.failed:
        return _problem(400, "The request holds no DICOM object.")
    body: dict = {}
    studies = {u["StudyInstanceUID"] for u in referenced}
    if len(studies) == 1:
        body["00081190"] = _element("UR", _study_url(request, _deid(studies.pop())))
    if referenced:
        body["00081199"] = _element(
            "SQ",
            *[
                {
                    "00081150": _element("UI", u["SOPClassUID"]),
                    "00081155": _element("UI", u["SOPInstanceUID"]),
                    "00081190": _element(
                        "UR",
                        _instance_url(
                            request,
                            _deid(u["StudyInstanceUID"]),
                            _deid(u["SeriesInstanceUID"]),
                            _deid(u["SOPInstanceUID"]),
                        ),
                    ),
                }
                for u in referenced
            ],
        )
    if stow.failed:
        body["00081198"] = _element("SQ", *stow.failed)
    status = 200 if not stow.failed else 202 if referenced else 409
    headers = {}
    if stow.warnings:
        # The reasons, each once (no identity: they name rules, not people).
        text = "; ".join(sorted(set(stow.warnings))).replace('"', "'")
        text = text.encode("ascii", "replace").decode()[:500]
        headers["Warning"] = f'299 psi "{text}"'
    return _dicom_json(body, status, **headers)


# --- QIDO-RS ---------------------------------------------------------------------


def _page(request, queryset):
    try:
        limit = min(int(request.GET.get("limit", _QIDO_LIMIT)), _QIDO_MAX)
        offset = max(int(request.GET.get("offset", 0)), 0)
    except ValueError:
        return None
    return queryset[offset : offset + max(limit, 0)]


def _uid_param(request, keyword: str, tag: str) -> list[str]:
    raw = request.GET.get(keyword) or request.GET.get(tag) or ""
    return [v for v in re.split(r"[,\\]", raw) if v]


def _studies(user):
    return restrict(ImagingStudy.objects.all(), user)


def _search_studies(request, user) -> HttpResponse:
    queryset = _studies(user).order_by("-created_at", "-pk")
    if uids := _uid_param(request, "StudyInstanceUID", "0020000D"):
        queryset = queryset.filter(study_uid__in=uids)
    accession = request.GET.get("AccessionNumber") or request.GET.get("00080050")
    if accession:
        queryset = queryset.filter(case__reference=accession)
    rows = _page(
        request,
        queryset.values(
            "pk",
            "study_uid",
            "study_date",
            "description",
            "series_count",
            "instance_count",
            "case__reference",
            "case__patient__pseudonym",
        ),
    )
    if rows is None:
        return _problem(400, "limit and offset are whole numbers.")
    rows = list(rows)
    modalities: dict[int, set[str]] = {}
    for study_id, modality in ImagingSeries.objects.filter(
        study_id__in=[r["pk"] for r in rows]
    ).values_list("study_id", "modality"):
        if modality:
            modalities.setdefault(study_id, set()).add(modality)
    return _dicom_json(
        [
            {
                "00080020": _element(
                    "DA", r["study_date"].strftime("%Y%m%d") if r["study_date"] else ""
                ),
                "00080050": _element("SH", r["case__reference"]),
                "00080061": _element("CS", *sorted(modalities.get(r["pk"], ()))),
                "00081030": _element("LO", r["description"]),
                "00081190": _element("UR", _study_url(request, r["study_uid"])),
                "00100010": _element(
                    "PN", {"Alphabetic": r["case__patient__pseudonym"]}
                ),
                "00100020": _element("LO", r["case__patient__pseudonym"]),
                "0020000D": _element("UI", r["study_uid"]),
                "00201206": _element("IS", r["series_count"]),
                "00201208": _element("IS", r["instance_count"]),
            }
            for r in rows
        ]
    )


@_authenticated
def search_series(request, user, study: str) -> HttpResponse:
    """QIDO-RS: the series of a study."""
    queryset = restrict(ImagingSeries.objects.all(), user).filter(
        study__study_uid=study
    )
    if uids := _uid_param(request, "SeriesInstanceUID", "0020000E"):
        queryset = queryset.filter(series_uid__in=uids)
    rows = _page(
        request,
        queryset.order_by("series_number", "pk").values(
            "series_uid", "series_number", "modality", "description", "instance_count"
        ),
    )
    if rows is None:
        return _problem(400, "limit and offset are whole numbers.")
    return _dicom_json(
        [
            {
                "00080060": _element("CS", r["modality"]),
                "0008103E": _element("LO", r["description"]),
                "0020000D": _element("UI", study),
                "0020000E": _element("UI", r["series_uid"]),
                "00200011": _element("IS", r["series_number"]),
                "00201209": _element("IS", r["instance_count"]),
            }
            for r in rows
        ]
    )


def _instances(user, study: str, series: str | None = None, instance=None):
    queryset = restrict(ImagingInstance.objects.all(), user).filter(
        study__study_uid=study
    )
    if series is not None:
        queryset = queryset.filter(series__series_uid=series)
    if instance is not None:
        queryset = queryset.filter(sop_instance_uid=instance)
    return queryset


@_authenticated
def search_instances(request, user, study: str, series: str) -> HttpResponse:
    """QIDO-RS: the instances of a series."""
    queryset = _instances(user, study, series)
    if uids := _uid_param(request, "SOPInstanceUID", "00080018"):
        queryset = queryset.filter(sop_instance_uid__in=uids)
    rows = _page(
        request,
        queryset.order_by("position", "instance_number", "pk").values(
            "sop_instance_uid", "sop_class_uid", "instance_number"
        ),
    )
    if rows is None:
        return _problem(400, "limit and offset are whole numbers.")
    return _dicom_json(
        [
            {
                "00080016": _element("UI", r["sop_class_uid"]),
                "00080018": _element("UI", r["sop_instance_uid"]),
                "00081190": _element(
                    "UR", _instance_url(request, study, series, r["sop_instance_uid"])
                ),
                "0020000D": _element("UI", study),
                "0020000E": _element("UI", series),
                "00200013": _element("IS", r["instance_number"]),
            }
            for r in rows
        ]
    )


# --- WADO-RS ---------------------------------------------------------------------


def _files(user, study, series=None, instance=None) -> list:
    return [
        i.file
        for i in _instances(user, study, series, instance)
        .select_related("file")
        .order_by("series_id", "position", "instance_number", "pk")
    ]


def _multipart(request, files: list) -> StreamingHttpResponse:
    boundary = uuid.uuid4().hex
    opening = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    closing = f"--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        for stored in files:
            yield opening
            with stored_file_open(stored) as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
            yield b"\r\n"
        yield closing

    async def abody() -> AsyncIterator[bytes]:
        # Under ASGI a synchronous iterator would be read whole into memory first.
        read = sync_to_async(lambda handle: handle.read(_CHUNK), thread_sensitive=False)
        for stored in files:
            yield opening
            handle = await sync_to_async(stored_file_open, thread_sensitive=False)(
                stored
            )
            try:
                while chunk := await read(handle):
                    yield chunk
            finally:
                handle.close()
            yield b"\r\n"
        yield closing

    return StreamingHttpResponse(
        abody() if isinstance(request, ASGIRequest) else body(),
        content_type=(
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        ),
    )


def _metadata(files: list) -> JsonResponse:
    def drop_bulk(element) -> str:
        return ""

    out = []
    for stored in files:
        with stored_file_open(stored) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        data = ds.to_json_dict(
            bulk_data_threshold=1024, bulk_data_element_handler=drop_bulk
        )
        out.append({tag: v for tag, v in data.items() if "BulkDataURI" not in v})
    return _dicom_json(out)


def _retrieve(request, user, metadata: bool, **uids) -> HttpResponse:
    files = _files(user, **uids)
    if not files:
        return _problem(404, "No such study, series or instance.")
    return _metadata(files) if metadata else _multipart(request, files)


# --- views -----------------------------------------------------------------------


@_authenticated
def studies(request, user) -> HttpResponse:
    """``GET``: QIDO-RS search for studies; ``POST``: STOW-RS."""
    if request.method == "POST":
        return _stow(request, user, None)
    if request.method in ("GET", "HEAD"):
        return _search_studies(request, user)
    return _problem(405, "Use GET or POST.")


@_authenticated
def study(request, user, study: str) -> HttpResponse:
    """``GET``: WADO-RS of a study; ``POST``: STOW-RS into that study."""
    if request.method == "POST":
        return _stow(request, user, study)
    return _retrieve(request, user, False, study=study)


@_authenticated
def study_metadata(request, user, study: str) -> HttpResponse:
    return _retrieve(request, user, True, study=study)


@_authenticated
def series(request, user, study: str, series: str) -> HttpResponse:
    return _retrieve(request, user, False, study=study, series=series)


@_authenticated
def series_metadata(request, user, study: str, series: str) -> HttpResponse:
    return _retrieve(request, user, True, study=study, series=series)


@_authenticated
def instance(request, user, study: str, series: str, instance: str) -> HttpResponse:
    return _retrieve(
        request, user, False, study=study, series=series, instance=instance
    )


@_authenticated
def instance_metadata(
    request, user, study: str, series: str, instance: str
) -> HttpResponse:
    return _retrieve(request, user, True, study=study, series=series, instance=instance)
