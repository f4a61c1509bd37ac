"""Domain errors. Services raise these; the API maps them to HTTP answers."""


class DomainError(Exception):
    """A rule of the domain refused the request. Mapped to HTTP 400 by default."""

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def as_dict(self) -> dict:
        body = {"code": self.code, "detail": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class NotVisible(DomainError):
    """The actor may not see the object: answered exactly like a missing object."""

    code = "not_found"
    status = 404


class PermissionRefused(DomainError):
    """The actor sees the object but may not do this to it."""

    code = "permission_denied"
    status = 403


class Conflict(DomainError):
    """The object's current state does not allow this (e.g. an illegal transition)."""

    code = "conflict"
    status = 409


class RecordLocked(Conflict):
    """The record is signed (or otherwise frozen) and cannot change."""

    code = "record_signed"


class SignatureRejected(DomainError):
    """Re-authentication at the moment of signing failed."""

    code = "signature_rejected"
    status = 403


class SigningLocked(SignatureRejected):
    code = "signing_locked"
    status = 423
