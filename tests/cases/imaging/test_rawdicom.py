"""The listener's byte-level helpers give what pydicom gives, or step aside."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta

from cases.imaging.rawdicom import file_meta, find_accession, store_success


@pytest.mark.parametrize(
    "instance",
    ["1.2.826.0.1.3680043.10.999.1", "1.2.826.0.1.3680043.10.999.12"],
    ids=["even", "odd"],
)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_file_meta_is_what_pynetdicom_and_pydicom_write(instance, syntax):
    # What pynetdicom's Event.file_meta holds, encoded by pydicom.
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION

    assert file_meta(CTImageStorage, instance, syntax) == encode_file_meta(meta)


def _encode(ds: Dataset, *, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _dataset(accession=None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.7"
    ds.StudyDate = "20260101"
    if accession is not None:
        ds.AccessionNumber = accession
    ds.Modality = "CT"
    ds.PatientName = "Synthetic^Patient"
    return ds


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_the_accession_number_is_found_in_the_raw_bytes(implicit):
    assert find_accession(
        _encode(_dataset("C-2026-00042"), implicit=implicit), implicit=implicit
    ) == ("C-2026-00042")
    assert (
        find_accession(_encode(_dataset(" C-7 "), implicit=implicit), implicit=implicit)
        == "C-7"
    )
    assert (
        find_accession(_encode(_dataset(), implicit=implicit), implicit=implicit) == ""
    )
    assert (
        find_accession(_encode(_dataset(""), implicit=implicit), implicit=implicit)
        == ""
    )


def test_what_the_walk_cannot_read_is_left_to_pydicom():
    with_sequence = _dataset("C-1")
    item = Dataset()
    item.CodeValue = "X"
    with_sequence.ReferencedImageSequence = Sequence([item])  # (0008,1140): after
    with_sequence.add_new(0x00080006, "SQ", Sequence([item]))  # before the number
    # A sequence of defined length before it is stepped over ...
    assert find_accession(_encode(with_sequence, implicit=False), implicit=False) == (
        "C-1"
    )
    # ... one of undefined length cannot be, without parsing its items.
    with_sequence[0x00080006].is_undefined_length = True
    data = _encode(with_sequence, implicit=False)
    assert find_accession(data, implicit=False) is None

    non_ascii = _dataset("C-1")
    non_ascii.SpecificCharacterSet = "ISO_IR 192"
    non_ascii.AccessionNumber = "Ü-1"
    assert find_accession(_encode(non_ascii, implicit=False), implicit=False) is None

    truncated = _encode(_dataset("C-1"), implicit=False)[:-30]
    assert find_accession(truncated[:40], implicit=False) is None
    assert find_accession(b"\x08\x00\x05\x00\x01\x02", implicit=False) is None


def test_a_dataset_with_an_accession_beyond_its_end_is_not_read_past_it():
    data = _encode(_dataset("C-2026-00042"), implicit=False)
    cut = data[: data.index(b"C-2026") + 3]
    assert find_accession(cut, implicit=False) is None
    assert (
        find_accession(io.BytesIO(data).getbuffer(), implicit=False) == "C-2026-00042"
    )


@pytest.mark.parametrize(
    ("message_id", "instance"),
    [(1, "1.2.826.0.1.3680043.10.999.1"), (65535, "1.2.826.0.1.3680043.10.999.12")],
)
def test_a_success_response_is_what_pynetdicom_encodes(message_id, instance):
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = 0x0000
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    [pdata] = list(message.encode_msg(3, 16384))

    assert pdata.presentation_data_value_list == [
        (3, b"\x03" + store_success(message_id, CTImageStorage, instance))
    ]
