"""Admin of patients, consent forms and consent records, where clinicians work.

Every queryset goes through the permission gate; every write is a form that calls a
service in ``consent.services`` (registration, identity correction, consent,
withdrawal, publishing a form) and shows the service's refusal on the form. Identity
is shown only to members of the patient's hospital and read through
``patient_identities``, so each view of it is an audit event. Nothing is deleted,
and history pages never revert a record or show identity values.

Modules: ``patient``, ``consent_form``, ``consent`` (each registers its admin) and
``base``.
"""

from consent.admin.consent import ConsentAdmin
from consent.admin.consent_form import ConsentFormAdmin
from consent.admin.patient import PatientAdmin

__all__ = ["ConsentAdmin", "ConsentFormAdmin", "PatientAdmin"]
