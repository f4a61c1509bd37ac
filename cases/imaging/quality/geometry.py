"""Slice geometry measured from positions and orientations, never from derived
tags: order along the normal, spacing, gaps, duplicates, tilt."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from cases.imaging.quality.headers import SliceHeader, Vec
from cases.imaging.quality.profiles import AcquisitionProfile


def _mm(value: float) -> str:
    """1.0 -> '1.0', 0.625 -> '0.625', 1.25 -> '1.25', 0.3333 -> '0.333'."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _deg(value: float) -> str:
    return f"{value:.1f}"


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Sequence[float], b: Sequence[float]) -> Vec:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def _norm(a: Sequence[float]) -> float:
    return math.sqrt(_dot(a, a))


def _angle_deg(cosine: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


@dataclass
class _Geometry:
    """Slices ordered along the normal and the steps between them."""

    ok: bool
    problem: str = ""
    normal: Vec = (0.0, 0.0, 1.0)
    row: Vec = (1.0, 0.0, 0.0)
    col: Vec = (0.0, 1.0, 0.0)
    order: list[int] = field(default_factory=list)
    along: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    nominal: float | None = None
    duplicates: list[float] = field(default_factory=list)
    # (index in the sorted order before the gap, estimated missing slices)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    regular: list[float] = field(default_factory=list)
    shear_deg: float = 0.0
    centre_spread_mm: float = 0.0


def _geometry(slices: Sequence[SliceHeader], profile: AcquisitionProfile) -> _Geometry:
    missing = sum(1 for s in slices if s.position is None or s.orientation is None)
    if missing:
        return _Geometry(
            ok=False,
            problem=(
                f"{missing} of {len(slices)} images do not record their position or "
                "orientation, so the scan cannot be measured. Please send the "
                "original DICOM images from the scanner, not a copy or an export."
            ),
        )
    if len(slices) < 2:
        return _Geometry(
            ok=False,
            problem=(
                "The series has a single image, so its slices cannot be measured. "
                "Please send the whole axial series."
            ),
        )
    # The first image's orientation defines the stack; differing ones fail their own
    # check and are not silently averaged.
    o = slices[0].orientation
    row, col = (o[0], o[1], o[2]), (o[3], o[4], o[5])
    normal = _cross(row, col)
    length = _norm(normal)
    if length < 1e-6:
        return _Geometry(
            ok=False,
            problem=(
                "The recorded image orientation is invalid (its two directions are "
                "parallel), so the scan cannot be measured. Please send the original "
                "images from the scanner."
            ),
        )
    normal = (normal[0] / length, normal[1] / length, normal[2] / length)
    keyed = [
        (_dot(s.position, normal), s.instance_number or 0, i)
        for i, s in enumerate(slices)
    ]
    keyed.sort()
    along = [k[0] for k in keyed]
    steps = [b - a for a, b in zip(along, along[1:], strict=False)]
    duplicates = [
        along[i] for i, d in enumerate(steps) if d <= profile.duplicate_tolerance_mm
    ]
    distinct = [d for d in steps if d > profile.duplicate_tolerance_mm]
    geo = _Geometry(
        ok=True,
        normal=normal,
        row=row,
        col=col,
        order=[k[2] for k in keyed],
        along=along,
        steps=steps,
        duplicates=duplicates,
    )
    if not distinct:
        geo.ok = False
        geo.problem = (
            "All images of the series lie at the same position, so it is not a "
            "volume. Please send the axial series of the scan."
        )
        return geo
    nominal = statistics.median(distinct)
    geo.nominal = nominal
    for i, d in enumerate(steps):
        if d <= profile.duplicate_tolerance_mm:
            continue
        if d > nominal * profile.gap_factor:
            geo.gaps.append((i, max(1, round(d / nominal) - 1)))
        else:
            geo.regular.append(d)
    # In-plane offset of each image along the stack. Its usual change per millimetre
    # (median over the steps, so one jump does not count) is the shear of a tilted
    # acquisition; what remains after removing that slope is a field of view that
    # moves or jumps within the series.
    pos = [slices[i].position for i in geo.order]
    u = [_dot(p, row) for p in pos]
    v = [_dot(p, col) for p in pos]
    real = [i for i, d in enumerate(steps) if d > profile.duplicate_tolerance_mm]
    su = statistics.median((u[i + 1] - u[i]) / steps[i] for i in real)
    sv = statistics.median((v[i + 1] - v[i]) / steps[i] for i in real)
    geo.shear_deg = math.degrees(math.atan(math.hypot(su, sv)))
    ru = [u[i] - su * along[i] for i in range(len(pos))]
    rv = [v[i] - sv * along[i] for i in range(len(pos))]
    geo.centre_spread_mm = math.hypot(max(ru) - min(ru), max(rv) - min(rv))
    return geo
