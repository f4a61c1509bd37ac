"""The one permission gate.

django-guardian object permissions are granted on the *anchor* models (Case, Patient)
to organisation-role groups, through guardian's direct foreign-key permission models.
Every other record is authorised through its anchor: a model names the path to it with
a ``permission_path`` class attribute (``permission_path = "case"``).

Reads go through :func:`restrict`, which filters by an id subquery over guardian's
direct permission tables instead of its generic ones, so a permission-filtered list
costs about what an unfiltered one does (``bench/api_cases.py`` measures it). A list
can also page the ids straight from the grants (:func:`visible_ids_newest_first`)
and read a page's grants with its rows (:class:`GrantsInRows`).
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from functools import lru_cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models, router
from django.db.models.functions import Cast
from guardian.shortcuts import assign_perm
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

from psi.errors import NotVisible, PermissionRefused
from psi.models import Organisation
from psi.orgs import ROLES_BY_KIND, role_group


def anchor_path(model: type[models.Model]) -> tuple[str, type[models.Model]]:
    """The lookup path from ``model`` to its anchor, and the anchor model."""
    path = getattr(model, "permission_path", "")
    anchor = model
    for part in filter(None, path.split("__")):
        anchor = anchor._meta.get_field(part).related_model
    return path, anchor


def anchor_of(obj: models.Model) -> models.Model:
    path, _ = anchor_path(type(obj))
    for part in filter(None, path.split("__")):
        obj = getattr(obj, part)
    return obj


@lru_cache(maxsize=128)
def _permission_id(app_label: str, model_name: str, codename: str) -> int:
    content_type = ContentType.objects.get_by_natural_key(app_label, model_name)
    return (
        Permission.objects.only("pk")
        .get(content_type=content_type, codename=codename)
        .pk
    )


def _codename(anchor: type[models.Model], action: str) -> str:
    # "view" means view_case on a Case; a full codename ("submit_case") passes as is.
    return f"{action}_{anchor._meta.model_name}" if "_" not in action else action


#: Within one request the user's groups do not change: the gate reads them once per
#: anchor model instead of once per restricted queryset (a case list restricts three:
#: the rows and the choices of two filters). Outside a request nothing is cached.
_request_grantees: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "psi_request_grantees", default=None
)


@contextmanager
def grantees_cached_for_request():
    token = _request_grantees.set({})
    try:
        yield
    finally:
        _request_grantees.reset(token)


def forget_cached_grantees() -> None:
    """Called when memberships change, in case that happens inside a request."""
    cache = _request_grantees.get()
    if cache is not None:
        cache.clear()


def _grantees(user, anchor: type[models.Model]) -> tuple[list[int], bool]:
    """The ids of ``user``'s groups, and whether ``user`` holds any object permission
    on ``anchor`` rows directly rather than through a group: one query."""
    cache = _request_grantees.get()
    key = (user.pk, anchor._meta.label)
    if cache is not None and key in cache:
        return cache[key]
    result = _read_grantees(user, anchor)
    if cache is not None:
        cache[key] = result
    return result


def _read_grantees(user, anchor: type[models.Model]) -> tuple[list[int], bool]:
    # Every filtered list runs this first: as plain SQL it costs a fifth of what
    # the ORM took to build and run it (bench/api_cases.py).
    alias = router.db_for_read(anchor)
    with connections[alias].cursor() as cursor:
        cursor.execute(_grantees_sql(anchor, alias), [user.pk, user.pk])
        rows = cursor.fetchall()
    return [pk for (pk,) in rows if pk is not None], any(pk is None for (pk,) in rows)


@lru_cache(maxsize=16)
def _grantees_sql(anchor: type[models.Model], alias: str) -> str:
    """The ids of a user's groups, and a NULL row if the user holds a direct object
    permission on ``anchor`` rows."""
    quote = connections[alias].ops.quote_name
    groups = get_user_model()._meta.get_field("groups")
    direct = get_user_obj_perms_model(anchor)._meta
    # Names from the models' metadata, quoted; the user's id goes as a parameter.
    return (
        f"SELECT {quote(groups.m2m_reverse_name())} "  # noqa: S608
        f"FROM {quote(groups.m2m_db_table())} "
        f"WHERE {quote(groups.m2m_column_name())} = %s "
        "UNION ALL SELECT NULL WHERE EXISTS (SELECT 1 "
        f"FROM {quote(direct.db_table)} "
        f"WHERE {quote(direct.get_field('user').column)} = %s)"
    )


def visible_ids(user, anchor: type[models.Model], codename: str) -> models.QuerySet:
    """Ids of ``anchor`` rows on which ``user`` holds ``codename``: a subquery."""
    perm_id = _permission_id(anchor._meta.app_label, anchor._meta.model_name, codename)
    group_ids, direct = _grantees(user, anchor)
    # The group ids go in as values, not as a join through auth_user_groups, and the
    # subquery reads one table unless the user holds direct grants: PostgreSQL then
    # estimates from its statistics how many rows the user sees (500 or 40,000) and
    # plans for it. Joined, every group looks average and a UNION is taken to yield
    # 200 ids: the plan for a case manager's 40,000 cases took a second.
    by_group = (
        get_group_obj_perms_model(anchor)
        .objects.filter(permission_id=perm_id, group_id__in=group_ids)
        .values("content_object_id")
    )
    if not direct:
        return by_group
    by_user = (
        get_user_obj_perms_model(anchor)
        .objects.filter(permission_id=perm_id, user=user)
        .values("content_object_id")
    )
    return by_group.union(by_user, all=True)


def visible_ids_newest_first(
    user, anchor: type[models.Model], action: str = "view"
) -> models.QuerySet | None:
    """Ids of the ``anchor`` rows on which ``user`` holds ``action``, highest
    first, read from guardian's group permission table alone: a list with no other
    filter counts and pages them from one index, without joining the anchor's
    table (a grant is deleted with its object, so every id names a row).

    None unless the user holds grants through exactly one group and none directly
    (else an id could come twice), and for a superuser, whom the gate does not
    filter.
    """
    if not is_active_user(user) or user.is_superuser:
        return None
    group_ids, direct = _grantees(user, anchor)
    if direct or len(group_ids) != 1:
        return None
    codename = _codename(anchor, action)
    return (
        visible_ids(user, anchor, codename)
        .order_by("-content_object_id")
        .values_list("content_object_id", flat=True)
    )


def is_active_user(user) -> bool:
    """Logged in and not deactivated: nobody else passes any gate."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def granted_on(
    user, anchor: type[models.Model], ids: Iterable[int], codenames: Iterable[str]
) -> dict[int, set[str]]:
    """Which of ``codenames`` ``user`` holds on each of the ``anchor`` rows ``ids``,
    in one query (for a page of rows; the same grants ``restrict`` reads). A
    superuser holds everything without a grant: callers ask about them first."""
    granted: dict[int, set[str]] = defaultdict(set)
    ids = list(ids)
    if not ids or not is_active_user(user) or user.is_superuser:
        return granted
    label, model_name = anchor._meta.app_label, anchor._meta.model_name
    codename_of = {_permission_id(label, model_name, c): c for c in codenames}
    group_ids, direct = _grantees(user, anchor)
    rows = (
        get_group_obj_perms_model(anchor)
        .objects.filter(
            permission_id__in=codename_of,
            group_id__in=group_ids,
            content_object_id__in=ids,
        )
        .values_list("content_object_id", "permission_id")
    )
    if direct:
        rows = rows.union(
            get_user_obj_perms_model(anchor)
            .objects.filter(
                permission_id__in=codename_of, user=user, content_object_id__in=ids
            )
            .values_list("content_object_id", "permission_id"),
            all=True,
        )
    for object_id, permission_id in rows:
        granted[object_id].add(codename_of[permission_id])
    return granted


class _GrantMask(models.Expression):
    """For the row's anchor, the sum of the distinct ``bits`` of the permissions
    that the grantees hold on it in one of guardian's direct permission tables: a
    correlated subquery, written out because the ORM took longer to build the same
    SQL than the database took to run it (``bench/api_cases.py``)."""

    output_field = models.IntegerField()

    def __init__(self, anchor_pk, table, grantee: str, grantee_ids, bits):
        super().__init__()
        self.anchor_pk = anchor_pk
        self.table, self.grantee = table, grantee
        self.grantee_ids, self.bits = list(grantee_ids), dict(bits)

    def get_source_expressions(self):
        return [self.anchor_pk]

    def set_source_expressions(self, exprs):
        (self.anchor_pk,) = exprs

    def as_sql(self, compiler, connection):
        quote = connection.ops.quote_name
        meta = self.table._meta
        column = meta.get_field(self.grantee).column
        permission = quote(meta.get_field("permission").column)
        anchor_pk, params = compiler.compile(self.anchor_pk)
        # The permission ids and bits are the gate's own integers, written in; the
        # grantees go as parameters.
        whens = " ".join(f"WHEN {int(pk)} THEN {int(b)}" for pk, b in self.bits.items())
        permissions = ", ".join(str(int(pk)) for pk in self.bits)
        grantees = ", ".join(["%s"] * len(self.grantee_ids))
        sql = (
            f"(SELECT SUM(DISTINCT CASE {permission} {whens} ELSE 0 END) "  # noqa: S608
            f"FROM {quote(meta.db_table)} "
            f"WHERE {quote(meta.get_field('content_object').column)} = {anchor_pk} "
            f"AND {quote(column)} IN ({grantees}) AND {permission} IN ({permissions}))"
        )
        return sql, [*params, *self.grantee_ids]


class GrantsInRows:
    """Which of ``codenames`` ``user`` holds on each row's anchor, read by the query
    of the rows itself instead of by a second query (:func:`granted_on`).

    :meth:`annotate` adds one correlated subquery per grantee table (the user's
    groups; the user, if they hold direct grants): the sum of one distinct bit per
    codename held (two groups may grant the same one). :meth:`held` turns a row's
    sums back into codenames. A superuser holds everything without a grant: nothing
    is annotated and nothing is held, so callers ask :attr:`holds_all` first;
    nobody else does, and an anonymous or deactivated user holds nothing.
    """

    def __init__(self, user, model: type[models.Model], codenames: Iterable[str]):
        path, anchor = anchor_path(model)
        self.codenames = tuple(_codename(anchor, c) for c in codenames)
        self.annotations: dict[str, models.Expression] = {}
        self._held: dict[tuple, frozenset[str]] = {}
        self.holds_all = is_active_user(user) and user.is_superuser
        if self.holds_all or not is_active_user(user):
            return
        label, model_name = anchor._meta.app_label, anchor._meta.model_name
        bits = {
            _permission_id(label, model_name, c): 1 << i
            for i, c in enumerate(self.codenames)
        }
        group_ids, direct = _grantees(user, anchor)
        anchor_pk = models.F(f"{path}__pk" if path else "pk")
        if group_ids:
            self.annotations["_grants_groups"] = _GrantMask(
                anchor_pk, get_group_obj_perms_model(anchor), "group", group_ids, bits
            )
        if direct:
            self.annotations["_grants_user"] = _GrantMask(
                anchor_pk, get_user_obj_perms_model(anchor), "user", [user.pk], bits
            )

    def annotate(self, queryset: models.QuerySet) -> models.QuerySet:
        return queryset.annotate(**self.annotations)

    def held(self, row: Mapping) -> frozenset[str]:
        """The codenames held on the anchor of ``row``, a ``values()`` row with the
        annotations."""
        key = tuple(row[name] or 0 for name in self.annotations)
        if key not in self._held:
            mask = 0
            for part in key:
                mask |= part
            self._held[key] = frozenset(
                c for i, c in enumerate(self.codenames) if mask & (1 << i)
            )
        return self._held[key]


def restrict(queryset: models.QuerySet, user, action: str = "view") -> models.QuerySet:
    """``queryset`` narrowed to the rows whose anchor grants ``user`` the action."""
    if not is_active_user(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    path, anchor = anchor_path(queryset.model)
    ids = visible_ids(user, anchor, _codename(anchor, action))
    return queryset.filter(**{f"{path}__in" if path else "pk__in": ids})


def is_gated(model: type[models.Model]) -> bool:
    """Whether ``model`` is authorised through an anchor with direct object
    permissions (a Case, a Patient, or a record under one)."""
    try:
        _, anchor = anchor_path(model)
        link = get_group_obj_perms_model(anchor)._meta.get_field("content_object")
    except (AttributeError, LookupError, FieldDoesNotExist):
        return False
    return link.related_model is anchor


def restrict_generic(
    queryset: models.QuerySet,
    user,
    *,
    type_field: str,
    id_field: str,
    action: str = "view",
) -> models.QuerySet:
    """``queryset`` narrowed to the rows whose generic target (a content type and a
    text id, such as a Job's target) is a record the gate lets ``user`` act on.

    One id subquery per target type that occurs in ``queryset``; targets of models
    outside the gate match nothing.
    """
    if not is_active_user(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(
        generic_target_q(queryset, user, type_field, id_field, action)
    )


def generic_target_q(
    queryset: models.QuerySet,
    user,
    type_field: str,
    id_field: str,
    action: str = "view",
) -> models.Q:
    """The condition behind :func:`restrict_generic`, to combine with others."""
    type_ids = (
        queryset.model._base_manager.exclude(**{f"{type_field}__isnull": True})
        .order_by()
        .values_list(f"{type_field}_id", flat=True)
        .distinct()
    )
    condition = models.Q(pk__in=[])
    for type_id in type_ids:
        model = ContentType.objects.get_for_id(type_id).model_class()
        if model is None or not is_gated(model):
            continue
        # The generic id is text; compare it with the target's key as text.
        ids = (
            restrict(model._base_manager.all(), user, action)
            .annotate(_pk_text=Cast("pk", models.CharField()))
            .values("_pk_text")
        )
        condition |= models.Q(**{type_field: type_id, f"{id_field}__in": ids})
    return condition


def _held_on(
    user, obj: models.Model, actions: Iterable[str]
) -> tuple[set[str], list[str]]:
    """The codenames of ``actions`` on ``obj``'s anchor, and those of them a regular
    active user holds there: one query, the user's groups read through the gate's
    per-request cache."""
    anchor = anchor_of(obj)
    model = type(anchor)
    codenames = [_codename(model, action) for action in actions]
    held = granted_on(user, model, [anchor.pk], codenames).get(anchor.pk, set())
    return held, codenames


def has_object_perm(user, action: str, obj: models.Model) -> bool:
    if not is_active_user(user):
        return False
    if user.is_superuser:
        return True
    held, (codename,) = _held_on(user, obj, [action])
    return codename in held


def require_object_perm(user, action: str, obj: models.Model) -> None:
    """Raise NotVisible (404) if the user cannot see ``obj``; PermissionRefused (403)
    if they see it but may not perform ``action``."""
    if is_active_user(user) and user.is_superuser:
        return
    # granted_on answers nothing held for an anonymous or deactivated user.
    held, (view, wanted) = _held_on(user, obj, ["view", action])
    if view not in held:
        raise NotVisible(f"No {obj._meta.verbose_name} matches the given query.")
    if wanted not in held:
        raise PermissionRefused(
            f"You may not {action.split('_')[0]} this {obj._meta.verbose_name}."
        )


def grant_to_roles(
    obj: models.Model,
    organisation: Organisation,
    role_perms: Mapping[str, Iterable[str]],
) -> None:
    """Grant object permissions on an anchor to the roles of one organisation."""
    for role, codenames in role_perms.items():
        if role not in ROLES_BY_KIND[organisation.kind]:
            continue
        group = role_group(organisation, role)
        for codename in codenames:
            assign_perm(codename, group, obj)
