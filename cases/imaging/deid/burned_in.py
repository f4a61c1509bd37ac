"""Which objects may carry identity in their pixels, and so wait for a person's review.

The engine never reads pixels (CT and MR pass through byte for byte), so it cannot
clean burned-in text: it flags the objects that are likely to have some. It never
writes Burned In Annotation (0028,0301) = NO: that needs a pixel check or a review
(REGULATORY checklist 47).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

from .elements import text_value, text_values

# SOP classes whose pixels are screen or camera captures, or documents.
BURNED_IN_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame (retired)
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
        "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
        "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF Image
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.2",  # VL Microscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.3",  # VL Slide-Coordinates Microscopic Image
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # Ophthalmic Photography 16 Bit Image
        "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL Whole Slide Microscopy (slide labels)
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
    }
)
# Modalities whose images are captures, photographs or annotated fluoroscopy.
BURNED_IN_MODALITIES = frozenset(
    {"OT", "SC", "US", "IVUS", "ES", "XC", "GM", "SM", "OP", "DOC", "XA", "RF"}
)
# Image Type values that vendors give to screen saves and dose sheets kept as CT.
SCREEN_IMAGE_TYPES = frozenset(
    {
        "SCREEN SAVE",
        "SCREENSAVE",
        "SCREEN SHOT",
        "SCREENSHOT",
        "SCREEN CAPTURE",
        "DOSE INFO",
        "DOSE_INFO",
        "DOSE REPORT",
        "CSA REPORT",
    }
)
_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
BURNED_IN_ANNOTATION = 0x00280301
#: The elements ``quarantine_reason`` reads, besides which overlay groups there are
#: (a caller may remember its answer for the same values of these).
QUARANTINE_TAGS = frozenset(
    {BURNED_IN_ANNOTATION, 0x00080016, 0x00080060, 0x00080008, 0x00080064, 0x00280302}
)


def quarantine_reason(ds: Dataset) -> str | None:
    """Why ``ds`` must be reviewed by a person before release, or ``None``.

    Reads only header attributes that de-identification does not change, so it can
    be asked before or after. Reasons are joined with "; ".
    """
    reasons = []
    if text_value(ds, BURNED_IN_ANNOTATION).upper() == "YES":
        reasons.append("Burned In Annotation is YES")
    sop_class = text_value(ds, 0x00080016)
    if sop_class in BURNED_IN_SOP_CLASSES:
        reasons.append(f"SOP class {UID(sop_class).name} typically has burned-in text")
    modality = text_value(ds, 0x00080060).upper()
    if modality in BURNED_IN_MODALITIES:
        reasons.append(f"modality {modality} typically has burned-in text")
    image_type = {v.upper() for v in text_values(ds, 0x00080008)}
    screens = sorted(SCREEN_IMAGE_TYPES & image_type)
    if screens:
        reasons.append(f"Image Type {'/'.join(screens)} is a screen capture")
    if 0x00080064 in ds:
        reasons.append("Conversion Type present: a secondary capture")
    if (
        text_value(ds, 0x00280302).upper() == "YES"
        and modality not in _VOLUME_MODALITIES
    ):
        reasons.append("Recognizable Visual Features is YES")
    # Iterating a Dataset would decode every element: walk the tags instead.
    groups = {t.group for t in ds.keys() if 0x6000 <= t.group <= 0x60FF}  # noqa: SIM118
    embedded = sorted(g for g in groups if (g << 16 | 0x3000) not in ds)
    if embedded:
        # An overlay plane without Overlay Data keeps its bits in the pixel data
        # (retired usage): removing the group would not remove what it drew.
        reasons.append(
            "overlay in the pixel data bits: "
            + ", ".join(f"group {g:04X}" for g in embedded)
        )
    return "; ".join(reasons) or None
