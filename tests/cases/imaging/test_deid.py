"""The engine's behaviour: UIDs, dates, options, marking, files and conformance."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, EnhancedCTImageStorage, ImplicitVRLittleEndian

from cases.imaging.deid import (
    BASIC_PROFILE_ONLY,
    DEFAULT_OPTIONS,
    DeidOptions,
    SafePrivateTag,
    Temporal,
    deidentify,
    deidentify_file,
    pseudonymous_uid,
    split,
    summarise_by_study,
)
from cases.imaging.phantom import PhantomSpec, series, write_series

from .support import KWARGS, OFFSET, PSEUDONYM, SECRET, dciodvfy_errors, needs_dciodvfy


def slice_(**spec) -> Dataset:
    return next(series(PhantomSpec(**{"slices": 1, "rows": 16, "columns": 16, **spec})))


def deid(ds, options=DEFAULT_OPTIONS, **kwargs):
    return deidentify(ds, options=options, **{**KWARGS, **kwargs})


def shifted(date: str, days: int = OFFSET) -> str:
    moved = datetime.datetime.strptime(date, "%Y%m%d").date() + datetime.timedelta(days)
    return moved.strftime("%Y%m%d")


# -- UIDs --------------------------------------------------------------------------


def test_uid_replacement_is_deterministic_keyed_and_short():
    uid = "1.2.826.0.1.3680043.10.999.12345"

    new = pseudonymous_uid(uid, SECRET)

    assert new == pseudonymous_uid(uid, SECRET)
    assert new != pseudonymous_uid(uid, b"another-secret-of-32-bytes------")
    assert new != pseudonymous_uid(uid + "6", SECRET)
    assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid


def test_same_uid_maps_the_same_across_studies_and_the_series_keeps_one_frame():
    first = list(series(PhantomSpec(slices=3, rows=16, columns=16, seed=5)))
    follow_up = list(
        series(PhantomSpec(slices=3, rows=16, columns=16, seed=5, study_uid="1.2.3.4"))
    )
    frame = first[0].FrameOfReferenceUID
    assert follow_up[0].FrameOfReferenceUID == frame  # same scanner frame, two studies

    for ds in first + follow_up:
        deid(ds)

    frames = {ds.FrameOfReferenceUID for ds in first + follow_up}
    assert frames == {pseudonymous_uid(frame, SECRET)}
    assert len({ds.SeriesInstanceUID for ds in first}) == 1
    assert first[0].StudyInstanceUID != follow_up[0].StudyInstanceUID
    assert len({ds.SOPInstanceUID for ds in first}) == 3


def test_references_point_at_the_new_uids_of_the_referenced_objects():
    image = slice_()
    original_sop = image.SOPInstanceUID
    derived = Dataset()
    derived.SOPClassUID = EnhancedCTImageStorage  # not a classic image: generic rules
    derived.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.77"
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = original_sop
    derived.SourceImageSequence = Sequence([ref])

    deid(image)
    deid(derived)

    assert derived.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        image.SOPInstanceUID
    )
    assert derived.SourceImageSequence[0].ReferencedSOPClassUID == image.SOPClassUID


def test_registered_uids_are_kept():
    ds = slice_()
    ds.FrameOfReferenceUID = "1.2.840.10008.1.4.1.1"  # a well-known frame (Talairach)

    deid(ds)

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.FrameOfReferenceUID == "1.2.840.10008.1.4.1.1"


def test_written_file_meta_follows_the_new_sop_instance_uid(ct_files, tmp_path):
    src = pydicom.dcmread(ct_files[0])
    src.file_meta.SourceApplicationEntityTitle = "HOSPITALPACS"
    src.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.10.999.5"
    src.file_meta.PrivateInformation = b"secret"
    pydicom.dcmwrite(tmp_path / "in.dcm", src, enforce_file_format=True)

    result = deidentify_file(tmp_path / "in.dcm", tmp_path / "out.dcm", **KWARGS)

    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == pseudonymous_uid(src.SOPInstanceUID, SECRET)
    assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    for keyword in (
        "SourceApplicationEntityTitle",
        "PrivateInformationCreatorUID",
        "PrivateInformation",
    ):
        assert keyword not in out.file_meta
    data = (tmp_path / "out.dcm").read_bytes()
    assert b"HOSPITALPACS" not in data and b"secret" not in data
    assert result.report["counts"]["removed"][
        "SourceApplicationEntityTitle (0002,0016)"
    ]


# -- dates -------------------------------------------------------------------------


def test_modified_dates_keep_the_intervals_between_studies_and_keep_times():
    pre_op = slice_(study_date=datetime.date(2024, 1, 15))
    follow_up = slice_(study_date=datetime.date(2024, 7, 2), seed=1)
    time = pre_op.StudyTime

    for ds in (pre_op, follow_up):
        deid(ds)

    def day(ds):
        return datetime.datetime.strptime(ds.StudyDate, "%Y%m%d").date()

    assert (day(follow_up) - day(pre_op)).days == 169
    assert pre_op.StudyDate == shifted("20240115")
    assert pre_op.SeriesDate == pre_op.AcquisitionDate == pre_op.ContentDate
    assert pre_op.StudyTime == time
    assert pre_op.PatientBirthDate == ""  # birth date has no temporal option
    assert pre_op.PatientAge == "054Y"
    assert pre_op.LongitudinalTemporalInformationModified == "MODIFIED"


def test_datetimes_move_their_date_and_keep_time_and_offset():
    ds = slice_()
    ds.AcquisitionDateTime = "20240115101500.123456+0100"
    ds.ContributingEquipmentSequence = Sequence([Dataset()])
    ds.ContributingEquipmentSequence[0].ContributionDateTime = "202401"

    deid(ds, date_offset_days=-20)

    assert ds.AcquisitionDateTime == "20231226101500.123456+0100"
    assert ds.ContributingEquipmentSequence[0].ContributionDateTime == "202312"


def test_a_date_that_is_not_a_date_gets_the_basic_action():
    ds = slice_()
    ds.StudyDate = "2024-01-15"  # pydicom does not check (CasesConfig.ready)

    result = deid(ds)

    assert ds.StudyDate == ""  # Z, at the top level of a CT image
    assert result.report["notes"] == [
        "StudyDate (0008,0020): not a date, basic action applied"
    ]


def test_full_dates_keep_dates_and_removed_dates_follow_the_basic_profile():
    full = slice_()
    removed = slice_()

    deid(full, DeidOptions(temporal=Temporal.FULL_DATES))
    deid(removed, DeidOptions(temporal=Temporal.REMOVED))

    assert full.StudyDate == "20240115" and full.AcquisitionDate == "20240115"
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert removed.StudyDate == "" and removed.StudyTime == ""  # Z
    assert "AcquisitionDate" not in removed and "SeriesDate" not in removed  # X
    assert removed.ContentDate == ""  # Z/D, Type 2 in the CT Image IOD
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"


def test_a_zero_offset_cannot_claim_modified_dates():
    with pytest.raises(ValueError, match="zero date offset"):
        deid(slice_(), date_offset_days=0)
    deid(slice_(), DeidOptions(temporal=Temporal.FULL_DATES), date_offset_days=0)


# -- options -----------------------------------------------------------------------


def private_tags(ds) -> list[int]:
    return [tag for tag in list(ds.keys()) if tag.group % 2]


def codes_of(ds) -> set[str]:
    return {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


def test_retain_patient_characteristics_switch():
    on, off = slice_(), slice_()

    deid(on)
    deid(off, DeidOptions(retain_patient_characteristics=False))

    assert (on.PatientAge, on.PatientSex, on.PatientSize, on.PatientWeight) == (
        "054Y",
        "O",
        1.75,
        70,
    )
    assert "PatientAge" not in off and "PatientWeight" not in off
    assert off.PatientSex == ""
    assert "113108" in codes_of(on) and "113108" not in codes_of(off)


def test_retain_device_identity_switch():
    on, off = slice_(), slice_()

    deid(on)
    deid(off, DeidOptions(retain_device_identity=False))

    assert on.DeviceSerialNumber == "PHANTOM-SN-0001" and on.StationName == "PHANTOMCT1"
    assert "DeviceSerialNumber" not in off and "StationName" not in off
    assert "113109" in codes_of(on) and "113109" not in codes_of(off)


def test_retain_uids_switch():
    on, off = slice_(), slice_()
    original = on.SOPInstanceUID

    deid(on, DeidOptions(retain_uids=True))
    deid(off)

    assert on.SOPInstanceUID == original
    assert off.SOPInstanceUID == pseudonymous_uid(original, SECRET)
    assert "113110" in codes_of(on) and "113110" not in codes_of(off)


def test_retain_institution_identity_switch():
    on, off = slice_(), slice_()

    deid(on, DeidOptions(retain_institution_identity=True))
    deid(off)

    assert on.InstitutionName == "Phantom Hospital"
    assert "InstitutionName" not in off
    assert "113112" in codes_of(on) and "113112" not in codes_of(off)


def test_clean_descriptors_keeps_imaging_words_only():
    on, off = slice_(), slice_()
    for ds in (on, off):
        ds.SeriesDescription = "Dr Hawkins HEAD 0.6mm BONE 555-1234"
        ds.StudyDescription = "John Smith, Ward 4"
        ds.ImageComments = "axial 5 mm, called 0612 345 678"

    deid(on)
    deid(off, DeidOptions(clean_descriptors=False))

    assert on.SeriesDescription == "HEAD 0.6mm BONE"
    assert "StudyDescription" not in on  # nothing left: the basic action, X
    assert on.ImageComments == "axial 5 mm"
    for keyword in ("SeriesDescription", "StudyDescription", "ImageComments"):
        assert keyword not in off
    assert "113105" in codes_of(on) and "113105" not in codes_of(off)


def test_retain_safe_private_keeps_only_listed_private_attributes():
    def with_private():
        ds = slice_()
        block = ds.private_block(0x0029, "ACME CT", create=True)
        block.add_new(0x10, "DS", "0.5")  # listed as safe below
        block.add_new(0x11, "LO", "MK-PRIVATE-NAME")
        ds.add_new(0x00310010, "LO", "OTHER VENDOR")
        ds.add_new(0x00311010, "DS", "0.5")  # same element, other creator
        return ds

    safe = SafePrivateTag("ACME CT", 0x0029, 0x10)
    listed, unlisted, off = with_private(), with_private(), with_private()

    deid(listed, DeidOptions(retain_safe_private=True, safe_private_tags={safe}))
    result = deid(unlisted, DeidOptions(retain_safe_private=True))
    deid(off)

    assert private_tags(listed) == [0x00290010, 0x00291010]
    assert listed[0x00291010].value == 0.5
    assert private_tags(unlisted) == []
    assert "no private attribute was kept" in result.report["notes"][0]
    assert private_tags(off) == []
    assert "113111" in codes_of(listed) and "113111" not in codes_of(off)


def test_options_refuse_safe_private_tags_without_the_option():
    with pytest.raises(ValueError, match="retain_safe_private"):
        DeidOptions(safe_private_tags=frozenset({SafePrivateTag("X", 0x0029, 1)}))
    with pytest.raises(ValueError, match="not a private attribute"):
        DeidOptions(
            retain_safe_private=True,
            safe_private_tags=frozenset({SafePrivateTag("X", 0x0028, 1)}),
        )


def test_basic_profile_only_claims_only_the_profile():
    ds = slice_()

    deid(ds, BASIC_PROFILE_ONLY)

    assert codes_of(ds) == {"113100"}
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


# -- arguments, files, marking ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"pseudonym": "SMITH^JOHN"}, ValueError),
        ({"pseudonym": ""}, ValueError),
        ({"pseudonym": "A" * 65}, ValueError),
        ({"uid_secret": b"short"}, ValueError),
        ({"uid_secret": "not-bytes-but-long-enough-string"}, ValueError),
        ({"date_offset_days": True}, TypeError),
        ({"date_offset_days": 10**6}, ValueError),
    ],
)
def test_bad_arguments_are_refused(change, error):
    with pytest.raises(error):
        deid(slice_(), **change)


def test_deidentify_file_refuses_to_overwrite(ct_files, tmp_path):
    out = tmp_path / "out.dcm"
    deidentify_file(ct_files[0], out, **KWARGS)

    with pytest.raises(FileExistsError):
        deidentify_file(ct_files[0], out, **KWARGS)
    deidentify_file(ct_files[0], out, overwrite=True, **KWARGS)
    with pytest.raises(ValueError, match="differ"):
        deidentify_file(out, out, overwrite=True, **KWARGS)


def test_implicit_vr_files_are_written_implicit(tmp_path):
    paths = write_series(
        tmp_path / "in",
        PhantomSpec(
            slices=1, rows=16, columns=16, transfer_syntax=ImplicitVRLittleEndian
        ),
    )

    deidentify_file(paths[0], tmp_path / "out.dcm", **KWARGS)

    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.PatientName == PSEUDONYM
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[
        0
    ].CodeValue == ("109104")
    assert out.PixelData == pydicom.dcmread(paths[0]).PixelData


def test_a_second_pass_appends_to_the_method_and_keeps_earlier_codes():
    ds = slice_()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Earlier tool 2.1"
    earlier = Dataset()
    earlier.CodeValue, earlier.CodingSchemeDesignator = "113100", "DCM"
    earlier.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([earlier])

    deid(ds)

    assert list(ds.DeidentificationMethod) == [
        "Earlier tool 2.1",
        "PSI deid 1.0.0; DICOM PS3.15 2024b Table E.1-1",
    ]
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
        "113100",
        "113105",
        "113107",
        "113108",
        "113109",
    ]


def test_de_identifying_equipment_is_recorded_without_a_date():
    ds = slice_()

    deid(ds)

    (item,) = ds.ContributingEquipmentSequence
    assert item.Manufacturer == "PSI" and item.ManufacturerModelName == "PSI deid"
    assert item.PurposeOfReferenceCodeSequence[0].CodeMeaning == (
        "De-identifying Equipment"
    )
    assert "ContributionDateTime" not in item


def test_reports_add_up_per_study(ct_files, tmp_path):
    reports = [deidentify_file(p, tmp_path / p.name, **KWARGS).report for p in ct_files]

    studies = summarise_by_study(reports)

    ((study_uid, study),) = studies.items()
    assert study_uid == reports[0]["study_instance_uid"]
    assert study["objects"] == len(ct_files)
    assert list(study["series"].values()) == [len(ct_files)]
    assert study["counts"]["uid"]["SOPInstanceUID (0008,0018)"] == len(ct_files)
    assert study["totals"]["pseudonym"] == 2 * len(ct_files)
    assert study["quarantined"] == 0
    json.dumps(studies)


@needs_dciodvfy
@pytest.mark.parametrize("options", [DEFAULT_OPTIONS, BASIC_PROFILE_ONLY])
def test_dciodvfy_finds_no_new_error(ct_files, tmp_path, options):
    out = tmp_path / "out.dcm"

    deidentify_file(ct_files[2], out, options=options, **KWARGS)

    before, after = dciodvfy_errors(ct_files[2]), dciodvfy_errors(out)
    assert [e for e in after if e not in before] == []


def test_a_sequence_sent_under_another_vr_is_not_passed_on_unread():
    ds = slice_()
    ds[0x00089215] = DataElement(0x00089215, "OB", b"JOHN SMITH 1970")  # a sequence

    result = deid(ds)

    assert 0x00089215 not in ds
    assert result.report["notes"] == [
        "DerivationCodeSequence (0008,9215): not decodable as a sequence, removed"
    ]


def test_a_failed_write_leaves_no_file(ct_files, tmp_path, monkeypatch):
    def broken_write(target, ds, **kwargs):
        # The writer is given an open file (the fast path) or a path.
        if hasattr(target, "write"):
            target.write(b"half a file")
        else:
            Path(target).write_bytes(b"half a file")
        raise OSError("disk full")

    def broken_copy(src, dst, length=0):
        dst.write(b"half the pixels")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom, "dcmwrite", broken_write)
    monkeypatch.setattr(split.shutil, "copyfileobj", broken_copy)  # the fast path

    with pytest.raises(OSError, match="disk full"):
        deidentify_file(ct_files[0], tmp_path / "out.dcm", **KWARGS)
    assert list(tmp_path.iterdir()) == []
