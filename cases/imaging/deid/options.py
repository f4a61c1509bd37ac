"""The switches of the engine: PS3.15 Annex E options and their CID 7050 codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

TOOL_NAME = "PSI deid"
# Bump on any change of what the engine writes: it is recorded in every object's
# De-identification Method (0012,0063), so an auditor can tell which rules applied.
TOOL_VERSION = "1.0.0"


class Temporal(enum.Enum):
    """What happens to dates and times (PS3.15 E.3.6)."""

    #: No Retain Longitudinal option: dates and times follow the basic profile.
    REMOVED = "REMOVED"
    #: Retain Longitudinal Temporal Information with Full Dates (113106).
    FULL_DATES = "FULL_DATES"
    #: ... with Modified Dates (113107): dates shifted by a per-patient offset.
    MODIFIED_DATES = "MODIFIED_DATES"


class SafePrivateTag(NamedTuple):
    """One private data element known to carry no identity, for Retain Safe Private.

    ``element`` is the low byte of the element number, which stays the same whichever
    block the creator reserved: (0019,10xx) and (0019,11xx) hold the same attribute
    under the same creator.
    """

    creator: str
    group: int
    element: int


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 options apply, on top of the Basic Application Confidentiality
    Profile (which always applies). The defaults are PSI's; see the package docstring
    for why each one is on or off."""

    retain_patient_characteristics: bool = True
    temporal: Temporal = Temporal.MODIFIED_DATES
    retain_device_identity: bool = True
    retain_uids: bool = False
    retain_safe_private: bool = False
    #: The private attributes Retain Safe Private may keep. The pinned Table E.1-1 has
    #: no list of safe private attributes (PS3.15 Table E.3.10-1 is not pinned), so
    #: by default none is kept even with the option on.
    safe_private_tags: frozenset[SafePrivateTag] = frozenset()
    retain_institution_identity: bool = False
    clean_descriptors: bool = True

    def __post_init__(self) -> None:
        # Any iterable will do; stored frozen so the options stay hashable.
        object.__setattr__(self, "safe_private_tags", frozenset(self.safe_private_tags))
        if not isinstance(self.temporal, Temporal):
            raise TypeError("temporal must be a Temporal")
        if self.safe_private_tags and not self.retain_safe_private:
            raise ValueError("safe_private_tags needs retain_safe_private=True")
        for tag in self.safe_private_tags:
            if not isinstance(tag, SafePrivateTag):
                raise TypeError("safe_private_tags holds SafePrivateTag items")
            if tag.group % 2 == 0 or not 0 <= tag.element <= 0xFF or not tag.creator:
                raise ValueError(f"not a private attribute: {tag!r}")

    @property
    def method_codes(self) -> tuple[tuple[str, str], ...]:
        """The CID 7050 (code value, code meaning) pairs this configuration applies,
        the profile first. Clean Pixel Data, Clean Recognizable Visual Features,
        Clean Graphics and Clean Structured Content are never claimed."""
        used = [BASIC_PROFILE]
        if self.clean_descriptors:
            used.append(CLEAN_DESCRIPTORS)
        if self.temporal is Temporal.FULL_DATES:
            used.append(RETAIN_FULL_DATES)
        elif self.temporal is Temporal.MODIFIED_DATES:
            used.append(RETAIN_MODIFIED_DATES)
        if self.retain_patient_characteristics:
            used.append(RETAIN_PATIENT_CHARACTERISTICS)
        if self.retain_device_identity:
            used.append(RETAIN_DEVICE_IDENTITY)
        if self.retain_uids:
            used.append(RETAIN_UIDS)
        if self.retain_safe_private:
            used.append(RETAIN_SAFE_PRIVATE)
        if self.retain_institution_identity:
            used.append(RETAIN_INSTITUTION_IDENTITY)
        return tuple((code, CID_7050[code]) for code in used)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, for the report."""
        return {
            "retain_patient_characteristics": self.retain_patient_characteristics,
            "temporal": self.temporal.value,
            "retain_device_identity": self.retain_device_identity,
            "retain_uids": self.retain_uids,
            "retain_safe_private": self.retain_safe_private,
            "safe_private_tags": len(self.safe_private_tags),
            "retain_institution_identity": self.retain_institution_identity,
            "clean_descriptors": self.clean_descriptors,
        }


DEFAULT_OPTIONS = DeidOptions()
#: The basic profile alone: every option off, dates removed.
BASIC_PROFILE_ONLY = DeidOptions(
    retain_patient_characteristics=False,
    temporal=Temporal.REMOVED,
    retain_device_identity=False,
    clean_descriptors=False,
)

# PS3.16 CID 7050 "De-identification Method", coding scheme DCM.
BASIC_PROFILE = "113100"
CLEAN_PIXEL_DATA = "113101"
CLEAN_RECOGNIZABLE_VISUAL_FEATURES = "113102"
CLEAN_GRAPHICS = "113103"
CLEAN_STRUCTURED_CONTENT = "113104"
CLEAN_DESCRIPTORS = "113105"
RETAIN_FULL_DATES = "113106"
RETAIN_MODIFIED_DATES = "113107"
RETAIN_PATIENT_CHARACTERISTICS = "113108"
RETAIN_DEVICE_IDENTITY = "113109"
RETAIN_UIDS = "113110"
RETAIN_SAFE_PRIVATE = "113111"
RETAIN_INSTITUTION_IDENTITY = "113112"

CID_7050 = {
    BASIC_PROFILE: "Basic Application Confidentiality Profile",
    CLEAN_PIXEL_DATA: "Clean Pixel Data Option",
    CLEAN_RECOGNIZABLE_VISUAL_FEATURES: "Clean Recognizable Visual Features Option",
    CLEAN_GRAPHICS: "Clean Graphics Option",
    CLEAN_STRUCTURED_CONTENT: "Clean Structured Content Option",
    CLEAN_DESCRIPTORS: "Clean Descriptors Option",
    RETAIN_FULL_DATES: "Retain Longitudinal Temporal Information Full Dates Option",
    RETAIN_MODIFIED_DATES: (
        "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    RETAIN_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics Option",
    RETAIN_DEVICE_IDENTITY: "Retain Device Identity Option",
    RETAIN_UIDS: "Retain UIDs Option",
    RETAIN_SAFE_PRIVATE: "Retain Safe Private Option",
    RETAIN_INSTITUTION_IDENTITY: "Retain Institution Identity Option",
}
