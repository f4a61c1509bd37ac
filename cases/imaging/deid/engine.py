"""The walk over a dataset that applies the compiled rules, and the marking after it.

Speed: an element that is kept is never decoded (the raw bytes read from the file are
written back). Replacement values are ASCII text (UIDs, dates, names, dummies), so
they are put in as raw elements, already encoded; pydicom writes raw elements as they
are. The marking sequences are encoded once per options and transfer syntax.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from .burned_in import quarantine_reason
from .elements import (
    DEFAULT_ENCODING,
    Encoding,
    encoding_of,
    text_element,
    text_value,
    values_of,
)
from .marking import mark, replace_file_meta
from .options import DEFAULT_OPTIONS, TOOL_NAME, TOOL_VERSION, DeidOptions, Temporal
from .report import ReportBuilder, totals
from .split import Split, read_split, write_split
from .table import (
    CLASSIC_IMAGE_SOP_CLASSES,
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    KEEP_REPLACING_UIDS,
    PSEUDONYM,
    REMOVE,
    SHIFT,
    UID,
    Profile,
    Rule,
    compile_profile,
    dictionary_vr,
    label_for,
    load_table,
    unlisted_rule,
)
from .values import (
    MIN_SECRET_BYTES,
    clean_descriptor,
    dummy_value,
    is_registered_uid,
    pseudonymous_uid,
    shift_da,
    shift_dt,
)

# Values above this size stay in the file until written: the pixel data is read once,
# by the writer, and never decoded.
DEFER_SIZE = 16 * 1024
MAX_OFFSET_DAYS = 100 * 366
_PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TEXT_VRS = frozenset({"LO", "SH", "UC", "ST", "LT", "UT"})
_MULTI_VALUED_TEXT_VRS = frozenset({"LO", "SH", "UC"})
_ASCII_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM"}
    | {"UC", "UI", "UR", "UT"}
)
_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS_UID = BaseTag(0x00080016)
_SOP_INSTANCE_UID = BaseTag(0x00080018)


@dataclass(frozen=True)
class DeidResult:
    """The de-identified dataset (the one passed in, changed in place), its report,
    and why it must wait for a person's review (``None``: it need not)."""

    dataset: Dataset
    report: dict[str, Any]
    quarantine_reason: str | None


def _sequence(ds: Dataset, tag: BaseTag, report: ReportBuilder) -> Sequence | None:
    """The items of a sequence element; when the element cannot be decoded as a
    sequence (a vendor's UN, a broken encoding), it is removed and noted."""
    try:
        value = ds[tag].value
    except Exception:  # any decoding failure means the same here
        value = None
    if isinstance(value, Sequence):
        return value
    del ds[tag]
    report.add("removed", label_for(tag))
    report.notes.add(f"{label_for(tag)}: not decodable as a sequence, removed")
    return None


class _Walker:
    """One object's de-identification: the rules, the keys, and what was done."""

    __slots__ = (
        "profile",
        "secret",
        "offset",
        "pseudonym",
        "report",
        "safe_private",
        "encoding",
    )

    def __init__(
        self,
        profile: Profile,
        secret: bytes,
        offset: int,
        pseudonym: str,
        encoding: Encoding,
    ) -> None:
        self.profile = profile
        self.secret = secret
        self.offset = offset
        self.pseudonym = pseudonym
        self.encoding = encoding
        self.report = ReportBuilder()
        options = profile.options
        self.safe_private = (
            options.safe_private_tags if options.retain_safe_private else frozenset()
        )

    # -- the walk ----------------------------------------------------------------------

    def walk(self, ds: Dataset, rules: dict[int, Rule]) -> None:
        private: list[BaseTag] = []
        overlays: list[int] = []
        for tag, elem in list(ds.items()):
            self.step(ds, tag, elem, rules, private, overlays)
        if private:
            self.private(ds, private)
        add = self.report.add
        for group in overlays:
            # An Overlay Plane whose Overlay Data is gone is invalid, and its
            # Description, Label and ROI statistics can identify: the whole group goes.
            for tag in [t for t in ds.keys() if t >> 16 == group]:  # noqa: SIM118
                del ds[tag]
                add("removed", f"Overlay plane ({group:04X},xxxx)")

    def step(
        self,
        ds: Dataset,
        tag: BaseTag,
        elem: DataElement | RawDataElement,
        rules: dict[int, Rule],
        private: list[BaseTag],
        overlays: list[int],
    ) -> None:
        """One element of ``ds``: its rule applied. Private elements are put in
        ``private`` and the groups of overlay data in ``overlays``, for the walk
        to finish with once every element has had its step."""
        group = tag >> 16
        if group & 1:
            private.append(tag)
            return
        rule = rules.get(tag)
        if rule is None:
            if 0x6000 <= group <= 0x60FF and tag & 0xFFFF in (0x3000, 0x4000):
                if tag & 0xFFFF == 0x3000:
                    rule = self.profile.overlay_data
                    overlays.append(group)
                else:
                    rule = self.profile.overlay_comments
            elif 0x5000 <= group <= 0x50FF:
                rule = self.profile.curve
            else:
                rule = unlisted_rule(self.profile, tag)
        action = rule.action
        # The common cases first: most elements are kept, many removed.
        if action == KEEP:
            # By the dictionary or by the file: a sequence sent under another VR
            # is opened (or removed), never passed on unread.
            is_sequence = rule.vr == "SQ" or elem.VR == "SQ"
            if is_sequence and not self.walk_sequence(ds, tag):
                return
            self.report.add("kept", rule.label)
        elif action == REMOVE:
            del ds[tag]
            self.report.add("removed", rule.label)
        else:
            self.apply(ds, tag, elem, rule, action)

    def apply(
        self,
        ds: Dataset,
        tag: BaseTag,
        elem: DataElement | RawDataElement,
        rule: Rule,
        action: str,
    ) -> None:
        add = self.report.add
        vr = elem.VR
        if vr is None or vr == "UN":
            vr = rule.vr or "UN"
        vr = vr.split(" or ", 1)[0]
        if action == REMOVE:
            del ds[tag]
            add("removed", rule.label)
        elif action in (KEEP, KEEP_REPLACING_UIDS):
            if vr == "SQ" or rule.vr == "SQ":
                if not self.walk_sequence(ds, tag):
                    return
            elif action == KEEP_REPLACING_UIDS:
                self.apply(ds, tag, elem, rule, UID if vr == "UI" else REMOVE)
                return
            add("kept", rule.label)
        elif action == UID:
            if vr != "UI":
                self.apply(ds, tag, elem, rule, REMOVE)
                return
            self.replace_uids(ds, tag, elem)
            add("uid", rule.label)
        elif action == EMPTY:
            ds[tag] = RawDataElement(tag, vr, 0, b"", 0, *self.encoding)
            add("emptied", rule.label)
        elif action == DUMMY:
            if self.dummy(ds, tag, elem, vr):
                add("dummy", rule.label)
        elif action == PSEUDONYM:
            ds[tag] = text_element(tag, vr, self.pseudonym, self.encoding)
            add("pseudonym", rule.label)
        elif action == SHIFT:
            self.shift(ds, tag, elem, vr, rule)
        elif action == CLEAN:
            self.clean(ds, tag, elem, vr, rule)
        else:  # pragma: no cover - the table compiler emits nothing else
            raise AssertionError(f"unknown action {action!r}")

    def walk_sequence(self, ds: Dataset, tag: BaseTag) -> bool:
        """De-identify the items of a kept sequence; ``False`` if it could not be
        decoded as one, in which case it is removed (it could hide anything)."""
        sequence = _sequence(ds, tag, self.report)
        if sequence is None:
            return False
        generic = self.profile.generic
        for item in sequence:
            self.walk(item, generic)
        return True

    # -- actions -----------------------------------------------------------------------

    def replace_uids(
        self, ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement
    ) -> None:
        values = values_of(ds, tag, elem)
        if not values:
            return
        secret = self.secret
        new = [
            v if not v or is_registered_uid(v) else pseudonymous_uid(v, secret)
            for v in values
        ]
        ds[tag] = text_element(tag, "UI", "\\".join(new), self.encoding)

    def dummy(
        self, ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement, vr: str
    ) -> bool:
        """Put a dummy value in; ``False`` if the element had to go instead."""
        if vr == "SQ":
            sequence = _sequence(ds, tag, self.report)
            if sequence is None:
                return False
            if len(sequence) == 0:
                sequence.append(Dataset())
            for item in sequence:
                self.dummy_item(item)
        elif vr == "UI":
            if values_of(ds, tag, elem):
                self.replace_uids(ds, tag, elem)
            else:
                uid = pseudonymous_uid(f"dummy/{int(tag):08X}", self.secret)
                ds[tag] = text_element(tag, "UI", uid, self.encoding)
        elif vr in _ASCII_VRS:
            ds[tag] = text_element(tag, vr, str(dummy_value(vr)), self.encoding)
        else:
            ds[tag] = DataElement(tag, vr, dummy_value(vr))
        return True

    def dummy_item(self, item: Dataset) -> None:
        """D on a sequence: its structure stays (so the IOD is still met), every
        value in it becomes a dummy, so nothing of the original is left."""
        add = self.report.add
        retain_uids = self.profile.options.retain_uids
        for tag, elem in list(item.items()):
            if tag >> 16 & 1:
                del item[tag]
                add("removed", label_for(tag))
                continue
            if tag == _SPECIFIC_CHARACTER_SET:
                continue
            vr = elem.VR
            if vr is None or vr == "UN":
                vr = dictionary_vr(tag) or "UN"
            vr = vr.split(" or ", 1)[0]
            if vr == "SQ":
                sequence = _sequence(item, tag, self.report)
                if sequence is None:
                    continue
                for inner in sequence:
                    self.dummy_item(inner)
            elif vr == "UI":
                if retain_uids:
                    add("kept", label_for(tag))
                else:
                    self.replace_uids(item, tag, elem)
                    add("uid", label_for(tag))
                continue
            elif not self.dummy(item, tag, elem, vr):
                continue
            add("dummy", label_for(tag))

    def shift(
        self,
        ds: Dataset,
        tag: BaseTag,
        elem: DataElement | RawDataElement,
        vr: str,
        rule: Rule,
    ) -> None:
        if vr == "TM":  # times of day are kept; only whole days move
            self.report.add("kept", rule.label)
            return
        if vr not in ("DA", "DT"):
            self.apply(ds, tag, elem, rule, rule.fallback)
            return
        values = values_of(ds, tag, elem)
        if not values:
            self.report.add("kept", rule.label)
            return
        shift = shift_da if vr == "DA" else shift_dt
        new = [shift(v, self.offset) for v in values]
        if None in new:
            self.report.notes.add(f"{rule.label}: not a date, basic action applied")
            self.apply(ds, tag, elem, rule, rule.fallback)
            return
        ds[tag] = text_element(tag, vr, "\\".join(new), self.encoding)
        self.report.add("shifted", rule.label)

    def clean(
        self,
        ds: Dataset,
        tag: BaseTag,
        elem: DataElement | RawDataElement,
        vr: str,
        rule: Rule,
    ) -> None:
        if vr not in _TEXT_VRS:
            self.apply(ds, tag, elem, rule, rule.fallback)
            return
        value = ds[tag].value  # decoded with the dataset's character set
        if value is None or value == "":
            self.report.add("kept", rule.label)
            return
        if vr in _MULTI_VALUED_TEXT_VRS and not isinstance(value, str):
            values = [str(v) for v in value]
        elif vr in _MULTI_VALUED_TEXT_VRS:
            values = value.split("\\")
        else:
            values = [str(value)]
        cleaned = [c for c in map(clean_descriptor, values) if c]
        if not cleaned:
            self.apply(ds, tag, elem, rule, rule.fallback)
            return
        ds[tag] = text_element(tag, vr, "\\".join(cleaned), self.encoding)
        self.report.add("cleaned", rule.label)

    def private(self, ds: Dataset, tags: list[BaseTag]) -> None:
        add = self.report.add
        keep: set[int] = set()
        if self.safe_private:
            creators = {
                (t >> 16, t & 0xFF): text_value(ds, t)
                for t in tags
                if 0x10 <= t & 0xFFFF <= 0xFF
            }
            for t in tags:
                element = t & 0xFFFF
                if element < 0x1000:
                    continue
                group, block = t >> 16, element >> 8
                creator = creators.get((group, block))
                if creator and (creator, group, element & 0xFF) in self.safe_private:
                    keep.update((t, group << 16 | block))
        for t in tags:
            if t in keep:
                is_sequence = ds.get_item(t, keep_deferred=True).VR == "SQ"
                if is_sequence and not self.walk_sequence(ds, t):
                    continue
                add("kept", label_for(t))
            else:
                del ds[t]
                add("removed", label_for(t))


# -- entry points ----------------------------------------------------------------------


def _check_arguments(
    pseudonym: str, uid_secret: bytes, date_offset_days: int, options: DeidOptions
) -> None:
    if not isinstance(options, DeidOptions):
        raise TypeError("options must be a DeidOptions")
    if not isinstance(pseudonym, str) or not _PSEUDONYM.fullmatch(pseudonym):
        raise ValueError(
            "pseudonym must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    if not isinstance(uid_secret, bytes) or len(uid_secret) < MIN_SECRET_BYTES:
        raise ValueError(f"uid_secret must be at least {MIN_SECRET_BYTES} bytes")
    if isinstance(date_offset_days, bool) or not isinstance(date_offset_days, int):
        raise TypeError("date_offset_days must be an int")
    if abs(date_offset_days) > MAX_OFFSET_DAYS:
        raise ValueError(f"date_offset_days beyond {MAX_OFFSET_DAYS} days")
    if options.temporal is Temporal.MODIFIED_DATES and date_offset_days == 0:
        raise ValueError(
            "a zero date offset leaves dates unmodified: pass a non-zero offset, "
            "or use Temporal.FULL_DATES"
        )


def option_notes(options: DeidOptions) -> set[str]:
    """What the report says because of the options alone."""
    if options.retain_safe_private and not options.safe_private_tags:
        return {
            "Retain Safe Private is on, but the pinned table lists no safe private "
            "attribute and none was configured: no private attribute was kept"
        }
    return set()


def object_report(
    ds: Dataset,
    *,
    options: DeidOptions,
    sop_class: str,
    reason: str | None,
    counts: dict[str, dict[str, int]],
    notes: Iterable[str],
    pixel_data: str,
) -> dict[str, Any]:
    """The report of one object (JSON-ready): the tool, table and options, the
    received SOP class, the de-identified ``ds``'s UIDs, what was done, counted
    by attribute, and the notes. It names attributes, never their values."""
    table = load_table()
    return {
        "tool": TOOL_NAME,
        "version": TOOL_VERSION,
        "table": {"edition": table.edition, "sha256": table.sha256},
        "options": options.as_dict(),
        "method_codes": [code for code, _ in options.method_codes],
        "sop_class_uid": sop_class,
        "modality": text_value(ds, BaseTag(0x00080060)),
        "study_instance_uid": text_value(ds, BaseTag(0x0020000D)),
        "series_instance_uid": text_value(ds, BaseTag(0x0020000E)),
        "sop_instance_uid": text_value(ds, _SOP_INSTANCE_UID),
        "pixel_data": pixel_data,
        "quarantine_reason": reason,
        "counts": counts,
        "totals": totals(counts),
        "notes": sorted(notes),
    }


def deidentify(
    ds: Dataset,
    *,
    pseudonym: str,
    uid_secret: bytes,
    date_offset_days: int,
    options: DeidOptions = DEFAULT_OPTIONS,
) -> DeidResult:
    """De-identify ``ds`` in place (PS3.15 Annex E, pinned Table E.1-1, ``options``).

    ``pseudonym`` becomes Patient's Name and Patient ID. ``uid_secret`` keys the UID
    replacement: the same secret maps the same UID to the same new one, in every
    study. ``date_offset_days`` moves every date when ``options.temporal`` is
    MODIFIED_DATES (the caller keeps one offset per patient). Pixel data is neither
    decoded nor changed; objects likely to carry burned-in identity are flagged in
    ``quarantine_reason``, not cleaned.
    """
    _check_arguments(pseudonym, uid_secret, date_offset_days, options)
    profile = compile_profile(options)
    reason = quarantine_reason(ds)
    sop_class = text_value(ds, _SOP_CLASS_UID)
    encoding = encoding_of(ds)
    walker = _Walker(
        profile, uid_secret, date_offset_days, pseudonym, encoding or DEFAULT_ENCODING
    )
    classic = sop_class in CLASSIC_IMAGE_SOP_CLASSES
    walker.walk(ds, profile.top_level if classic else profile.generic)
    replace_file_meta(ds, walker.report)
    mark(ds, options, profile.edition, encoding or DEFAULT_ENCODING)
    walker.report.notes |= option_notes(options)
    report = object_report(
        ds,
        options=options,
        sop_class=sop_class,
        reason=reason,
        counts=walker.report.counts_dict(),
        notes=walker.report.notes,
        pixel_data="unchanged" if 0x7FE00010 in ds else "absent",
    )
    return DeidResult(dataset=ds, report=report, quarantine_reason=reason)


def deidentify_split(split: Split, **kwargs: Any) -> DeidResult:
    """De-identify the header of a file read by ``read_split`` (in place), whose
    pixel data element will be copied behind it unchanged by ``write_split``."""
    result = deidentify(split.header, **kwargs)
    if split.simple:
        result.report["pixel_data"] = "unchanged"
    return result


def deidentify_stream(
    src: BinaryIO, split: Split, dst: BinaryIO, **kwargs: Any
) -> DeidResult:
    """De-identify the Part 10 file open as ``src``, whose header ``read_split``
    has read (``split``, complete), and write the result to ``dst``.

    The pixel data element is copied behind the new header byte for byte when the
    file has the simple shape; otherwise the file is read again from ``src`` with
    its large values deferred and written by pydicom. Either way the pixels are
    never decoded. ``kwargs`` are those of :func:`deidentify`."""
    if split.simple:
        result = deidentify_split(split, **kwargs)
        write_split(dst, split.header, src, split)
        return result
    # Read from the open file: the writer then reads the deferred values through
    # it instead of opening and checking the file again.
    src.seek(0)
    ds = pydicom.dcmread(src, defer_size=DEFER_SIZE)
    result = deidentify(ds, **kwargs)
    pydicom.dcmwrite(dst, ds, enforce_file_format=True)
    return result


def deidentify_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    pseudonym: str,
    uid_secret: bytes,
    date_offset_days: int,
    options: DeidOptions = DEFAULT_OPTIONS,
    overwrite: bool = False,
) -> DeidResult:
    """Read a Part 10 file, de-identify it and write it to ``dst_path``.

    Only the header is parsed: the pixel data element is copied behind the new
    header byte for byte (``split``), or, for files of a less simple shape, read
    deferred and written by pydicom; either way it is never decoded. A file whose
    pixel data is shorter than announced raises ValueError. ``dst_path`` must
    differ from ``src_path``. The file appears whole or not at all: it is written
    beside ``dst_path`` and then linked (refused if ``dst_path`` exists, unless
    ``overwrite``, which replaces it).
    """
    src, dst = Path(src_path), Path(dst_path)
    if os.path.abspath(src) == os.path.abspath(dst):  # no resolve(): it costs 0.1 ms
        raise ValueError("dst_path must differ from src_path")
    if not overwrite and dst.exists():
        raise FileExistsError(f"{dst} exists")
    partial = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.partial")
    kwargs = {
        "pseudonym": pseudonym,
        "uid_secret": uid_secret,
        "date_offset_days": date_offset_days,
        "options": options,
    }
    try:
        with src.open("rb") as fp:
            split = read_split(fp)
            if not split.complete:
                raise ValueError("the file is truncated: its pixel data is short")
            with partial.open("xb") as out:
                result = deidentify_stream(fp, split, out, **kwargs)
        if overwrite:
            os.replace(partial, dst)
        else:
            os.link(partial, dst)  # atomic, and fails if dst appeared meanwhile
    finally:
        partial.unlink(missing_ok=True)
    return result
