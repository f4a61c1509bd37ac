"""A CT object that carries identity in every place Table E.1-1 names, and more.

Every attribute of the pinned table that pydicom's dictionary knows gets a value that
fits its VR: text holds a unique marker ``MKnnnn``, dates, times and UIDs are unique
and recognisable. Sequences hold identifying attributes two and three levels down.
Private elements, an overlay plane, a curve and unlisted attributes that PSI treats
conservatively carry identity too. All of it is synthetic.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from importlib import resources

from pydicom.datadict import get_entry, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

UID_ROOT = "1.2.826.0.1.3680043.10.999."
_FIRST_DATE = datetime.date(1971, 1, 1)


def table_rows() -> list[dict]:
    data = resources.files("cases.imaging").joinpath("ps315_table_e11.json")
    return json.loads(data.read_text())


def concrete_tag(row: dict) -> int | None:
    try:
        return int(row["id"], 16)
    except ValueError:
        return None


@dataclass
class Leaky:
    dataset: Dataset
    markers: dict[str, int] = field(default_factory=dict)  # marker -> top-level tag
    uids: dict[str, int] = field(default_factory=dict)
    dates: dict[str, int] = field(default_factory=dict)  # YYYYMMDD -> tag
    times: dict[str, int] = field(default_factory=dict)
    values: dict[int, object] = field(default_factory=dict)  # top-level originals
    nested_markers: set[str] = field(default_factory=set)


class _Values:
    """Unique values by VR; remembers which tag got which."""

    def __init__(self, leaky: Leaky) -> None:
        self.leaky = leaky
        self.n = 0

    def next(self, tag: int, vr: str, *, top: bool) -> object:
        self.n += 1
        n = self.n
        marker = f"MK{n:04d}"
        day = _FIRST_DATE + datetime.timedelta(days=n)
        date = day.strftime("%Y%m%d")
        time = f"{n % 24:02d}{n % 60:02d}{(n * 7) % 60:02d}.{n:06d}"
        uid = f"{UID_ROOT}{100000 + n}"
        if vr in ("AE", "CS"):
            value = marker
        elif vr in ("LO", "SH", "ST", "LT", "UT", "UC"):
            value = f"{marker} text"
        elif vr == "PN":
            value = f"{marker}^Marker"
        elif vr == "UR":
            value = f"https://{marker.lower()}.invalid/{marker}"
        elif vr == "DA":
            value = date
        elif vr == "DT":
            value = f"{date}{time}"
        elif vr == "TM":
            value = time
        elif vr == "UI":
            value = uid
        elif vr == "AS":
            value = "042Y"
        elif vr == "DS":
            value = f"{n}.25"
        elif vr == "IS":
            value = str(100000 + n)
        elif vr in ("US", "SS", "UL", "SL"):
            value = n
        elif vr in ("OB", "OW", "UN"):
            value = marker.encode() + b"\x00\x00"
        else:  # pragma: no cover - the table has no other VR
            raise AssertionError(vr)
        if isinstance(value, bytes) or (isinstance(value, str) and marker in value):
            if top:
                self.leaky.markers[marker] = tag
            else:
                self.leaky.nested_markers.add(marker)
        if vr in ("DA", "DT"):
            self.leaky.dates[date] = tag
        if vr in ("TM", "DT"):
            self.leaky.times[time] = tag
        if vr == "UI":
            self.leaky.uids[uid] = tag
        return value


def _vr(tag: int) -> str:
    return get_entry(tag)[0].split(" or ")[0]


def _identity_item(values: _Values, depth: int) -> Dataset:
    """An item with a name, an ID, a date, an institution, a UID reference, and one
    more such item nested below it (down to ``depth``)."""
    item = Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "InstitutionName",
        "StudyDate",
        "PersonName",
        "ReferencedSOPInstanceUID",
    ):
        tag = _tag(keyword)
        item[tag] = DataElement(tag, _vr(tag), values.next(tag, _vr(tag), top=False))
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.add_new(0x00090010, "LO", "PSI LEAKTEST")
    tag = 0x00091001
    item.add_new(tag, "LO", values.next(tag, "LO", top=False))
    if depth > 1:
        item.ReferencedImageSequence = Sequence([_identity_item(values, depth - 1)])
    return item


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag


def make_leaky(base: Dataset) -> Leaky:
    """Fill ``base`` (a phantom CT slice, changed in place) with identity."""
    leaky = Leaky(dataset=base)
    values = _Values(leaky)
    for row in table_rows():
        tag = concrete_tag(row)
        if tag is None or tag >> 16 in (0x0000, 0x0002):
            continue  # masks and private (below); command and file meta groups
        vr = _vr(tag)
        if vr == "SQ":
            base[tag] = DataElement(tag, "SQ", Sequence([_identity_item(values, 3)]))
            continue
        value = values.next(tag, vr, top=True)
        base[tag] = DataElement(tag, vr, value)
        leaky.values[tag] = value
    # Identity where the table does not look: an unlisted sequence, three levels deep.
    base.DerivationCodeSequence = Sequence([_identity_item(values, 3)])
    # Private elements, with a private sequence holding identity.
    base.add_new(0x00190010, "LO", "PSI LEAKTEST")
    for element, vr in ((0x1001, "LO"), (0x1002, "UN")):
        tag = 0x00190000 | element
        base.add_new(tag, vr, values.next(tag, vr, top=True))
    base.add_new(0x00191003, "SQ", Sequence([_identity_item(values, 2)]))
    # An overlay plane and a curve, each with text and data.
    base.add_new(0x60000010, "US", 16)
    base.add_new(0x60000011, "US", 16)
    base.add_new(0x60000022, "LO", values.next(0x60000022, "LO", top=True))
    base.add_new(0x60000040, "CS", "G")
    base.add_new(0x60000050, "SS", [1, 1])
    base.add_new(0x60000100, "US", 1)
    base.add_new(0x60000102, "US", 0)
    base.add_new(0x60003000, "OW", values.next(0x60003000, "OW", top=True) * 4)
    base.add_new(0x60004000, "LT", values.next(0x60004000, "LT", top=True))
    base.add_new(0x50000005, "US", 1)
    base.add_new(0x50000022, "LO", values.next(0x50000022, "LO", top=True))
    base.add_new(0x50003000, "OB", values.next(0x50003000, "OB", top=True))
    # Unlisted attributes that PSI's own rules catch: a name, a date, an instance UID,
    # a URL.
    for keyword in (
        "SecondaryReviewerName",
        "ItemInventoryDateTime",
        "SOPInstanceUIDOfConcatenationSource",
        "RetrieveURL",
    ):
        tag = _tag(keyword)
        base[tag] = DataElement(tag, _vr(tag), values.next(tag, _vr(tag), top=True))
    return leaky
