"""Previews of a CT series: PNGs opened again and looked at as pixels."""

import io
import random
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

from cases.imaging import phantom
from cases.imaging.previews import PreviewError, series_previews


def open_png(data):
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.mode == "L"
    return image


@pytest.fixture(scope="module")
def head_series(tmp_path_factory):
    """80 slices of 2 mm, 512 x 512 pixels of 0.46875 mm: a 240 x 240 x 160 mm box."""
    spec = phantom.PhantomSpec(slices=80, slice_thickness=2.0)
    return phantom.write_series(tmp_path_factory.mktemp("head"), spec)


@pytest.fixture(scope="module")
def previews(head_series):
    return series_previews(head_series)


def test_previews_are_a_full_axial_slice_and_three_reconstructions(previews):
    assert set(previews) == {"middle_axial", "axial", "coronal", "sagittal"}
    sizes = {name: open_png(data).size for name, data in previews.items()}
    assert sizes["middle_axial"] == (512, 512)
    assert sizes["axial"] == (256, 256)
    # 80 slices x 2 mm = 160 mm over pixels of 0.9375 mm (512 reduced to 256).
    assert sizes["coronal"] == (256, 171)
    assert sizes["sagittal"] == (256, 171)


def test_previews_show_bone_bright_air_black_and_are_not_blank(previews):
    for name, data in previews.items():
        pixels = np.asarray(open_png(data))
        assert pixels.std() > 10, name
        # Skull (about 1400 HU) in the W 2000 / L 500 window is near white.
        assert (pixels >= 220).sum() > 200, name
        # Air is black only if Rescale Intercept (-1024) was applied.
        assert (pixels == 0).sum() > 1000, name
        # Brain (about 35 HU) is dark grey, well below bone.
        centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]
        assert 40 < centre < 110, name


def test_file_order_does_not_change_the_previews(head_series, previews):
    shuffled = list(head_series)
    random.Random(7).shuffle(shuffled)

    assert series_previews(shuffled) == previews


def test_reconstructions_keep_true_proportions_for_thin_slices(tmp_path):
    spec = phantom.PhantomSpec(slices=64, slice_thickness=0.5, rows=128, columns=128)
    paths = phantom.write_series(tmp_path, spec)

    result = series_previews(paths)

    # 128 pixels of 1.875 mm (240 mm), 64 slices of 0.5 mm (32 mm): resampled
    # to the finer 0.5 mm, the slab is 480 x 64 pixels.
    assert open_png(result["coronal"]).size == (480, 64)
    assert open_png(result["axial"]).size == (128, 128)


def test_lossy_series_is_previewed_with_its_rescale_slope(tmp_path):
    # 512 x 512: the phantom's JPEG keeps only 8 x 8 block means, so a coarser
    # matrix would blur the skull below the bone window.
    spec = phantom.PhantomSpec(slices=8, transfer_syntax=JPEGBaseline8Bit)
    paths = phantom.write_series(tmp_path, spec)

    result = series_previews(paths)

    pixels = np.asarray(open_png(result["middle_axial"]))
    assert (pixels >= 220).sum() > 20
    assert (pixels == 0).sum() > 1000


def test_memory_stays_bounded_by_the_reduced_volume(tmp_path):
    spec = phantom.PhantomSpec(slices=48, noise_hu=5.0)
    paths = phantom.write_series(tmp_path, spec)

    tracemalloc.start()
    try:
        series_previews(paths)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The full int16 volume would be 48 x 512 x 512 x 2 = 24 MiB and its float32
    # copy 48 MiB; the reduced volume is 6 MiB plus one slice being decoded.
    assert peak < 16 * 2**20


def test_an_empty_series_cannot_be_previewed():
    with pytest.raises(PreviewError, match="no images"):
        series_previews([])


def test_images_of_different_sizes_cannot_be_previewed(tmp_path):
    big = phantom.write_series(
        tmp_path / "a", phantom.PhantomSpec(slices=2, rows=64, columns=64)
    )
    small = phantom.write_series(
        tmp_path / "b", phantom.PhantomSpec(slices=2, rows=32, columns=32)
    )

    with pytest.raises(PreviewError, match="differ in size"):
        series_previews(big + small)


def bone_width(row):
    columns = np.nonzero(row >= 200)[0]
    return int(columns.max() - columns.min()) if columns.size else 0


def test_reconstructions_show_the_head_at_the_top(tmp_path):
    # Only the upper half of the head: slices from the middle up to near the vertex.
    spec = phantom.PhantomSpec(
        slices=80,
        slice_thickness=2.0,
        rows=128,
        columns=128,
        missing_slices=tuple(range(40)),
    )
    paths = phantom.write_series(tmp_path, spec)

    result = series_previews(paths)

    for name in ("coronal", "sagittal"):
        pixels = np.asarray(open_png(result[name]))
        # The skull narrows towards the vertex (top) and is widest at mid-head.
        assert bone_width(pixels[2]) < bone_width(pixels[-3]), name
