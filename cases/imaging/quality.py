"""Planning-quality checks of a CT series, from its DICOM headers alone.

A design engineer can only plan a patient-specific implant on a CT that is thin, evenly
sliced, untilted, axial, full-resolution and losslessly stored (REGULATORY.md §5,
checklist item 49). These checks read only headers (files opened with
``stop_before_pixels=True``), touch no model and no database, and are cheap: a
300-image series is checked in a few milliseconds once its headers are read.

Every check reports its measured value, its limit, a verdict (``pass``, ``warn`` or
``fail``) and one sentence a hospital radiographer can act on. Motion, metal artefacts
and whether the whole anatomy is in the scan cannot be judged from headers: they stay a
documented visual QC step (checklist item 50); the coverage check here only catches a
series that is plainly too short.

Geometry is measured, never read from derived tags: slices are ordered by their
Image Position (Patient) projected on the slice normal (the cross product of the two
Image Orientation (Patient) direction cosines), and spacing, gaps and duplicates come
from consecutive positions, not from Slice Location or Spacing Between Slices, which
scanners and exporters fill inconsistently.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any

PASS = "pass"
WARN = "warn"
FAIL = "fail"

# Reconstruction kernels accepted as "bone or sharp" by default. Vendors name kernels
# differently, so these are shell-style patterns (fnmatch: ``*``, ``?``, ``[6-9]``),
# matched case-insensitively against the whole Convolution Kernel (0018,1210) value and
# against each of its backslash-separated parts (Siemens writes e.g. ``Br64d\3``, the
# kernel and the iterative strength). A starting list to be checked against each
# hospital's protocol and extended through the admin profile:
# - generic and GE: BONE, BONEPLUS, "HD BONE", EDGE (GE's sharpest), anything "SHARP";
# - Siemens (classic FBP and SAFIRE): B60-B99, H60-H99 (head), I/J60+ (SAFIRE body and
#   head), U60+ (ultra-high resolution); Siemens' own manual lists B50-B80 as the sharp
#   body kernels for spine and extremities; B50/H50 are left out as medium-sharp;
# - Siemens (ADMIRE, Force/Drive/Edge): Br60+, Hr60+, Ur60+;
# - Philips: D and E (sharp/very sharp), YA, YC, YD (Y-Sharp detail filters);
# - Canon/Toshiba: FC30-FC39 (bone) and FC80-FC89 (high-resolution bone, inner ear).
# Lung kernels (GE LUNG, Philips L, Canon FC5x) are sharp but tuned for air-tissue
# contrast with high noise and are not accepted for bone segmentation.
BONE_KERNELS: tuple[str, ...] = (
    "*BONE*",
    "*SHARP*",
    "EDGE*",
    "B[6-9][0-9]*",
    "H[6-9][0-9]*",
    "I[6-9][0-9]*",
    "J[6-9][0-9]*",
    "U[6-9][0-9]*",
    "BR[6-9][0-9]*",
    "HR[6-9][0-9]*",
    "UR[6-9][0-9]*",
    "D",
    "E",
    "YA",
    "YC",
    "YD",
    "FC3[0-9]*",
    "FC8[0-9]*",
)

# Transfer syntaxes whose pixel data have been through lossy compression
# (DICOM PS3.5 Section 8 and Annex A; PS3.6 Annex A).
LOSSY_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.52": "JPEG Extended (retired)",
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection (retired)",
    "1.2.840.10008.1.2.4.54": "JPEG Spectral Selection (retired)",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression (retired)",
    "1.2.840.10008.1.2.4.56": "JPEG Full Progression (retired)",
    "1.2.840.10008.1.2.4.59": "JPEG Extended Hierarchical (retired)",
    "1.2.840.10008.1.2.4.60": "JPEG Extended Hierarchical (retired)",
    "1.2.840.10008.1.2.4.61": "JPEG Extended Hierarchical (retired)",
    "1.2.840.10008.1.2.4.62": "JPEG Spectral Selection Hierarchical (retired)",
    "1.2.840.10008.1.2.4.63": "JPEG Spectral Selection Hierarchical (retired)",
    "1.2.840.10008.1.2.4.64": "JPEG Full Progression Hierarchical (retired)",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.100": "MPEG-2",
    "1.2.840.10008.1.2.4.100.1": "MPEG-2",
    "1.2.840.10008.1.2.4.101": "MPEG-2",
    "1.2.840.10008.1.2.4.101.1": "MPEG-2",
    "1.2.840.10008.1.2.4.102": "MPEG-4",
    "1.2.840.10008.1.2.4.102.1": "MPEG-4",
    "1.2.840.10008.1.2.4.103": "MPEG-4",
    "1.2.840.10008.1.2.4.103.1": "MPEG-4",
    "1.2.840.10008.1.2.4.104": "MPEG-4",
    "1.2.840.10008.1.2.4.104.1": "MPEG-4",
    "1.2.840.10008.1.2.4.105": "MPEG-4",
    "1.2.840.10008.1.2.4.105.1": "MPEG-4",
    "1.2.840.10008.1.2.4.106": "MPEG-4",
    "1.2.840.10008.1.2.4.106.1": "MPEG-4",
    "1.2.840.10008.1.2.4.107": "HEVC",
    "1.2.840.10008.1.2.4.108": "HEVC",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG recompression",
}

# Transfer syntaxes that allow both lossless and lossy coding. The header cannot tell
# which was used, so they count as lossy unless Lossy Image Compression (0028,2110)
# explicitly says "00" (never lossy compressed).
MAYBE_LOSSY_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 Part 2 multi-component",
    "1.2.840.10008.1.2.4.94": "JPIP referenced",
    "1.2.840.10008.1.2.4.95": "JPIP referenced deflate",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
}

REGIONS: tuple[str, ...] = (
    "cranial",
    "orbital",
    "midface",
    "mandible",
    "maxilla",
    "dental",
    "pelvis",
    "long_bone",
    "spine",
    "other",
)


@dataclass(frozen=True)
class AcquisitionProfile:
    """The CT acquisition a region's implants are planned on: limits and tolerances.

    Stored as JSON by the admin-editable profile (``as_dict`` / ``from_dict``); the
    defaults in ``DEFAULT_PROFILES`` cite REGULATORY.md §5 and should be replaced by the
    implant manufacturer's current scan protocol where one is on file.
    """

    region: str
    label: str
    max_slice_thickness_mm: float
    min_coverage_mm: float
    # Increment between slice positions; ``None`` means "no larger than the thickness".
    # Spacing is also always held to the measured slice thickness: a larger step leaves
    # anatomy between slices unscanned.
    max_slice_spacing_mm: float | None = None
    min_matrix: int = 512
    min_bits_stored: int = 12
    allowed_kernels: tuple[str, ...] = BONE_KERNELS
    modalities: tuple[str, ...] = ("CT",)
    min_slices: int = 2
    max_gantry_tilt_deg: float = 0.0
    # Rounding in stored positions makes a straight stack look sheared by a few
    # hundredths of a degree; real gantry tilts are whole degrees.
    tilt_tolerance_deg: float = 0.1
    # Angle between the slice normal and the patient's head-foot axis.
    max_axial_deviation_deg: float = 0.5
    # REGULATORY.md §5: spread (max - min) of consecutive spacings <= 0.01 mm.
    spacing_tolerance_mm: float = 0.01
    duplicate_tolerance_mm: float = 0.01
    # A step more than this many times the usual one is a gap (missing slices).
    gap_factor: float = 1.5
    thickness_tolerance_mm: float = 0.001
    pixel_spacing_tolerance_mm: float = 0.001
    orientation_tolerance: float = 1e-4
    fov_tolerance_mm: float = 0.5

    def __post_init__(self) -> None:
        for name in ("allowed_kernels", "modalities"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError(f"{name}: expected a list of strings")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("region", "label", "allowed_kernels", "modalities"):
                continue
            if value is None and f.name == "max_slice_spacing_mm":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name}: expected a number")
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{f.name}: must be a finite number >= 0")
        if self.max_slice_thickness_mm <= 0:
            raise ValueError("max_slice_thickness_mm: must be > 0")
        if self.gap_factor <= 1:
            raise ValueError("gap_factor: must be > 1")

    @property
    def spacing_limit_mm(self) -> float:
        if self.max_slice_spacing_mm is None:
            return self.max_slice_thickness_mm
        return self.max_slice_spacing_mm

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["allowed_kernels"] = list(self.allowed_kernels)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcquisitionProfile:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown profile fields: {', '.join(unknown)}")
        return cls(**dict(data))


def _profile(region: str, label: str, thickness: float, coverage: float, **kw):
    return AcquisitionProfile(
        region=region,
        label=label,
        max_slice_thickness_mm=thickness,
        min_coverage_mm=coverage,
        **kw,
    )


# Thickness limits (REGULATORY.md §5): the header-check table's default of 1.0 mm and
# 0.625 mm for CMF (orbital, midface, mandible, maxilla; Walter Reed asks 0.5 mm for
# face, orbits and mandible, Codubix names 0.625 mm best); cranial 1.0 mm (Eincobio
# <= 1 mm; Walter Reed skull 0.75-1.25 mm); dental 1.0 mm thick at a 0.5 mm increment
# (Nobel Biocare: collimation <= 1 mm, interval 0.5 mm; DTX Studio: increment < 0.5 mm);
# spine 1.0 mm (AJNR: 1.0 mm recon); pelvis and long bones 1.25 mm (Walter Reed upper
# value for pelvis, femur, forearm).
# Coverage minima are NOT from a source: they are floors that catch a truncated or
# scout-length series (an adult skull is 130-150 mm vertex to foramen magnum). Whether
# the whole region is in the scan stays the visual QC of checklist item 50.
DEFAULT_PROFILES: dict[str, AcquisitionProfile] = {
    p.region: p
    for p in (
        _profile("cranial", "cranial implant", 1.0, 120.0),
        _profile("orbital", "orbital implant", 0.625, 40.0),
        _profile("midface", "midface implant", 0.625, 60.0),
        _profile("mandible", "mandible implant", 0.625, 60.0),
        _profile("maxilla", "maxilla implant", 0.625, 40.0),
        _profile("dental", "dental implant", 1.0, 30.0, max_slice_spacing_mm=0.5),
        _profile("pelvis", "pelvic implant", 1.25, 150.0),
        _profile("long_bone", "long-bone implant", 1.25, 100.0),
        _profile("spine", "spinal implant", 1.0, 50.0),
        _profile("other", "implant", 1.0, 20.0),
    )
}


def default_profile(region: str) -> AcquisitionProfile:
    try:
        return DEFAULT_PROFILES[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r}") from None


Vec = tuple[float, float, float]


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        items = [float(v) for v in value] if count > 1 else [float(value)]
    except (TypeError, ValueError):
        return None
    if len(items) != count or not math.isfinite(sum(items)):
        return None
    return tuple(items)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = "\\".join(str(v) for v in value)
        except TypeError:
            text = str(value)
    text = text.strip()
    return text or None


def _split(value: str | None) -> list[str] | None:
    return None if value is None else value.split("\\")


class _ElementReader:
    """Reads the few elements the checks need straight from their stored bytes.

    pydicom converts a value on first access, validating it on the way; for the
    ASCII (CS, DS, IS, UI) and US elements used here that costs ~2 ms per image, more
    than all the checks of a 300-image series. Elements already converted (a Dataset
    built in memory) are read through their value.
    """

    __slots__ = ("ds",)

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def _element(self, tag: int) -> Any:
        try:
            return self.ds.get_item(tag)
        except (KeyError, AttributeError):
            return None

    def text(self, tag: int) -> str | None:
        elem = self._element(tag)
        if elem is None:
            return None
        value = elem.value
        if isinstance(value, bytes | bytearray):
            value = value.decode("ascii", "replace").replace("\x00", "")
        return _text(value)

    def number(self, tag: int) -> int | None:
        elem = self._element(tag)
        if elem is None:
            return None
        value = elem.value
        if isinstance(value, bytes | bytearray):
            if len(value) < 2:
                return None
            order = "little" if getattr(elem, "is_little_endian", True) else "big"
            return int.from_bytes(value[:2], order)
        return _int(value)


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """What the checks need from one image's header, already typed."""

    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    instance_number: int | None = None
    modality: str | None = None
    position: Vec | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    pixel_spacing: tuple[float, float] | None = None
    rows: int | None = None
    columns: int | None = None
    slice_thickness: float | None = None
    gantry_tilt: float | None = None
    kernel: str | None = None
    bits_stored: int | None = None
    lossy_image_compression: str | None = None
    lossy_method: str | None = None
    transfer_syntax_uid: str | None = None
    frame_of_reference_uid: str | None = None
    reconstruction_diameter: float | None = None
    number_of_frames: int | None = None

    @classmethod
    def from_dataset(
        cls, ds: Any, transfer_syntax_uid: str | None = None
    ) -> SliceHeader:
        """Typed header of a pydicom Dataset (read with ``stop_before_pixels``).

        The transfer syntax comes from the argument, else the dataset's file meta.
        Malformed values become ``None`` so that the checks report them instead of
        raising.
        """
        if transfer_syntax_uid is None:
            meta = getattr(ds, "file_meta", None)
            if meta is not None:
                transfer_syntax_uid = _text(meta.get("TransferSyntaxUID"))
        reader = _ElementReader(ds)
        text, number = reader.text, reader.number
        description = ds.get("SeriesDescription")
        return cls(
            sop_instance_uid=text(0x00080018),
            series_instance_uid=text(0x0020000E),
            series_number=_int(text(0x00200011)),
            series_description=_text(description),
            instance_number=_int(text(0x00200013)),
            modality=text(0x00080060),
            position=_floats(_split(text(0x00200032)), 3),
            orientation=_floats(_split(text(0x00200037)), 6),
            pixel_spacing=_floats(_split(text(0x00280030)), 2),
            rows=number(0x00280010),
            columns=number(0x00280011),
            slice_thickness=_float(text(0x00180050)),
            gantry_tilt=_float(text(0x00181120)),
            kernel=text(0x00181210),
            bits_stored=number(0x00280101),
            lossy_image_compression=text(0x00282110),
            lossy_method=text(0x00282114),
            transfer_syntax_uid=transfer_syntax_uid,
            frame_of_reference_uid=text(0x00200052),
            reconstruction_diameter=_float(text(0x00181100)),
            number_of_frames=_int(text(0x00280008)),
        )


def read_headers(paths: Iterable[Any]) -> list[SliceHeader]:
    """Headers of DICOM files, read without their pixel data."""
    from pydicom import dcmread

    return [
        SliceHeader.from_dataset(dcmread(p, stop_before_pixels=True)) for p in paths
    ]


def group_series(headers: Iterable[Any]) -> dict[str, list[SliceHeader]]:
    """Headers split by Series Instance UID, in their original order."""
    series: dict[str, list[SliceHeader]] = {}
    for h in headers:
        header = h if isinstance(h, SliceHeader) else SliceHeader.from_dataset(h)
        series.setdefault(header.series_instance_uid or "", []).append(header)
    return series


@dataclass(frozen=True)
class CheckResult:
    """One check of one series: what was measured, against what, and what it means."""

    name: str
    measured: Any
    limit: Any
    verdict: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SeriesReport:
    """The planning-quality report of one CT series against one acquisition profile."""

    series_instance_uid: str | None
    series_number: int | None
    series_description: str | None
    slice_count: int
    region: str
    checks: tuple[CheckResult, ...]
    slice_thickness_mm: float | None = None
    slice_spacing_mm: float | None = None
    coverage_mm: float | None = None

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        if FAIL in verdicts:
            return FAIL
        return WARN if WARN in verdicts else PASS

    @property
    def passed(self) -> bool:
        return self.verdict != FAIL

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == FAIL]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == WARN]

    @property
    def reasons(self) -> list[str]:
        """Plain-words reasons the series cannot be used, one per failed check."""
        return [c.reason for c in self.failures]

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def title(self) -> str:
        parts = []
        if self.series_number is not None:
            parts.append(f"Series {self.series_number}")
        else:
            parts.append("Series")
        if self.series_description:
            parts.append(f'"{self.series_description}"')
        parts.append(f"({self.slice_count} images)")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "slice_count": self.slice_count,
            "region": self.region,
            "verdict": self.verdict,
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "coverage_mm": self.coverage_mm,
            "checks": [c.as_dict() for c in self.checks],
        }


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
    first = slices[0] if slices else SliceHeader()
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


def _preference(report: SeriesReport) -> tuple:
    inf = float("inf")
    return (
        report.verdict != PASS,
        report.slice_thickness_mm if report.slice_thickness_mm is not None else inf,
        -(report.coverage_mm or 0.0),
        report.slice_spacing_mm if report.slice_spacing_mm is not None else inf,
        -report.slice_count,
        report.series_instance_uid or "",
    )


def choose_series(reports: Iterable[SeriesReport]) -> SeriesReport | None:
    """The passing series to propose for design, or ``None`` if none passes.

    Preference, in order: no warnings over warnings; the thinnest slices (finer
    detail along the axis); the longest coverage (more anatomy for mirroring and
    fixation); the smallest increment; the most images; then the Series Instance UID,
    so the choice is the same every time.
    """
    candidates = [r for r in reports if r.passed]
    return min(candidates, key=_preference) if candidates else None


@dataclass(frozen=True)
class StudyVerdict:
    """Whether a study can go to design, which series, and otherwise why not."""

    accepted: bool
    proposed: SeriesReport | None
    reasons: tuple[str, ...]
    message: str

    @property
    def proposed_series_uid(self) -> str | None:
        return self.proposed.series_instance_uid if self.proposed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "proposed_series_uid": self.proposed_series_uid,
            "reasons": list(self.reasons),
            "message": self.message,
        }


def study_verdict(reports: Sequence[SeriesReport]) -> StudyVerdict:
    """The study's outcome: the proposed series, or the re-scan reasons in plain words.

    When no series passes, ``reasons`` lists every failed check of every series,
    prefixed with the series it belongs to, for the hospital to read.
    """
    best = choose_series(reports)
    if best is not None:
        return StudyVerdict(
            accepted=True,
            proposed=best,
            reasons=tuple(c.reason for c in best.warnings),
            message=f"{best.title} meets the planning requirements and is proposed "
            "for design.",
        )
    if not reports:
        reason = "No CT images were received for this study."
        return StudyVerdict(False, None, (reason,), reason + " Please send the scan.")
    reasons = tuple(f"{r.title}: {reason}" for r in reports for reason in r.reasons)
    if len(reports) == 1:
        which = "the series received does not meet the planning requirements"
    else:
        which = f"none of the {len(reports)} series received meets the requirements"
    message = (
        f"The scan cannot be used for planning: {which}. Please send a new "
        "reconstruction or scan that corrects the points listed."
    )
    return StudyVerdict(False, None, reasons, message)
