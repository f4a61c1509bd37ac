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
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.pdu import P_DATA_TF

from cases.imaging.rawdicom import (
    StoreRequest,
    command_pdu,
    file_meta,
    find_accession,
    store_request,
    store_response,
)


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
    ("message_id", "instance", "status", "comment"),
    [
        (1, "1.2.826.0.1.3680043.10.999.1", 0x0000, ""),  # success, odd UID
        (65535, "1.2.826.0.1.3680043.10.999.12", 0x0000, ""),  # even UID
        (7, "1.2.826.0.1.3680043.10.999.7", 0xC001, "No case matches it"),  # even
        (7, "1.2.826.0.1.3680043.10.999.7", 0xC002, "No consent covers it!"),  # odd
        (7, "1.2.826.0.1.3680043.10.999.7", 0xA700, "x" * 80),  # cut to an LO's 64
        (7, "1.2.826.0.1.3680043.10.999.7", 0x0110, ""),
    ],
)
def test_a_response_is_what_pynetdicom_encodes(message_id, instance, status, comment):
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    if comment:
        primitive.ErrorComment = comment[:64]
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    [pdata] = list(message.encode_msg(5, 16384))

    ours = store_response(message_id, CTImageStorage, instance, status, comment)
    assert pdata.presentation_data_value_list == [(5, b"\x03" + ours)]
    assert command_pdu(5, ours) == P_DATA_TF(pdata).encode()


def _request_command(primitive, message_class) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    command, *_ = message.encode_msg(1, 1 << 20)  # the data set follows
    return command.presentation_data_value_list[0][1][1:]


@pytest.mark.parametrize("instance", ["1.2.826.0.1.3680043.10.999.1", "1.2.3.45"])
def test_a_store_request_is_read_from_its_command_set(instance):
    primitive = C_STORE()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = io.BytesIO(b"\x08\x00\x50\x00\x00\x00\x00\x00")
    command = _request_command(primitive, C_STORE_RQ)

    assert store_request(command) == StoreRequest(
        message_id=65535,
        sop_class_uid=CTImageStorage,
        sop_instance_uid=instance,
        has_dataset=True,
    )


def test_other_commands_and_damaged_ones_are_left_to_pynetdicom():
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert store_request(_request_command(echo, C_ECHO_RQ)) is None

    store = C_STORE()
    store.MessageID = 2
    store.AffectedSOPClassUID = CTImageStorage
    store.AffectedSOPInstanceUID = "1.2.3"
    store.DataSet = io.BytesIO(b"\x08\x00\x50\x00\x00\x00\x00\x00")
    command = _request_command(store, C_STORE_RQ)
    assert store_request(command) is not None
    assert store_request(command[:-3]) is None  # cut inside an element
    assert store_request(command + b"\x00\x00") is None  # a stray tail
    no_instance = command[: command.index(b"\x00\x00\x00\x10")]
    assert store_request(no_instance) is None
