"""QIDO-RS query parameters (PS3.18 §8.3.4) read into database conditions.

A search names attributes by keyword or tag (``StudyDate`` or ``00080020``) to match
on, and the parameters ``includefield``, ``fuzzymatching``, ``limit`` and
``offset``. Matching follows C-FIND (PS3.4 C.2.2.2): single value, universal (an
empty value or ``*``), wild card (``*`` and ``?``, on string VRs), UID list
(comma- or backslash-separated) and date range (``20240101-20240131``,
``-20240131``, ``20240101-``; on the shifted dates the catalogue holds).

A key or value that is not DICOM, or not well formed, is refused (400) with the
reason. A DICOM attribute this server cannot match on, or an ``includefield`` it
does not hold, is ignored and named in a ``Warning: 299`` header, as the standard
asks of an origin server that does not support a key.
"""

from __future__ import annotations

import datetime
import functools
import operator
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.db.models import Q
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.tag import Tag

_LIMIT = 100
_MAX_RESULTS = 1000
_MAX_STRING = 256

#: Query parameters that are not attributes (PS3.18 Table 8.3.4-1, and the content
#: negotiation parameters of §8.3.3, which JSON answers make moot).
_CONTROL = {
    "includefield",
    "fuzzymatching",
    "limit",
    "offset",
    "emptyvaluematching",
    "multiplevaluematching",
    "accept",
    "charset",
}
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DATE_RANGE = re.compile(r"(?P<start>[0-9]{8})?-(?P<end>[0-9]{8})?")


class BadQuery(Exception):
    """A query key or value that is not valid; the text says which and why, and
    names attributes only (never a value: it may be a name)."""


@dataclass(frozen=True)
class Attribute:
    """An attribute a search level holds: where its value is in the catalogue
    (``field``, a lookup path), whether it can be matched on, and whether it is
    returned without being asked for."""

    keyword: str
    field: str | None = None
    matchable: bool = True
    default: bool = True
    #: Wraps the condition on ``field`` (a condition on a related table).
    through: Callable[[Q], Q] | None = None
    #: A value list matches any of its values (ModalitiesInStudy).
    any_of: bool = False

    @property
    def tag(self) -> str:
        return f"{tag_for_keyword(self.keyword):08X}"

    @property
    def vr(self) -> str:
        return dictionary_VR(self.keyword)


@dataclass
class Query:
    """A search: conditions, what to return, the page, and what was ignored."""

    conditions: list[Q] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    limit: int = _LIMIT
    offset: int = 0
    warnings: list[str] = field(default_factory=list)

    def apply(self, queryset):
        for condition in self.conditions:
            queryset = queryset.filter(condition)
        return queryset


def _keyword(name: str) -> str | None:
    """The keyword an attribute ID names (None for a valid attribute that has no
    keyword: a private tag or a sequence path); BadQuery if it names none."""
    parts = name.split(".")
    for part in parts:
        if _TAG.fullmatch(part):
            tag = Tag(int(part, 16))
            if not (tag.is_private or dictionary_has_tag(tag)):
                raise BadQuery(f"{part} is not a DICOM attribute tag.")
        elif tag_for_keyword(part) is None:
            raise BadQuery(f"{part} is neither a DICOM keyword nor a tag.")
    if len(parts) > 1:
        return None
    if _TAG.fullmatch(name):
        tag = Tag(int(name, 16))
        if tag.is_private:
            return None
        return keyword_for_tag(tag) or None
    return name


def _boolean(params: Mapping[str, list[str]], name: str) -> bool:
    values = params.get(name, [])
    if len(values) > 1:
        raise BadQuery(f"{name} may be given once.")
    if not values:
        return False
    value = values[0].lower()
    if value not in ("true", "false"):
        raise BadQuery(f"{name} is true or false.")
    return value == "true"


def _uint(params: Mapping[str, list[str]], name: str, default: int) -> int:
    values = params.get(name, [])
    if len(values) > 1:
        raise BadQuery(f"{name} may be given once.")
    if not values:
        return default
    if not values[0].isdigit():
        raise BadQuery(f"{name} is a whole number, 0 or more.")
    return int(values[0])


def _fold(text: str) -> str:
    """Lower case without accents, for fuzzy matching."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _pattern(value: str) -> str:
    """A wild card value as a regular expression that PostgreSQL and Python (the
    SQLite REGEXP Django installs) read alike."""
    out: list[str] = []
    for char in value:
        if char == "*":
            if out[-1:] != [".*"]:  # "**" is "*"; runs of ".*" backtrack badly
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char.isalnum():
            out.append(char)
        else:
            out.append("\\" + char)
    return "".join(out)


def _date(text: str, keyword: str) -> datetime.date:
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise BadQuery(f"{keyword} holds a date that does not exist.") from None


def _string_condition(attribute: Attribute, value: str, fuzzy: bool) -> Q | None:
    if set(value) <= {"*"}:
        return None  # universal matching
    path = attribute.field
    if fuzzy and attribute.vr == "PN":
        # Case- and accent-insensitive, at the start of any word of the name
        # (the pseudonym's parts are words: PSI-7KQ2-M9XD). Folding the asked
        # value is enough: the names held are pseudonyms, in ASCII.
        return Q(**{f"{path}__iregex": r"(^|[^A-Za-z0-9])" + _pattern(_fold(value))})
    if "*" in value or "?" in value:
        return Q(**{f"{path}__regex": f"^{_pattern(value)}$"})
    return Q(**{path: value})


def _condition(attribute: Attribute, value: str, fuzzy: bool) -> Q | None:
    keyword, vr, path = attribute.keyword, attribute.vr, attribute.field
    if value == "":
        return None  # universal matching
    if vr == "UI":
        uids = [u for u in re.split(r"[,\\]", value) if u]
        if not uids:
            return None  # universal matching
        if not all(_UID.fullmatch(u) and len(u) <= 64 for u in uids):
            raise BadQuery(f"{keyword} takes UIDs (digits and dots), comma-separated.")
        return Q(**{f"{path}__in": uids})
    if vr == "DA":
        if re.fullmatch(r"[0-9]{8}", value):
            return Q(**{path: _date(value, keyword)})
        found = _DATE_RANGE.fullmatch(value)
        if not found or not (found["start"] or found["end"]):
            raise BadQuery(
                f"{keyword} is a date (YYYYMMDD) or a range (YYYYMMDD-YYYYMMDD, "
                "-YYYYMMDD, YYYYMMDD-)."
            )
        start = found["start"] and _date(found["start"], keyword)
        end = found["end"] and _date(found["end"], keyword)
        if start and end and start > end:
            raise BadQuery(f"{keyword}: the range ends before it starts.")
        bounds = {}
        if start:
            bounds[f"{path}__gte"] = start
        if end:
            bounds[f"{path}__lte"] = end
        return Q(**bounds)
    if vr == "IS":
        if not re.fullmatch(r"[+-]?[0-9]{1,9}", value.strip()):
            raise BadQuery(f"{keyword} is a whole number.")
        return Q(**{path: int(value)})
    if vr in _WILDCARD_VRS:
        if len(value) > _MAX_STRING:
            raise BadQuery(f"{keyword} is longer than {_MAX_STRING} characters.")
        if attribute.any_of:
            found = [
                _string_condition(attribute, item, fuzzy)
                for item in filter(None, re.split(r"[,\\]", value))
            ]
            if not found or None in found:
                return None  # universal matching
            return functools.reduce(operator.or_, found)
        return _string_condition(attribute, value, fuzzy)
    raise BadQuery(f"{keyword} cannot be matched on.")  # a level lists it wrongly


def parse(params: Mapping[str, list[str]], attributes: list[Attribute]) -> Query:
    """The search ``params`` (a QueryDict's lists) ask for at a level that holds
    ``attributes``; BadQuery when a key or value is not valid."""
    held = {a.keyword: a for a in attributes}
    query = Query(
        limit=min(_uint(params, "limit", _LIMIT), _MAX_RESULTS),
        offset=_uint(params, "offset", 0),
    )
    fuzzy = _boolean(params, "fuzzymatching")
    for name in ("emptyvaluematching", "multiplevaluematching"):
        if _boolean(params, name):
            query.warnings.append(
                f"The {name} parameter is not supported; it was ignored."
            )
    ignored: list[str] = []
    seen: set[str] = set()
    for name, values in params.items():
        if name in _CONTROL:
            continue
        keyword = _keyword(name)
        attribute = held.get(keyword or "")
        if attribute is None or not attribute.matchable:
            ignored.append(name)
            continue
        if keyword in seen or (len(values) > 1 and attribute.vr != "UI"):
            raise BadQuery(f"{keyword} may be given once.")
        seen.add(keyword)
        query.include.add(keyword)  # matching keys are returned (C-FIND)
        # A repeated UID key adds to one list (PS3.18 8.3.4.1).
        condition = _condition(attribute, ",".join(values), fuzzy)
        if condition is not None and attribute.through is not None:
            condition = attribute.through(condition)
        if condition is not None:
            query.conditions.append(condition)
    if ignored:
        query.warnings.append(
            "These attributes cannot be matched on here and were ignored: "
            + ", ".join(sorted(ignored))
            + "."
        )
    _include(params, held, query)
    query.include |= {k for k, a in held.items() if a.default}
    return query


def _include(
    params: Mapping[str, list[str]], held: dict[str, Attribute], query: Query
) -> None:
    names = [
        n.strip()
        for value in params.get("includefield", [])
        for n in value.split(",")
        if n.strip()
    ]
    if "all" in names:
        if len(names) > 1:
            raise BadQuery('includefield "all" cannot be combined with attributes.')
        query.include |= set(held)
        return
    missing = []
    for name in names:
        keyword = _keyword(name)
        if keyword in held:
            query.include.add(keyword)
        else:
            missing.append(name)
    if missing:
        query.warnings.append(
            "These includefield attributes are not held here and were left out: "
            + ", ".join(sorted(missing))
            + "."
        )
