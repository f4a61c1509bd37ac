"""What the DICOMweb services share: responses, authentication, DICOM JSON
elements and the URLs of de-identified objects."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from cases.imaging.deid import pseudonymous_uid
from psi.api.auth import TokenAuthentication

DICOM_JSON = "application/dicom+json"
CHUNK = 1024 * 1024


def dicom_json(body, status: int = 200, **headers) -> JsonResponse:
    response = JsonResponse(body, status=status, safe=False, content_type=DICOM_JSON)
    for name, value in headers.items():
        response[name] = value
    return response


def problem(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = "Token"
    return response


def warning(text: str) -> str:
    """A ``Warning`` header value with code 299, "Miscellaneous persistent warning"
    (RFC 7234 §5.5.7), which PS3.18 uses for what a request asked and the server
    did not do. The text names rules and attributes, never a person; ASCII."""
    text = text.replace('"', "'").encode("ascii", "replace").decode()[:500]
    return f'299 psi "{text}"'


def _user(request):
    """The token's user; a session's user for reads only (no CSRF on writes).
    AuthenticationFailed for a token that is not valid."""
    result = TokenAuthentication().authenticate(request)
    if result is not None:
        return result[0]
    user = getattr(request, "user", None)
    if (
        request.method in ("GET", "HEAD")
        and getattr(user, "is_authenticated", False)
        and user.is_active
    ):
        return user
    return None


def authenticated(view: Callable) -> Callable:
    """``view(request, user, ...)`` behind token (or, for reads, session)
    authentication; anonymous callers get 401."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            user = _user(request)
        except AuthenticationFailed as failed:
            return problem(401, str(failed.detail))
        if user is None:
            return problem(401, "Authentication credentials were not provided.")
        return view(request, user, *args, **kwargs)

    return wrapped


def element(vr: str, *values) -> dict:
    values = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def study_url(request, study_uid: str) -> str:
    return request.build_absolute_uri(reverse("dicomweb-study", args=[study_uid]))


def series_url(request, study: str, series: str) -> str:
    return request.build_absolute_uri(reverse("dicomweb-series", args=[study, series]))


def instance_url(request, study: str, series: str, instance: str) -> str:
    return request.build_absolute_uri(
        reverse("dicomweb-instance", args=[study, series, instance])
    )


def deid(uid: str) -> str:
    """The de-identified UID the ingest gives to a sender's ``uid``."""
    return pseudonymous_uid(uid, settings.UID_SECRET.encode())
