"""Acquisition profiles: the limits a series is checked against, per anatomical
region (REGULATORY.md §5), and the verdict words."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
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
