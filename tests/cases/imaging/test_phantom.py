"""The synthetic head CT: geometry, knobs, pixels, and files a validator accepts."""

from __future__ import annotations

import io
from array import array

import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from cases.imaging.phantom import PhantomSpec, series, write_series

from .support import dciodvfy_errors, needs_dciodvfy


def hu(ds, row, column):
    pixels = array("H", ds.PixelData)
    return pixels[row * ds.Columns + column] * ds.RescaleSlope + ds.RescaleIntercept


def test_a_series_has_the_asked_geometry():
    spec = PhantomSpec(slices=10, rows=64, columns=64, slice_thickness=2.0)

    slices = list(series(spec))

    assert len(slices) == 10
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert [round(b - a, 6) for a, b in zip(z, z[1:], strict=False)] == [2.0] * 9
    first = slices[0]
    assert (first.Rows, first.Columns) == (64, 64)
    assert first.SliceThickness == 2.0 and first.SpacingBetweenSlices == 2.0
    assert first.PixelSpacing == [3.75, 3.75]  # 240 mm field of view
    assert first.ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
    assert len({ds.SOPInstanceUID for ds in slices}) == 10
    assert first.PatientName == "PHANTOM^TEST"


def test_a_spec_always_makes_the_same_series():
    spec = PhantomSpec(slices=2, rows=16, columns=16, seed=4)

    one, two = list(series(spec)), list(series(spec))

    assert [ds.SOPInstanceUID for ds in one] == [ds.SOPInstanceUID for ds in two]
    assert one[1].PixelData == two[1].PixelData


def test_missing_slices_leave_a_gap():
    slices = list(
        series(PhantomSpec(slices=6, rows=16, columns=16, missing_slices=(3,)))
    )

    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert len(slices) == 5
    assert [round(b - a, 6) for a, b in zip(z, z[1:], strict=False)] == [1, 1, 2, 1]
    assert [ds.InstanceNumber for ds in slices] == [1, 2, 3, 4, 5]


def test_gantry_tilt_tilts_the_image_plane():
    ds = next(series(PhantomSpec(slices=1, rows=16, columns=16, gantry_tilt=15.0)))

    assert ds.GantryDetectorTilt == 15.0
    assert ds.ImageOrientationPatient == pytest.approx(
        [1, 0, 0, 0, 0.965926, -0.258819]
    )


def test_the_head_has_air_scalp_skull_and_brain():
    ds = next(series(PhantomSpec(slices=1, rows=256, columns=256, noise_hu=0.0)))

    centre = 128
    assert hu(ds, centre, 2) == -1000  # air
    assert hu(ds, centre, centre) == 35  # brain
    row = [hu(ds, centre, c) for c in range(centre)]
    assert 1400 in row and 40 in row  # skull and scalp on the way in
    assert ds.BitsStored == 12 and ds.RescaleIntercept == -1024


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian],
)
def test_lossless_syntaxes_round_trip(tmp_path, syntax):
    spec = PhantomSpec(slices=1, rows=16, columns=16, transfer_syntax=syntax)

    (path,) = write_series(tmp_path, spec)

    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.PixelData == next(series(spec)).PixelData
    assert ds.LossyImageCompression == "00"


def test_jpeg_baseline_is_a_real_lossy_jpeg(tmp_path):
    spec = PhantomSpec(
        slices=1, rows=256, columns=256, transfer_syntax=JPEGBaseline8Bit, noise_hu=0.0
    )

    (path,) = write_series(tmp_path, spec)

    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert (ds.BitsAllocated, ds.BitsStored, ds.RescaleSlope) == (8, 8, 16)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    # An odd-length JPEG is padded to even length with a null after EOI (PS3.5 A.4).
    assert frame[:2] == b"\xff\xd8" and frame.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    image = pytest.importorskip("PIL.Image").open(io.BytesIO(frame))
    image.load()
    assert image.size == (256, 256) and image.mode == "L"
    # Every 8 x 8 block is flat at its mean: brain in the middle, air in the corner.
    assert image.getpixel((128, 128)) == round((35 + 1024) / 16)
    assert image.getpixel((0, 0)) in (1, 2)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        PhantomSpec(transfer_syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(ValueError):
        PhantomSpec(rows=100, transfer_syntax=JPEGBaseline8Bit)
    with pytest.raises(ValueError):
        PhantomSpec(slices=3, missing_slices=(3,))


@needs_dciodvfy
def test_a_phantom_ct_slice_is_a_valid_ct_image(tmp_path):
    (path,) = write_series(tmp_path, PhantomSpec(slices=1, rows=64, columns=64))

    assert dciodvfy_errors(path) == []
