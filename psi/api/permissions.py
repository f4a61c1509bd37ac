from rest_framework.permissions import SAFE_METHODS, BasePermission

from psi.permissions import has_object_perm, is_active_user
from psi.selectors import audit_trail_readable_by


class IsActiveUser(BasePermission):
    """Authenticated and active; for core endpoints that scope their own querysets
    (organisations, memberships, jobs) instead of going through the anchor gate."""

    def has_permission(self, request, view) -> bool:
        return is_active_user(request.user)


class ObjectPermissions(IsActiveUser):
    """Authenticated users only; on an object, the view permission for reads and,
    for writes, the view's ``object_actions[action]`` (default "change"), held on
    the object's anchor (its Case or Patient). Works with object permissions alone,
    unlike DRF's ``DjangoObjectPermissions``. A row the user cannot see never
    reaches here: the gate filter answers 404 first.
    """

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return has_object_perm(request.user, "view", obj)
        action = getattr(view, "object_actions", {}).get(
            getattr(view, "action", None), "change"
        )
        return has_object_perm(request.user, action, obj)


class CanReadAuditTrail(IsActiveUser):
    """Holders of psi.view_auditevent (auditors, QA, regulatory through their role
    group) and superusers; the view's queryset narrows to their organisations.
    Actions may ask for more with ``required_permissions`` (per action)."""

    def has_permission(self, request, view) -> bool:
        if not audit_trail_readable_by(request.user):
            return False
        needed = getattr(view, "required_permissions", {}).get(
            getattr(view, "action", None), ()
        )
        return request.user.has_perms(needed)
