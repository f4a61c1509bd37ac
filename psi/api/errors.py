"""One mapping from domain errors to HTTP answers."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from psi.crypto import IdentityDecryptionError
from psi.errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        body = exc.as_dict()
        if exc.field and exc.status == 400:
            body[exc.field] = [exc.message]
        return Response(body, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "message_dict"):
            detail = exc.message_dict
        else:
            detail = {"non_field_errors": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IdentityDecryptionError):
        # Never fall back to ciphertext; tell the user the record is unreadable.
        return Response(
            {"code": "identity_unreadable", "detail": str(exc)},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    return drf_exception_handler(exc, context)
