"""API tokens: exchange a username and password for a knox token, and give it back.

knox keeps only a digest of each token; the token itself is shown once, here.
"""

import datetime
import logging

from django.contrib.auth import authenticate, user_logged_in, user_logged_out
from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox.models import AuthToken, get_token_model
from knox.settings import knox_settings
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from psi.api.auth import TokenAuthentication
from psi.api.permissions import IsActiveUser
from psi.api.serializers import TokenRequestSerializer, TokenResponseSerializer
from psi.audit import audit_append

security_log = logging.getLogger("psi.security")


def api_token_create(
    *, actor, user, expiry: datetime.timedelta | None, via: str
) -> tuple[AuthToken, str]:
    """Make a token for ``user`` with its audit event; the token (the second
    value) exists only here, knox keeps its digest."""
    with transaction.atomic():
        instance, token = get_token_model().objects.create(
            user=user, expiry=expiry, prefix=knox_settings.TOKEN_PREFIX
        )
        audit_append(
            actor=actor,
            action="auth.token_created",
            obj=user,
            payload={"expiry": instance.expiry, "via": via},
        )
    return instance, token


class LoginRateThrottle(AnonRateThrottle):
    """Slows password guessing from one address."""

    scope = "psi_login"
    rate = "20/minute"


class TokenLoginView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        summary="Exchange a username and password for an API token",
        request=TokenRequestSerializer,
        responses={
            200: TokenResponseSerializer,
            400: OpenApiResponse(description="Wrong credentials or inactive user"),
        },
        auth=[],
        tags=["auth"],
    )
    def post(self, request):
        credentials = TokenRequestSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(
            request,
            username=credentials.validated_data["username"],
            password=credentials.validated_data["password"],
        )
        if user is None or not user.is_active:
            # authenticate() has sent user_login_failed; say it where security looks.
            security_log.warning("API token refused: wrong credentials")
            raise serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with these credentials."]}
            )
        instance, token = api_token_create(
            actor=user, user=user, expiry=knox_settings.TOKEN_TTL, via="api"
        )
        user_logged_in.send(sender=type(user), request=request, user=user)
        body = TokenResponseSerializer(
            {"token": token, "expiry": instance.expiry, "user": user}
        ).data
        return Response(body)


class TokenLogoutView(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsActiveUser]

    @extend_schema(
        summary="Revoke the token this request was made with",
        request=None,
        responses={204: None},
        tags=["auth"],
    )
    def post(self, request):
        with transaction.atomic():
            request.auth.delete()
            audit_append(
                actor=request.user, action="auth.token_revoked", obj=request.user
            )
        user_logged_out.send(
            sender=type(request.user), request=request, user=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
