"""Imaging services: the gate, the ingest of staged DICOM objects and the designer's
signed visual review.

Every way imaging arrives (upload, DICOMweb, the C-STORE listener) stages raw files
(``cases.imaging.staging``) and calls :func:`ingest_enqueue`; the ``imaging.ingest``
job then runs :func:`study_ingest`, which de-identifies, stores and records the
objects (``cases.imaging.intake`` does the per-file work). Raw files never leave the
staging folder; only de-identified bytes are stored.

A study arrives in batches (the listener hands over every 50 objects, STOW-RS
clients send a request per series or per file), so it is judged only once it is
complete: the ``imaging.evaluate`` job (:func:`study_evaluate`) runs when no ingest
of the case is pending and the sender said it is done, or, for senders that cannot
say so, once the study has been quiet for PSI_STUDY_STABLE_SECONDS
(:func:`evaluation_schedule`). The previews follow in an ``imaging.previews`` job.

Modules: ``gate`` (which cases take imaging, from whom), ``ingest``, ``evaluation``,
``previewing``, ``review``, ``sweep`` (raw objects left behind); job kinds in
``kinds``. Import from this package.
"""

from cases.imaging.services.evaluation import (
    evaluation_schedule,
    region_profile,
    require_evaluable,
    study_evaluate,
    study_evaluation_request,
)
from cases.imaging.services.gate import (
    IMAGING_STATUSES,
    case_for_accession,
    dicom_peer_admit,
    imaging_gate,
    may_send,
)
from cases.imaging.services.ingest import ingest_enqueue, study_ingest
from cases.imaging.services.kinds import (
    EVALUATE_KIND,
    EVALUATE_TASK,
    INGEST_KIND,
    INGEST_TASK,
    PREVIEWS_KIND,
    PREVIEWS_TASK,
    STAGING_SWEEP_TASK,
)
from cases.imaging.services.previewing import previews_enqueue, series_previews_make
from cases.imaging.services.review import (
    REVIEW_FINDINGS,
    require_reviewable,
    study_review_passed,
    study_review_sign,
)
from cases.imaging.services.sweep import staging_sweep

__all__ = [
    "EVALUATE_KIND",
    "EVALUATE_TASK",
    "IMAGING_STATUSES",
    "INGEST_KIND",
    "INGEST_TASK",
    "PREVIEWS_KIND",
    "PREVIEWS_TASK",
    "REVIEW_FINDINGS",
    "STAGING_SWEEP_TASK",
    "case_for_accession",
    "dicom_peer_admit",
    "evaluation_schedule",
    "imaging_gate",
    "ingest_enqueue",
    "may_send",
    "previews_enqueue",
    "region_profile",
    "require_evaluable",
    "require_reviewable",
    "series_previews_make",
    "staging_sweep",
    "study_evaluate",
    "study_evaluation_request",
    "study_ingest",
    "study_review_passed",
    "study_review_sign",
]
