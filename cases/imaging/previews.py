"""Preview images of a CT series: what the visual QC and the design engineer look at.

For one series this makes PNGs (Pillow, 8-bit grey) in a bone window:

- ``middle_axial``: the middle axial slice at full resolution;
- ``axial``, ``coronal``, ``sagittal``: orthogonal reconstructions through the centre
  of the volume, with the slice axis resampled so that a pixel is square in
  millimetres (the anatomy keeps its true proportions even when slices are 1.25 mm
  apart and pixels 0.4 mm wide).

Values are turned into Hounsfield units with Rescale Slope and Intercept before the
window is applied. The default window is W 2000 / L 500 HU (-500 to 1500 HU): soft
tissue is dark grey, cortical bone (about 700 to 1900 HU) bright, air black, so the
skull and fixation areas stand out, and motion steps and metal streaks show.

Memory does not grow with the series: the reconstructions are planes through the
centre, so of each slice only its middle row and middle column are kept, reduced
in-plane (block mean) to at most ``recon_size`` pixels; a 300-slice series holds
300 x 256 values per plane, not a volume. Every file is read and decoded once, and
the middle slice a second time, at full resolution. Reconstructions take the
median step between slice positions as the slice spacing; a series with gaps looks
compressed along its axis (the quality report names the gap). Planes follow the
image grid: for an axial series they are true axial, coronal and sagittal planes,
for another orientation they are the planes along its axes. Multi-frame images and
compressed transfer syntaxes that pydicom cannot decode without an extra plugin
raise ``PreviewError``.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread

BONE_WINDOW_WIDTH = 2000.0
BONE_WINDOW_LEVEL = 500.0
RECON_SIZE = 256
MAX_SIDE = 1024


class PreviewError(Exception):
    """The series cannot be previewed; the message says why."""


def _decode(source: Any) -> tuple[Any, np.ndarray]:
    if callable(source):
        with source() as handle:
            return _decode(handle)
    if hasattr(source, "seek"):
        source.seek(0)
    ds = dcmread(source)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for undecodable data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts) or "unknown transfer syntax"
        raise PreviewError(f"cannot decode the pixel data ({name}): {exc}") from exc
    if pixels.ndim != 2:
        raise PreviewError("multi-frame or colour images are not supported")
    hu = pixels.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0:
        hu *= slope
    if intercept:
        hu += intercept
    return ds, hu


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h = image.shape[0] // factor * factor
    w = image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3))


def _middle_lines(image: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The middle row and middle column of ``_block_mean(image, factor)``, computed
    from the two bands of the image they come from."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    r, c = h // 2, w // 2
    rows = image[r * factor : (r + 1) * factor, : w * factor]
    columns = image[: h * factor, c * factor : (c + 1) * factor]
    return (
        rows.reshape(factor, w, factor).mean(axis=(0, 2)),
        columns.reshape(h, factor, factor).mean(axis=(1, 2)),
    )


def _window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    low = level - width / 2.0
    scaled = (hu.astype(np.float32) - low) * (255.0 / width)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _png(
    pixels: np.ndarray, px_w: float, px_h: float, *, max_side: int = MAX_SIDE
) -> bytes:
    """PNG of an 8-bit image whose pixels are px_w x px_h mm, resampled to square."""
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="L")
    height, width = pixels.shape
    # Square pixels at the finer of the two spacings, then capped in size.
    unit = min(px_w, px_h)
    size_w = width * px_w / unit
    size_h = height * px_h / unit
    scale = min(1.0, max_side / max(size_w, size_h))
    target = (max(1, round(size_w * scale)), max(1, round(size_h * scale)))
    if target != (width, height):
        image = image.resize(target, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _normal(ds: Any) -> tuple[float, float, float] | None:
    try:
        o = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(o) != 6:
        return None
    n = (
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    )
    length = math.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
    return (n[0] / length, n[1] / length, n[2] / length) if length > 1e-6 else None


def _along(ds: Any, normal: tuple[float, float, float] | None) -> float | None:
    if normal is None:
        return None
    try:
        p = [float(v) for v in ds.ImagePositionPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    return p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2]


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return 1.0, 1.0
    return (row if row > 0 else 1.0), (col if col > 0 else 1.0)


def series_previews(
    sources: Sequence[Any],
    *,
    window_width: float = BONE_WINDOW_WIDTH,
    window_level: float = BONE_WINDOW_LEVEL,
    recon_size: int = RECON_SIZE,
) -> dict[str, bytes]:
    """PNG previews of one series: ``middle_axial``, ``axial``, ``coronal``,
    ``sagittal``.

    ``sources`` are the series' files (paths, binary file objects, or callables
    returning a context manager that opens one, so that a long series does not
    hold every file open), in any order: they are ordered here by position along
    the slice normal (file order when positions are missing).
    """
    if not sources:
        raise PreviewError("the series has no images")
    count = len(sources)
    coronal: np.ndarray | None = None  # per slice, the middle row
    sagittal: np.ndarray | None = None  # per slice, the middle column
    along: list[float | None] = []
    normal = None
    factor = 1
    shape = None
    spacing = (1.0, 1.0)
    thickness = None
    for index, source in enumerate(sources):
        ds, hu = _decode(source)
        if coronal is None:
            shape = hu.shape
            factor = max(1, math.ceil(max(shape) / recon_size))
            coronal = np.empty((count, shape[1] // factor), dtype=np.int16)
            sagittal = np.empty((count, shape[0] // factor), dtype=np.int16)
            normal = _normal(ds)
            spacing = _pixel_spacing(ds)
            thickness = ds.get("SliceThickness")
        elif hu.shape != shape:
            raise PreviewError(
                f"images of the series differ in size ({shape} and {hu.shape})"
            )
        row, column = _middle_lines(hu, factor)
        coronal[index] = np.clip(np.rint(row), -32768, 32767)
        sagittal[index] = np.clip(np.rint(column), -32768, 32767)
        along.append(_along(ds, normal))
        del ds, hu

    if all(a is not None for a in along):
        order = sorted(range(count), key=lambda i: along[i])
        steps = [along[b] - along[a] for a, b in zip(order, order[1:], strict=False)]
        steps = [s for s in steps if s > 1e-3]
        step = statistics.median(steps) if steps else None
    else:
        order = list(range(count))
        step = None
    if not step:
        try:
            step = float(thickness) if thickness else 1.0
        except (TypeError, ValueError):
            step = 1.0

    row_mm, col_mm = spacing
    small_row_mm, small_col_mm = row_mm * factor, col_mm * factor
    middle = order[count // 2]
    _, full = _decode(sources[middle])
    previews = {
        "middle_axial": _png(_window(full, window_width, window_level), col_mm, row_mm)
    }
    axial = _block_mean(full, factor)
    del full

    # Slices are ordered along the normal (feet to head for an axial series);
    # reconstructions show the head at the top, so the slice axis is reversed.
    top_down = order[::-1]
    previews["axial"] = _png(
        _window(axial, window_width, window_level), small_col_mm, small_row_mm
    )
    previews["coronal"] = _png(
        _window(coronal[top_down], window_width, window_level), small_col_mm, step
    )
    previews["sagittal"] = _png(
        _window(sagittal[top_down], window_width, window_level), small_row_mm, step
    )
    return previews
