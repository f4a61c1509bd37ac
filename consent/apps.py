from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    default_auto_field = "django.db.models.BigAutoField"

    role_permissions = {
        "clinician": [
            "consent.view_patient",
            "consent.add_patient",
            "consent.view_consent",
            "consent.add_consent",
            "consent.view_consentform",
        ],
        "case_coordinator": [
            "consent.view_patient",
            "consent.add_patient",
            "consent.change_patient",
            "consent.view_consent",
            "consent.add_consent",
            "consent.change_consent",
            "consent.view_consentform",
        ],
        "case_manager": ["consent.view_patient"],
        "designer": ["consent.view_patient"],
        "quality_assurance": ["consent.view_patient", "consent.view_consentform"],
        # The PRRC publishes the consent texts (a new version, never an edit).
        "regulatory": [
            "consent.view_patient",
            "consent.view_consentform",
            "consent.add_consentform",
        ],
        "auditor": [
            "consent.view_patient",
            "consent.view_consent",
            "consent.view_consentform",
        ],
    }
