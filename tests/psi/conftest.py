"""Fixtures of the core tests: anchor records (patients and cases, made directly with
the ORM so the core is tested apart from the services above it), a way to tamper
with the audit table behind the application's back, and query counting."""

import datetime
import importlib
import itertools
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.models import Case, Prescription
from consent.models import Patient
from psi.crypto import identity_hmac
from psi.models import Role
from psi.permissions import _permission_id, grant_to_roles

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL (set DATABASE_URL=postgres://...)",
)

HOSPITAL_PATIENT_PERMS = {
    Role.CLINICIAN: ["view_patient", "view_patient_identity"],
    Role.CASE_COORDINATOR: ["view_patient", "view_patient_identity"],
}
HOSPITAL_CASE_PERMS = {
    Role.CLINICIAN: ["view_case", "change_case", "prescribe_case"],
    Role.CASE_COORDINATOR: ["view_case", "change_case"],
}
MANUFACTURER_CASE_PERMS = {
    Role.CASE_MANAGER: ["view_case", "manage_case"],
    Role.DESIGNER: ["view_case"],
    Role.QUALITY_ASSURANCE: ["view_case", "release_case"],
    Role.REGULATORY: ["view_case", "release_case"],
    Role.AUDITOR: ["view_case"],
}


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # The login throttle counts requests in the cache; each test starts afresh.
    cache.clear()


@pytest.fixture
def make_case(hospital_a, manufacturer, surgeon):
    """Make a synthetic patient and case, granted to the roles of the hospital and
    the manufacturer as the case services would grant them."""
    numbers = itertools.count(1)

    def make(*, hospital=hospital_a, prescriber=surgeon):
        n = next(numbers)
        record_number = f"SYN-{n:05d}"
        patient = Patient.objects.create(
            hospital=hospital,
            family_name="Testperson",
            given_names=f"Synthetic {n}",
            birth_date=datetime.date(1970, 1, 1),
            sex=Patient.Sex.UNKNOWN,
            record_number=record_number,
            record_number_hmac=identity_hmac(record_number),
            created_by=prescriber,
        )
        grant_to_roles(patient, hospital, HOSPITAL_PATIENT_PERMS)
        case = Case.objects.create(
            reference=f"T-{hospital.pk}-{n:05d}",
            patient=patient,
            hospital=hospital,
            manufacturer=manufacturer,
            prescriber=prescriber,
            indication="Synthetic test indication",
            anatomical_region=Case.Region.CRANIAL,
            side=Case.Side.LEFT,
            regulatory_pathway=Case.Pathway.EU_CUSTOM_MADE,
            pathway_reason="Synthetic test case",
            created_by=prescriber,
        )
        grant_to_roles(case, hospital, HOSPITAL_CASE_PERMS)
        grant_to_roles(case, manufacturer, MANUFACTURER_CASE_PERMS)
        return case

    return make


@pytest.fixture
def case_a(make_case):
    return make_case()


@pytest.fixture
def prescription_a(case_a, surgeon, hospital_a):
    return Prescription.objects.create(
        case=case_a,
        version=1,
        prescriber=surgeon,
        prescriber_licence="TEST-LIC-0001",
        institution=hospital_a,
        patient_pseudonym=case_a.patient.pseudonym,
        material=Prescription.Material.TITANIUM,
        thickness_mm=Decimal("2.50"),
        screw_count=6,
    )


_SQLITE_TRIGGER = importlib.import_module(
    "psi.migrations.0002_audit_append_only"
).SQLITE_CREATE


@contextmanager
def audit_trigger_disabled():
    """Tamper with the audit table as someone with database access would: with the
    append-only trigger off. Inside the test's transaction, so it is undone after."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # ALTER TABLE waits for no deferred foreign-key check: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                "ALTER TABLE psi_auditevent DISABLE TRIGGER psi_audit_append_only"
            )
            yield cursor
            cursor.execute(
                "ALTER TABLE psi_auditevent ENABLE TRIGGER psi_audit_append_only"
            )
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        else:
            cursor.execute("DROP TRIGGER psi_audit_append_only")
            yield cursor
            cursor.execute(_SQLITE_TRIGGER)


@pytest.fixture
def count_queries(api):
    """Queries one GET costs as ``user``, measured warm (caches filled by a first
    request) with a fresh user object, so two measurements compare fairly."""

    def count(user, url):
        User = get_user_model()
        api.force_authenticate(User.objects.get(pk=user.pk))
        assert api.get(url).status_code == 200
        ContentType.objects.clear_cache()
        _permission_id.cache_clear()
        api.force_authenticate(User.objects.get(pk=user.pk))
        api.get(url)
        api.force_authenticate(User.objects.get(pk=user.pk))
        with CaptureQueriesContext(connection) as queries:
            response = api.get(url)
        assert response.status_code == 200, response.content
        return len(queries), response

    return count


def subprocess_database_url() -> str:
    """DATABASE_URL of the pytest-django test database, for processes the tests
    start (a worker, a management command)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{credentials}@{host}/{quote(db['NAME'])}"
