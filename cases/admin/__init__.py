"""Admin for cases and prescriptions: thin callers of cases.services.

Every queryset goes through the permission gate (a case you cannot see is a 404);
nothing here writes a case or a prescription except through its service.
"""

from cases.admin.case import CaseAdmin
from cases.admin.prescription import PrescriptionAdmin
from cases.imaging import admin as imaging_admin  # noqa: F401  (registers)

__all__ = ["CaseAdmin", "PrescriptionAdmin"]
