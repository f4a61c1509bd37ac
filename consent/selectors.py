"""Named reads of patients and consents, all through the permission gate."""

from django.db.models import QuerySet

from consent.models import Consent, ConsentForm, Patient
from psi.permissions import restrict


def patient_list_visible_to(user) -> QuerySet[Patient]:
    return restrict(Patient.objects.select_related("hospital"), user)


def consent_list_visible_to(user) -> QuerySet[Consent]:
    return restrict(
        Consent.objects.select_related("patient", "form", "recorded_by"), user
    )


def consent_form_list(user) -> QuerySet[ConsentForm]:
    if not getattr(user, "is_authenticated", False):
        return ConsentForm.objects.none()
    return ConsentForm.objects.all()
