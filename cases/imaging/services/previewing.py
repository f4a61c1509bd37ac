"""The previews job: PNGs of each series, made from its stored, de-identified files
once the study is judged (people need them, the verdict does not).
"""

from __future__ import annotations

import functools
import io

from django.db import transaction

from cases.imaging.models import (
    ImagingSeries,
    ImagingStudy,
)
from cases.imaging.previews import PreviewError, series_previews
from cases.imaging.services.kinds import (
    PREVIEWS_KIND,
    PREVIEWS_TASK,
)
from psi.files import stored_file_create, stored_file_open
from psi.jobs import Progress, job_enqueue
from psi.models import Job, StoredFile


def previews_enqueue(study: ImagingStudy, series_ids: list[int]) -> Job:
    return job_enqueue(
        kind=PREVIEWS_KIND,
        task_name=PREVIEWS_TASK,
        target=study,
        params={"study_id": study.pk, "series_ids": series_ids},
    )


def series_previews_make(job: Job, progress: Progress) -> dict:
    """PNG previews of the job's series, made from their stored, de-identified
    files (ordered by position); a series that cannot be previewed gets the reason
    in its quality report instead."""
    made, problems = {}, {}
    ids = job.params.get("series_ids", [])
    for number, series in enumerate(
        ImagingSeries.objects.filter(pk__in=ids).order_by("pk"), 1
    ):
        files = [
            i.file
            for i in series.instances.select_related("file").order_by(
                "position", "instance_number", "pk"
            )
        ]
        stored, problem = _previews(files)
        with transaction.atomic():
            series = ImagingSeries.objects.select_for_update().get(pk=series.pk)
            if stored:
                series.previews = stored
                made[series.series_uid] = sorted(stored)
            else:
                series.quality_report = {**series.quality_report, "preview": problem}
                problems[series.series_uid] = problem
            series.save()
        progress(number * 100 // max(len(ids), 1), f"series {number} of {len(ids)}")
    return {"previews": made, "problems": problems}


def _previews(files: list[StoredFile]) -> tuple[dict[str, int], str]:
    """Store a series' PNG previews; their StoredFile ids, or why there are none."""
    try:
        images = series_previews(
            [functools.partial(stored_file_open, f) for f in files]
        )
    except PreviewError as exc:
        return {}, str(exc)
    ids = {}
    for name, png in images.items():
        stored = stored_file_create(
            actor=None,
            content=io.BytesIO(png),
            original_name=f"{name}.png",
            content_type="image/png",
        )
        ids[name] = stored.pk
    return ids, ""
