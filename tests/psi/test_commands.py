"""Management commands: identity key rotation and API tokens for integrations.
(audit_verify is tested with the audit chain in test_audit.py.)"""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from knox.models import AuthToken

from consent.models import Patient
from psi.models import AuditEvent

pytestmark = pytest.mark.django_db


def raw(model, column, pk_column, pk):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {model._meta.db_table} WHERE {pk_column} = %s",
            [pk],
        )
        return cursor.fetchone()[0]


def decrypts_with(key, token):
    try:
        Fernet(key.encode()).decrypt(token.encode())
    except Exception:  # noqa: BLE001 - any failure means "not under this key"
        return False
    return True


class TestRotateIdentityKeys:
    @pytest.fixture
    def keys(self):
        return Fernet.generate_key().decode(), Fernet.generate_key().decode()

    @pytest.fixture
    def patient(self, keys, make_case):
        old, _ = keys
        with override_settings(IDENTITY_KEYS=[old]):
            patient = make_case().patient
            patient.given_names = "Synthetic Renamed"
            patient.save()  # a second historical row, under the old key as well
        return patient

    def tokens(self, patient):
        history = Patient.history.model
        history_ids = patient.history.order_by("history_id").values_list(
            "history_id", flat=True
        )
        return [raw(Patient, "family_name", "id", patient.pk)] + [
            raw(history, "family_name", "history_id", history_id)
            for history_id in history_ids
        ]

    def test_every_value_and_its_history_moves_to_the_newest_key(self, keys, patient):
        old, new = keys
        history_rows = patient.history.count()
        with override_settings(IDENTITY_KEYS=[new, old]):
            out = StringIO()
            call_command("rotate_identity_keys", "--batch-size", "1", stdout=out)
        tokens = self.tokens(patient)
        assert len(tokens) == 3
        assert all(decrypts_with(new, t) and not decrypts_with(old, t) for t in tokens)
        assert "consent.Patient: 1 rows, 5 values, 5 re-encrypted" in out.getvalue()
        assert "consent.HistoricalPatient: 2 rows, 10 values, 10 re-encrypted" in (
            out.getvalue()
        )

        with override_settings(IDENTITY_KEYS=[new]):
            stored = Patient.objects.get(pk=patient.pk)
            assert stored.family_name == "Testperson"
            assert stored.given_names == "Synthetic Renamed"
            assert stored.birth_date.isoformat() == "1970-01-01"
            oldest = stored.history.earliest()
            assert oldest.given_names == "Synthetic 1"
        # Only ciphertext changed: no new history row claims a change.
        assert patient.history.count() == history_rows

    def test_a_dry_run_counts_and_changes_nothing(self, keys, patient):
        old, new = keys
        before = self.tokens(patient)
        with override_settings(IDENTITY_KEYS=[new, old]):
            out = StringIO()
            call_command("rotate_identity_keys", "--dry-run", stdout=out)
        assert self.tokens(patient) == before
        assert "15 of 15 values in 3 rows would be re-encrypted (dry run)" in (
            out.getvalue()
        )

    def test_a_second_run_has_nothing_left_to_do(self, keys, patient):
        old, new = keys
        with override_settings(IDENTITY_KEYS=[new, old]):
            call_command("rotate_identity_keys", stdout=StringIO())
            rotated = self.tokens(patient)
            out = StringIO()
            call_command("rotate_identity_keys", stdout=out)
        assert self.tokens(patient) == rotated
        assert "0 of 15 values in 3 rows re-encrypted." in out.getvalue()

    def test_a_value_under_an_unknown_key_stops_the_run_and_says_where(
        self, keys, patient
    ):
        _, new = keys
        with override_settings(IDENTITY_KEYS=[new]), pytest.raises(CommandError) as e:
            call_command("rotate_identity_keys", stdout=StringIO())
        assert "does not decrypt" in str(e.value)
        assert "consent.Patient" in str(e.value) or "HistoricalPatient" in str(e.value)


class TestCreateApiToken:
    def test_prints_a_working_token_once_and_audits_it(self, api, surgeon):
        out, err = StringIO(), StringIO()
        call_command("create_api_token", "surgeon", stdout=out, stderr=err)
        token = out.getvalue().strip()
        assert AuthToken.objects.filter(user=surgeon).count() == 1
        assert "never expires" in err.getvalue()
        assert AuditEvent.objects.filter(
            action="auth.token_created", object_id=str(surgeon.pk)
        ).exists()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api.get("/api/v1/organisations/").status_code == 200

    def test_an_expiry_can_be_given(self, surgeon):
        err = StringIO()
        call_command(
            "create_api_token",
            "surgeon",
            "--expiry-hours",
            "24",
            stdout=StringIO(),
            stderr=err,
        )
        assert AuthToken.objects.get(user=surgeon).expiry is not None
        assert "expires" in err.getvalue()

    def test_unknown_and_deactivated_users_get_no_token(self, surgeon):
        with pytest.raises(CommandError, match="No user named"):
            call_command("create_api_token", "nobody")
        surgeon.is_active = False
        surgeon.save()
        with pytest.raises(CommandError, match="deactivated"):
            call_command("create_api_token", "surgeon")
        assert not AuthToken.objects.exists()
