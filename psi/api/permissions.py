from rest_framework.permissions import SAFE_METHODS, BasePermission

from psi.permissions import has_object_perm


class ObjectPermissions(BasePermission):
    """Authenticated users only; on an object, the view permission for reads and the
    view's ``object_action`` (default "change") for writes, held on the object's
    anchor (its Case or Patient). Works with object permissions alone, unlike DRF's
    ``DjangoObjectPermissions``. A row the user cannot see never reaches here: the
    gate filter answers 404 first.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return has_object_perm(request.user, "view", obj)
        action = getattr(view, "object_actions", {}).get(view.action, "change")
        return has_object_perm(request.user, action, obj)
