"""Encryption of patient identity at rest, with keys separate from SECRET_KEY.

Our own small fields rather than a third-party package: a value that does not decrypt
must raise, never come back as ciphertext that a later save would store as plaintext.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class IdentityDecryptionError(Exception):
    """A stored identity value does not decrypt with any configured key."""


def _fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.IDENTITY_KEYS))


# Every identity value read or written needs the keys: build them once per key list
# (tests and a rotation change the setting, which makes a new entry).
@lru_cache(maxsize=8)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "PSI_IDENTITY_KEYS must hold url-safe base64 Fernet keys "
            "(make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise IdentityDecryptionError(
            "An identity value does not decrypt with the configured keys."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the newest key (plaintext unchanged)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise IdentityDecryptionError(
            "An identity value does not decrypt with the configured keys."
        ) from None


def token_is_current(token: str) -> bool:
    """Whether ``token`` is already encrypted under the newest key."""
    try:
        Fernet(settings.IDENTITY_KEYS[0].encode()).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def identity_hmac(value: str) -> str:
    """Keyed digest for exact lookups without decrypting (trimmed, upper-cased)."""
    normalised = value.strip().upper()
    return hmac.new(
        settings.IDENTITY_HMAC_KEY.encode(), normalised.encode(), hashlib.sha256
    ).hexdigest()


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token. Not searchable, not orderable by content."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return self.to_python(decrypt(value))

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(self._serialise(value))

    def _serialise(self, value) -> str:
        return str(value)


class EncryptedDateField(EncryptedTextField):
    """A date stored as an encrypted ISO string."""

    def to_python(self, value):
        if value is None or value == "" or isinstance(value, datetime.date):
            return value
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            from django.core.exceptions import ValidationError

            raise ValidationError(
                "Enter a valid date in YYYY-MM-DD format.", code="invalid"
            ) from None

    def _serialise(self, value) -> str:
        return self.to_python(value).isoformat()

    def formfield(self, **kwargs):
        from django import forms

        return models.Field.formfield(self, form_class=forms.DateField, **kwargs)
