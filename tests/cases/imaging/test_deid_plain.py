"""Plain objects de-identified element by element from memory: the same file, report
and quarantine verdict as the general path, or no answer at all."""

from __future__ import annotations

import dataclasses
import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from cases.imaging import quality
from cases.imaging.deid import (
    DEFAULT_OPTIONS,
    SafePrivateTag,
    deidentify_stream,
    split_bytes,
)
from cases.imaging.deid import plain as plain_module
from cases.imaging.deid.plain import PlainMemo
from cases.imaging.intake import uid
from cases.imaging.phantom import PhantomSpec, write_series

from .leaky import make_leaky
from .support import KWARGS, big_endian


@pytest.fixture(scope="module", params=["explicit", "implicit"])
def series(request, tmp_path_factory):
    """Twelve small slices of one series, as read from disk."""
    folder = tmp_path_factory.mktemp(request.param)
    extra = {}
    if request.param == "implicit":
        extra["transfer_syntax"] = ImplicitVRLittleEndian
    spec = PhantomSpec(slices=12, rows=32, columns=32, seed=5, **extra)
    return [path.read_bytes() for path in write_series(folder, spec)]


def _encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _flat_leaky(data: bytes) -> bytes:
    """The leak-test object without what is not plain (sequences, overlay and
    curve groups, trailing padding after the pixels): identity in every flat
    attribute of the table, private elements, unlisted names, dates, UIDs, URLs."""
    ds = make_leaky(pydicom.dcmread(io.BytesIO(data))).dataset
    for element in list(ds):
        group, tag = element.tag.group, element.tag
        if (
            element.VR == "SQ"
            or 0x5000 <= group <= 0x50FF
            or 0x6000 <= group <= 0x60FF
            or tag > 0x7FE00010
        ):
            del ds[element.tag]
    return _encoded(ds)


def _general(data: bytes, options=DEFAULT_OPTIONS):
    out = io.BytesIO()
    result = deidentify_stream(
        io.BytesIO(data), split_bytes(data), out, options=options, **KWARGS
    )
    return out.getvalue(), result


def _assert_same(memo: PlainMemo, data: bytes, options=DEFAULT_OPTIONS):
    expected, general = _general(data, options)
    result = memo.deidentify(data)
    assert result is not None
    out = io.BytesIO()
    result.write(out)
    assert out.getvalue() == expected
    assert result.report == general.report
    assert result.quarantine_reason == general.quarantine_reason
    assert quality.SliceHeader.from_dataset(result.dataset) == (
        quality.SliceHeader.from_dataset(general.dataset)
    )
    received = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "Modality"):
        assert uid(result.source, keyword) == uid(received, keyword)
    assert str(result.source.PatientName) == str(received.PatientName)
    assert result.source.file_meta.TransferSyntaxUID == (
        received.file_meta.TransferSyntaxUID
    )
    return result


def test_a_series_comes_out_as_the_general_path_writes_it(series):
    memo = PlainMemo(**KWARGS)
    results = [_assert_same(memo, data) for data in series]
    # Instance UIDs of both parities: the file meta is rebuilt around each.
    lengths = {len(uid(r.dataset, "SOPInstanceUID")) % 2 for r in results}
    assert lengths == {0, 1}
    # Remembered: the second slice met only the values that changed.
    remembered = sum(len(c.elements) for c in memo._contexts.values())
    assert remembered < len(series) * 10


def test_every_flat_attribute_of_the_table_is_treated_as_the_engine_treats_it(series):
    memo = PlainMemo(**KWARGS)
    leaky = _flat_leaky(series[0])
    result = _assert_same(memo, leaky)
    counts = result.report["totals"]
    for category in ("removed", "emptied", "dummy", "uid", "shifted", "pseudonym"):
        assert counts[category] > 0, category
    _assert_same(memo, series[1])  # the same memo, another kind of object next
    _assert_same(memo, leaky)
    # A date that is not one: the basic action, and a note in the report.
    odd = _with(series[2], lambda ds: ds.add_new(0x00080023, "DA", "2024-"))
    assert _assert_same(memo, odd).report["notes"]


def _in_utf8(ds):
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SeriesDescription = "Schädel KOPF 1mm Knochen"
    ds.StudyDescription = "Schädel-CT präoperativ"
    ds.PatientName = "Müller^Jürgen"
    ds.InstitutionName = "Klinikum Süd"


def test_text_in_another_character_set_is_read_as_the_engine_reads_it(series):
    memo = PlainMemo(**KWARGS)
    result = _assert_same(memo, _with(series[3], _in_utf8))
    assert str(result.source.PatientName) == "Müller^Jürgen"
    _assert_same(memo, _with(series[4], _in_utf8))  # the same kind, remembered
    _assert_same(memo, series[5])  # and the first character set again


def test_other_options_and_a_full_memo_give_the_same(series, monkeypatch):
    options = dataclasses.replace(DEFAULT_OPTIONS, retain_patient_characteristics=False)
    memo = PlainMemo(options=options, **KWARGS)
    monkeypatch.setattr(plain_module, "MEMO_ENTRIES", 5)  # forgets all the time
    for data in series[:4]:
        _assert_same(memo, data, options)


def _with(data: bytes, change) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    change(ds)
    return _encoded(ds)


def _sequence(ds):
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.42"
    ds.ReferencedImageSequence = Sequence([item])


def _overlay(ds):
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60003000, "OW", b"\0" * 8)


def _after_pixels(ds):
    ds.add_new(0x7FE10010, "LO", "AFTER THE PIXELS")


def _no_pixels(ds):
    del ds.PixelData


def _marked(data: bytes) -> bytes:
    return _general(data)[0]  # de-identified before


def _truncated(data: bytes) -> bytes:
    return data[:-10]


def _reserved(data: bytes) -> bytes:
    """The reserved bytes of a long-VR header (File Meta Information Version, OB)
    not zero: pydicom ignores them, the encoder would write zeros."""
    head = b"\x02\x00\x01\x00OB\x00\x00"
    assert head in data
    return data.replace(head, b"\x02\x00\x01\x00OB\x01\x00", 1)


def _twice(data: bytes) -> bytes:
    """(0008,0070) Manufacturer a second time, at the end of the header."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    at = data.rindex(b"\xe0\x7f\x10\x00")
    value = ds.Manufacturer.encode("ascii")
    value += b" " * (len(value) % 2)
    if ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian:
        element = b"\x08\x00\x70\x00" + len(value).to_bytes(4, "little") + value
    else:
        element = b"\x08\x00\x70\x00LO" + len(value).to_bytes(2, "little") + value
    return data[:at] + element + data[at:]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: _with(d, _sequence),
        lambda d: _with(d, _overlay),
        lambda d: _with(d, _after_pixels),
        lambda d: _with(d, _no_pixels),
        _marked,
        _truncated,
        big_endian,
        _reserved,
        _twice,
    ],
    ids=[
        "sequence",
        "overlay",
        "after-pixels",
        "no-pixels",
        "marked",
        "truncated",
        "big-endian",
        "reserved-bytes",
        "tag-twice",
    ],
)
def test_what_is_not_plain_gets_no_answer(series, change):
    memo = PlainMemo(**KWARGS)
    assert memo.deidentify(series[0]) is not None
    assert memo.deidentify(change(series[0])) is None


def test_private_elements_wait_for_the_general_path_when_some_could_stay(series):
    leaky = _flat_leaky(series[0])
    assert PlainMemo(**KWARGS).deidentify(leaky) is not None  # all removed
    options = dataclasses.replace(
        DEFAULT_OPTIONS,
        retain_safe_private=True,
        safe_private_tags=frozenset({SafePrivateTag("PSI LEAKTEST", 0x0019, 0x01)}),
    )
    assert PlainMemo(options=options, **KWARGS).deidentify(leaky) is None
