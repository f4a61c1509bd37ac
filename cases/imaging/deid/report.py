"""What de-identification did to each object, and the sum over a study.

Reports name attributes (keyword and tag) and count them; they never hold a value
from the original object. The only UIDs in them are the replacement ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .table import (
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    KEEP_REPLACING_UIDS,
    PSEUDONYM,
    REMOVE,
    SHIFT,
    UID,
)

CATEGORIES = (
    "removed",
    "emptied",
    "dummy",
    "uid",
    "shifted",
    "cleaned",
    "pseudonym",
    "kept",
)
CATEGORY_OF_ACTION = {
    REMOVE: "removed",
    EMPTY: "emptied",
    DUMMY: "dummy",
    UID: "uid",
    SHIFT: "shifted",
    CLEAN: "cleaned",
    PSEUDONYM: "pseudonym",
    KEEP: "kept",
    KEEP_REPLACING_UIDS: "kept",
}


class ReportBuilder:
    """Counts per category and attribute label, filled while the dataset is walked."""

    __slots__ = ("counts", "notes")

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}
        self.notes: set[str] = set()

    def add(self, category: str, label: str) -> None:
        bucket = self.counts[category]
        bucket[label] = bucket.get(label, 0) + 1

    def counts_dict(self) -> dict[str, dict[str, int]]:
        return {c: dict(sorted(self.counts[c].items())) for c in CATEGORIES}


def totals(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    return {c: sum(counts.get(c, {}).values()) for c in CATEGORIES}


def summarise_by_study(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up per-object reports by (de-identified) Study Instance UID.

    Returns ``{study_uid: {"objects", "series", "quarantined", "quarantine_reasons",
    "counts", "totals"}}``, JSON-ready like its inputs.
    """
    studies: dict[str, dict[str, Any]] = {}
    for report in reports:
        study = studies.setdefault(
            report.get("study_instance_uid") or "",
            {
                "objects": 0,
                "series": {},
                "quarantined": 0,
                "quarantine_reasons": {},
                "counts": {c: {} for c in CATEGORIES},
            },
        )
        study["objects"] += 1
        series = report.get("series_instance_uid") or ""
        study["series"][series] = study["series"].get(series, 0) + 1
        reason = report.get("quarantine_reason")
        if reason:
            study["quarantined"] += 1
            reasons = study["quarantine_reasons"]
            reasons[reason] = reasons.get(reason, 0) + 1
        for category, labels in report.get("counts", {}).items():
            bucket = study["counts"][category]
            for label, count in labels.items():
                bucket[label] = bucket.get(label, 0) + count
    for study in studies.values():
        study["counts"] = {
            c: dict(sorted(study["counts"][c].items())) for c in CATEGORIES
        }
        study["totals"] = totals(study["counts"])
    return studies
