"""What the checks read of a DICOM header, typed (``SliceHeader``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
