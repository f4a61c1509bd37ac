"""The checks of one series, each a function of its headers and the profile, and
``check_series`` that runs them all."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from cases.imaging.quality.geometry import (
    _angle_deg,
    _cross,
    _deg,
    _dot,
    _geometry,
    _mm,
    _norm,
    _r,
)
from cases.imaging.quality.headers import SliceHeader
from cases.imaging.quality.profiles import (
    FAIL,
    LOSSY_TRANSFER_SYNTAXES,
    MAYBE_LOSSY_TRANSFER_SYNTAXES,
    PASS,
    WARN,
    AcquisitionProfile,
)
from cases.imaging.quality.reports import CheckResult, SeriesReport


def _not_measured(name: str, limit: Any, problem: str) -> CheckResult:
    return CheckResult(
        name, None, limit, WARN, f"Not measured: {problem.split('. ')[0]}."
    )


def _check_modality(slices, profile):
    found = sorted({s.modality or "" for s in slices})
    allowed = list(profile.modalities)
    if all(m in profile.modalities for m in found):
        return CheckResult("modality", found, allowed, PASS, "The images are CT.")
    shown = ", ".join(m or "unknown" for m in found)
    return CheckResult(
        "modality",
        found,
        allowed,
        FAIL,
        f"The images are of type {shown}; planning needs a CT scan "
        f"({', '.join(allowed)}). Please send the CT series.",
    )


def _check_slices(slices, profile):
    n = len(slices)
    uids = {s.series_instance_uid for s in slices}
    frames = max((s.number_of_frames or 1) for s in slices) if slices else 1
    limit = profile.min_slices
    if frames > 1:
        return CheckResult(
            "slices",
            n,
            limit,
            FAIL,
            "The series is stored as multi-frame (enhanced) images, which this "
            "check cannot measure yet. Please send the axial series as classic "
            "single-frame CT images.",
        )
    if len(uids) > 1:
        return CheckResult(
            "slices",
            n,
            limit,
            FAIL,
            f"The images come from {len(uids)} different series mixed together. "
            "Please send each series separately, unchanged from the scanner.",
        )
    if n < limit:
        return CheckResult(
            "slices",
            n,
            limit,
            FAIL,
            f"The series has only {n} image{'s' if n != 1 else ''}; planning needs "
            "the whole axial series of the scan.",
        )
    return CheckResult("slices", n, limit, PASS, f"The series has {n} images.")


def _check_thickness(slices, profile):
    limit = profile.max_slice_thickness_mm
    values = [s.slice_thickness for s in slices]
    if any(v is None for v in values):
        missing = sum(1 for v in values if v is None)
        return CheckResult(
            "slice_thickness",
            None,
            limit,
            FAIL,
            f"{missing} images do not record their slice thickness, so it cannot be "
            "checked. Please send the original images from the scanner.",
        )
    thickest, thinnest = max(values), min(values)
    if thickest > limit + profile.thickness_tolerance_mm:
        return CheckResult(
            "slice_thickness",
            _r(thickest),
            limit,
            FAIL,
            f"Slices are {_mm(thickest)} mm thick; planning a {profile.label} "
            f"needs {_mm(limit)} mm or thinner. Please reconstruct the scan with "
            "thinner slices.",
        )
    if thickest - thinnest > profile.thickness_tolerance_mm:
        return CheckResult(
            "slice_thickness",
            _r(thickest),
            limit,
            FAIL,
            f"Slices have different thicknesses ({_mm(thinnest)} to "
            f"{_mm(thickest)} mm); planning needs the same thickness for every "
            "slice. Please send one reconstruction with a single slice thickness.",
        )
    return CheckResult(
        "slice_thickness",
        _r(thickest),
        limit,
        PASS,
        f"Slices are {_mm(thickest)} mm thick (limit {_mm(limit)} mm).",
    )


def _check_spacing(slices, profile, geo):
    thicknesses = [s.slice_thickness for s in slices if s.slice_thickness is not None]
    limit = profile.spacing_limit_mm
    if thicknesses:
        limit = min(limit, max(thicknesses))
    limit = round(limit, 4)
    if not geo.ok:
        return _not_measured("slice_spacing", limit, geo.problem)
    widest = max(geo.regular) if geo.regular else geo.nominal
    if widest > limit + profile.spacing_tolerance_mm:
        if thicknesses and widest > max(thicknesses) + profile.spacing_tolerance_mm:
            reason = (
                f"Slices are {_mm(widest)} mm apart but only "
                f"{_mm(max(thicknesses))} mm thick, so the anatomy between them "
                "is missing. Please reconstruct with an increment no larger than "
                "the slice thickness."
            )
        else:
            reason = (
                f"Slices are {_mm(widest)} mm apart; planning a {profile.label} "
                f"needs {_mm(limit)} mm or closer. Please reconstruct with a "
                "smaller increment."
            )
        return CheckResult("slice_spacing", _r(widest), limit, FAIL, reason)
    return CheckResult(
        "slice_spacing",
        _r(widest),
        limit,
        PASS,
        f"Slices are {_mm(widest)} mm apart (limit {_mm(limit)} mm).",
    )


def _check_uniform(profile, geo):
    limit = profile.spacing_tolerance_mm
    if not geo.ok:
        return _not_measured("spacing_uniform", limit, geo.problem)
    spread = (max(geo.regular) - min(geo.regular)) if geo.regular else 0.0
    if spread > limit + 1e-9:
        return CheckResult(
            "spacing_uniform",
            _r(spread),
            limit,
            FAIL,
            f"The distance between slices varies from {_mm(min(geo.regular))} to "
            f"{_mm(max(geo.regular))} mm; planning needs evenly spaced slices. "
            "Please reconstruct with one constant increment.",
        )
    return CheckResult(
        "spacing_uniform",
        _r(spread),
        limit,
        PASS,
        "Slices are evenly spaced.",
    )


def _image(slices, geo, sorted_index: int) -> str:
    """'image 12 at 34.5 mm': how a radiographer finds an image in the series."""
    number = slices[geo.order[sorted_index]].instance_number
    at = f"{geo.along[sorted_index]:.1f} mm"
    return f"image {number} at {at}" if number is not None else f"the image at {at}"


def _check_gaps(slices, profile, geo):
    if not geo.ok:
        return _not_measured("gaps", 0, geo.problem)
    missing = sum(g[1] for g in geo.gaps)
    if geo.gaps:
        i = geo.gaps[0][0]
        where = f"between {_image(slices, geo, i)} and {_image(slices, geo, i + 1)}"
        more = f" and {len(geo.gaps) - 1} more place(s)" if len(geo.gaps) > 1 else ""
        return CheckResult(
            "gaps",
            missing,
            0,
            FAIL,
            f"About {missing} slice(s) are missing from the series ({where}"
            f"{more}). Please send the complete series, every image of it.",
        )
    return CheckResult("gaps", 0, 0, PASS, "No slices are missing.")


def _check_duplicates(profile, geo):
    if not geo.ok:
        return _not_measured("duplicates", 0, geo.problem)
    count = len(geo.duplicates)
    if count:
        return CheckResult(
            "duplicates",
            count,
            0,
            FAIL,
            f"{count} image(s) lie at the same position as another image (for "
            "example two reconstructions or repeated scans in one series). Please "
            "send one reconstruction per series, with one image per position.",
        )
    return CheckResult("duplicates", 0, 0, PASS, "No two images share a position.")


def _check_tilt(slices, profile, geo):
    limit = profile.max_gantry_tilt_deg
    header = max((abs(s.gantry_tilt) for s in slices if s.gantry_tilt), default=0.0)
    sheared = geo.shear_deg if geo.ok else 0.0
    measured = max(header, sheared)
    if measured > limit + profile.tilt_tolerance_deg:
        if header > limit + profile.tilt_tolerance_deg:
            reason = (
                f"The gantry was tilted by {_deg(header)}° during the scan; planning "
                f"needs a gantry tilt of {_deg(limit)}°. Please repeat the scan "
                "with the gantry straight."
            )
        else:
            reason = (
                f"The slices are shifted against each other by {_deg(sheared)}° "
                "(as after a gantry tilt); planning needs a straight stack with the "
                f"gantry at {_deg(limit)}°. Please repeat the scan with the gantry "
                "straight."
            )
        return CheckResult("gantry_tilt", round(measured, 2), limit, FAIL, reason)
    return CheckResult(
        "gantry_tilt", round(measured, 2), limit, PASS, "The gantry was not tilted."
    )


def _check_orientation(slices, profile, geo):
    limit = profile.max_axial_deviation_deg
    if not geo.ok and not all(s.orientation for s in slices):
        return _not_measured("orientation", limit, geo.problem)
    ref = slices[0].orientation
    tol = profile.orientation_tolerance
    differing = sum(
        1
        for s in slices
        if s.orientation != ref
        and (
            s.orientation is None
            or max(abs(a - b) for a, b in zip(s.orientation, ref, strict=True)) > tol
        )
    )
    row, col = ref[:3], ref[3:]
    orthonormal = (
        abs(_dot(row, col)) < 1e-3
        and abs(_norm(row) - 1) < 1e-3
        and abs(_norm(col) - 1) < 1e-3
    )
    normal = _cross(row, col)
    length = _norm(normal) or 1.0
    deviation = _angle_deg(abs(normal[2]) / length)
    measured = round(deviation, 2)
    if differing:
        return CheckResult(
            "orientation",
            measured,
            limit,
            FAIL,
            f"{differing} image(s) have a different orientation from the rest of "
            "the series; planning needs one axial stack. Please send the original "
            "axial series unchanged.",
        )
    if not orthonormal:
        return CheckResult(
            "orientation",
            measured,
            limit,
            FAIL,
            "The recorded image orientation is not valid (its directions are not "
            "perpendicular). Please send the original images from the scanner.",
        )
    if deviation > limit:
        return CheckResult(
            "orientation",
            measured,
            limit,
            FAIL,
            f"The images are not axial: they are turned {_deg(deviation)}° from the "
            "axial plane. Planning needs the original axial images, not a "
            "reformatted or oblique series.",
        )
    return CheckResult(
        "orientation", measured, limit, PASS, "All images are axial and aligned."
    )


def _check_matrix(slices, profile):
    limit = profile.min_matrix
    sizes = Counter((s.rows, s.columns) for s in slices)
    if any(r is None or c is None for r, c in sizes):
        return CheckResult(
            "matrix",
            None,
            limit,
            FAIL,
            "Some images do not record their size. Please send the original "
            "images from the scanner.",
        )
    smallest = min(sizes, key=lambda rc: min(rc))
    measured = [smallest[0], smallest[1]]
    if min(smallest) < limit:
        return CheckResult(
            "matrix",
            measured,
            limit,
            FAIL,
            f"Images are {smallest[1]}×{smallest[0]} pixels; planning needs "
            f"{limit}×{limit} or more. Please reconstruct the scan with a "
            f"{limit}×{limit} matrix.",
        )
    if len(sizes) > 1:
        return CheckResult(
            "matrix",
            measured,
            limit,
            FAIL,
            f"Images of the series have {len(sizes)} different sizes; planning "
            "needs one size for the whole series. Please send one reconstruction.",
        )
    return CheckResult(
        "matrix",
        measured,
        limit,
        PASS,
        f"Images are {smallest[1]}×{smallest[0]} pixels.",
    )


def _check_pixel_spacing(slices, profile):
    tol = profile.pixel_spacing_tolerance_mm
    values = [s.pixel_spacing for s in slices]
    if any(v is None for v in values):
        return CheckResult(
            "pixel_spacing",
            None,
            tol,
            FAIL,
            "Some images do not record their pixel size, so distances cannot be "
            "measured. Please send the original images from the scanner.",
        )
    lo = (min(v[0] for v in values), min(v[1] for v in values))
    hi = (max(v[0] for v in values), max(v[1] for v in values))
    measured = [_r(values[0][0]), _r(values[0][1])]
    if hi[0] - lo[0] > tol or hi[1] - lo[1] > tol:
        return CheckResult(
            "pixel_spacing",
            measured,
            tol,
            FAIL,
            f"The pixel size varies within the series ({_mm(min(lo))} to "
            f"{_mm(max(hi))} mm); planning needs one pixel size. Please send one "
            "reconstruction with a single field of view.",
        )
    return CheckResult(
        "pixel_spacing",
        measured,
        tol,
        PASS,
        f"Pixels are {_mm(values[0][0])} × {_mm(values[0][1])} mm in every image.",
    )


def _check_fov(slices, profile, geo):
    tol = profile.fov_tolerance_mm
    diameters = sorted({s.reconstruction_diameter for s in slices} - {None})
    shift = geo.centre_spread_mm if geo.ok else None
    measured = {
        "centre_shift_mm": _r(shift, 3),
        "reconstruction_diameters_mm": [_r(d, 3) for d in diameters],
    }
    if len(diameters) > 1 and diameters[-1] - diameters[0] > tol:
        return CheckResult(
            "field_of_view",
            measured,
            tol,
            FAIL,
            f"The field of view changes within the series ({_mm(diameters[0])} to "
            f"{_mm(diameters[-1])} mm); planning needs the same field of view and "
            "centre for every image. Please send one reconstruction.",
        )
    if shift is not None and shift > tol:
        return CheckResult(
            "field_of_view",
            measured,
            tol,
            FAIL,
            f"The centre of the images moves by up to {_mm(shift)} mm within the "
            "series; planning needs the same field of view and centre for every "
            "image. Please send one reconstruction.",
        )
    if shift is None:
        return _not_measured("field_of_view", tol, geo.problem)
    return CheckResult(
        "field_of_view",
        measured,
        tol,
        PASS,
        "Every image has the same field of view and centre.",
    )


def kernel_allowed(kernel: str, patterns: Iterable[str]) -> bool:
    """Whether a Convolution Kernel value matches one of the accepted patterns."""
    value = kernel.upper().strip()
    parts = [value, *(p.strip() for p in value.split("\\") if p.strip())]
    pats = [p.upper().strip() for p in patterns if p.strip()]
    return any(fnmatchcase(part, pat) for part in parts for pat in pats)


def _check_kernel(slices, profile):
    found = Counter(s.kernel for s in slices)
    named = sorted(k for k in found if k)
    limit = list(profile.allowed_kernels)
    rejected = [k for k in named if not kernel_allowed(k, profile.allowed_kernels)]
    if rejected:
        return CheckResult(
            "kernel",
            named,
            limit,
            FAIL,
            f"The images were reconstructed with the {', '.join(rejected)} kernel, "
            "which is not a bone kernel. Please reconstruct the scan with a bone "
            "or sharp kernel.",
        )
    if None in found:
        return CheckResult(
            "kernel",
            named,
            limit,
            WARN,
            f"{found[None]} image(s) do not record their reconstruction kernel; "
            "the visual check must confirm a bone kernel.",
        )
    return CheckResult(
        "kernel",
        named,
        limit,
        PASS,
        f"Bone kernel ({', '.join(named)}).",
    )


def _check_bits(slices, profile):
    limit = profile.min_bits_stored
    values = [s.bits_stored for s in slices]
    if any(v is None for v in values):
        return CheckResult(
            "bits_stored",
            None,
            limit,
            FAIL,
            "Some images do not record their bit depth. Please send the original "
            "images from the scanner.",
        )
    lowest = min(values)
    if lowest < limit:
        return CheckResult(
            "bits_stored",
            lowest,
            limit,
            FAIL,
            f"Images hold only {lowest}-bit values, which loses bone detail; "
            f"planning needs {limit}-bit or more. Please send the original CT "
            "images, not screenshots or converted images.",
        )
    return CheckResult("bits_stored", lowest, limit, PASS, f"Images are {lowest}-bit.")


# Lossy Image Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5).
LOSSY_METHODS: dict[str, str] = {
    "ISO_10918_1": "JPEG",
    "ISO_14495_1": "JPEG-LS near-lossless",
    "ISO_15444_1": "JPEG 2000",
    "ISO_15444_15": "High-Throughput JPEG 2000",
    "ISO_13818_2": "MPEG-2",
    "ISO_14496_10": "MPEG-4",
    "ISO_23008_2": "HEVC",
    "ISO_18181_1": "JPEG XL",
}


def lossy_reason(header: SliceHeader) -> str | None:
    """Why an image counts as lossy compressed, or ``None`` when it does not."""
    ts = header.transfer_syntax_uid or ""
    if ts in LOSSY_TRANSFER_SYNTAXES:
        return f"{LOSSY_TRANSFER_SYNTAXES[ts]} compression"
    if header.lossy_image_compression == "01":
        methods = (header.lossy_method or "").split("\\")
        names = [LOSSY_METHODS.get(m.strip().upper(), "") for m in methods]
        named = ", ".join(dict.fromkeys(n for n in names if n))
        return f"{named or 'lossy'} compression"
    if ts in MAYBE_LOSSY_TRANSFER_SYNTAXES and header.lossy_image_compression != "00":
        return f"{MAYBE_LOSSY_TRANSFER_SYNTAXES[ts]} compression (possibly lossy)"
    return None


def _check_lossy(slices, profile):
    reasons = Counter(r for r in (lossy_reason(s) for s in slices) if r)
    count = sum(reasons.values())
    if count:
        how = ", ".join(sorted(reasons))
        return CheckResult(
            "lossy_compression",
            count,
            0,
            FAIL,
            f"{count} of {len(slices)} images were stored with {how}, which "
            "changes the image values. Please send the original images from the "
            "scanner, uncompressed or with lossless compression.",
        )
    return CheckResult(
        "lossy_compression", 0, 0, PASS, "No image was lossy compressed."
    )


def _check_frame_of_reference(slices, profile):
    uids = {s.frame_of_reference_uid for s in slices}
    if None in uids:
        return CheckResult(
            "frame_of_reference",
            len(uids - {None}),
            1,
            FAIL,
            "Some images do not record their frame of reference, so they cannot "
            "be placed in one volume. Please send the original images from the "
            "scanner.",
        )
    if len(uids) > 1:
        return CheckResult(
            "frame_of_reference",
            len(uids),
            1,
            FAIL,
            f"The images belong to {len(uids)} different patient positions (frames "
            "of reference), as when scans are mixed or the patient was moved. "
            "Please send one scan taken in one position.",
        )
    return CheckResult(
        "frame_of_reference", 1, 1, PASS, "All images share one patient position."
    )


def _check_coverage(slices, profile, geo):
    limit = profile.min_coverage_mm
    if not geo.ok:
        return None, _not_measured("coverage", limit, geo.problem)
    thick = [s.slice_thickness for s in slices if s.slice_thickness]
    # Extent between the first and last slice centres plus one slice thickness (or
    # one increment when the thickness is missing): the length of anatomy imaged.
    extra = statistics.median(thick) if thick else geo.nominal
    coverage = geo.along[-1] - geo.along[0] + extra
    if coverage + 1e-6 < limit:
        return coverage, CheckResult(
            "coverage",
            _r(coverage, 2),
            limit,
            FAIL,
            f"The scan covers only {coverage:.0f} mm from end to end; planning a "
            f"{profile.label} needs at least {limit:.0f} mm. Please scan the whole "
            "region of interest with a margin.",
        )
    return coverage, CheckResult(
        "coverage",
        _r(coverage, 2),
        limit,
        PASS,
        f"The scan covers {coverage:.0f} mm (at least {limit:.0f} mm needed).",
    )


def check_series(headers: Sequence[Any], profile: AcquisitionProfile) -> SeriesReport:
    """Check one series' headers (``SliceHeader`` or pydicom Datasets) on a profile."""
    slices = [
        h if isinstance(h, SliceHeader) else SliceHeader.from_dataset(h)
        for h in headers
    ]
    if not slices:
        return SeriesReport(
            series_instance_uid=None,
            series_number=None,
            series_description=None,
            slice_count=0,
            region=profile.region,
            checks=(
                CheckResult(
                    "slices",
                    0,
                    profile.min_slices,
                    FAIL,
                    "The series has no images. Please send the axial CT series.",
                ),
            ),
        )
    first = slices[0]
    geo = _geometry(slices, profile)
    coverage, coverage_check = _check_coverage(slices, profile, geo)
    checks: list[CheckResult] = [
        _check_modality(slices, profile),
        _check_slices(slices, profile),
    ]
    if not geo.ok and len(slices) >= profile.min_slices:
        # A too-short series already failed "slices"; one reason is enough.
        checks.append(CheckResult("geometry", None, None, FAIL, geo.problem))
    checks += [
        _check_thickness(slices, profile),
        _check_spacing(slices, profile, geo),
        _check_uniform(profile, geo),
        _check_gaps(slices, profile, geo),
        _check_duplicates(profile, geo),
        _check_tilt(slices, profile, geo),
        _check_orientation(slices, profile, geo),
        _check_matrix(slices, profile),
        _check_pixel_spacing(slices, profile),
        _check_fov(slices, profile, geo),
        _check_kernel(slices, profile),
        _check_bits(slices, profile),
        _check_lossy(slices, profile),
        _check_frame_of_reference(slices, profile),
        coverage_check,
    ]
    thick = [s.slice_thickness for s in slices if s.slice_thickness is not None]
    return SeriesReport(
        series_instance_uid=first.series_instance_uid,
        series_number=first.series_number,
        series_description=first.series_description,
        slice_count=len(slices),
        region=profile.region,
        checks=tuple(checks),
        slice_thickness_mm=_r(max(thick)) if thick else None,
        slice_spacing_mm=_r(geo.nominal),
        coverage_mm=_r(coverage, 2),
    )
