from django.urls import path
from rest_framework.routers import DefaultRouter

from cases.api.views import CaseViewSet, PrescriptionViewSet
from cases.imaging.api import ImagingUploadView, SeriesViewSet, StudyViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("cases", CaseViewSet, basename="case")
router.register("prescriptions", PrescriptionViewSet, basename="prescription")
router.register("studies", StudyViewSet, basename="imaging-study")
router.register("series", SeriesViewSet, basename="imaging-series")

urlpatterns = [
    path(
        "cases/<int:pk>/imaging/",
        ImagingUploadView.as_view(),
        name="case-imaging-upload",
    ),
    path(
        "series/<int:pk>/previews/<slug:name>.png",
        SeriesViewSet.as_view({"get": "preview"}),
        name="imaging-series-preview",
    ),
    *router.urls,
]
