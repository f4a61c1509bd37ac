from django.urls import path
from rest_framework.routers import DefaultRouter

from psi.api import schema  # noqa: F401  (registers the token scheme for the schema)
from psi.api.tokens import TokenLoginView, TokenLogoutView
from psi.api.views import (
    AuditEventViewSet,
    JobViewSet,
    MembershipViewSet,
    OrganisationViewSet,
)

router = DefaultRouter()
router.register("organisations", OrganisationViewSet, basename="organisation")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("jobs", JobViewSet, basename="job")
router.register("audit-events", AuditEventViewSet, basename="auditevent")

urlpatterns = [
    path("auth/token/", TokenLoginView.as_view(), name="auth-token"),
    path("auth/logout/", TokenLogoutView.as_view(), name="auth-logout"),
    *router.urls,
]
