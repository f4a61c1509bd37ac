"""Plain objects, de-identified one remembered element at a time.

The slices of a series repeat almost all of their header: the same patient, study,
series, equipment and geometry, all but a handful of values (instance UID and
number, position). Through pydicom datasets a CT slice costs about a millisecond
(reading the header, walking it, writing it), nearly all of it spent again on the
same elements as the slice before. :class:`PlainMemo` reads a *plain* object's
header as raw elements, runs the engine's own step (``_Walker.step``) once for each
element value it has not met under the same rules, keys and character set (a kept
element, whose value the step never reads, it only reports as the step does), and
writes the file from the encodings it remembered: the result is byte for byte what
``deidentify_stream`` writes, report included (the tests compare them).

Plain means: a whole Part 10 file in memory with a preamble, file meta with version,
SOP class, SOP instance and transfer syntax, explicit or implicit VR little endian;
known VRs, defined lengths and no sequence; no overlay or curve group, no private
element when some could be kept (Retain Safe Private), no mark of an earlier
de-identification; the pixel data last and complete. Anything else is left to the
general path (``deidentify`` returns None before writing a byte).

A memo belongs to one set of arguments (pseudonym, UID secret, date offset,
options), so to one patient's objects, and holds at most ``MEMO_ENTRIES`` elements.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .burned_in import QUARANTINE_TAGS, quarantine_reason
from .elements import (
    DEFAULT_ENCODING,
    element_head,
    encode_element,
    padded,
    text_element,
    text_value,
)
from .engine import (
    DeidResult,
    _check_arguments,
    _Walker,
    object_report,
    option_notes,
)
from .marking import mark, replace_file_meta
from .options import DEFAULT_OPTIONS, DeidOptions
from .report import ReportBuilder
from .split import _PIXEL_TAGS, _encode_elements, _encode_file_meta
from .table import (
    CLASSIC_IMAGE_SOP_CLASSES,
    KEEP,
    compile_profile,
    dictionary_vr,
    label_for,
    unlisted_rule,
)

#: Elements remembered by one memo, at most (a few per slice of a series).
MEMO_ENTRIES = 50_000
_SYNTAXES = {
    ExplicitVRLittleEndian.encode("ascii"): False,
    ImplicitVRLittleEndian.encode("ascii"): True,
}
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
_GROUP_LENGTH = 0x00020000
_MEDIA_SOP_INSTANCE = 0x00020003
_MEDIA_SOP_INSTANCE_TAG = BaseTag(_MEDIA_SOP_INSTANCE)
_META_TRANSFER_SYNTAX = 0x00020010
_META_VERSION = 0x00020001
# Written by the marking: an object that has them was de-identified before, and
# the marking then merges with what is there.
_MARKING = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x0018A001})
_TAG = struct.Struct("<HH")
_LENGTH_32 = struct.Struct("<I")


class _Outcome(NamedTuple):
    """What the engine made of one element: the element read, the element written
    (None: removed) and its encoding in the file, the report's entries and notes."""

    tag: BaseTag
    number: int  # the tag as a plain int: sorted without pydicom's comparisons
    source: RawDataElement
    output: RawDataElement | DataElement | None
    encoded: bytes
    entries: tuple[tuple[str, str], ...]
    notes: frozenset[str]
    #: The same for every outcome with these entries and notes: a report's key.
    signature: int


@dataclass(frozen=True)
class PlainResult(DeidResult):
    """A de-identified plain object: besides the engine's result (``dataset`` is
    the de-identified header, file meta included), ``source`` is the header as
    received (file meta included) and ``header`` the new file up to its pixel
    data, which :meth:`write` puts in front of the received pixel data element."""

    source: Dataset | None = None
    header: bytes = b""
    data: bytes = b""
    pixel_offset: int = 0

    def write(self, dst: BinaryIO) -> None:
        dst.write(self.header)
        with memoryview(self.data) as view:
            dst.write(view[self.pixel_offset :])


class _Context:
    """The rules, encodings and remembered elements of one kind of object: one
    transfer syntax, character set and rule set (CT/MR image top level or not)."""

    def __init__(self, memo: PlainMemo, implicit: bool, charset: bytes | None, classic):
        profile = memo.profile
        self.profile = profile
        self.signatures = memo.signatures
        self.implicit = implicit
        self.rules = profile.top_level if classic else profile.generic
        self.elements: dict[tuple, _Outcome] = {}
        self.charset: RawDataElement | None = None
        if charset is not None:
            self.charset = _raw(_SPECIFIC_CHARACTER_SET, "CS", charset, implicit)
        probe = Dataset({} if charset is None else {self.charset.tag: self.charset})
        # What encode_header hands pydicom's writer for the elements it encodes.
        self.encodings = probe.get("SpecificCharacterSet", default_encoding)
        self.character_set = probe._character_set  # as read_header sets it
        encoding = (implicit, True)
        self.walker = _Walker(
            profile, memo.secret, memo.offset, memo.pseudonym, encoding
        )
        marks = Dataset()
        mark(marks, profile.options, profile.edition, encoding)
        self.marks = [
            (tag, element, _encode_elements({tag: element}, implicit, self.encodings))
            for tag, element in marks.items()
        ]
        rule = self.rules.get(_SPECIFIC_CHARACTER_SET)
        # A character set the rules changed would make the writer re-encode all.
        self.plain = rule is None or rule.action == KEEP

    def outcome(self, tag: int, vr: str | None, value: bytes) -> _Outcome | None:
        """The engine's step on the element, or None if it is not plain."""
        group = tag >> 16
        if tag in _MARKING or 0x6000 <= group <= 0x60FF or 0x5000 <= group <= 0x50FF:
            return None
        key = BaseTag(tag)
        source = _raw(key, vr, value, self.implicit)
        walker = self.walker
        if group & 1:
            if walker.safe_private:
                return None
            entries = (("removed", label_for(tag)),)
            return _Outcome(
                key, tag, source, None, b"", entries, _NONE, self._sign(entries, _NONE)
            )
        rule = self.rules.get(tag) or unlisted_rule(self.profile, tag)
        if "SQ" in (rule.vr, vr, dictionary_vr(tag)):
            return None  # by the rules, the file or the dictionary: a sequence
        if rule.action == KEEP and isinstance(source.value, bytes):
            # All the step does with a kept element that is no sequence is report
            # it; its value plays no part. Instance number, position and slice
            # location differ in every slice: reported here, not through the step.
            # (An empty one, rare, still goes through it: pydicom reads its value
            # as None and writes it as the step leaves it.)
            output, entries, notes = source, (("kept", rule.label),), _NONE
        else:
            output, entries, notes = self._step(key, source)
        encoded = b""
        # Retired group lengths are not written (as encode_header leaves them out).
        if output is not None and (tag & 0xFFFF or group <= 6):
            encoded = _encode_elements({key: output}, self.implicit, self.encodings)
        signature = self._sign(entries, notes)
        return _Outcome(key, tag, source, output, encoded, entries, notes, signature)

    def _step(self, key: BaseTag, source: RawDataElement):
        """The engine's step on one element alone (with the character set): the
        element it leaves (None: removed), the report's entries and notes."""
        elements = {key: source}
        if self.charset is not None and key != _SPECIFIC_CHARACTER_SET:
            elements[self.charset.tag] = self.charset
        mini = Dataset(elements)
        walker = self.walker
        walker.report = report = ReportBuilder()
        walker.step(mini, key, source, self.rules, [], [])
        output = mini.get_item(key) if key in mini else None
        return output, _entries(report), frozenset(report.notes)

    def _sign(self, entries, notes) -> int:
        return self.signatures.setdefault((entries, notes), len(self.signatures))


_NONE: frozenset[str] = frozenset()


class PlainMemo:
    """De-identifies plain objects for one set of arguments, remembering what the
    engine made of each element (see the module's docstring)."""

    def __init__(
        self,
        *,
        pseudonym: str,
        uid_secret: bytes,
        date_offset_days: int,
        options: DeidOptions = DEFAULT_OPTIONS,
    ) -> None:
        _check_arguments(pseudonym, uid_secret, date_offset_days, options)
        self.pseudonym = pseudonym
        self.secret = uid_secret
        self.offset = date_offset_days
        self.options = options
        self.profile = compile_profile(options)
        self._contexts: dict[tuple, _Context] = {}
        self._entries = 0
        self.signatures: dict[tuple, int] = {}
        self._metas: dict[tuple, tuple] = {}  # the file meta of each kind
        self._summaries: dict[tuple, tuple] = {}  # report counts and notes
        self._reasons: dict[tuple, str | None] = {}  # quarantine reasons

    def deidentify(self, data: bytes) -> PlainResult | None:
        """``data`` (a whole Part 10 file) de-identified, or None when it is not
        plain: the caller then takes the general path."""
        parsed = _parse(data)
        if parsed is None:
            return None
        meta, implicit, items, charset, sop_class, pixel_offset = parsed
        classic = sop_class in CLASSIC_IMAGE_SOP_CLASSES
        key = (implicit, charset, classic)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = _Context(self, implicit, charset, classic)
        if not context.plain:
            return None
        if self._entries > MEMO_ENTRIES:
            self._forget()
        remembered = context.elements
        outcomes = []
        for item in items:
            outcome = remembered.get(item)
            if outcome is None:
                outcome = context.outcome(*item)
                if outcome is None:
                    return None
                remembered[item] = outcome
                self._entries += 1
            outcomes.append(outcome)
        return self._assemble(data, context, meta, outcomes, pixel_offset)

    def _forget(self) -> None:
        """Start again: a memo holds at most about MEMO_ENTRIES of everything."""
        for each in self._contexts.values():
            each.elements.clear()
        for memory in (self.signatures, self._metas, self._summaries, self._reasons):
            memory.clear()
        self._entries = 0

    def _assemble(self, data, context, meta, outcomes, pixel_offset):
        source = Dataset({o.tag: o.source for o in outcomes})
        if len(source) != len(outcomes):
            return None  # a tag twice: pydicom's reader keeps the last one
        output: dict[BaseTag, Any] = {}
        pieces = []
        for o in outcomes:
            if o.output is not None:
                output[o.tag] = o.output
                if o.encoded:
                    pieces.append((o.number, o.encoded))
        for tag, element, encoded in context.marks:
            output[tag] = element
            pieces.append((int(tag), encoded))
        received = {BaseTag(t): _raw(t, vr, value, False) for t, vr, value in meta}
        source.file_meta = FileMetaDataset(received)
        source.set_original_encoding(context.implicit, True, context.character_set)
        dataset = Dataset(output)
        dataset.set_original_encoding(context.implicit, True, context.character_set)
        file_meta = self._file_meta(dataset, meta, received)
        if file_meta is None:
            return None
        encoded_meta, meta_signature = file_meta
        pieces.sort()
        header = b"".join(
            [data[:128], b"DICM", encoded_meta, *(encoded for _, encoded in pieces)]
        )
        signature = (meta_signature, *(o.signature for o in outcomes))
        summary = self._summaries.get(signature)
        if summary is None:
            summary = self._summary(outcomes, meta_signature)
            self._summaries[signature] = summary
            self._entries += 1
        counts, notes = summary
        key = tuple(
            (o.number, o.source.value) for o in outcomes if o.number in QUARANTINE_TAGS
        )
        try:
            reason = self._reasons[key]
        except KeyError:
            reason = self._reasons[key] = quarantine_reason(source)
            self._entries += 1
        report = object_report(
            dataset,
            options=self.options,
            sop_class=text_value(source, _SOP_CLASS),
            reason=reason,
            # A copy: the remembered counts serve the objects after this one.
            counts={category: dict(labels) for category, labels in counts.items()},
            notes=notes,
            pixel_data="unchanged",
        )
        return PlainResult(
            dataset=dataset,
            report=report,
            quarantine_reason=reason,
            source=source,
            header=header,
            data=data,
            pixel_offset=pixel_offset,
        )

    def _file_meta(self, dataset: Dataset, meta, received: dict):
        """The new file meta of ``dataset`` (set on it) encoded, and the signature
        of its report entries; None if pydicom would have to write it.

        ``replace_file_meta`` and ``_encode_file_meta`` build the first of each
        kind (the same received meta but for the instance UID, the same SOP
        class); the others differ only in the Media Storage SOP Instance UID and
        the group length, which are put in here."""
        instance = text_value(dataset, _SOP_INSTANCE)
        sop_class = text_value(dataset, _SOP_CLASS)
        if not instance or not sop_class:
            return None  # the file meta would keep the received UIDs
        key = (tuple(i for i in meta if i[0] != _MEDIA_SOP_INSTANCE), sop_class)
        element = encode_element(_MEDIA_SOP_INSTANCE, "UI", padded(instance, "UI"))
        known = self._metas.get(key)
        if known is None:
            dataset.file_meta = FileMetaDataset(dict(received))
            report = ReportBuilder()
            replace_file_meta(dataset, report)
            encoded = _encode_file_meta(dataset.file_meta)
            if encoded is None:
                return None
            body = encoded[12:]  # behind the group length, (0002,0000) UL
            at = body.find(element)
            if at < 0:
                return None
            kept = {
                tag: item
                for tag, item in dataset.file_meta.items()
                if tag != _MEDIA_SOP_INSTANCE
            }
            entries = _entries(report)
            known = (body[:at], body[at + len(element) :], kept, entries)
            self._metas[key] = known
            self._entries += 1
            return encoded, entries
        prefix, suffix, kept, entries = known
        body = b"".join((prefix, element, suffix))
        dataset.file_meta = FileMetaDataset(
            {
                **kept,
                _MEDIA_SOP_INSTANCE_TAG: text_element(
                    _MEDIA_SOP_INSTANCE_TAG, "UI", instance, DEFAULT_ENCODING
                ),
            }
        )
        length = encode_element(_GROUP_LENGTH, "UL", _LENGTH_32.pack(len(body)))
        return length + body, entries

    def _summary(self, outcomes, meta_entries):
        """The report's counts (sorted as the engine sorts them) and notes."""
        report = ReportBuilder()
        notes: set[str] = set()
        for category, label in meta_entries:
            report.add(category, label)
        for o in outcomes:
            for category, label in o.entries:
                report.add(category, label)
            notes |= o.notes
        return report.counts_dict(), notes | option_notes(self.options)


def _entries(report: ReportBuilder) -> tuple[tuple[str, str], ...]:
    """A report's entries, one (category, label) per ``add``."""
    return tuple(
        (category, label)
        for category, labels in report.counts.items()
        for label, count in labels.items()
        for _ in range(count)
    )


def _raw(tag: int, vr: str | None, value: bytes, implicit: bool) -> RawDataElement:
    """The element as ``read_header`` (and pydicom's reader) makes it."""
    length = len(value)
    if not length:
        value = empty_value_for_VR(vr, raw=True)
    return RawDataElement(BaseTag(tag), vr, length, value, 0, implicit, True)


def _parse(data: bytes):
    """The file meta elements, the syntax (implicit or not), the dataset's elements
    as (tag, VR, value), its character set and SOP class as raw bytes and where the
    pixel data element starts; None if the file is not plain."""
    end = len(data)
    if end < 132 or data[128:132] != b"DICM":
        return None
    meta, position = _elements(data, 132, False, meta=True)
    if meta is None:
        return None
    found = {tag: value for tag, _, value in meta}
    syntax = found.get(_META_TRANSFER_SYNTAX)
    implicit = _SYNTAXES.get(syntax.rstrip(b"\x00 ")) if syntax else None
    if implicit is None or not found.get(_META_VERSION):
        return None
    if position + 6 <= end:  # pydicom checks the first element against the syntax
        first = data[position + 4 : position + 6]
        if (0x40 < first[0] < 0x5B and 0x40 < first[1] < 0x5B) == implicit:
            return None
    items, pixel_offset = _elements(data, position, implicit)
    if items is None or pixel_offset is None:
        return None
    charset = sop_class = None
    for tag, _, value in items:
        if tag == _SPECIFIC_CHARACTER_SET:
            charset = value
        elif tag == _SOP_CLASS:
            sop_class = value.rstrip(b"\x00 ").decode("ascii", "replace")
    # The pixel data: OB or OW (a long VR) of defined length, exactly to the end.
    head = element_head(data, pixel_offset, implicit)
    if head is None or (not implicit and head[1] != pixel_offset + 12):
        return None
    _, start, length = head
    if length == _UNDEFINED or start + length != end:
        return None
    return meta, implicit, items, charset, sop_class, pixel_offset


def _elements(data: bytes, position: int, implicit: bool, *, meta: bool = False):
    """(tag, VR, value) of the elements from ``position`` (group 2 only with
    ``meta``), and where the next part starts: the first non-meta element, or the
    pixel data element (None if the dataset has none). None for the elements when
    they are not plain."""
    end = len(data)
    items: list[tuple[int, str | None, bytes]] = []
    while position + 8 <= end:
        group, number = _TAG.unpack_from(data, position)
        if meta and group != 2:
            return items, position
        tag = group << 16 | number
        if tag in _PIXEL_TAGS:
            return (items, position) if tag == _PIXEL_DATA and not meta else (None, 0)
        if group == 0 or group == 0xFFFE or (group == 2) != meta:
            return None, 0
        head = element_head(data, position, implicit)
        if head is None or head[0] == "SQ":
            return None, 0
        vr, start, length = head
        if start == position + 12 and data[position + 6 : start - 4] != b"\0\0":
            return None, 0  # reserved bytes that are not zero: pydicom's to read
        position = start + length
        if length == _UNDEFINED or position > end:
            return None, 0
        items.append((tag, vr, data[start:position]))
    return (items, position) if meta else (items, None)
