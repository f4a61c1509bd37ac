import pydicom
from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # pydicom checks each value it decodes and warns of a non-conformant one,
        # quoting it: a birth date sent as 1970-01-01 would reach the logs. What
        # matters in a received object is checked by the ingest; pydicom's checks
        # add only that risk, and a regular expression per value read.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

    # Model permissions each role's group carries (object permissions on each case
    # are granted by cases.services when the case is created). Imaging studies and
    # series are still shown only under a case the user may see; the model
    # permission only opens their admin pages.
    role_permissions = {
        "clinician": [
            "cases.view_case",
            "cases.add_case",
            "cases.change_case",
            "cases.view_prescription",
            "cases.add_prescription",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
        ],
        "case_coordinator": [
            "cases.view_case",
            "cases.add_case",
            "cases.change_case",
            "cases.view_prescription",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            # Their own hospital's DICOM nodes (the admin shows no other).
            "cases.view_dicompeer",
        ],
        "case_manager": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            "cases.view_acquisitionprofile",
        ],
        "designer": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            "cases.view_acquisitionprofile",
        ],
        "production": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
        ],
        # The de-identification report is quality evidence (PS3.15 Annex E): the
        # quality roles read it, the people working on the case need only the images.
        # Quality assurance owns the acquisition limits studies are judged by.
        "quality_assurance": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_deid_report",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            "cases.view_acquisitionprofile",
            "cases.add_acquisitionprofile",
            "cases.change_acquisitionprofile",
        ],
        "regulatory": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_deid_report",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            "cases.view_acquisitionprofile",
        ],
        "auditor": [
            "cases.view_case",
            "cases.view_prescription",
            "cases.view_deid_report",
            "cases.view_imagingstudy",
            "cases.view_imagingseries",
            "cases.view_acquisitionprofile",
        ],
        "integration": ["cases.view_case"],
    }
