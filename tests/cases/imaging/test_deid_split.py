"""The fast path through a file: only the header is parsed and rewritten, the pixel
data element is copied byte for byte; files of another shape take the general path
with the same result."""

from __future__ import annotations

import copy
import io

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from cases.imaging.deid import deidentify, deidentify_file, read_split
from cases.imaging.deid.split import encode_header
from cases.imaging.phantom import PhantomSpec, write_series

from .leaky import make_leaky
from .support import KWARGS


@pytest.fixture(scope="module", params=["explicit", "implicit"])
def slice_file(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    spec = PhantomSpec(slices=1, rows=64, columns=64, seed=3)
    if request.param == "implicit":
        spec = PhantomSpec(
            slices=1,
            rows=64,
            columns=64,
            seed=3,
            transfer_syntax=ImplicitVRLittleEndian,
        )
    return write_series(folder, spec)[0]


def _general_path(src, dst):
    """The same file read whole by pydicom: the result the fast path must match."""
    ds = pydicom.dcmread(src)
    ds.add_new(0x7FE10010, "LO", "MARKER PRIVATE AFTER PIXELS")  # not simple now
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_a_simple_file_is_split_at_its_pixel_data(slice_file):
    with open(slice_file, "rb") as fp:
        split = read_split(fp)
        assert split.simple and split.complete
        fp.seek(split.pixel_offset)
        element = fp.read()
    assert len(element) == split.pixel_bytes
    assert element[:4] == b"\xe0\x7f\x10\x00"
    assert "PixelData" not in split.header


def test_the_fast_path_copies_the_pixel_bytes_and_rewrites_only_the_header(
    slice_file, tmp_path
):
    result = deidentify_file(slice_file, tmp_path / "out.dcm", **KWARGS)

    source = pydicom.dcmread(slice_file)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.PixelData == source.PixelData
    assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert out.PatientName == KWARGS["pseudonym"]
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert result.report["pixel_data"] == "unchanged"


def test_elements_after_the_pixel_data_take_the_general_path(slice_file, tmp_path):
    odd = _general_path(slice_file, tmp_path / "odd.dcm")
    with open(odd, "rb") as fp:
        assert not read_split(fp).simple

    deidentify_file(odd, tmp_path / "odd-out.dcm", **KWARGS)
    deidentify_file(slice_file, tmp_path / "plain-out.dcm", **KWARGS)

    data = (tmp_path / "odd-out.dcm").read_bytes()
    assert b"MARKER" not in data  # the private element went, wherever it was
    odd_out = pydicom.dcmread(io.BytesIO(data))
    plain_out = pydicom.dcmread(tmp_path / "plain-out.dcm")
    assert odd_out.PixelData == plain_out.PixelData
    assert odd_out.SOPInstanceUID == plain_out.SOPInstanceUID


def test_a_truncated_file_is_refused_with_nothing_written(slice_file, tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(slice_file.read_bytes()[:-100])
    with open(cut, "rb") as fp:
        assert not read_split(fp).complete

    with pytest.raises(ValueError, match="truncated"):
        deidentify_file(cut, tmp_path / "out.dcm", **KWARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.dcm"]


def _header(path):
    with open(path, "rb") as fp:
        return read_split(fp).header


def _pydicom_bytes(header):
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, header, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("deidentified", [False, True], ids=["as-sent", "deid"])
def test_the_header_encoder_writes_what_pydicom_writes(
    slice_file, tmp_path, deidentified
):
    leaky = make_leaky(pydicom.dcmread(slice_file))  # sequences, private, overlays
    rich = tmp_path / "rich.dcm"
    pydicom.dcmwrite(rich, leaky.dataset, enforce_file_format=True)
    for path in (slice_file, rich):
        header = _header(path)
        if deidentified:
            deidentify(header, **KWARGS)
        expected = _pydicom_bytes(_copy(header))
        encoded = encode_header(header)
        assert encoded is not None
        assert encoded == expected


def _copy(header):
    """pydicom's writer may convert the elements it reads: give it its own copy."""
    return copy.deepcopy(header)


def test_a_header_to_re_encode_is_left_to_pydicom(slice_file):
    header = _header(slice_file)
    header.SpecificCharacterSet = "ISO_IR 192"  # every text value would change
    assert encode_header(header) is None

    header = _header(slice_file)
    header.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    assert encode_header(header) is None


def test_the_fast_path_file_equals_pydicom_writing_the_same_dataset(
    slice_file, tmp_path
):
    deidentify_file(slice_file, tmp_path / "fast.dcm", **KWARGS)
    slow = pydicom.dcmread(slice_file)
    deidentify(slow, **KWARGS)
    pydicom.dcmwrite(tmp_path / "slow.dcm", slow, enforce_file_format=True)
    assert (tmp_path / "fast.dcm").read_bytes() == (tmp_path / "slow.dcm").read_bytes()
