"""The per-file half of the ingest: read, check, de-identify and store one staged
object, with no database row written but none needed to undo.

Each file is opened once. Its header is parsed (never its pixel data), checked,
remembered in the form the planning-quality checks read, and de-identified in
memory; the new header is written with the original pixel data element copied
behind it byte for byte, and the result is hard-linked into content-addressed
storage. A plain object (a CT or MR slice as scanners send them) read into memory
is de-identified by the intake's ``deid.plain.PlainMemo``, which meets each distinct
element of the patient's series once (a quarter of a millisecond a slice); any
other object goes through pydicom (``deid.split``, about a millisecond).

The end of each file (hashing it, writing it and starting its way to the device,
its link into storage) runs on a thread of the intake while the next file is
parsed: the hash (0.4 ms of a CT slice) and the copy use a second core when one is
free, and the device works while the CPU does; ``sync`` then waits only for what
the device has not done yet.
At most ``WRITES_IN_FLIGHT`` files wait for it (each holds its buffer).

What comes out is an :class:`Intake`: the objects ready for their rows (with their
``StoredFile`` rows unsaved, so the study's transaction saves them in one go), the
failures with a reason per file, the duplicates and the objects quarantined for a
person to review.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.uid import AllTransferSyntaxes

from cases.imaging import quality
from cases.imaging.deid import deidentify_stream, read_split, split_bytes
from cases.imaging.deid.elements import text_value
from cases.imaging.deid.plain import PlainMemo
from cases.imaging.staging import RECORD_MAX_BYTES, Staged
from psi.crypto import identity_hmac
from psi.durable import DurableFile
from psi.files import stored_file_adopt, stored_files_sync
from psi.models import StoredFile

log = logging.getLogger(__name__)

#: Attributes without which an object cannot be placed or checked.
MANDATORY = (
    ("SOPInstanceUID", "SOP Instance UID"),
    ("StudyInstanceUID", "Study Instance UID"),
    ("SeriesInstanceUID", "Series Instance UID"),
    ("SOPClassUID", "SOP Class UID"),
    ("Modality", "Modality"),
)
UNREADABLE = "Not a DICOM file, or the file is truncated."
_TRANSFER_SYNTAX = 0x00020010
_PATIENT_ID = 0x00100020
_CHARACTER_SET = 0x00080005
#: Files written on the intake's thread but not yet on disk, at most.
WRITES_IN_FLIGHT = 4
#: Files up to this size are read whole and parsed in memory; larger ones (a
#: multi-frame object) are read from the file, their pixels never held. The
#: records of a batch file are read whole: staging keeps them to this size.
IN_MEMORY_BYTES = RECORD_MAX_BYTES


def text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def uid(ds, keyword: str) -> str:
    """A UID or code string as text, read from the raw element without decoding
    it (pydicom's decoding costs more than the rest of using it)."""
    return text_value(ds, tag_for_keyword(keyword))


class _Patient:
    """The patient of a batch's first object, for the one-patient check.

    The check compares the raw Patient ID (what the scanner wrote, padding
    aside) and decodes only one that differs: the slices of a series all carry
    the same bytes, and decoding them costs more than the rest of the check."""

    def __init__(self, ds) -> None:
        self._ds = ds
        self._raw = _raw_id(ds)
        self.id = text(ds, "PatientID")

    def same(self, ds) -> bool:
        raw = _raw_id(ds)
        if raw is not None and raw == self._raw:
            return True
        return text(ds, "PatientID") == self.id

    def identity(self) -> dict[str, str]:
        """The first object's Patient ID and Name, as received."""
        return {"id": self.id, "name": text(self._ds, "PatientName")}


def _raw_id(ds) -> tuple[bytes, bytes] | None:
    """The Patient ID as read, with the character set it is written in (padding
    stripped); None where pydicom has already decoded either, or there is none."""
    charset = ds.get_item(_CHARACTER_SET, keep_deferred=True)
    patient_id = ds.get_item(_PATIENT_ID, keep_deferred=True)
    if not isinstance(patient_id, RawDataElement) or not (
        charset is None or isinstance(charset, RawDataElement)
    ):
        return None
    return (
        (charset.value or b"").rstrip(b" \x00") if charset is not None else b"",
        (patient_id.value or b"").rstrip(b" \x00"),
    )


@dataclass
class Received:
    """One object de-identified and stored, waiting for its rows."""

    hmac: str
    sop_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    original: dict[str, str]
    transfer_syntax: str
    header: quality.SliceHeader
    file: StoredFile | None  # unsaved until the study's rows are written
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def instance_number(self) -> int | None:
        return self.header.instance_number

    @property
    def position(self) -> float | None:
        return float(self.header.position[2]) if self.header.position else None


_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(quality.SliceHeader))
_HEADER_NAMES = frozenset(_HEADER_FIELDS)


def header_as_json(header: quality.SliceHeader) -> dict[str, Any]:
    """The header as stored on the instance row (tuples become lists). Its
    values are numbers, text and tuples of them: read field by field
    (``dataclasses.asdict`` deep-copies each, a tenth of a millisecond a slice)."""
    data = {}
    for name in _HEADER_FIELDS:
        value = getattr(header, name)
        data[name] = list(value) if isinstance(value, tuple) else value
    return data


def header_from_json(data: dict[str, Any]) -> quality.SliceHeader:
    return quality.SliceHeader(
        **{
            name: tuple(value) if isinstance(value, list) else value
            for name, value in data.items()
            if name in _HEADER_NAMES
        }
    )


class Intake:
    """Reads the staged files of one batch into de-identified, stored objects.

    Used as a context manager: leaving it waits for the files still being written.
    ``known`` holds the keyed HMACs of the original SOP Instance UIDs the case
    already has (a re-sent object is a duplicate, never a second copy);
    ``reviewed_study_uids`` the de-identified UIDs of studies whose review is
    signed (they take nothing more).
    """

    def __init__(
        self,
        *,
        pseudonym: str,
        date_offset_days: int,
        workdir: Path,
        known: set[str],
        reviewed_study_uids: set[str],
        sender,
    ) -> None:
        self.workdir = workdir
        self.known = known
        self.reviewed = reviewed_study_uids
        self.sender = sender
        self.received: list[Received] = []
        self.failed: list[dict[str, str]] = []
        self.duplicates = 0
        self.quarantined: list[dict[str, Any]] = []
        self.reports: list[dict] = []
        self._study_uid: str | None = None  # original, for the one-study check
        self._patient: _Patient | None = None  # of the first object
        self._meta: dict[str, dict[str, Any]] = {}  # by de-identified series UID
        # Each write and what its stored file belongs to: a Received, or a
        # quarantine entry (its "stored" key).
        self._writes: list[tuple[Future, Received | dict[str, Any]]] = []
        self._writer: ThreadPoolExecutor | None = None
        self._memo: PlainMemo | None = None  # the patient's plain objects
        self._batch_files: dict[Path, int] = {}  # open descriptors, by path
        self._deid_arguments = {
            "pseudonym": pseudonym,
            "uid_secret": settings.UID_SECRET.encode(),
            "date_offset_days": date_offset_days,
        }

    def __enter__(self) -> Intake:
        return self

    def __exit__(self, *exc_info) -> None:
        while self._batch_files:
            os.close(self._batch_files.popitem()[1])
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def sync(self) -> None:
        """Wait for the writes, then make every file this intake stored durable
        (before the rows naming them commit, and before the staged originals go).
        A write that failed raises here: a failure of ours, so the job is retried."""
        for future, owner in self._writes:
            stored = future.result()
            if isinstance(owner, Received):
                owner.file = stored
            else:
                owner["stored"] = stored
        self._writes.clear()
        stored_files_sync(
            [r.file for r in self.received] + [q["stored"] for q in self.quarantined]
        )

    def fail(self, index: int, reason: str) -> None:
        self.failed.append({"file": f"#{index}", "reason": reason})

    def take(self, index: int, staged: Staged) -> None:
        """Read the staged object (the ``index``-th of the batch).

        Damaged input fails the object with a reason; a failure of our own (the
        disk, the storage) raises, so the job is retried."""
        try:
            if staged.is_record:
                prepared = self._prepare(index, data=self._record(staged))
            else:
                with staged.path.open("rb") as fp:
                    if os.fstat(fp.fileno()).st_size <= IN_MEMORY_BYTES:
                        prepared = self._prepare(index, data=fp.read())
                    else:
                        prepared = self._prepare(index, fp=fp)
        except Exception:  # pydicom raises many types on damaged input
            log.warning("imaging object %s of a batch unreadable", index)
            self.fail(index, UNREADABLE)
            return
        if prepared is not None:
            self._keep(index, *prepared)

    def _record(self, staged: Staged) -> bytes:
        """A record of a batch file: the file is opened once for all of them."""
        fd = self._batch_files.get(staged.path)
        if fd is None:
            fd = self._batch_files[staged.path] = os.open(
                staged.path, os.O_RDONLY | os.O_CLOEXEC
            )
        return staged.read_from(fd)

    def _prepare(self, index: int, *, data: bytes | None = None, fp=None):
        """Check and de-identify one object (``data``, or the file ``fp`` read as a
        stream) into the work folder; None if it fails or is a duplicate."""
        kwargs = self._deid_arguments
        plain = split = None
        if data is not None:
            if self._memo is None:
                self._memo = PlainMemo(**kwargs)
            plain = self._memo.deidentify(data)
            if plain is None:
                split = split_bytes(data)
                fp = io.BytesIO(data)  # the general path reads it as a file
        else:
            split = read_split(fp)
        ds = plain.source if plain is not None else split.header
        missing = [label for keyword, label in MANDATORY if not uid(ds, keyword)]
        if missing:
            self.fail(index, f"Missing mandatory attributes: {', '.join(missing)}.")
            return None
        syntax = text_value(ds.file_meta, _TRANSFER_SYNTAX)
        if syntax not in AllTransferSyntaxes:
            self.fail(index, "Unsupported transfer syntax.")
            return None
        if plain is None and not split.complete:
            self.fail(index, "The file is truncated: its image data is incomplete.")
            return None
        original = {
            "study": uid(ds, "StudyInstanceUID"),
            "series": uid(ds, "SeriesInstanceUID"),
            "instance": uid(ds, "SOPInstanceUID"),
        }
        if self._study_uid is None:
            self._study_uid = original["study"]
            self._patient = _Patient(ds)
        elif original["study"] != self._study_uid:
            self.fail(index, "Belongs to a different study than the rest of the batch.")
            return None
        elif not self._patient.same(ds):
            self.fail(
                index, "Belongs to a different patient than the rest of the batch."
            )
            return None
        digest = identity_hmac(original["instance"])
        if digest in self.known:
            self.duplicates += 1
            return None
        out_path = self.workdir / f"{uuid.uuid4().hex}.dcm"
        # Closed (written) on the intake's thread, and synced with the rest of the
        # batch before its rows commit (``sync``).
        handle = DurableFile(out_path, sync=False, digest=True)
        try:
            if plain is not None:
                result = plain
                plain.write(handle)
            else:
                result = deidentify_stream(fp, split, handle, **kwargs)
            out = result.dataset
            if uid(out, "StudyInstanceUID") in self.reviewed:
                handle.discard()
                self.fail(
                    index,
                    "The study was already reviewed and signed; send new images "
                    "as a new study.",
                )
                return None
            transfer_syntax = text_value(out.file_meta, _TRANSFER_SYNTAX) or syntax
            series_uid = uid(out, "SeriesInstanceUID")
            received = Received(
                hmac=digest,
                sop_uid=uid(out, "SOPInstanceUID"),
                sop_class_uid=uid(out, "SOPClassUID"),
                series_uid=series_uid,
                study_uid=uid(out, "StudyInstanceUID"),
                original=original,
                transfer_syntax=transfer_syntax,
                header=quality.SliceHeader.from_dataset(out, transfer_syntax),
                file=None,
                meta=self._series_meta(series_uid, out),
            )
        except BaseException:  # the file is not kept: nor its descriptor, buffer
            handle.discard()
            raise
        self.known.add(digest)
        self.reports.append(result.report)
        return received, handle, result.quarantine_reason

    def _series_meta(self, series_uid: str, out) -> dict[str, Any]:
        """What the study and series rows take from an object, read from the
        first object of each series of the batch (the rest repeat it)."""
        meta = self._meta.get(series_uid)
        if meta is None:
            meta = self._meta[series_uid] = {
                "modality": uid(out, "Modality")[:16],
                "study_description": text(out, "StudyDescription")[:200],
                "series_description": text(out, "SeriesDescription")[:200],
                "study_date": out.get("StudyDate"),
                "patient": self._patient.identity(),
            }
        return meta

    def _keep(
        self,
        index: int,
        received: Received,
        handle: DurableFile,
        quarantine,
    ) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="intake-write")
        future = self._writer.submit(self._store, handle)
        if quarantine:
            entry = {"file": f"#{index}", "stored": None, "reason": str(quarantine)}
            self.quarantined.append(entry)
            self._writes.append((future, entry))
        else:
            self.received.append(received)
            self._writes.append((future, received))
        if len(self._writes) > WRITES_IN_FLIGHT:
            # The thread writes in order: once this one is done, at most
            # WRITES_IN_FLIGHT are waiting. A failed write raises here already.
            self._writes[-WRITES_IN_FLIGHT - 1][0].result()

    def _store(self, handle: DurableFile) -> StoredFile:
        """On the intake's thread: finish writing (and hashing) the file, then
        adopt it into storage (an unsaved row)."""
        try:
            handle.close()
        except BaseException:
            handle.discard()
            raise
        return stored_file_adopt(
            actor=self.sender,
            path=handle.path,
            content_type="application/dicom",
            digest=handle.digest,
        )
