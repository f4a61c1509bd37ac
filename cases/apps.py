from django.apps import AppConfig


class CasesConfig(AppConfig):
    name = "cases"
    default_auto_field = "django.db.models.BigAutoField"

    # Model permissions each role's group carries (object permissions on each case
    # are granted by cases.services when the case is created).
    role_permissions = {
        "clinician": [
            "cases.view_case",
            "cases.add_case",
            "cases.change_case",
            "cases.view_prescription",
            "cases.add_prescription",
        ],
        "case_coordinator": [
            "cases.view_case",
            "cases.add_case",
            "cases.change_case",
            "cases.view_prescription",
        ],
        "case_manager": ["cases.view_case", "cases.view_prescription"],
        "designer": ["cases.view_case", "cases.view_prescription"],
        "production": ["cases.view_case", "cases.view_prescription"],
        "quality_assurance": ["cases.view_case", "cases.view_prescription"],
        "regulatory": ["cases.view_case", "cases.view_prescription"],
        "auditor": ["cases.view_case", "cases.view_prescription"],
        "integration": ["cases.view_case"],
    }
