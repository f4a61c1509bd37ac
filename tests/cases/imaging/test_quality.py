"""Planning-quality checks of CT series, on synthetic headers (no pixel data)."""

import io
import json
import math
import re

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    generate_uid,
)

from cases.imaging import phantom
from cases.imaging.quality import (
    DEFAULT_PROFILES,
    FAIL,
    PASS,
    REGIONS,
    WARN,
    AcquisitionProfile,
    SliceHeader,
    check_series,
    choose_series,
    default_profile,
    kernel_allowed,
    lossy_reason,
    study_verdict,
)

CRANIAL = default_profile("cranial")
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ct_series(
    n=240,
    *,
    thickness=0.625,
    spacing=None,
    rows=512,
    columns=512,
    pixel=0.5,
    tilt=0.0,
    shear_deg=None,
    kernel="H70h",
    bits=12,
    transfer_syntax=ExplicitVRLittleEndian,
    lossy=None,
    orientation=AXIAL,
    drop=(),
    duplicate=(),
    frame_of_reference=None,
    second_frame_from=None,
    description="Head 0.625 H70h",
    series_number=3,
    modality="CT",
):
    """Header-only datasets of one synthetic axial CT series, feet to head.

    ``tilt`` writes Gantry/Detector Tilt and shears the stack by that angle, as a
    GE scanner records a tilted acquisition; ``shear_deg`` shears without the tag.
    """
    spacing = thickness if spacing is None else spacing
    series_uid = generate_uid()
    frame = frame_of_reference or generate_uid()
    other_frame = generate_uid()
    shear = math.tan(math.radians(shear_deg if shear_deg is not None else tilt))
    row, col = orientation[:3], orientation[3:]
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    fov = columns * pixel
    origin = (-fov / 2, -fov / 2, -40.0)
    datasets = []
    for i in range(n):
        if i in drop:
            continue
        z = i * spacing
        position = [origin[k] + normal[k] * z + col[k] * z * shear for k in range(3)]
        for _ in range(2 if i in duplicate else 1):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = transfer_syntax
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            sop = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = description
            ds.InstanceNumber = i + 1
            ds.Modality = modality
            ds.ImagePositionPatient = [round(v, 4) for v in position]
            ds.ImageOrientationPatient = list(orientation)
            ds.PixelSpacing = [pixel, pixel]
            ds.Rows = rows
            ds.Columns = columns
            ds.SliceThickness = thickness
            ds.GantryDetectorTilt = tilt
            if kernel is not None:
                ds.ConvolutionKernel = kernel
            ds.BitsAllocated = 16
            ds.BitsStored = bits
            if lossy is not None:
                ds.LossyImageCompression = lossy
            ds.FrameOfReferenceUID = (
                other_frame
                if second_frame_from is not None and i >= second_frame_from
                else frame
            )
            ds.ReconstructionDiameter = fov
            datasets.append(ds)
    return datasets


def failed(report):
    return {c.name for c in report.failures}


def test_good_series_passes_every_check_and_is_proposed():
    report = check_series(ct_series(), CRANIAL)

    assert report.verdict == PASS, report.reasons
    assert {c.verdict for c in report.checks} == {PASS}
    assert report.slice_count == 240
    assert report.slice_thickness_mm == 0.625
    assert report.slice_spacing_mm == 0.625
    assert report.coverage_mm == 150.0
    verdict = study_verdict([report])
    assert verdict.accepted
    assert verdict.proposed is report


def test_every_check_reports_measured_value_limit_and_reason_as_json():
    report = check_series(ct_series(), CRANIAL)

    data = json.loads(json.dumps(report.as_dict()))
    names = [c["name"] for c in data["checks"]]
    assert names == [
        "modality",
        "slices",
        "slice_thickness",
        "slice_spacing",
        "spacing_uniform",
        "gaps",
        "duplicates",
        "gantry_tilt",
        "orientation",
        "matrix",
        "pixel_spacing",
        "field_of_view",
        "kernel",
        "bits_stored",
        "lossy_compression",
        "frame_of_reference",
        "coverage",
    ]
    for check in data["checks"]:
        assert set(check) == {"name", "measured", "limit", "verdict", "reason"}
        assert check["reason"]


def test_two_mm_slices_fail_thickness_with_the_reason():
    report = check_series(ct_series(80, thickness=2.0), CRANIAL)

    # 2 mm slices are 2 mm apart too: both are out of the cranial profile.
    assert failed(report) == {"slice_thickness", "slice_spacing"}
    check = report.check("slice_thickness")
    assert (check.measured, check.limit) == (2.0, 1.0)
    assert check.reason == (
        "Slices are 2.0 mm thick; planning a cranial implant needs 1.0 mm or "
        "thinner. Please reconstruct the scan with thinner slices."
    )


def test_a_gap_fails_the_gap_check_and_says_where():
    report = check_series(ct_series(drop=(100, 101, 102)), CRANIAL)

    assert failed(report) == {"gaps"}
    check = report.check("gaps")
    assert check.measured == 3
    assert "About 3 slice(s) are missing" in check.reason
    assert "between image 100 at 21.9 mm and image 104 at 24.4 mm" in check.reason


def test_spacing_wider_than_the_slices_fails():
    report = check_series(ct_series(200, thickness=0.6, spacing=0.9), CRANIAL)

    assert failed(report) == {"slice_spacing"}
    assert "0.9 mm apart but only 0.6 mm thick" in report.check("slice_spacing").reason


def test_uneven_spacing_fails_uniformity():
    datasets = ct_series()
    for ds in datasets[120:]:
        ds.ImagePositionPatient[2] += 0.2

    report = check_series(datasets, CRANIAL)

    assert "spacing_uniform" in failed(report)
    assert report.check("spacing_uniform").measured == 0.2


def test_gantry_tilt_fails_tilt():
    report = check_series(ct_series(tilt=15.0), CRANIAL)

    assert failed(report) == {"gantry_tilt"}
    check = report.check("gantry_tilt")
    assert check.measured == pytest.approx(15.0, abs=0.05)
    assert "gantry was tilted by 15.0°" in check.reason


def test_sheared_stack_without_tilt_tag_fails_tilt():
    report = check_series(ct_series(shear_deg=10.0), CRANIAL)

    assert failed(report) == {"gantry_tilt"}
    assert "shifted against each other by 10.0°" in report.check("gantry_tilt").reason


@pytest.mark.parametrize(
    ("transfer_syntax", "lossy", "expected"),
    [
        (JPEGBaseline8Bit, "01", "JPEG Baseline compression"),
        (ExplicitVRLittleEndian, "01", "lossy compression"),
        (JPEG2000, None, "JPEG 2000 compression (possibly lossy)"),
        ("1.2.840.10008.1.2.4.81", None, "JPEG-LS near-lossless compression"),
    ],
)
def test_lossy_compression_fails(transfer_syntax, lossy, expected):
    report = check_series(
        ct_series(transfer_syntax=transfer_syntax, lossy=lossy), CRANIAL
    )

    assert failed(report) == {"lossy_compression"}
    check = report.check("lossy_compression")
    assert check.measured == 240
    assert expected in check.reason


def test_lossy_history_is_named_in_words_after_decompression():
    header = SliceHeader(
        transfer_syntax_uid=ExplicitVRLittleEndian,
        lossy_image_compression="01",
        lossy_method="ISO_10918_1",
    )

    assert lossy_reason(header) == "JPEG compression"
    assert lossy_reason(SliceHeader(lossy_image_compression="00")) is None


@pytest.mark.parametrize(
    ("transfer_syntax", "lossy"),
    [(JPEG2000Lossless, None), (JPEGLosslessSV1, "00"), (JPEG2000, "00")],
)
def test_lossless_compression_passes(transfer_syntax, lossy):
    report = check_series(
        ct_series(transfer_syntax=transfer_syntax, lossy=lossy), CRANIAL
    )

    assert report.check("lossy_compression").verdict == PASS


def test_256_matrix_fails_matrix():
    report = check_series(ct_series(rows=256, columns=256, pixel=1.0), CRANIAL)

    assert failed(report) == {"matrix"}
    check = report.check("matrix")
    assert check.measured == [256, 256]
    assert "256×256 pixels; planning needs 512×512 or more" in check.reason


def test_duplicate_positions_fail():
    report = check_series(ct_series(duplicate=(50, 51)), CRANIAL)

    assert failed(report) == {"duplicates"}
    assert report.check("duplicates").measured == 2


def test_mixed_frames_of_reference_fail():
    report = check_series(ct_series(second_frame_from=120), CRANIAL)

    assert failed(report) == {"frame_of_reference"}
    assert report.check("frame_of_reference").measured == 2


def test_too_short_coverage_fails():
    report = check_series(ct_series(40), CRANIAL)

    assert failed(report) == {"coverage"}
    check = report.check("coverage")
    assert check.measured == 25.0
    assert "covers only 25 mm" in check.reason
    assert "at least 120 mm" in check.reason


def test_soft_kernel_fails_and_missing_kernel_warns():
    soft = check_series(ct_series(kernel="B30f"), CRANIAL)
    unknown = check_series(ct_series(kernel=None), CRANIAL)

    assert failed(soft) == {"kernel"}
    assert "B30f kernel, which is not a bone kernel" in soft.check("kernel").reason
    assert unknown.verdict == WARN
    assert unknown.check("kernel").verdict == WARN


@pytest.mark.parametrize(
    "kernel",
    ["BONE", "BONEPLUS", "B70f", "H60s", "Br64d\\3", "Hr64", "FC30", "YA", "SHARP"],
)
def test_vendor_bone_kernels_are_accepted(kernel):
    assert kernel_allowed(kernel, CRANIAL.allowed_kernels)


@pytest.mark.parametrize("kernel", ["STANDARD", "SOFT", "LUNG", "B30f", "H31s", "FC13"])
def test_soft_and_lung_kernels_are_refused(kernel):
    assert not kernel_allowed(kernel, CRANIAL.allowed_kernels)


def test_eight_bit_images_fail():
    report = check_series(ct_series(bits=8), CRANIAL)

    assert failed(report) == {"bits_stored"}


def test_coronal_series_is_not_axial():
    report = check_series(ct_series(orientation=(1, 0, 0, 0, 0, -1)), CRANIAL)

    assert failed(report) == {"orientation"}
    assert report.check("orientation").measured == 90.0


def test_a_slice_with_another_orientation_fails():
    datasets = ct_series()
    datasets[10].ImageOrientationPatient = [1, 0, 0, 0, 0.9998, 0.02]

    assert "orientation" in failed(check_series(datasets, CRANIAL))


def test_a_moving_field_of_view_fails():
    datasets = ct_series()
    for ds in datasets[100:]:
        ds.ImagePositionPatient[0] += 5.0

    report = check_series(datasets, CRANIAL)

    assert failed(report) == {"field_of_view"}
    assert report.check("field_of_view").measured["centre_shift_mm"] == 5.0


def test_missing_positions_fail_once_and_skip_the_measurements():
    datasets = ct_series()
    del datasets[5].ImagePositionPatient

    report = check_series(datasets, CRANIAL)

    assert failed(report) == {"geometry"}
    assert report.check("gaps").verdict == WARN


def test_other_modality_and_empty_series_fail():
    assert failed(check_series(ct_series(modality="MR"), CRANIAL)) == {"modality"}
    assert check_series([], CRANIAL).verdict == FAIL


def test_order_of_images_does_not_matter():
    datasets = ct_series()
    shuffled = datasets[1::2] + datasets[::2]

    assert check_series(shuffled, CRANIAL).verdict == PASS


def test_dental_profile_holds_the_increment_to_half_a_millimetre():
    dental = default_profile("dental")

    assert (
        check_series(ct_series(100, thickness=1.0), dental)
        .check("slice_spacing")
        .verdict
        == FAIL
    )
    assert check_series(ct_series(100, thickness=1.0, spacing=0.5), dental).passed


def test_headers_read_from_files_with_their_transfer_syntax(tmp_path):
    paths = []
    for i, ds in enumerate(ct_series(200)):
        path = tmp_path / f"{i}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)

    headers = [
        SliceHeader.from_dataset(dcmread(p, stop_before_pixels=True)) for p in paths
    ]

    assert headers[0].transfer_syntax_uid == ExplicitVRLittleEndian
    assert headers[0].rows == 512
    assert headers[0].position == (-128.0, -128.0, -40.0)
    assert check_series(headers, CRANIAL).verdict == PASS


def test_choose_series_prefers_the_thinnest_passing_series():
    good_1mm = check_series(ct_series(150, thickness=1.0), CRANIAL)
    good_thin = check_series(ct_series(), CRANIAL)
    thick = check_series(ct_series(80, thickness=2.0), CRANIAL)

    assert choose_series([good_1mm, thick, good_thin]) is good_thin
    assert choose_series([thick]) is None


def test_study_with_no_passing_series_lists_plain_reasons_per_series():
    reports = [
        check_series(ct_series(80, thickness=2.0, series_number=2), CRANIAL),
        check_series(
            ct_series(rows=256, columns=256, pixel=1.0, series_number=4), CRANIAL
        ),
    ]

    verdict = study_verdict(reports)

    assert not verdict.accepted
    assert verdict.proposed is None
    assert verdict.reasons == (
        'Series 2 "Head 0.625 H70h" (80 images): Slices are 2.0 mm thick; planning '
        "a cranial implant needs 1.0 mm or thinner. Please reconstruct the scan with "
        "thinner slices.",
        'Series 2 "Head 0.625 H70h" (80 images): Slices are 2.0 mm apart; planning '
        "a cranial implant needs 1.0 mm or closer. Please reconstruct with a smaller "
        "increment.",
        'Series 4 "Head 0.625 H70h" (240 images): Images are 256×256 pixels; '
        "planning needs 512×512 or more. Please reconstruct the scan with a 512×512 "
        "matrix.",
    )
    assert "none of the 2 series received meets the requirements" in verdict.message
    assert json.loads(json.dumps(verdict.as_dict()))["proposed_series_uid"] is None


def test_study_with_no_series_asks_for_the_scan():
    verdict = study_verdict([])

    assert not verdict.accepted
    assert verdict.reasons == ("No CT images were received for this study.",)


def test_reasons_are_plain_words():
    cases = [
        ct_series(80, thickness=2.0),
        ct_series(drop=(100,)),
        ct_series(tilt=12.0),
        ct_series(transfer_syntax=JPEGBaseline8Bit, lossy="01"),
        ct_series(rows=256, columns=256, pixel=1.0),
        ct_series(duplicate=(3,)),
        ct_series(second_frame_from=10),
        ct_series(40),
        ct_series(kernel="STANDARD"),
        ct_series(bits=8),
    ]
    jargon = re.compile(r"\(00[0-9A-F]{2},|UID|[a-z][A-Z]|None|\[|\]|_")
    for datasets in cases:
        for reason in check_series(datasets, CRANIAL).reasons:
            assert not jargon.search(reason), reason
            assert reason[0].isupper() or reason[0].isdigit(), reason
            assert reason.endswith("."), reason
            assert "Please" in reason


def test_default_profiles_cover_every_region_and_follow_the_sources():
    assert set(DEFAULT_PROFILES) == set(REGIONS)
    assert DEFAULT_PROFILES["cranial"].max_slice_thickness_mm == 1.0
    for region in ("orbital", "midface", "mandible", "maxilla"):
        assert DEFAULT_PROFILES[region].max_slice_thickness_mm == 0.625
    assert DEFAULT_PROFILES["pelvis"].max_slice_thickness_mm == 1.25
    for profile in DEFAULT_PROFILES.values():
        assert profile.min_matrix == 512
        assert profile.min_bits_stored == 12
        assert profile.max_gantry_tilt_deg == 0.0


def test_profile_round_trips_through_json():
    profile = DEFAULT_PROFILES["mandible"]

    data = json.loads(json.dumps(profile.as_dict()))

    assert AcquisitionProfile.from_dict(data) == profile


def test_profile_from_dict_refuses_unknown_fields_and_bad_values():
    data = CRANIAL.as_dict()
    with pytest.raises(ValueError, match="unknown profile fields: colour"):
        AcquisitionProfile.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="max_slice_thickness_mm"):
        AcquisitionProfile.from_dict({**data, "max_slice_thickness_mm": 0})
    with pytest.raises(ValueError, match="min_matrix"):
        AcquisitionProfile.from_dict({**data, "min_matrix": "big"})
    with pytest.raises(ValueError, match="allowed_kernels"):
        AcquisitionProfile.from_dict({**data, "allowed_kernels": "BONE"})


def test_an_edited_profile_changes_the_verdict():
    relaxed = AcquisitionProfile.from_dict(
        {**CRANIAL.as_dict(), "max_slice_thickness_mm": 2.0}
    )

    assert check_series(ct_series(80, thickness=2.0), relaxed).verdict == PASS


def _as_read_from_disk(datasets):
    out = []
    for ds in datasets:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        buffer.seek(0)
        out.append(dcmread(buffer, stop_before_pixels=True))
    return out


def test_a_full_series_passes_from_headers_and_from_datasets():
    # Speed is measured by bench/ingest.py, not asserted here.
    datasets = _as_read_from_disk(ct_series(300, thickness=0.5))
    headers = [SliceHeader.from_dataset(ds) for ds in datasets]

    assert check_series(headers, CRANIAL).verdict == PASS
    assert check_series(datasets, CRANIAL).verdict == PASS


# The cases on the shared ellipsoid-head phantom (pixels and all, as a scanner
# would send them). 32 slices of 1 mm: the cranial profile's coverage floor is lowered
# to keep the test fast.
SHORT_CRANIAL = AcquisitionProfile.from_dict(
    {**CRANIAL.as_dict(), "min_coverage_mm": 30.0}
)
PHANTOM_CASES = {
    "good": {},
    "2 mm slices": {"slices": 16, "slice_thickness": 2.0},
    "gap": {"missing_slices": (15, 16)},
    "gantry tilt": {"gantry_tilt": 15.0},
    "lossy": {"transfer_syntax": JPEGBaseline8Bit},
    "256 matrix": {"rows": 256, "columns": 256},
}


@pytest.fixture(scope="module")
def phantom_reports():
    return {
        name: check_series(
            list(phantom.series(phantom.PhantomSpec(**{"slices": 32, **kw}))),
            SHORT_CRANIAL,
        )
        for name, kw in PHANTOM_CASES.items()
    }


@pytest.mark.parametrize(
    ("case", "expected", "words"),
    [
        ("2 mm slices", {"slice_thickness", "slice_spacing"}, "2.0 mm thick"),
        ("gap", {"gaps"}, "About 2 slice(s) are missing"),
        # The phantom tilts like a Siemens scanner: an oblique image orientation.
        ("gantry tilt", {"gantry_tilt", "orientation"}, "tilted by 15.0°"),
        # JPEG Baseline is 8-bit: the 12-bit CT values were lost too.
        ("lossy", {"lossy_compression", "bits_stored"}, "JPEG Baseline"),
        ("256 matrix", {"matrix"}, "256×256 pixels"),
    ],
)
def test_phantom_series_are_rejected_with_the_right_reason(
    phantom_reports, case, expected, words
):
    report = phantom_reports[case]

    assert failed(report) == expected
    assert any(words in reason for reason in report.reasons), report.reasons


def test_phantom_study_proposes_the_good_series(phantom_reports):
    good = phantom_reports["good"]

    verdict = study_verdict(list(phantom_reports.values()))

    assert good.verdict == PASS, good.reasons
    assert verdict.accepted
    assert verdict.proposed is good


def test_phantom_study_without_the_good_series_asks_for_a_rescan(phantom_reports):
    bad = [r for name, r in phantom_reports.items() if name != "good"]

    verdict = study_verdict(bad)

    assert not verdict.accepted
    assert len(verdict.reasons) == sum(len(r.reasons) for r in bad)
    assert "none of the 5 series received meets the requirements" in verdict.message


def test_a_single_image_fails_once_with_one_reason():
    report = check_series(ct_series(1), CRANIAL)

    assert failed(report) == {"slices"}
    assert report.reasons == [
        "The series has only 1 image; planning needs the whole axial series of the "
        "scan."
    ]
