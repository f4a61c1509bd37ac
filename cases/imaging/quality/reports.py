"""What a check and a series report say: measured value, limit, verdict, and a
sentence a radiographer can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cases.imaging.quality.profiles import FAIL, PASS, WARN


@dataclass(frozen=True)
class CheckResult:
    """One check of one series: what was measured, against what, and what it means."""

    name: str
    measured: Any
    limit: Any
    verdict: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "limit": self.limit,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SeriesReport:
    """The planning-quality report of one CT series against one acquisition profile."""

    series_instance_uid: str | None
    series_number: int | None
    series_description: str | None
    slice_count: int
    region: str
    checks: tuple[CheckResult, ...]
    slice_thickness_mm: float | None = None
    slice_spacing_mm: float | None = None
    coverage_mm: float | None = None

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        if FAIL in verdicts:
            return FAIL
        return WARN if WARN in verdicts else PASS

    @property
    def passed(self) -> bool:
        return self.verdict != FAIL

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == FAIL]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == WARN]

    @property
    def reasons(self) -> list[str]:
        """Plain-words reasons the series cannot be used, one per failed check."""
        return [c.reason for c in self.failures]

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def title(self) -> str:
        parts = []
        if self.series_number is not None:
            parts.append(f"Series {self.series_number}")
        else:
            parts.append("Series")
        if self.series_description:
            parts.append(f'"{self.series_description}"')
        parts.append(f"({self.slice_count} images)")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "slice_count": self.slice_count,
            "region": self.region,
            "verdict": self.verdict,
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "coverage_mm": self.coverage_mm,
            "checks": [c.as_dict() for c in self.checks],
        }
