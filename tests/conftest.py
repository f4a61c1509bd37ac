"""Personas shared by every test: who they are decides what they may see.

- ``surgeon`` and ``coordinator`` of hospital A,
- ``case_manager``, ``designer``, ``qa`` and ``prrc`` of the manufacturer,
- ``auditor`` of the manufacturer,
- ``outsider``: a clinician of hospital B, who must see nothing of hospital A.
"""

import pytest
from rest_framework.test import APIClient

from psi.models import Organisation, Role
from psi.orgs import membership_grant
from tests.factories import PASSWORD, OrganisationFactory, UserFactory


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 takes most of a second per hash on a 2-core runner, and every persona,
    # login and signature hashes. What the tests check is never the hash: MD5 here,
    # as Django's testing docs advise.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _files_in_tmp(settings, tmp_path):
    # Stored files go to a folder of this test, never the project's media folder.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


@pytest.fixture
def password():
    return PASSWORD


@pytest.fixture
def hospital_a(db):
    return OrganisationFactory(name="Hospital A", kind=Organisation.Kind.HOSPITAL)


@pytest.fixture
def hospital_b(db):
    return OrganisationFactory(name="Hospital B", kind=Organisation.Kind.HOSPITAL)


@pytest.fixture
def manufacturer(db):
    return OrganisationFactory(
        name="Implant Works", kind=Organisation.Kind.MANUFACTURER, country="FR"
    )


def _member(username, organisation, role, **extra):
    user = UserFactory(username=username, **extra)
    membership_grant(actor=None, user=user, organisation=organisation, role=role)
    return user


@pytest.fixture
def surgeon(hospital_a):
    return _member(
        "surgeon", hospital_a, Role.CLINICIAN, first_name="Sam", last_name="Cutter"
    )


@pytest.fixture
def coordinator(hospital_a):
    return _member("coordinator", hospital_a, Role.CASE_COORDINATOR)


@pytest.fixture
def case_manager(manufacturer):
    return _member("case_manager", manufacturer, Role.CASE_MANAGER)


@pytest.fixture
def designer(manufacturer):
    return _member("designer", manufacturer, Role.DESIGNER)


@pytest.fixture
def qa(manufacturer):
    return _member("qa", manufacturer, Role.QUALITY_ASSURANCE)


@pytest.fixture
def prrc(manufacturer):
    return _member("prrc", manufacturer, Role.REGULATORY)


@pytest.fixture
def auditor(manufacturer):
    return _member("auditor", manufacturer, Role.AUDITOR)


@pytest.fixture
def outsider(hospital_b):
    return _member("outsider", hospital_b, Role.CLINICIAN)


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def api():
    """An API client; ``api.force_authenticate(user)`` to act as someone."""
    return APIClient()


@pytest.fixture
def api_as(api):
    def login(user):
        api.force_authenticate(user=user)
        return api

    return login


@pytest.fixture(autouse=True)
def _celery_eager(request, settings):
    """Run tasks in the test process, as the embedded mode does, even when CI sets
    CELERY_BROKER_URL; tests marked ``worker`` talk to a real worker instead."""
    if request.node.get_closest_marker("worker"):
        yield
        return
    from psi.celery import app

    previous = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous
