"""The imaging jobs: their kinds (``Job.kind``) and Celery task names."""

INGEST_KIND = "imaging.ingest"
INGEST_TASK = "cases.imaging.ingest"
EVALUATE_KIND = "imaging.evaluate"
EVALUATE_TASK = "cases.imaging.evaluate"
PREVIEWS_KIND = "imaging.previews"
PREVIEWS_TASK = "cases.imaging.previews"
STAGING_SWEEP_TASK = "cases.imaging.staging_sweep"
