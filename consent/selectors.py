"""Named reads of patients and consents, all through the permission gate.

Lists never load identity: the encrypted fields are deferred, so a patient is known
by its pseudonym until ``consent.services.patient_identities`` reads (and logs) the
identity of the rows the reader may see.
"""

from __future__ import annotations

from django.db.models import QuerySet

from consent.models import Consent, ConsentForm, Patient
from psi.crypto import identity_hmac
from psi.models import Organisation
from psi.permissions import is_active_user, restrict

#: The encrypted fields that make up a patient's identity.
IDENTITY_FIELDS = ("family_name", "given_names", "birth_date", "sex", "record_number")
#: What a patient's history must never show: identity, and the keyed digest that
#: links a record number to the patient.
IDENTITY_HISTORY_FIELDS = frozenset(IDENTITY_FIELDS) | {"record_number_hmac"}


def patient_list_visible_to(user, action: str = "view") -> QuerySet[Patient]:
    """Patients on which ``user`` holds ``action`` (default: view), identity
    deferred."""
    return restrict(
        Patient.objects.select_related("hospital").defer(*IDENTITY_FIELDS),
        user,
        action,
    )


def patient_matching_record_number(
    user, record_number: str, *, hospital: Organisation | None = None
) -> QuerySet[Patient]:
    """Exact match on the hospital record number through its keyed HMAC, among the
    patients whose identity ``user`` may read (nobody else may search by it).
    Identity deferred, as in every list: ``patient_identities`` reads it, logged."""
    queryset = patient_list_visible_to(user, "view_patient_identity").filter(
        record_number_hmac=identity_hmac(record_number or "")
    )
    if hospital is not None:
        queryset = queryset.filter(hospital=hospital)
    return queryset


def consent_list_visible_to(user) -> QuerySet[Consent]:
    return restrict(
        Consent.objects.select_related(
            "patient", "form", "recorded_by", "withdrawn_by", "evidence"
        ).defer(*(f"patient__{name}" for name in IDENTITY_FIELDS)),
        user,
    )


def consent_form_list(user) -> QuerySet[ConsentForm]:
    """Consent forms are published texts: every signed-in user may read them."""
    if not is_active_user(user):
        return ConsentForm.objects.none()
    return ConsentForm.objects.all()
