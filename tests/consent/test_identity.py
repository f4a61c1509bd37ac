"""Patient identity at rest: ciphertext in the database, a wrong key raises (never
returns ciphertext), key rotation keeps values readable."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command, get_commands
from django.db import connection

from consent.models import Patient
from consent.selectors import IDENTITY_FIELDS
from consent.services import (
    patient_find_by_record_number,
    patient_identities,
    patient_update_identity,
)
from psi.crypto import IdentityDecryptionError
from psi.models import AuditEvent
from tests.consent.conftest import FAMILY_NAME

pytestmark = pytest.mark.django_db

FERNET_PREFIX = "gAAAAA"  # version byte 0x80 and a timestamp, base64


def raw_identity(table: str, where: str, params) -> list[tuple]:
    columns = ", ".join(IDENTITY_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} WHERE {where}", params)
        return cursor.fetchall()


def test_database_holds_ciphertext_not_identity(patient):
    [row] = raw_identity("consent_patient", "id = %s", [patient.pk])

    for stored in row:
        assert stored.startswith(FERNET_PREFIX)
    joined = " ".join(row)
    for value in (FAMILY_NAME, patient.given_names, "1970-01-01", "TEST-0001"):
        assert value not in joined
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT record_number_hmac FROM consent_patient WHERE id = %s",
            [patient.pk],
        )
        [digest] = cursor.fetchone()
    assert len(digest) == 64 and "TEST" not in digest


def test_history_holds_ciphertext_too(surgeon, patient):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"family_name": "Testpersonnew"},
        reason="Married name",
    )
    rows = raw_identity("consent_historicalpatient", "id = %s", [patient.pk])

    assert len(rows) == 2
    for row in rows:
        assert all(value.startswith(FERNET_PREFIX) for value in row)
        assert not any(FAMILY_NAME in value for value in row)


def test_same_value_encrypts_differently_each_time(make_patient):
    first = make_patient(given_names="Same")
    second = make_patient(given_names="Same")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT given_names FROM consent_patient WHERE id IN (%s, %s)",
            [first.pk, second.pk],
        )
        tokens = {row[0] for row in cursor.fetchall()}
    assert len(tokens) == 2


def test_a_wrong_key_raises_and_never_returns_ciphertext(
    settings, surgeon, patient, api_as
):
    settings.IDENTITY_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(IdentityDecryptionError):
        Patient.objects.get(pk=patient.pk)
    with pytest.raises(IdentityDecryptionError):
        patient_identities(actor=surgeon, patients=[patient])
    assert not AuditEvent.objects.filter(action="patient.identity_read").exists()

    response = api_as(surgeon).get(f"/api/v1/patients/{patient.pk}/")
    assert response.status_code == 500
    assert response.json()["code"] == "identity_unreadable"
    assert FERNET_PREFIX not in response.content.decode()


def test_pseudonym_lists_do_not_need_the_identity_key(
    settings, designer, patient, share_with_manufacturer, api_as
):
    share_with_manufacturer(patient)
    settings.IDENTITY_KEYS = [Fernet.generate_key().decode()]

    response = api_as(designer).get("/api/v1/patients/")

    assert response.status_code == 200
    assert response.json()["results"][0]["pseudonym"] == patient.pseudonym


@pytest.mark.skipif(
    "rotate_identity_keys" not in get_commands(),
    reason="the rotate_identity_keys command is not there yet",
)
def test_key_rotation_keeps_identity_readable(settings, surgeon, hospital_a, patient):
    patient_update_identity(
        actor=surgeon,
        patient=patient,
        changes={"given_names": "Rotated"},
        reason="Test of rotation",
    )
    old_key = settings.IDENTITY_KEYS[0]
    new_key = Fernet.generate_key().decode()
    before = raw_identity("consent_patient", "id = %s", [patient.pk])

    settings.IDENTITY_KEYS = [new_key, old_key]
    # Before rotation, both keys configured: old tokens still decrypt.
    assert Patient.objects.get(pk=patient.pk).given_names == "Rotated"
    out = io.StringIO()
    call_command("rotate_identity_keys", stdout=out)

    after = raw_identity("consent_patient", "id = %s", [patient.pk])
    assert after != before
    assert "re-encrypted" in out.getvalue()
    settings.IDENTITY_KEYS = [new_key]  # the old key is gone
    fresh = Patient.objects.get(pk=patient.pk)
    assert fresh.family_name == FAMILY_NAME
    assert fresh.given_names == "Rotated"
    assert fresh.birth_date == patient.birth_date
    assert [h.given_names for h in fresh.history.order_by("history_date")] == [
        patient.given_names,
        "Rotated",
    ]
    # The lookup digest uses its own key and is untouched by rotation.
    assert (
        patient_find_by_record_number(
            actor=surgeon, hospital=hospital_a, record_number=patient.record_number
        )
        == patient
    )
