from rest_framework.filters import BaseFilterBackend

from psi.permissions import restrict


class VisibleToUser(BaseFilterBackend):
    """The permission gate for every list and detail: rows whose anchor the user may
    view. Detail lookups go through it too, so an invisible row is a 404."""

    def filter_queryset(self, request, queryset, view):
        return restrict(queryset, request.user, "view")
