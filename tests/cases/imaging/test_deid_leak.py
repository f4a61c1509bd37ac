"""Nothing identifying survives: every attribute the table names, in every place.

The regression test of REGULATORY checklist 48, on an object filled by ``leaky``:
no marker, original UID or original date in any byte of the written file; no
attribute whose basic action is X left; no Z or D attribute keeping its value.
"""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.datadict import get_entry

from cases.imaging.deid import (
    BASIC_PROFILE_ONLY,
    DEFAULT_OPTIONS,
    deidentify_file,
)
from cases.imaging.phantom import PhantomSpec, series

from .leaky import UID_ROOT, concrete_tag, make_leaky, table_rows
from .support import KWARGS, OFFSET, PSEUDONYM

GEOMETRY = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "Rows",
    "Columns",
)
ENABLED_COLUMNS = {  # what DEFAULT_OPTIONS switches on
    "rtnPatCharsOpt",
    "rtnLongModifDatesOpt",
    "rtnDevIdOpt",
    "cleanDescOpt",
}


@pytest.fixture
def leaky(tmp_path, request):
    base = next(series(PhantomSpec(slices=1, rows=64, columns=64, seed=3)))
    sop_class = getattr(request, "param", None)
    if sop_class:  # another IOD: combined codes take their generic choice
        base.SOPClassUID = base.file_meta.MediaStorageSOPClassUID = sop_class
    leaky = make_leaky(base)
    source = tmp_path / "leaky.dcm"
    pydicom.dcmwrite(source, leaky.dataset, enforce_file_format=True)
    leaky.source = source
    return leaky


def run(leaky, tmp_path, options):
    out = tmp_path / "out.dcm"
    result = deidentify_file(leaky.source, out, options=options, **KWARGS)
    return result, out.read_bytes(), pydicom.dcmread(out)


def walk(ds, depth=0):
    """Every element, at every depth, with its depth."""
    for elem in ds:
        yield elem, depth
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, depth + 1)


def retained_by_defaults(row) -> bool:
    """The table's own answer: an enabled option keeps the attribute as is."""
    values = [row[c] for c in ENABLED_COLUMNS if c in row]
    return "K" in values and "C" not in values


@pytest.mark.parametrize(
    "leaky", [None, "1.2.840.10008.5.1.4.1.1.2.1"], indirect=True, ids=["CT", "eCT"]
)
def test_basic_profile_leaves_no_marker_uid_date_or_time_in_any_byte(leaky, tmp_path):
    result, data, _ = run(leaky, tmp_path, BASIC_PROFILE_ONLY)

    markers = set(leaky.markers) | leaky.nested_markers
    assert len(markers) > 900  # every table attribute, nested ones, private, groups
    assert [m for m in markers if m.encode() in data] == []
    assert UID_ROOT.encode() not in data
    assert [d for d in leaky.dates if d.encode() in data] == []
    assert [t for t in leaky.times if t.encode() in data] == []
    assert b"PSI LEAKTEST" not in data  # the private creator went with its block
    report = json.dumps(result.report)
    assert "MK" not in report and UID_ROOT not in report


def test_defaults_keep_only_what_their_options_retain(leaky, tmp_path):
    result, data, _ = run(leaky, tmp_path, DEFAULT_OPTIONS)

    rows = {concrete_tag(r): r for r in table_rows() if concrete_tag(r)}
    expected = {
        marker
        for marker, tag in leaky.markers.items()
        if tag in rows and retained_by_defaults(rows[tag])
    }
    surviving = {
        m for m in set(leaky.markers) | leaky.nested_markers if m.encode() in data
    }
    assert surviving == expected
    assert {get_entry(leaky.markers[m])[4] for m in expected} >= {
        "DeviceSerialNumber",
        "StationName",
        "PatientSex",
    }
    surviving_uids = {
        get_entry(t)[4] for u, t in leaky.uids.items() if u.encode() in data
    }
    assert surviving_uids == {"DeviceUID", "ManufacturerDeviceClassUID"}
    # Dates all move (calibration dates too, although device identity is kept).
    assert [d for d in leaky.dates if d.encode() in data] == []
    assert "MK" not in json.dumps(result.report)


@pytest.mark.parametrize("options", [BASIC_PROFILE_ONLY, DEFAULT_OPTIONS])
def test_no_attribute_with_basic_action_x_is_left(leaky, tmp_path, options):
    _, _, out = run(leaky, tmp_path, options)

    rows = {concrete_tag(r): r for r in table_rows() if concrete_tag(r)}
    left = []
    for elem, _depth in walk(out):
        row = rows.get(int(elem.tag))
        if row is None or row["basicProfile"] != "X":
            continue
        if options is DEFAULT_OPTIONS and any(c in row for c in ENABLED_COLUMNS):
            continue  # an option of PSI's defaults keeps or cleans it
        left.append(elem.keyword)
    assert left == []
    groups = {elem.tag.group for elem, _ in walk(out)}
    assert not [g for g in groups if g % 2]  # private
    assert not [g for g in groups if 0x5000 <= g <= 0x50FF]  # curves
    assert not [g for g in groups if 0x6000 <= g <= 0x60FF]  # overlays


def test_no_z_or_d_attribute_keeps_its_original_value(leaky, tmp_path):
    _, _, out = run(leaky, tmp_path, BASIC_PROFILE_ONLY)

    kept = []
    for row in table_rows():
        tag = concrete_tag(row)
        codes = set(row["basicProfile"].split("/"))
        if tag not in leaky.values or not codes & {"Z", "D"}:
            continue
        if tag in out and out[tag].value not in (None, "", b""):
            original = leaky.values[tag]
            value = out[tag].value
            if str(value) == str(original) or value == original:
                kept.append(row["name"])
    assert kept == []


@pytest.mark.parametrize("options", [BASIC_PROFILE_ONLY, DEFAULT_OPTIONS])
def test_pixels_and_geometry_pass_through_untouched(leaky, tmp_path, options):
    original = pydicom.dcmread(leaky.source)

    _, _, out = run(leaky, tmp_path, options)

    assert out.PixelData == original.PixelData
    for keyword in GEOMETRY:
        assert out[keyword].value == original[keyword].value, keyword


def test_marking_attributes_and_codes(leaky, tmp_path):
    _, _, out = run(leaky, tmp_path, DEFAULT_OPTIONS)

    assert out.PatientIdentityRemoved == "YES"
    assert out.PatientName == PSEUDONYM and out.PatientID == PSEUDONYM
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert (
        out.DeidentificationMethod == "PSI deid 1.0.0; DICOM PS3.15 2024b Table E.1-1"
    )
    codes = [
        (i.CodeValue, i.CodingSchemeDesignator)
        for i in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [
        (c, "DCM") for c in ("113100", "113105", "113107", "113108", "113109")
    ]
    # Never claimed: pixels and the face are not cleaned.
    assert not {"113101", "113102"} & {c for c, _ in codes}
    assert "BurnedInAnnotation" not in out
    assert "RecognizableVisualFeatures" not in out
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_nested_identity_is_pseudonymised_and_references_stay_linked(leaky, tmp_path):
    _, _, out = run(leaky, tmp_path, DEFAULT_OPTIONS)

    # Three levels down an unlisted sequence, the table still applies.
    level1 = out.DerivationCodeSequence[0]
    level3 = level1.ReferencedImageSequence[0].ReferencedImageSequence[0]
    for item in (level1, level3):
        assert item.PatientName == PSEUDONYM
        assert item.ReferencedSOPInstanceUID.startswith("2.25.")
        assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert int(item.StudyDate) < 19710000  # shifted by the offset
    assert OFFSET < 0


def test_report_counts_without_values(leaky, tmp_path):
    result, _, _ = run(leaky, tmp_path, DEFAULT_OPTIONS)

    report = result.report
    json.dumps(report)  # serialisable
    counts = report["counts"]
    assert counts["pseudonym"]["PatientName (0010,0010)"] >= 1
    assert counts["removed"]["private (0019,1001)"] == 1
    assert counts["removed"]["Overlay Data (60XX,3000)"] == 1
    assert counts["removed"]["Curve Data (50XX,XXXX)"] == 3  # the whole group
    assert counts["uid"]["SOPInstanceUID (0008,0018)"] == 1
    assert counts["shifted"]["StudyDate (0008,0020)"] >= 1
    assert report["totals"]["removed"] == sum(counts["removed"].values())
