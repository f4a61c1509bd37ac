"""STOW-RS (PS3.18 §10.5): a ``multipart/related`` body of DICOM objects, each
staged for the case it names and handed to the ingest job of that case."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator

import pydicom
from django.conf import settings
from django.http import HttpResponse
from django.utils.http import parse_header_parameters
from pydicom.uid import AllTransferSyntaxes

from cases.imaging import services
from cases.imaging.dicomweb.common import (
    deid,
    dicom_json,
    element,
    instance_url,
    problem,
    study_url,
    warning,
)
from cases.imaging.dicomweb.multipart import MultipartReader, Unparsable
from cases.imaging.models import ImagingStudy
from cases.imaging.staging import stage_chunks, unstage
from cases.selectors import case_list_visible_to
from psi.errors import DomainError

#: Bytes of a part read before staging it: enough for the header of any slice.
_HEAD = 256 * 1024

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


class _TooLarge(Exception):
    pass


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

    def fail(self, uids: dict, code: int, text: str) -> None:
        item = {"00081197": element("US", code)}
        if uids.get("SOPClassUID"):
            item["00081150"] = element("UI", uids["SOPClassUID"])
        if uids.get("SOPInstanceUID"):
            item["00081155"] = element("UI", uids["SOPInstanceUID"])
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
        elif not services.may_send(self.user, case):
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

    def part(self, headers: dict, content: Iterator[bytes]) -> None:
        kind = headers.get("content-type", "application/dicom").split(";")[0]
        if kind.strip().lower() != "application/dicom":
            self.fail({}, SOP_CLASS_NOT_SUPPORTED, "Not application/dicom.")
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
            self.fail({}, CANNOT_UNDERSTAND, "Not a readable DICOM object.")
            return
        if not uids["SOPInstanceUID"] or not uids["SOPClassUID"]:
            self.fail(uids, CANNOT_UNDERSTAND, "SOP UIDs are missing.")
            return
        if uids["TransferSyntaxUID"] not in AllTransferSyntaxes:
            self.fail(
                uids,
                TRANSFER_SYNTAX_NOT_SUPPORTED,
                "Unsupported transfer syntax.",
            )
            return
        if self.study_uid and uids["StudyInstanceUID"] != self.study_uid:
            self.fail(uids, DOES_NOT_MATCH, "Belongs to another study than the URL.")
            return
        reference = self.override or uids["AccessionNumber"]
        case, reason = self.case_for(reference) if reference else (None, "")
        if case is None:
            self.fail(
                uids,
                PROCESSING_FAILURE,
                reason or "No Accession Number and no X-PSI-Case header.",
            )
            return
        path = stage_chunks(case.pk, itertools.chain((head,), content))
        self.case_by_id[case.pk] = case
        self.staged.setdefault(case.pk, []).append((str(path), uids))

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
                    # STOW-RS has no end of study: the study is judged once it
                    # has been quiet for PSI_STUDY_STABLE_SECONDS.
                    complete=None,
                )
            except DomainError as refusal:
                unstage(paths)
                for _, uids in items:
                    self.fail(uids, PROCESSING_FAILURE, refusal.message)
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


def stow(request, user, study_uid: str | None) -> HttpResponse:
    """Store the objects of a STOW-RS request; ``study_uid`` when the URL names
    the study they must belong to."""
    media_type, params = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    if (
        media_type != "multipart/related"
        or params.get("type", "").lower() != "application/dicom"
    ):
        return problem(
            415, 'Send multipart/related; type="application/dicom" with a boundary.'
        )
    boundary = params.get("boundary", "").encode("latin-1")
    if not boundary:
        return problem(400, "The multipart/related body has no boundary.")
    batch = _Stow(request, user, study_uid)
    try:
        reader = MultipartReader(request, boundary)
        for headers, content in reader.parts():
            batch.part(headers, content)
    except Unparsable as unparsable:
        unstage(batch.all_paths())
        return problem(400, str(unparsable))
    except _TooLarge:
        unstage(batch.all_paths())
        return problem(413, "The request is larger than the upload limit.")
    except BaseException:
        unstage(batch.all_paths())
        raise
    referenced = batch.enqueue()
    if not referenced and not batch.failed:
        return problem(400, "The request holds no DICOM object.")
    body: dict = {}
    studies = {u["StudyInstanceUID"] for u in referenced}
    if len(studies) == 1:
        body["00081190"] = element("UR", study_url(request, deid(studies.pop())))
    if referenced:
        body["00081199"] = element(
            "SQ",
            *[
                {
                    "00081150": element("UI", u["SOPClassUID"]),
                    "00081155": element("UI", u["SOPInstanceUID"]),
                    "00081190": element(
                        "UR",
                        instance_url(
                            request,
                            deid(u["StudyInstanceUID"]),
                            deid(u["SeriesInstanceUID"]),
                            deid(u["SOPInstanceUID"]),
                        ),
                    ),
                }
                for u in referenced
            ],
        )
    if batch.failed:
        body["00081198"] = element("SQ", *batch.failed)
    status = 200 if not batch.failed else 202 if referenced else 409
    headers = {}
    if batch.warnings:
        # The reasons, each once (they name rules, not people).
        headers["Warning"] = warning("; ".join(sorted(set(batch.warnings))))
    return dicom_json(body, status, **headers)
