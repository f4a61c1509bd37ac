"""Settings from the environment: fail fast on demo secrets in production, read
``*_FILE`` secrets, end idle sessions. Each case imports the settings afresh in a
subprocess with its own environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings

PRINT_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SECRET_KEY": s.SECRET_KEY,
    "IDENTITY_KEYS": s.IDENTITY_KEYS,
    "IDENTITY_HMAC_KEY": s.IDENTITY_HMAC_KEY,
    "SESSION_COOKIE_AGE": s.SESSION_COOKIE_AGE,
    "SESSION_SAVE_EVERY_REQUEST": s.SESSION_SAVE_EVERY_REQUEST,
    "CELERY_TASK_ALWAYS_EAGER": s.CELERY_TASK_ALWAYS_EAGER,
    "CELERY_BROKER_TRANSPORT_OPTIONS": s.CELERY_BROKER_TRANSPORT_OPTIONS,
    "SECURE_HSTS_SECONDS": getattr(s, "SECURE_HSTS_SECONDS", 0),
}))
"""
CONFIGURING = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "PSI_",
    "DJANGO_",
)
REAL_SECRETS = {
    "SECRET_KEY": "a-real-secret-key-for-the-test-" + "x" * 30,
    "PSI_IDENTITY_KEYS": Fernet.generate_key().decode(),
    "PSI_IDENTITY_HMAC_KEY": "a-real-hmac-key-for-the-test",
    "PSI_UID_SECRET": "a-real-uid-secret-for-the-test",
}


@pytest.fixture
def load_settings(tmp_path):
    """Import psi.settings in a fresh interpreter with only ``env`` configuring it."""

    def load(**env):
        clean = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(CONFIGURING)
        }
        clean.update(
            DJANGO_SETTINGS_MODULE="psi.settings", PSI_VAR_DIR=str(tmp_path), **env
        )
        return subprocess.run(
            [sys.executable, "-c", PRINT_SETTINGS],
            cwd=django_settings.BASE_DIR,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return load


def loaded(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_debug_off_with_the_demo_secrets_refuses_to_start_naming_them(load_settings):
    result = load_settings(DEBUG="0")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    for name in ("SECRET_KEY", "PSI_IDENTITY_KEYS", "PSI_IDENTITY_HMAC_KEY"):
        assert name in result.stderr


def test_one_demo_secret_left_is_named_alone(load_settings):
    env = {**REAL_SECRETS, "DEBUG": "false"}
    del env["PSI_UID_SECRET"]
    result = load_settings(**env)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "PSI_UID_SECRET" in message
    assert "SECRET_KEY," not in message and "PSI_IDENTITY_KEYS" not in message


def test_debug_off_with_real_secrets_starts_with_transport_security(load_settings):
    values = loaded(load_settings(DEBUG="off", **REAL_SECRETS))
    assert values["DEBUG"] is False
    assert values["SECURE_HSTS_SECONDS"] >= 31536000


def test_empty_allowed_hosts_is_refused_when_debug_is_off(load_settings):
    result = load_settings(DEBUG="0", ALLOWED_HOSTS="", **REAL_SECRETS)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_secrets_are_read_from_FILE_variables_and_the_file_wins(
    load_settings, tmp_path
):
    newest, older = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    files = {
        "SECRET_KEY": "secret-from-a-file-" + "y" * 40,
        "PSI_IDENTITY_KEYS": f"{newest}, {older}\n",
        "PSI_IDENTITY_HMAC_KEY": "hmac-from-a-file\n",
    }
    env = {"SECRET_KEY": "secret-from-the-environment"}
    for name, content in files.items():
        path = Path(tmp_path, name.lower())
        path.write_text(content)
        env[f"{name}_FILE"] = str(path)
    values = loaded(load_settings(**env))
    assert values["SECRET_KEY"] == files["SECRET_KEY"]
    assert values["IDENTITY_KEYS"] == [newest, older]
    assert values["IDENTITY_HMAC_KEY"] == "hmac-from-a-file"


def test_an_unreadable_secret_file_names_the_variable(load_settings, tmp_path):
    result = load_settings(SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "SECRET_KEY_FILE" in result.stderr


def test_idle_sessions_end_after_fifteen_minutes_by_default(load_settings):
    values = loaded(load_settings())
    assert values["SESSION_COOKIE_AGE"] == 15 * 60
    assert values["SESSION_SAVE_EVERY_REQUEST"] is True
    shorter = loaded(load_settings(PSI_SESSION_IDLE_SECONDS="300"))
    assert shorter["SESSION_COOKIE_AGE"] == 300


def test_celery_runs_eagerly_only_without_a_broker(load_settings):
    assert loaded(load_settings())["CELERY_TASK_ALWAYS_EAGER"] is True
    with_broker = load_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert loaded(with_broker)["CELERY_TASK_ALWAYS_EAGER"] is False


def test_a_broker_key_prefix_keeps_installations_apart_in_one_redis(load_settings):
    plain = loaded(load_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0"))
    assert "global_keyprefix" not in plain["CELERY_BROKER_TRANSPORT_OPTIONS"]
    prefixed = loaded(
        load_settings(
            CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
            PSI_BROKER_KEY_PREFIX="staging:",
        )
    )
    options = prefixed["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["global_keyprefix"] == "staging:"
    assert (
        options["visibility_timeout"]
        == plain["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"]
    )


def test_a_malformed_boolean_is_refused_by_name(load_settings):
    result = load_settings(DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr
