from rest_framework.routers import SimpleRouter

from consent.api.views import ConsentFormViewSet, ConsentViewSet, PatientViewSet

router = SimpleRouter()
router.register("patients", PatientViewSet, basename="patient")
router.register("consent-forms", ConsentFormViewSet, basename="consent-form")
router.register("consents", ConsentViewSet, basename="consent")

urlpatterns = router.urls
