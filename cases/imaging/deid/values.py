"""Replacement values: pseudonymous UIDs, shifted dates, dummies, cleaned descriptors.

Pure functions on strings; nothing here knows about datasets.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re

#: Registered DICOM UIDs (SOP classes, transfer syntaxes, well-known frames of
#: reference, coding schemes) identify nothing about a patient and are kept.
DICOM_ROOT = "1.2.840.10008."
_UID_DOMAIN = b"psi-deid/uid\x00"
MIN_SECRET_BYTES = 16


def pseudonymous_uid(uid: str, secret: bytes) -> str:
    """The replacement for ``uid``: ``2.25.<128-bit integer>`` from HMAC-SHA256.

    The same UID and secret always give the same result, so references between
    objects (series, frame of reference, referenced images) stay consistent across
    every study de-identified with the secret; without the secret the original
    cannot be recovered or confirmed. 128 bits keep the result at most 44 characters
    (the UI limit is 64) with the collision odds of a UUID (PS3.5 B.2).
    """
    digest = hmac.new(secret, _UID_DOMAIN + uid.encode("ascii"), hashlib.sha256)
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


def is_registered_uid(uid: str) -> bool:
    return uid.startswith(DICOM_ROOT)


# -- Dates -----------------------------------------------------------------------------

_DT = re.compile(
    r"(?P<y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})"
    r"(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?"
    r"(?P<tz>[+-]\d{4})?"
)


def shift_da(value: str, days: int) -> str | None:
    """A DA value moved by ``days``; ``None`` when it is not a date (a range, junk)."""
    text = value.strip()
    if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA YYYY.MM.DD
        text = text[:4] + text[5:7] + text[8:]
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        moved = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])) + (
            datetime.timedelta(days=days)
        )
    except (ValueError, OverflowError):
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"


def shift_dt(value: str, days: int) -> str | None:
    """A DT value whose date part is moved by ``days``; the time of day and the UTC
    offset are kept. A value of year or month precision moves its first day and keeps
    its precision. ``None`` when it is not a DT value."""
    text = value.strip()
    match = _DT.fullmatch(text)
    if match is None:
        return None
    year, month, day = match["y"], match["m"], match["d"]
    try:
        moved = datetime.date(int(year), int(month or 1), int(day or 1)) + (
            datetime.timedelta(days=days)
        )
    except (ValueError, OverflowError):
        return None
    if moved.year < 1:
        return None
    out = f"{moved.year:04d}"
    if month:
        out += f"{moved.month:02d}"
        if day:
            out += f"{moved.day:02d}" + (match["time"] or "")
    return out + (match["tz"] or "")


# -- Dummies (action D) ----------------------------------------------------------------

DUMMY_TEXT = "DEIDENTIFIED"
_DUMMY_BY_VR: dict[str, object] = {
    "AE": DUMMY_TEXT,
    "AS": "000D",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "deidentified",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OD": b"\x00" * 8,
    "OV": b"\x00" * 8,
}


def dummy_value(vr: str) -> object:
    """A non-empty value that fits ``vr`` and says nothing (UI is handled by the
    caller: a dummy UID is a pseudonymous one, so references stay consistent)."""
    return _DUMMY_BY_VR.get(vr, b"\x00\x00")


# -- Clean Descriptors -----------------------------------------------------------------

# Clean Descriptors asks for descriptions "cleaned" of identity rather than removed.
# Free text cannot be cleaned by recognising names, so we do the reverse: a word
# survives only if it is on this list of imaging vocabulary (anatomy, technique,
# reconstruction, contrast agents) or is a small measurement ("0.6", "120kV",
# "1.25mm"). A name, an ID, a date or a site cannot pass unless it is spelled like
# one of these words.
_WORDS = """
    ABDOMEN ACETABULUM ANGIO ANGIOGRAPHY ANKLE ARM AXIAL AX BILAT BILATERAL BODY BONE
    BONES BRAIN CALVARIA CALVARIUM CERVICAL CHEST CLAVICLE COR CORONAL CRANIAL
    CRANIOFACIAL CRANIUM CSPINE DENTAL ELBOW EXTREMITY FACE FACIAL FEMUR FIBULA FOOT
    FOREARM FRONTAL HAND HEAD HIP HIPS HUMERUS IAC JAW JAWS KNEE KNEES LEG LOWER LUMBAR
    LUNG LUNGS MANDIBLE MANDIBULAR MASTOID MAXILLA MAXILLARY MAXILLOFACIAL MIDFACE
    NASAL NECK NOSE OBLIQUE OCCIPITAL ORBIT ORBITAL ORBITS PARANASAL PARIETAL PELVIC
    PELVIS PETROUS RIB RIBS SACRUM SAG SAGITTAL SCAPULA SHOULDER SINUS SINUSES SKULL
    SPINE STERNUM TEETH TEMPORAL THORACIC THORAX TIBIA TMJ UPPER WHOLE WRIST ZYGOMA
    ZYGOMATIC LEFT RIGHT LT RT L R
    CT MR MRI CBCT DVT CTA MRA SCAN SCOUT TOPOGRAM TOPO LOCALIZER LOCALISER SURVIEW
    SURVEY PLAN PLANNING MPR MIP MINIP VR VRT SSD 2D 3D 4D RECON RECONSTRUCTION
    RECONSTRUCTED REFORMAT REFORMATS HELICAL SPIRAL SEQUENTIAL AXIALS VOLUME VOL THIN
    THICK SLICE SLICES SECTION SECTIONS MM CM BONEPLUS SOFT TISSUE TISSUES STANDARD STD
    SHARP SMOOTH DETAIL KERNEL FILTER WINDOW W WO O WITH WITHOUT AND OR OF THE TO FOR
    NO NON IV ORAL PRE POST PREOP POSTOP FOLLOW UP FOLLOWUP FU NATIVE PLAIN ENHANCED
    ARTERIAL VENOUS PORTAL DELAYED PHASE ROUTINE PROTOCOL SERIES STUDY EXAM
    EXAMINATION IMAGE IMAGES DOSE LOW HIGH ULTRA REPORT SUMMARY INFO METAL MAR IMAR
    OMAR SEMAR ARTIFACT ARTEFACT REDUCTION CORRECTION IR IDOSE ASIR ADMIRE SAFIRE
    ITERATIVE DUAL ENERGY SPECTRAL MONO MONOENERGETIC KEV T1 T2 PD FLAIR DWI ADC SWI
    STIR TOF GRE SE TSE FSE MPRAGE SPACE CUBE VIBE FAT SAT FS WATER DIXON ISO
    ISOTROPIC IMPLANT IMPLANTS TEMPLATE SURGICAL SURGERY NAVIGATION NAV TRAUMA
    CONTRAST NONCONTRAST NONCON IODINE IOHEXOL IOPAMIDOL IOPROMIDE IODIXANOL
    IOMEPROL OMNIPAQUE ISOVUE ULTRAVIST VISIPAQUE IMERON GADOLINIUM GAD GADOBUTROL
    GADOTERATE GADAVIST GADOVIST DOTAREM MAGNEVIST MULTIHANCE PROHANCE CLARISCAN
"""
_VOCABULARY = frozenset(_WORDS.split())
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)?[A-Za-z]*")
_NUMBER = re.compile(r"(\d{1,3})(?:[.,](\d{1,3}))?([A-Z]*)")
_UNITS = frozenset(
    ["MM", "CM", "KV", "KVP", "MA", "MAS", "S", "SEC", "MS", "HU", "KEV", "DEG", "T"]
)


def clean_descriptor(text: str) -> str:
    """``text`` reduced to the words of the imaging vocabulary and measurements,
    joined by single spaces; empty when nothing is left.

    A number stays only when it is plainly a measurement: it carries a unit ("0.6mm",
    "120kV"), a unit follows it ("5 mm"), or it is a decimal below 10 ("0.625"). Bare
    integers go, so an ID or a telephone number split by spaces or dashes cannot pass
    piece by piece.
    """
    tokens = _TOKEN.findall(text)
    kept = []
    for index, token in enumerate(tokens):
        upper = token.upper()
        if upper in _VOCABULARY:
            kept.append(token)
            continue
        number = _NUMBER.fullmatch(upper)
        if number is None:
            continue
        whole, fraction, unit = number.groups()
        if unit:
            measurement = unit in _UNITS
        else:
            followed_by_unit = (
                index + 1 < len(tokens) and tokens[index + 1].upper() in _UNITS
            )
            measurement = followed_by_unit or (fraction is not None and len(whole) == 1)
        if measurement:
            kept.append(token)
    return " ".join(kept)
