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

Modules: ``profiles`` (the limits per region), ``headers`` (what is read of a
header), ``geometry``, ``checks`` (one function per check, and ``check_series``),
``reports`` and ``verdict`` (the study's outcome). Import from this package.
"""

from cases.imaging.quality.checks import (
    LOSSY_METHODS,
    check_series,
    kernel_allowed,
    lossy_reason,
)
from cases.imaging.quality.headers import SliceHeader, Vec
from cases.imaging.quality.profiles import (
    BONE_KERNELS,
    DEFAULT_PROFILES,
    FAIL,
    LOSSY_TRANSFER_SYNTAXES,
    MAYBE_LOSSY_TRANSFER_SYNTAXES,
    PASS,
    REGIONS,
    WARN,
    AcquisitionProfile,
    default_profile,
)
from cases.imaging.quality.reports import CheckResult, SeriesReport
from cases.imaging.quality.verdict import StudyVerdict, choose_series, study_verdict

__all__ = [
    "BONE_KERNELS",
    "DEFAULT_PROFILES",
    "FAIL",
    "LOSSY_METHODS",
    "LOSSY_TRANSFER_SYNTAXES",
    "MAYBE_LOSSY_TRANSFER_SYNTAXES",
    "PASS",
    "REGIONS",
    "WARN",
    "AcquisitionProfile",
    "CheckResult",
    "SeriesReport",
    "SliceHeader",
    "StudyVerdict",
    "Vec",
    "check_series",
    "choose_series",
    "default_profile",
    "kernel_allowed",
    "lossy_reason",
    "study_verdict",
]
