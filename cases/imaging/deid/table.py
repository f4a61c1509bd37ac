"""The pinned PS3.15 Table E.1-1, loaded once per process and compiled into rules.

A rule says what happens to one attribute under one set of options. The table's
combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) are resolved here, once, so the engine
only looks a tag up in a dict.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from importlib import resources
from typing import NamedTuple

from pydicom.datadict import get_entry

from .options import DeidOptions, Temporal

TABLE_FILE = "ps315_table_e11.json"
# The JSON carries no edition field, so the edition is bound to the file's content:
# a new table needs a new entry here (and a read of what changed in it).
PINNED_TABLES = {
    "a99a35d1278e2bace8d90ff791b11aea2d45f1e3e1230388eb5224c9dbcd29e6": "2024b",
}

# Actions. The first five are the table's; the rest are how options and PSI's own
# rules play out.
REMOVE = "X"
EMPTY = "Z"
DUMMY = "D"
UID = "U"
KEEP = "K"
KEEP_REPLACING_UIDS = "U*"  # a sequence kept, its contents (UIDs too) cleaned
PSEUDONYM = "P"  # Patient's Name and Patient ID become the caller's pseudonym
SHIFT = "S"  # Modified Dates: DA and DT moved by the offset, TM kept
CLEAN = "C"  # Clean Descriptors: text reduced to imaging vocabulary

# The images PSI plans on. At their top level the IOD tells which choice of a combined
# code conformance needs: all these attributes are Type 3 there (so X), except the
# Type 2 ones below (so Z). PS3.3 A.3 (CT Image) and A.4 (MR Image): General Image
# (Content Date/Time 2C), Contrast/Bolus (Agent 2), Patient (Sex Neutered 2C).
CLASSIC_IMAGE_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"}
)
_CLASSIC_TYPE_2 = frozenset({0x00080023, 0x00080033, 0x00180010, 0x00102203})
_PSEUDONYM_TAGS = frozenset({0x00100010, 0x00100020})

# Unlisted UI attributes whose value names a class, syntax or coding resource, never
# an instance: kept. Every other unlisted UI value is replaced like a U attribute.
_REGISTRY_UID_KEYWORD = re.compile(
    r"SOPClass|TransferSyntax|ImplementationClass|^CodingSchemeUID$|^ContextUID$"
    r"|^MappingResourceUID$|^CreatorVersionUID$|^SegmentationTemplateUID$"
)

_OPTION_COLUMNS = (
    ("rtnUIDsOpt", lambda o: o.retain_uids),
    ("rtnDevIdOpt", lambda o: o.retain_device_identity),
    ("rtnInstIdOpt", lambda o: o.retain_institution_identity),
    ("rtnPatCharsOpt", lambda o: o.retain_patient_characteristics),
    ("rtnLongFullDatesOpt", lambda o: o.temporal is Temporal.FULL_DATES),
    ("rtnLongModifDatesOpt", lambda o: o.temporal is Temporal.MODIFIED_DATES),
    ("cleanDescOpt", lambda o: o.clean_descriptors),
    # Clean Structured Content and Clean Graphics are not offered: their columns
    # never apply, so those attributes get the basic action.
)


class TableIntegrityError(RuntimeError):
    """The table file is not the pinned one."""


class Row(NamedTuple):
    tag: int | None  # None for the masked and private rows
    mask: str  # the table's tag text: "(0010,0010)", "(50XX,XXXX)", ...
    name: str
    basic: str
    std_comp_iod: bool
    options: dict[str, str]


class Rule(NamedTuple):
    label: str  # "PatientName (0010,0010)": what the report says, never a value
    action: str
    fallback: str  # the basic action, for when SHIFT or CLEAN cannot apply
    vr: str  # from the data dictionary; "" when unknown


class Table(NamedTuple):
    edition: str
    sha256: str
    rows: tuple[Row, ...]


@functools.cache
def load_table() -> Table:
    """Read and check the pinned table (once per process)."""
    return parse_table(
        resources.files("cases.imaging").joinpath(TABLE_FILE).read_bytes()
    )


def parse_table(data: bytes) -> Table:
    """The table in ``data``, if it is a pinned one."""
    digest = hashlib.sha256(data).hexdigest()
    edition = PINNED_TABLES.get(digest)
    if edition is None:
        raise TableIntegrityError(
            f"{TABLE_FILE} has SHA-256 {digest}, which is not a pinned table"
        )
    rows = []
    for entry in json.loads(data):
        ident = entry["id"]
        tag = int(ident, 16) if re.fullmatch(r"[0-9a-f]{8}", ident) else None
        rows.append(
            Row(
                tag=tag,
                mask=entry["tag"],
                name=" ".join(entry["name"].split()),
                basic=entry["basicProfile"],
                std_comp_iod=entry["stdCompIOD"] == "Y",
                options={k: v for k, v in entry.items() if k.endswith("Opt")},
            )
        )
    return Table(edition=edition, sha256=digest, rows=tuple(rows))


def table_edition() -> str:
    return load_table().edition


@functools.cache
def label_for(tag: int) -> str:
    """``Keyword (GGGG,EEEE)`` for a tag, from the data dictionary where it knows it."""
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if (tag >> 16) % 2:
        return f"private {text}"
    try:
        keyword = get_entry(tag)[4]
    except KeyError:
        return text
    return f"{keyword} {text}" if keyword else text


@functools.cache
def dictionary_vr(tag: int) -> str:
    try:
        return get_entry(tag)[0]
    except KeyError:
        return ""


def resolve_basic(row: Row, *, classic_top_level: bool) -> str:
    """One action for the row's basic-profile code, where the code offers a choice.

    The choice depends on the attribute's type in the IOD (PS3.15 E.1-1 legend):

    - an attribute in no standard composite IOD (``stdCompIOD`` N) is never needed
      for conformance: X;
    - at the top level of a CT or MR Image object the type is known (see
      ``CLASSIC_IMAGE_SOP_CLASSES``): X, or Z for the Type 2 attributes;
    - anywhere else (other IODs, inside sequences) the type is not known to us, so
      the last choice is taken, which conforms whatever the type: X/Z gives Z, X/D,
      X/Z/D and Z/D give D, and X/Z/U* keeps the sequence with its UIDs replaced.
      An empty or dummy value identifies nobody.
    """
    code = row.basic
    if "/" not in code:
        return code
    if not row.std_comp_iod:
        return REMOVE
    if classic_top_level:
        return EMPTY if row.tag in _CLASSIC_TYPE_2 else REMOVE
    return code.rsplit("/", 1)[1]


def resolve(row: Row, options: DeidOptions, *, classic_top_level: bool) -> Rule:
    basic = resolve_basic(row, classic_top_level=classic_top_level)
    enabled = [
        (column, row.options[column])
        for column, applies in _OPTION_COLUMNS
        if column in row.options and applies(options)
    ]
    action = basic
    if any(value == "C" for _, value in enabled):
        # An option that asks to clean beats one that asks to keep: a calibration
        # date kept whole next to shifted study dates would give the offset away.
        columns = {column for column, value in enabled if value == "C"}
        if "rtnLongModifDatesOpt" in columns:
            action = SHIFT
        elif "cleanDescOpt" in columns:
            action = CLEAN
        # Other C columns (AE titles under Retain Device Identity, free text under
        # Retain Patient Characteristics) ask for a cleaning we cannot do reliably:
        # the basic action applies, which is stricter.
    elif enabled:
        action = KEEP
    if row.tag in _PSEUDONYM_TAGS:
        action = PSEUDONYM
    vr = dictionary_vr(row.tag) if row.tag is not None else ""
    label = label_for(row.tag) if row.tag is not None else f"{row.name} {row.mask}"
    return Rule(label=label, action=action, fallback=basic, vr=vr)


class Profile(NamedTuple):
    """The compiled rules for one set of options."""

    options: DeidOptions
    edition: str
    top_level: dict[int, Rule]  # top level of a CT or MR Image
    generic: dict[int, Rule]  # everywhere else
    curve: Rule  # (50xx,xxxx)
    overlay_data: Rule  # (60xx,3000)
    overlay_comments: Rule  # (60xx,4000)
    unlisted: dict[int, Rule]  # filled on first sight of each tag


@functools.lru_cache(maxsize=32)
def compile_profile(options: DeidOptions) -> Profile:
    table = load_table()
    top_level: dict[int, Rule] = {}
    generic: dict[int, Rule] = {}
    masked: dict[str, Rule] = {}
    for row in table.rows:
        if row.tag is None:
            masked[row.mask] = resolve(row, options, classic_top_level=False)
            continue
        top_level[row.tag] = resolve(row, options, classic_top_level=True)
        generic[row.tag] = resolve(row, options, classic_top_level=False)
    return Profile(
        options=options,
        edition=table.edition,
        top_level=top_level,
        generic=generic,
        curve=masked["(50XX,XXXX)"],
        overlay_data=masked["(60XX,3000)"],
        overlay_comments=masked["(60XX,4000)"],
        unlisted={},
    )


def unlisted_rule(profile: Profile, tag: int) -> Rule:
    """The rule for a public attribute the table does not list.

    PS3.15 keeps such attributes (the table lists every standard attribute that can
    identify). PSI keeps them too, with these conservative exceptions:

    - an attribute the data dictionary does not know (newer edition, vendor misuse of
      a public group) cannot be judged: removed;
    - group lengths and command (0000) or file meta (0002) elements inside a
      dataset: removed (they are wrong after de-identification, or out of place);
    - UI values that identify an instance are replaced as for U, so no original UID
      survives anywhere (kept with Retain UIDs);
    - PN values are emptied: a person's name identifies by definition;
    - DA and DT values follow the temporal option (shifted, kept, or emptied) and TM
      values are kept unless dates are removed, so no original date survives and the
      shift cannot be undone from one stray date;
    - UR values (retrieve URLs and the like) are removed: they point at the source
      systems and often carry original UIDs.
    """
    rule = profile.unlisted.get(tag)
    if rule is not None:
        return rule
    options = profile.options
    label = label_for(tag)
    vr = dictionary_vr(tag)
    group = tag >> 16
    action = KEEP
    if not vr or tag & 0xFFFF == 0 or group in (0x0000, 0x0002):
        action = REMOVE
    elif vr == "UI":
        keyword = get_entry(tag)[4]
        if not options.retain_uids and not _REGISTRY_UID_KEYWORD.search(keyword):
            action = UID
    elif vr == "PN":
        action = EMPTY
    elif vr in ("DA", "DT"):
        action = {
            Temporal.MODIFIED_DATES: SHIFT,
            Temporal.FULL_DATES: KEEP,
            Temporal.REMOVED: EMPTY,
        }[options.temporal]
    elif vr == "TM":
        action = EMPTY if options.temporal is Temporal.REMOVED else KEEP
    elif vr == "UR":
        action = REMOVE
    fallback = EMPTY if action == SHIFT else action
    rule = Rule(label=label, action=action, fallback=fallback, vr=vr)
    profile.unlisted[tag] = rule
    return rule
