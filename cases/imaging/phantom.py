"""Synthetic CT series of an ellipsoid head, for tests and benchmarks.

No real patient is in here: the patient is "PHANTOM^TEST", and the head is four
nested ellipsoids (air, scalp, skull about 1400 HU, brain) with Gaussian noise.
Pure Python (numpy is not a dependency): each row of an image is a few runs of one
tissue, each run cut from a pre-computed noisy strip of that tissue, so a 512 x 512
slice costs a couple of milliseconds.

The knobs the planning-quality checks need: slice count, matrix, slice thickness and
spacing, missing slices (a gap), gantry tilt, and the transfer syntax, including JPEG
Baseline (a real, if crude, lossy JPEG: each 8 x 8 block keeps only its mean).
``spec_passing`` sizes a series to pass given acquisition profiles.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import random
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from cases.imaging.quality import AcquisitionProfile, kernel_allowed

TRANSFER_SYNTAXES = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        JPEGBaseline8Bit,
    }
)
# Tissue: (Hounsfield units, noise scale).
_AIR, _SCALP, _SKULL, _BRAIN = 0, 1, 2, 3
_TISSUES = ((-1000, 0.3), (40, 1.0), (1400, 2.0), (35, 1.0))
# Outer semi-axes of the head (left-right, anterior-posterior, head-foot), in mm, and
# the depth below the scalp surface at which skull and brain begin.
_HEAD = (72.0, 92.0, 100.0)
_SKULL_DEPTH = 5.0
_BRAIN_DEPTH = 12.0
_INTERCEPT = -1024


@dataclass(frozen=True)
class PhantomSpec:
    """One series. Distances in mm, tilt in degrees."""

    slices: int = 32
    rows: int = 512
    columns: int = 512
    slice_thickness: float = 1.0
    spacing: float | None = None  # between slice centres; default: the thickness
    pixel_spacing: float | None = None  # default: a 240 mm field of view
    gantry_tilt: float = 0.0
    missing_slices: tuple[int, ...] = ()  # indices left out: a gap in the series
    transfer_syntax: str = ExplicitVRLittleEndian
    noise_hu: float = 20.0
    seed: int = 0
    series_number: int = 1
    patient_name: str = "PHANTOM^TEST"
    patient_id: str = "PHANTOM-0001"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    study_date: datetime.date = datetime.date(2024, 1, 15)
    study_time: str = "101500"
    study_uid: str | None = None  # default: derived from the seed
    accession_number: str | None = None  # default: derived from the seed
    convolution_kernel: str = "BONE"

    def __post_init__(self) -> None:
        if self.slices < 1 or self.rows < 8 or self.columns < 8:
            raise ValueError("a series needs slices and at least 8 x 8 pixels")
        if self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {self.transfer_syntax}")
        if self.transfer_syntax == JPEGBaseline8Bit and (
            self.rows % 8 or self.columns % 8
        ):
            raise ValueError("JPEG phantoms need rows and columns divisible by 8")
        if any(not 0 <= i < self.slices for i in self.missing_slices):
            raise ValueError("missing_slices must be indices of the series")

    @property
    def slice_spacing(self) -> float:
        return self.spacing if self.spacing is not None else self.slice_thickness

    @property
    def coverage_mm(self) -> float:
        """Extent along the axis: first to last slice centre, plus one thickness."""
        return (self.slices - 1) * self.slice_spacing + self.slice_thickness

    @property
    def pixel_mm(self) -> float:
        if self.pixel_spacing is not None:
            return self.pixel_spacing
        return 240.0 / self.columns

    @property
    def lossy(self) -> bool:
        return self.transfer_syntax == JPEGBaseline8Bit


def spec_passing(profiles: Iterable[AcquisitionProfile], **fields) -> PhantomSpec:
    """A spec whose series passes every one of ``profiles``: the thinnest slices,
    the largest matrix and the longest coverage any of them asks for, a kernel they
    all accept. ``fields`` set fields of the spec (a thicker slice, a tilt, to fail
    a check on purpose); the slice count still covers the longest coverage unless
    given."""
    profiles = list(profiles)
    if not profiles:
        raise ValueError("spec_passing needs at least one profile")
    fields.setdefault(
        "slice_thickness",
        min(min(p.max_slice_thickness_mm, p.spacing_limit_mm) for p in profiles),
    )
    matrix = max(512, *(p.min_matrix for p in profiles))
    fields.setdefault("rows", matrix)
    fields.setdefault("columns", matrix)
    step = fields.get("spacing") or fields["slice_thickness"]
    if step <= 0:
        raise ValueError("slices need a positive thickness and spacing")
    coverage = max(p.min_coverage_mm for p in profiles)
    # (slices - 1) * step alone reaches it; the thickness on top is margin.
    fields.setdefault("slices", math.ceil(coverage / step) + 1)
    if "convolution_kernel" not in fields:
        fields["convolution_kernel"] = _kernel_for(profiles)
    return PhantomSpec(**fields)


def _kernel_for(profiles: list[AcquisitionProfile]) -> str:
    """A Convolution Kernel every profile accepts: BONE, else one of their
    patterns with its wild cards filled in."""
    candidates = ["BONE"] + [
        pattern.replace("*", "").replace("?", "X")
        for profile in profiles
        for pattern in profile.allowed_kernels
    ]
    for kernel in candidates:
        if kernel and all(kernel_allowed(kernel, p.allowed_kernels) for p in profiles):
            return kernel
    raise ValueError("the profiles accept no common convolution kernel")


def _uid(spec: PhantomSpec, *parts: object) -> str:
    """A UID derived from the seed (PS3.5 B.2 form), so a spec always makes the same
    series: two specs with one seed share their frame of reference, as two studies
    on one scanner would."""
    text = "/".join(["psi-phantom", str(spec.seed), *map(str, parts)])
    digest = hashlib.sha256(text.encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


class _Strips:
    """Noisy runs of each tissue, as encoded pixel bytes, to cut rows from."""

    def __init__(self, spec: PhantomSpec, bytes_per_pixel: int) -> None:
        rng = random.Random(spec.seed)  # noqa: S311 - noise, not secrets
        self.length = spec.columns * 4
        self.bpp = bytes_per_pixel
        self.strips = []
        for hu, scale in _TISSUES:
            values = [
                hu + rng.gauss(0.0, spec.noise_hu * scale) for _ in range(self.length)
            ]
            if bytes_per_pixel == 2:  # 12 bits stored, intercept -1024
                encoded = array(
                    "H", (min(4095, max(0, round(v - _INTERCEPT))) for v in values)
                )
                if sys.byteorder == "big":
                    encoded.byteswap()
                self.strips.append(encoded.tobytes())
            else:  # 8 bits stored, slope 16, intercept -1024
                self.strips.append(
                    bytes(
                        min(255, max(0, round((v - _INTERCEPT) / 16))) for v in values
                    )
                )

    def cut(self, tissue: int, count: int, rng: random.Random) -> bytes:
        start = rng.randrange(self.length - count + 1) * self.bpp
        return self.strips[tissue][start : start + count * self.bpp]


def _half_width(axes: tuple[float, float, float], y: float, z: float) -> float:
    a, b, c = axes
    if b <= 0 or c <= 0:
        return -1.0
    inside = 1.0 - (y / b) ** 2 - (z / c) ** 2
    return a * math.sqrt(inside) if inside > 0 else -1.0


def _slice_pixels(
    spec: PhantomSpec, strips: _Strips, z: float, rng: random.Random
) -> bytes:
    """One image: rows run anterior to posterior, tilted about the left-right axis."""
    dx = spec.pixel_mm
    tilt = math.radians(spec.gantry_tilt)
    shells = [
        _HEAD,
        tuple(v - _SKULL_DEPTH for v in _HEAD),
        tuple(v - _BRAIN_DEPTH for v in _HEAD),
    ]
    centre = (spec.columns - 1) / 2
    rows = []
    for j in range(spec.rows):
        offset = (j - (spec.rows - 1) / 2) * dx
        y, zz = offset * math.cos(tilt), z - offset * math.sin(tilt)
        edges = [0]
        for axes in shells:
            half = _half_width(axes, y, zz)
            if half < 0:
                break
            edges.append(max(edges[-1], round(centre - half / dx)))
        tissues = [_AIR, _SCALP, _SKULL, _BRAIN][: len(edges)]
        bounds = (
            edges + [spec.columns - e for e in reversed(edges[1:])] + [spec.columns]
        )
        runs = tissues + list(reversed(tissues[:-1]))
        parts = []
        for tissue, start, stop in zip(runs, bounds[:-1], bounds[1:], strict=True):
            if stop > start:
                parts.append(strips.cut(tissue, stop - start, rng))
        rows.append(b"".join(parts))
    return b"".join(rows)


def series(spec: PhantomSpec) -> Iterator[Dataset]:
    """The series' objects, each with its file meta, ready for ``dcmwrite``."""
    strips = _Strips(spec, 1 if spec.lossy else 2)
    study_uid = spec.study_uid or _uid(spec, "study")
    series_uid = _uid(spec, "series", spec.series_number)
    frame_uid = _uid(spec, "frame-of-reference")
    date = spec.study_date.strftime("%Y%m%d")
    first_z = -(spec.slices - 1) * spec.slice_spacing / 2
    tilt = math.radians(spec.gantry_tilt)
    instance = 0
    for index in range(spec.slices):
        if index in spec.missing_slices:
            continue
        instance += 1
        z = first_z + index * spec.slice_spacing
        rng = random.Random(f"{spec.seed}/{index}")  # noqa: S311 - noise, not secrets
        pixels = _slice_pixels(spec, strips, z, rng)
        ds = _header(spec, study_uid, series_uid, frame_uid, date)
        ds.SOPInstanceUID = _uid(spec, "instance", spec.series_number, index)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = instance
        half_fov = (spec.columns - 1) / 2 * spec.pixel_mm
        half_rows = (spec.rows - 1) / 2 * spec.pixel_mm
        ds.ImagePositionPatient = [
            _ds(-half_fov),
            _ds(-half_rows * math.cos(tilt)),
            _ds(z + half_rows * math.sin(tilt)),
        ]
        ds.SliceLocation = _ds(z)
        if spec.lossy:
            frame = _jpeg_dc_only(pixels, spec.rows, spec.columns)
            ds.LossyImageCompressionRatio = _ds(len(pixels) / len(frame))
            ds.PixelData = encapsulate([frame])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = pixels
            ds["PixelData"].VR = "OW"
        yield ds


def _header(
    spec: PhantomSpec, study_uid: str, series_uid: str, frame_uid: str, date: str
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = spec.transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = spec.study_time
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = spec.accession_number or f"PHACC{spec.seed:05d}"
    ds.Modality = "CT"
    ds.Manufacturer = "PSI Phantom"
    ds.InstitutionName = "Phantom Hospital"
    ds.ReferringPhysicianName = "PHANTOM^REFERRER"
    ds.StationName = "PHANTOMCT1"
    ds.StudyDescription = "CT HEAD"
    ds.SeriesDescription = (
        f"HEAD {_ds(spec.slice_thickness)}MM {spec.convolution_kernel}"
    )
    ds.OperatorsName = "PHANTOM^OPERATOR"
    ds.ManufacturerModelName = "Ellipsoid Head"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    ds.PatientAge = "054Y"
    ds.PatientSize = "1.75"
    ds.PatientWeight = "70"
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = _ds(spec.slice_thickness)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(spec.slice_spacing)
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = "PHANTOM-SN-0001"
    ds.SoftwareVersions = "1.0"
    ds.ProtocolName = "HEAD ROUTINE"
    ds.ReconstructionDiameter = _ds(spec.columns * spec.pixel_mm)
    ds.GantryDetectorTilt = _ds(spec.gantry_tilt)
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = spec.convolution_kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"PH{spec.seed:05d}"
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    tilt = math.radians(spec.gantry_tilt)
    ds.ImageOrientationPatient = [
        "1",
        "0",
        "0",
        "0",
        _ds(math.cos(tilt)),
        _ds(-math.sin(tilt)),
    ]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.PixelSpacing = [_ds(spec.pixel_mm), _ds(spec.pixel_mm)]
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(_INTERCEPT)
    ds.RescaleType = "HU"
    if spec.lossy:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.RescaleSlope = "16"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.RescaleSlope = "1"
        ds.LossyImageCompression = "00"
    ds.WindowCenter = ["400", "40"]
    ds.WindowWidth = ["2000", "80"]
    return ds


def write_series(directory: str | os.PathLike[str], spec: PhantomSpec) -> list[Path]:
    """Write the series as ``0001.dcm``, ``0002.dcm``, ... in ``directory``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in series(spec):
        path = folder / f"{ds.InstanceNumber:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


# -- a JPEG Baseline encoder that keeps only each block's mean -------------------------

# ITU T.81 Table K.3: the standard luminance DC Huffman table.
_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# One AC code only: end of block, as "0".
_AC_BITS = (1,) + (0,) * 15
_AC_VALUES = (0x00,)


def _huffman_codes(
    bits: tuple[int, ...], values: tuple[int, ...]
) -> dict[int, tuple[int, int]]:
    """ITU T.81 Annex C: the code and length of each value."""
    codes, code, k = {}, 0, 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[values[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _jpeg_dc_only(pixels: bytes, rows: int, columns: int) -> bytes:
    """A baseline JPEG (ISO 10918-1, process 1) of an 8-bit image in which every
    8 x 8 block is flat at its mean: valid for any decoder, and lossy."""
    dc_codes = _huffman_codes(_DC_BITS, _DC_VALUES)
    eob_code, eob_length = _huffman_codes(_AC_BITS, _AC_VALUES)[0]
    out = bytearray()
    acc = nbits = 0

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc = (acc << length) | value
        nbits += length
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << nbits) - 1

    previous = 0
    blocks = columns // 8
    for top in range(0, rows, 8):
        sums = [0] * blocks
        for r in range(top, top + 8):
            line = pixels[r * columns : (r + 1) * columns]
            for b in range(blocks):
                sums[b] += sum(line[b * 8 : b * 8 + 8])
        for total in sums:
            dc = round((total - 64 * 128) / 8)  # F(0,0) with a quantiser of 1
            diff, previous = dc - previous, dc
            size = abs(diff).bit_length()
            put(*dc_codes[size])
            if size:
                put(diff if diff > 0 else diff + (1 << size) - 1, size)
            put(eob_code, eob_length)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)
    header = (
        b"\xff\xd8"
        + _segment(0xDB, b"\x00" + b"\x01" * 64)
        + _segment(
            0xC0,
            bytes([8])
            + rows.to_bytes(2, "big")
            + columns.to_bytes(2, "big")
            + b"\x01\x01\x11\x00",
        )
        + _segment(0xC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALUES))
        + _segment(0xC4, b"\x10" + bytes(_AC_BITS) + bytes(_AC_VALUES))
        + _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    )
    return header + bytes(out) + b"\xff\xd9"


__all__ = ["TRANSFER_SYNTAXES", "PhantomSpec", "series", "write_series"]
