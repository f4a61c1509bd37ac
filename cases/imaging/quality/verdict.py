"""The study's verdict: the best passing series proposed for design, or the
reasons in plain words why none passes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cases.imaging.quality.profiles import PASS
from cases.imaging.quality.reports import SeriesReport


def _preference(report: SeriesReport) -> tuple:
    inf = float("inf")
    return (
        report.verdict != PASS,
        report.slice_thickness_mm if report.slice_thickness_mm is not None else inf,
        -(report.coverage_mm or 0.0),
        report.slice_spacing_mm if report.slice_spacing_mm is not None else inf,
        -report.slice_count,
        report.series_instance_uid or "",
    )


def choose_series(reports: Iterable[SeriesReport]) -> SeriesReport | None:
    """The passing series to propose for design, or ``None`` if none passes.

    Preference, in order: no warnings over warnings; the thinnest slices (finer
    detail along the axis); the longest coverage (more anatomy for mirroring and
    fixation); the smallest increment; the most images; then the Series Instance UID,
    so the choice is the same every time.
    """
    candidates = [r for r in reports if r.passed]
    return min(candidates, key=_preference) if candidates else None


@dataclass(frozen=True)
class StudyVerdict:
    """Whether a study can go to design, which series, and otherwise why not."""

    accepted: bool
    proposed: SeriesReport | None
    reasons: tuple[str, ...]
    message: str

    @property
    def proposed_series_uid(self) -> str | None:
        return self.proposed.series_instance_uid if self.proposed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "proposed_series_uid": self.proposed_series_uid,
            "reasons": list(self.reasons),
            "message": self.message,
        }


def study_verdict(reports: Sequence[SeriesReport]) -> StudyVerdict:
    """The study's outcome: the proposed series, or the re-scan reasons in plain words.

    When no series passes, ``reasons`` lists every failed check of every series,
    prefixed with the series it belongs to, for the hospital to read.
    """
    best = choose_series(reports)
    if best is not None:
        return StudyVerdict(
            accepted=True,
            proposed=best,
            reasons=tuple(c.reason for c in best.warnings),
            message=f"{best.title} meets the planning requirements and is proposed "
            "for design.",
        )
    if not reports:
        reason = "No CT images were received for this study."
        return StudyVerdict(False, None, (reason,), reason + " Please send the scan.")
    reasons = tuple(f"{r.title}: {reason}" for r in reports for reason in r.reasons)
    if len(reports) == 1:
        which = "the series received does not meet the planning requirements"
    else:
        which = f"none of the {len(reports)} series received meets the requirements"
    message = (
        f"The scan cannot be used for planning: {which}. Please send a new "
        "reconstruction or scan that corrects the points listed."
    )
    return StudyVerdict(False, None, reasons, message)
